//! Subscribers' real-time events, kept for catch-up after a reconnect.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{NotificationId, SubscriberId, TenantId};

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

/// Locks the subscribers of the notifications `ids`, as
/// [`lock_subscribers`] does, in id order.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn lock_subscribers_of(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select 1 from subscribers where tenant_id = $1 and id in (
             select subscriber_id from notifications where tenant_id = $1 and id = any($2))
         order by id for no key update",
    )
    .bind(tenant_id)
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves each subscriber's event number on by its count (`counts[i]` for
/// `subscribers[i]`), so the caller can number that many events; returns
/// each subscriber's new last number and external id. The caller holds the
/// subscribers' locks.
#[tracing::instrument(skip_all, fields(count = subscribers.len()))]
pub async fn advance_seqs(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscribers: &[SubscriberId],
    counts: &[i64],
) -> Result<BTreeMap<SubscriberId, (i64, String)>, sqlx::Error> {
    let rows: Vec<(SubscriberId, i64, String)> = sqlx::query_as(
        "update subscribers s set event_seq = s.event_seq + c.k
         from unnest($2::uuid[], $3::int8[]) as c(id, k)
         where s.id = c.id and s.tenant_id = $1
         returning s.id, s.event_seq, s.external_id",
    )
    .bind(tenant_id)
    .bind(subscribers)
    .bind(counts)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, end, subject)| (id, (end, subject)))
        .collect())
}

/// Inserts events numbered by [`advance_seqs`] (the i-th of each array is
/// one event); returns their time, or `None` when there were none.
#[tracing::instrument(skip_all, fields(count = subscribers.len()))]
pub async fn append_many(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscribers: &[SubscriberId],
    seqs: &[i64],
    kinds: &[&str],
    payloads: &[&Value],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let at: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "insert into subscriber_events (subscriber_id, seq, tenant_id, kind, payload)
         select e.subscriber_id, e.seq, $1, e.kind, e.payload
         from unnest($2::uuid[], $3::int8[], $4::text[], $5::jsonb[]) as e(subscriber_id, seq, kind, payload)
         returning created_at",
    )
    .bind(tenant_id)
    .bind(subscribers)
    .bind(seqs)
    .bind(kinds)
    .bind(payloads)
    .fetch_all(tx)
    .await?;
    Ok(at.into_iter().next())
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
