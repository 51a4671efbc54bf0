//! Deciding a claimed group at one moment: the subscribers' preferences
//! and time zones read in one statement, opt-outs marked to be recorded as
//! suppressed, and the rows that quiet hours or the organisation's send
//! window hold back deferred in one statement (see [`shared::send_windows`]).

use std::collections::HashMap;

use shared::{
    db::notifications::Claimed,
    domain::{Channel, NotificationId, TenantId},
    send_windows::{self, Recipient, SendRules, Verdict},
};

use crate::{WorkerState, jobs::persist};

/// How long the rows of subscribers whose preferences could not be read
/// wait before they are looked at again.
const UNREAD_RETRY: chrono::Duration = chrono::Duration::seconds(30);

/// Decides the claimed rows of a group at one moment (see
/// [`send_windows::decide`]): the subscribers' preferences and time zones
/// are read in one statement, and the rows held back (quiet hours, the
/// organisation's send window for the channel) are deferred in one
/// statement, their attempt given back. Returns the rows to deliver and,
/// among them, those to record as suppressed (with why). Rows without a
/// subscriber on a channel without a window, and critical rows, cost
/// nothing here.
pub(super) async fn screen(
    state: &WorkerState,
    tenant_id: TenantId,
    channel: Channel,
    rules: &SendRules,
    claimed: Vec<Claimed>,
    lease_ends: tokio::time::Instant,
) -> (Vec<Claimed>, HashMap<NotificationId, String>) {
    let mut suppressed = HashMap::new();
    let window = rules.has_window(channel);
    if !claimed
        .iter()
        .any(|r| !r.critical && (window || r.subscriber_id.is_some()))
    {
        return (claimed, suppressed);
    }
    let mut ids: Vec<_> = claimed
        .iter()
        .filter(|r| !r.critical)
        .filter_map(|r| r.subscriber_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let subscribers = match ids.is_empty() {
        true => Ok(HashMap::new()),
        false => shared::db::send_windows::subscribers(&state.pool, tenant_id, &ids).await,
    };
    // The one moment the group is decided at.
    let now = chrono::Utc::now();
    let (subscribers, unread) = match subscribers {
        Ok(s) => (s, false),
        Err(error) => {
            // Without them an opt-out cannot be honoured: their rows look
            // again shortly.
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "cannot read the subscribers' preferences; deferring their rows"
            );
            (HashMap::new(), true)
        }
    };
    let mut send = Vec::with_capacity(claimed.len());
    let mut held = Vec::new();
    for row in claimed {
        if unread && !row.critical && row.subscriber_id.is_some() {
            held.push((row, now + UNREAD_RETRY));
            continue;
        }
        let subscriber = row.subscriber_id.and_then(|id| subscribers.get(&id));
        let recipient = Recipient {
            preferences: subscriber.map(|s| &s.preferences),
            timezone: subscriber.and_then(|s| s.timezone),
            category: row.category.as_deref(),
            critical: row.critical,
        };
        match send_windows::decide(now, channel, rules, &recipient) {
            Verdict::Send => send.push(row),
            Verdict::Suppress(why) => {
                suppressed.insert(row.id, why);
                send.push(row);
            }
            Verdict::Defer(until) => held.push((row, until)),
        }
    }
    defer_group(state, tenant_id, &held, lease_ends).await;
    (send, suppressed)
}

/// Puts the rows `held` back, each until its time, in one statement,
/// without spending their attempts; rows cancelled while held stay as they
/// are. Waits for Postgres until the lease ends (then the lease sweep puts
/// them back).
async fn defer_group(
    state: &WorkerState,
    tenant_id: TenantId,
    held: &[(Claimed, chrono::DateTime<chrono::Utc>)],
    lease_ends: tokio::time::Instant,
) {
    if held.is_empty() {
        return;
    }
    let rows: Vec<_> = held
        .iter()
        .map(|(r, until)| (r.id, r.attempts, *until))
        .collect();
    let put_back = persist::patiently("defer", lease_ends, || {
        shared::db::send_windows::defer(&state.pool, tenant_id, &rows)
    })
    .await;
    match put_back {
        Ok(deferred) => {
            let earliest = held.iter().map(|h| h.1).min();
            tracing::info!(
                deferred = deferred.len(),
                cancelled = held.len() - deferred.len(),
                earliest = ?earliest,
                "held back by quiet hours or the send window"
            );
            metrics::counter!("notifications_deferred_total").increment(deferred.len() as u64);
        }
        Err(error) => tracing::error!(
            error = &error as &dyn std::error::Error,
            "cannot defer the rows held back; they wait for their lease"
        ),
    }
}
