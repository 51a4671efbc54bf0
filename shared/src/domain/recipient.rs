//! The one check of a notification's recipient on each channel, used by
//! single sends, template sends, batches and CSV jobs alike.

use super::{Channel, EmailAddress, ExternalId, Invalid, PhoneNumber, PushToken};

/// Parses who a notification on `channel` goes to, and returns it as it is
/// stored: an email address (domain lower-cased), an E.164 number (sms and
/// whatsapp), a device registration token (push), or a subscriber's
/// external id (inapp).
pub fn recipient(channel: Channel, raw: &str) -> Result<String, Invalid> {
    Ok(match channel {
        Channel::Email => EmailAddress::parse(raw)?.as_str().to_owned(),
        Channel::Sms | Channel::WhatsApp => PhoneNumber::parse(raw)?.as_str().to_owned(),
        Channel::Push => PushToken::parse(raw)?.as_str().to_owned(),
        Channel::InApp => ExternalId::parse(raw)?.as_str().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_parses_its_own_kind_of_address() {
        assert_eq!(
            recipient(Channel::Email, " Pat@Example.ORG ").unwrap(),
            "Pat@example.org"
        );
        assert_eq!(
            recipient(Channel::Sms, "+15005550006").unwrap(),
            "+15005550006"
        );
        assert_eq!(
            recipient(Channel::WhatsApp, " +15005550006").unwrap(),
            "+15005550006"
        );
        assert_eq!(recipient(Channel::Push, "fcm:tok-1").unwrap(), "fcm:tok-1");
        assert_eq!(
            recipient(Channel::InApp, "patient 42").unwrap(),
            "patient 42"
        );
        for (channel, bad) in [
            (Channel::Email, "pat"),
            (Channel::Sms, "555-0100"),
            (Channel::WhatsApp, "pat@example.org"),
            (Channel::Push, "tök"),
            (Channel::Push, "a b"),
            (Channel::InApp, "a\nb"),
            (Channel::InApp, " "),
        ] {
            assert!(recipient(channel, bad).is_err(), "{channel:?} {bad:?}");
        }
    }
}
