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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::{
    db::{events, inbox},
    domain::{SubscriberId, TenantId},
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
