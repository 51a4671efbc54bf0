//! Batches: the rules a batch follows whichever route creates it (a
//! `send-batch` call or a CSV upload).

use shared::domain::Channel;

/// The channels a batch of `template` goes out on when it names none: the
/// template's default channels but push, which batches do not send.
pub fn default_batch_channels(template: &shared::templates::Template) -> Vec<Channel> {
    template
        .default_channels()
        .iter()
        .copied()
        .filter(|c| *c != Channel::Push)
        .collect()
}
