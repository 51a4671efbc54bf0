//! Real-time events: what changed, for whom, on its way to WebSocket clients.
//!
//! An event is recorded in Postgres (per-subscriber numbered, for catch-up)
//! in the transaction that made the change, and published on the tenant's
//! Redis channel after the commit. Every API instance listens on those
//! channels and hands events to its own connected clients, so a client on
//! one instance hears about a change made through another.
//!
//! Topics, always within the event's tenant: `user:<subject>` (one user's
//! inbox), `org` (the whole organisation), `batch:<id>` and `bulk:<id>`
//! (progress, for admins).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::{
    db::{batches::NewSubscriber, events, inbox},
    domain::{NotificationId, SubscriberId, TenantId},
    jobs::{QueueError, Queues},
};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The tenant it belongs to; never sent to another tenant's clients.
    pub tenant_id: TenantId,
    /// Who hears it.
    pub topic: String,
    /// `notification.created`, `notification.updated`,
    /// `unread_count.changed`, `batch.progress`, `bulk.progress`,
    /// `shipment.updated` or `system.alert`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The subscriber's event number (user topics only).
    pub id: Option<i64>,
    /// What happened.
    pub data: Value,
    /// When it was recorded (for user events, in the transaction that made
    /// the change).
    pub at: DateTime<Utc>,
}

/// The user topic of a subject.
pub fn user_topic(subject: &str) -> String {
    format!("user:{subject}")
}

/// The Redis channel of a tenant's events.
pub fn channel(prefix: &str, tenant_id: TenantId) -> String {
    format!("{prefix}:events:{tenant_id}")
}

/// The pattern that matches every tenant's channel.
pub fn channel_pattern(prefix: &str) -> String {
    format!("{prefix}:events:*")
}

/// Publishes events to their tenants' channels. Failures are returned but
/// lose nothing durable: user events are kept in Postgres for catch-up.
pub async fn publish(queues: &Queues, events: &[Event]) -> Result<(), QueueError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for e in events {
        let body = serde_json::to_string(e).unwrap_or_default();
        pipe.publish(channel(queues.prefix(), e.tenant_id), body)
            .ignore();
    }
    let mut conn = queues.connection();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// An inbox entry as events carry it.
pub fn entry_view(item: &inbox::Item) -> Value {
    let c = &item.content.0;
    json!({
        "id": item.id,
        "title": c.get("title"),
        "body": c.get("body"),
        "action_url": c.get("action_url"),
        "data": c.get("data"),
        "category": item.category,
        "read": item.read_at.is_some(),
        "read_at": item.read_at,
        "archived": item.archived_at.is_some(),
        "created_at": item.created_at,
    })
}

/// Records inbox events (`(type, data)` pairs) and then the subscriber's
/// unread count, in the caller's transaction. The caller must have locked the
/// subscriber ([`events::lock_subscriber`]) before changing the inbox, and
/// publishes the returned events after the commit.
pub async fn record_inbox_events(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    subject: &str,
    changes: Vec<(&str, Value)>,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut out = Vec::new();
    let unread = inbox::unread_count(&mut *tx, tenant_id, subscriber_id).await?;
    let changes = changes
        .into_iter()
        .chain([("unread_count.changed", json!({"unread": unread}))]);
    for (kind, data) in changes {
        let (seq, at) = events::append(tx, tenant_id, subscriber_id, kind, &data).await?;
        out.push(Event {
            tenant_id,
            topic: user_topic(subject),
            kind: kind.to_owned(),
            id: Some(seq),
            data,
            at,
        });
    }
    Ok(out)
}

