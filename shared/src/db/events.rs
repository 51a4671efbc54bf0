//! Subscribers' real-time events, kept for catch-up after a reconnect.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{SubscriberId, TenantId};

/// A stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// Its number for the subscriber, increasing by one.
    pub seq: i64,
    /// Its type, e.g. `notification.created`.
    pub kind: String,
    /// Its data.
    pub payload: Json<Value>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Locks the subscriber for the rest of the transaction, so changes to their
/// inbox and the events that report them happen in one order. The lock is
/// `for no key update`: it orders inbox changes without holding up inserts
/// of new notifications that merely reference the subscriber.
#[tracing::instrument(skip_all)]
pub async fn lock_subscriber(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<(), sqlx::Error> {
    sqlx::query("select 1 from subscribers where tenant_id = $1 and id = $2 for no key update")
        .bind(tenant_id)
        .bind(subscriber_id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Locks several subscribers, as [`lock_subscriber`] does, in id order (the
/// order every inbox change takes them, so two writers never wait on each
/// other crosswise). Repeated ids are fine.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn lock_subscribers(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    mut ids: Vec<SubscriberId>,
) -> Result<(), sqlx::Error> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "select 1 from subscribers where tenant_id = $1 and id = any($2)
         order by id for no key update",
    )
    .bind(tenant_id)
    .bind(&ids)
    .execute(tx)
    .await?;
    Ok(())
}

/// Appends an event for a subscriber and returns its number and time. Call
/// in the transaction that made the change it reports.
#[tracing::instrument(skip_all)]
pub async fn append(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    kind: &str,
    payload: &Value,
) -> Result<(i64, DateTime<Utc>), sqlx::Error> {
    sqlx::query_as(
        "with next as (
             update subscribers set event_seq = event_seq + 1
             where tenant_id = $1 and id = $2 returning event_seq
         )
         insert into subscriber_events (subscriber_id, seq, tenant_id, kind, payload)
         select $2, event_seq, $1, $3, $4 from next
         returning seq, created_at",
    )
    .bind(tenant_id)
    .bind(subscriber_id)
    .bind(kind)
    .bind(payload)
    .fetch_one(tx)
    .await
}

/// The subscriber's events after `since`, oldest first, at most `limit`.
#[tracing::instrument(skip_all)]
pub async fn since(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    since: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "select seq, kind, payload, created_at from subscriber_events
         where tenant_id = $1 and subscriber_id = $2 and seq > $3 order by seq limit $4",
    )
    .bind(tenant_id)
    .bind(subscriber_id)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The subscriber's last event number.
#[tracing::instrument(skip_all)]
pub async fn last_seq(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select event_seq from subscribers where tenant_id = $1 and id = $2")
        .bind(tenant_id)
        .bind(subscriber_id)
        .fetch_optional(db)
        .await
        .map(Option::unwrap_or_default)
}

/// Drops events older than `hours` (across tenants); returns how many.
#[tracing::instrument(skip_all)]
pub async fn prune(db: impl PgExecutor<'_>, hours: u32) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from subscriber_events where created_at < now() - make_interval(hours => $1)",
    )
    .bind(hours as i32)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