/// Puts the in-app notifications of a group that can go without a look at
/// preferences into their subscribers' inboxes, in a handful of statements
/// whatever the group's size. A row is taken when it is due, has attempts
/// left, has a subscriber, and is critical or its subscriber has no stored
/// preferences; it is claimed and delivered in the same statement (no
/// attempt row: placing a message in an inbox has no provider answer to
/// keep). The subscribers are locked in one order and the events written by
/// [`announce_placed`]. Rows not taken are left as they are. Returns the rows
/// delivered and the events to publish after the commit.
pub async fn deliver_inbox_group(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Result<(Vec<NotificationId>, Vec<Event>), sqlx::Error> {
    events::lock_subscribers_of(&mut *tx, tenant_id, ids).await?;
    let moved = inbox::place_group(&mut *tx, tenant_id, ids).await?;
    let placed = moved.iter().map(|(_, item)| item.id).collect();
    let events = announce_placed(tx, tenant_id, moved, &HashMap::new()).await?;
    Ok((placed, events))
}

/// Writes the real-time events of new inbox entries, in the transaction that
/// placed them, whose subscribers it has locked (`for no key update`, in id
/// order, before placing them) or created: each subscriber gets one
/// `notification.created` per entry, oldest first, and then one
/// `unread_count.changed` with the count after all of them. They are kept
/// as one [`events::PLACED`] row per subscriber (per [`events::PLACED_SPAN`]
/// entries), which a replay unfolds.
///
/// `created` names the subscribers this transaction created, with the event
/// number each was created with ([`crate::db::batches::subscriber_ids`]):
/// one created with exactly the numbers its entries take needs no update
/// and no count (it has no other entries). Returns the events to publish
/// after the commit.
pub async fn announce_placed(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    mut placed: Vec<(SubscriberId, inbox::Item)>,
    created: &HashMap<SubscriberId, NewSubscriber>,
) -> Result<Vec<Event>, sqlx::Error> {
    if placed.is_empty() {
        return Ok(Vec::new());
    }
    placed.sort_by_key(|(s, item)| (*s, item.created_at, item.id));
    let mut per: BTreeMap<SubscriberId, Vec<&inbox::Item>> = BTreeMap::new();
    for (s, item) in &placed {
        per.entry(*s).or_default().push(item);
    }
    if created.is_empty() && per.values().all(|items| items.len() <= events::PLACED_SPAN) {
        return announce_counted(tx, tenant_id, &per).await;
    }
    // Each subscriber's last event number after this placement, and its
    // unread count.
    let mut ends: BTreeMap<SubscriberId, (i64, String)> = BTreeMap::new();
    let mut unread: BTreeMap<SubscriberId, i64> = BTreeMap::new();
    let (mut moved, mut by) = (Vec::new(), Vec::new());
    let mut counted = Vec::new();
    for (s, items) in &per {
        let needed = items.len() as i64 + 1;
        match created.get(s) {
            Some(c) => {
                unread.insert(*s, items.len() as i64);
                if c.event_seq == needed {
                    ends.insert(*s, (needed, c.external_id.clone()));
                } else {
                    moved.push(*s);
                    by.push(needed - c.event_seq);
                }
            }
            None => {
                counted.push(*s);
                moved.push(*s);
                by.push(needed);
            }
        }
    }
    if !counted.is_empty() {
        unread.extend(inbox::unread_counts(&mut *tx, tenant_id, &counted).await?);
    }
    if !moved.is_empty() {
        ends.extend(events::advance_seqs(&mut *tx, tenant_id, &moved, &by).await?);
    }
    let mut rows: Vec<(SubscriberId, i64, events::Placed)> = Vec::new();
    let mut out: Vec<(i64, &'static str, Value, String)> = Vec::new();
    for (s, items) in &per {
        let Some((end, subject)) = ends.get(s) else {
            continue;
        };
        let first = end - items.len() as i64;
        let count = unread.get(s).copied().unwrap_or(0);
        let pieces = items.chunks(events::PLACED_SPAN);
        let last_piece = pieces.len() - 1;
        for (i, piece) in pieces.enumerate() {
            rows.push((
                *s,
                first + (i * events::PLACED_SPAN) as i64,
                events::Placed {
                    ids: piece.iter().map(|item| item.id).collect(),
                    unread: (i == last_piece).then_some(count),
                },
            ));
        }
        for (i, item) in items.iter().enumerate() {
            out.push((
                first + i as i64,
                "notification.created",
                entry_view(item),
                subject.clone(),
            ));
        }
        out.push((
            *end,
            "unread_count.changed",
            json!({"unread": count}),
            subject.clone(),
        ));
    }
    let at = events::append_placed(&mut *tx, tenant_id, &rows)
        .await?
        .unwrap_or_else(Utc::now);
    Ok(out
        .into_iter()
        .map(|(seq, kind, data, subject)| Event {
            tenant_id,
            topic: user_topic(&subject),
            kind: kind.to_owned(),
            id: Some(seq),
            data,
            at,
        })
        .collect())
}

/// [`announce_placed`] with no subscriber numbered at creation, at most
/// [`events::PLACED_SPAN`] new entries each: counted, numbered and stored in
/// one statement ([`events::append_counted`]) rather than three.
async fn announce_counted(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    per: &BTreeMap<SubscriberId, Vec<&inbox::Item>>,
) -> Result<Vec<Event>, sqlx::Error> {
    let entries: Vec<events::NewEntries> = per
        .iter()
        .map(|(s, items)| events::NewEntries {
            subscriber_id: *s,
            ids: items.iter().map(|item| item.id).collect(),
        })
        .collect();
    let (counted, at) = events::append_counted(tx, tenant_id, &entries).await?;
    let at = at.unwrap_or_else(Utc::now);
    let mut out = Vec::new();
    for (s, items) in per {
        let Some(c) = counted.get(s) else {
            continue;
        };
        let first = c.last_seq - items.len() as i64;
        let topic = user_topic(&c.external_id);
        for (i, item) in items.iter().enumerate() {
            out.push(Event {
                tenant_id,
                topic: topic.clone(),
                kind: "notification.created".to_owned(),
                id: Some(first + i as i64),
                data: entry_view(item),
                at,
            });
        }
        out.push(Event {
            tenant_id,
            topic,
            kind: "unread_count.changed".to_owned(),
            id: Some(c.last_seq),
            data: json!({"unread": c.unread}),
            at,
        });
    }
    Ok(out)
}
