//! Notifications and their delivery attempts.
//!
//! A notification row is the unit of work. Its life:
//!
//! ```text
//! queued ──claim──▶ sending ──▶ sent ──▶ delivered ──▶ read   (provider reports,
//!   ▲                  │  │        └──────────┴──▶ bounced | failed   forward only)
//!   │                  │  └────▶ failed   (permanent error, or out of attempts)
//!   └── retry (run_at = now + backoff) ◀┘
//! ```
//!
//! Provider reports are recorded by [`super::provider_events`].
//!
//! A worker [`claim`]s rows before any side effect, with a lease that ends at
//! `run_at`; a second delivery of the same job finds nothing to claim. A row
//! whose lease ran out (its worker died) is put back by
//! [`recover_expired_leases`].
//!
//! Cancel wins over a claim. Every move a worker makes after claiming
//! ([`defer`], [`release`], [`record_attempt`]) is conditional on the row still being
//! `sending` with the claimed attempt, and a cancel ([`cancel`], and the
//! batch and bulk-job cancels) moves `sending` rows to `cancelled` too. The
//! worker asks [`still_claimed`] right before calling a provider, so a row
//! cancelled while it waited for its turn or for a rate limit is never
//! sent. Only a provider that already had the message when the cancel came
//! can still accept it; that row is then recorded `sent`, because it was.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use crate::domain::{
    AttemptOutcome, Channel, NotificationId, NotificationStatus, SubscriberId, TenantId,
};
use crate::providers::ProviderError;

mod record;
pub use record::*;

/// A notification to insert.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    /// Its channel.
    pub channel: Channel,
    /// Address, number or device, as the channel reads it.
    pub recipient: &'a str,
    /// Channel-specific content.
    pub content: Value,
    /// The caller's metadata, returned as given.
    pub metadata: Value,
    /// Attempts before it is marked `failed`.
    pub max_attempts: u32,
    /// The caller's `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(&'a str, Vec<u8>)>,
    /// The subscriber whose inbox it goes to (in-app).
    pub subscriber_id: Option<SubscriberId>,
    /// The sender's category for it.
    pub category: Option<&'a str>,
    /// The key of the template it was rendered from, for reports.
    pub template_key: Option<&'a str>,
    /// Whether it ignores preferences and quiet hours.
    pub critical: bool,
    /// Whether the caller pushes its job right after the commit; if that
    /// push fails it releases them (see [`crate::outbox::Enqueued`]).
    pub dispatched: bool,
    /// The first notification of the same send request; `None` for the
    /// first itself.
    pub send_id: Option<NotificationId>,
    /// When to send it; now when `None`.
    pub run_at: Option<DateTime<Utc>>,
    /// The workflow run that will wait for its status: a change of status
    /// then wakes that run (see `workflow_runs::watch`).
    pub waited_by_run: Option<Uuid>,
}

/// What [`insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new row.
    Created(NotificationId),
    /// The idempotency key was used before; nothing was inserted.
    Existing {
        /// The row created by the first request.
        id: NotificationId,
        /// Whether the first request had the same body.
        same_request: bool,
    },
}

/// Inserts a notification for `tenant_id`, or finds the one an earlier request
/// with the same idempotency key created. Concurrent requests with one key
/// create one row: the unique index makes the later ones wait and find it.
#[tracing::instrument(skip_all)]
pub async fn insert(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    new: NewNotification<'_>,
) -> Result<Inserted, sqlx::Error> {
    let id = NotificationId::new();
    let (key, hash) = match &new.idempotency {
        Some((k, h)) => (Some(*k), Some(h.as_slice())),
        None => (None, None),
    };
    let created: Option<NotificationId> = sqlx::query_scalar!(
        r#"insert into notifications
             (id, tenant_id, channel, recipient, content, metadata, max_attempts, idempotency_key, request_hash,
              dispatched_at, subscriber_id, category, critical, send_id, run_at, template_key,
              waited_by_run)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, case when $10 then now() end, $11, $12, $13,
                 coalesce($14::uuid, $1), coalesce($15, now()), $16, $17)
         on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
         returning id as "id: NotificationId""#,
        id as _,
        tenant_id as _,
        new.channel as _,
        new.recipient,
        &new.content,
        &new.metadata,
        new.max_attempts as i32,
        key,
        hash,
        new.dispatched,
        new.subscriber_id as _,
        new.category,
        new.critical,
        new.send_id as _,
        new.run_at,
        new.template_key,
        new.waited_by_run,
    )
    .fetch_optional(&mut *db)
    .await?;
    if let Some(id) = created {
        return Ok(Inserted::Created(id));
    }
    let row = sqlx::query!(
        r#"select id as "id: NotificationId", request_hash from notifications where tenant_id = $1 and idempotency_key = $2"#,
        tenant_id as _,
        key,
    )
    .fetch_one(&mut *db)
    .await?;
    let (id, stored_hash) = (row.id, row.request_hash);
    Ok(Inserted::Existing {
        id,
        same_request: stored_hash.as_deref() == hash,
    })
}

/// A notification accepted together with others of other requests (see
/// [`insert_many`]): no idempotency key, due now, its id chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewRow {
    /// Its id.
    pub id: NotificationId,
    /// Whose it is.
    pub tenant_id: TenantId,
    /// Its channel.
    pub channel: Channel,
    /// The address, or the subscriber's external id (in-app).
    pub recipient: String,
    /// Channel-specific content.
    pub content: Value,
    /// The caller's metadata.
    pub metadata: Value,
    /// Attempts before it is marked `failed`.
    pub max_attempts: u32,
    /// The subscriber it was sent to, if any.
    pub subscriber_id: Option<SubscriberId>,
    /// The sender's category for it.
    pub category: Option<String>,
    /// The key of the template it was rendered from, for reports.
    pub template_key: Option<String>,
    /// Whether it ignores preferences and quiet hours.
    pub critical: bool,
    /// Whether its job is pushed right after the commit (see
    /// [`NewNotification::dispatched`]).
    pub dispatched: bool,
    /// The first notification of its send request (itself for the first).
    pub send_id: NotificationId,
}

/// Inserts `rows`, of any tenants, in one statement.
///
/// In-app rows of the tenants in `placing` that leave nothing to decide
/// (with a subscriber, and critical or of a subscriber without stored
/// preferences) are written once, already `sent` in their subscribers'
/// inboxes, as a batch chunk's are ([`super::batches::expand`]); they are
/// returned with their subscribers for the caller to announce
/// ([`crate::events::announce_placed`]) in the same transaction, which has
/// locked those subscribers ([`super::events::lock_subscribers`]). Every
/// other row is inserted `queued`.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub async fn insert_many(
    db: &mut sqlx::PgConnection,
    rows: &[NewRow],
    placing: &std::collections::BTreeSet<TenantId>,
) -> Result<Vec<(SubscriberId, super::inbox::Item)>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&NewRow) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let may_place: Vec<bool> = rows
        .iter()
        .map(|r| {
            r.channel == Channel::InApp
                && r.subscriber_id.is_some()
                && placing.contains(&r.tenant_id)
        })
        .collect();
    let returned: Vec<(NotificationId, bool, DateTime<Utc>)> = sqlx::query!(
        r#"with r as (
             select r.*, (r.may_place and (r.critical or not exists (
                              select 1 from subscriber_preferences p
                              where p.tenant_id = r.tenant_id and p.subscriber_id = r.subscriber_id)))
                         as placed
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                         $7::int4[], $8::bool[], $9::uuid[], $10::text[], $11::bool[], $12::uuid[],
                         $13::text[], $14::bool[])
                  as r(id, tenant_id, channel, recipient, content, metadata, max_attempts,
                       dispatched, subscriber_id, category, critical, send_id, template_key,
                       may_place)
         )
         insert into notifications
             (id, tenant_id, channel, recipient, content, metadata, max_attempts,
              dispatched_at, subscriber_id, category, critical, send_id, template_key,
              status, attempts, provider_message_id, sent_at)
         select id, tenant_id, channel, recipient, content, metadata, max_attempts,
                case when dispatched and not placed then now() end, subscriber_id, category,
                critical, send_id, template_key,
                case when placed then 'sent' else 'queued' end,
                case when placed then 1 else 0 end,
                case when placed then 'inapp:' || id::text end,
                case when placed then now() end
         from r
         returning id as "id: NotificationId", status = 'sent' as "sent!", created_at"#,
        &col(|r| r.id.0),
        &col(|r| r.tenant_id.0),
        rows.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>() as _,
        rows.iter()
            .map(|r| r.recipient.as_str())
            .collect::<Vec<_>>() as _,
        rows.iter().map(|r| Json(&r.content)).collect::<Vec<_>>() as _,
        rows.iter().map(|r| Json(&r.metadata)).collect::<Vec<_>>() as _,
        &rows
            .iter()
            .map(|r| r.max_attempts as i32)
            .collect::<Vec<_>>(),
        &rows.iter().map(|r| r.dispatched).collect::<Vec<_>>(),
        rows.iter()
            .map(|r| r.subscriber_id.map(|s| s.0))
            .collect::<Vec<_>>() as _,
        rows.iter()
            .map(|r| r.category.as_deref())
            .collect::<Vec<_>>() as _,
        &rows.iter().map(|r| r.critical).collect::<Vec<_>>(),
        &col(|r| r.send_id.0),
        rows.iter()
            .map(|r| r.template_key.as_deref())
            .collect::<Vec<_>>() as _,
        &may_place,
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.id, r.sent, r.created_at))
    .collect();
    let by_id: std::collections::HashMap<NotificationId, &NewRow> =
        rows.iter().map(|r| (r.id, r)).collect();
    Ok(returned
        .into_iter()
        .filter(|(_, placed, _)| *placed)
        .filter_map(|(id, _, created_at)| {
            let row = by_id.get(&id)?;
            Some((
                row.subscriber_id?,
                super::inbox::Item {
                    id,
                    category: row.category.clone(),
                    content: Json(row.content.clone()),
                    read_at: None,
                    archived_at: None,
                    created_at,
                },
            ))
        })
        .collect())
}

/// A notification as its tenant sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// Its channel.
    pub channel: Channel,
    /// Its recipient.
    pub recipient: String,
    /// Channel-specific content (erased after retention).
    pub content: Json<Value>,
    /// The caller's metadata.
    pub metadata: Json<Value>,
    /// Current status.
    pub status: NotificationStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The provider's id of the message, once sent.
    pub provider_message_id: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (while queued).
    pub run_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was read: reported by the provider, or marked in the inbox
    /// (in-app).
    pub read_at: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Reads one notification of `tenant_id`.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query_as!(
        Notification,
        r#"select id as "id: NotificationId", channel as "channel: Channel", recipient,
                content as "content: Json<Value>", metadata as "metadata: Json<Value>",
                status as "status: NotificationStatus", attempts, max_attempts,
                provider_message_id, last_error, run_at, sent_at, delivered_at, read_at,
                created_at, updated_at
         from notifications where tenant_id = $1 and id = $2"#,
        tenant_id as _,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// The notifications one send request created, as `(id, channel, status)`,
/// the first (the request's own id) first.
#[tracing::instrument(skip_all)]
pub async fn of_send(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    send_id: NotificationId,
) -> Result<Vec<(NotificationId, Channel, NotificationStatus)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id as "id: NotificationId", channel as "channel: Channel",
                status as "status: NotificationStatus" from notifications
         where tenant_id = $1 and (send_id = $2 or id = $2) order by (id = $2) desc, id"#,
        tenant_id as _,
        send_id as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.channel, r.status))
        .collect())
}

/// One recorded attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: i32,
    /// What came of it.
    pub outcome: AttemptOutcome,
    /// Which provider was tried.
    pub provider: String,
    /// The provider's answer, e.g. the SMTP reply.
    pub provider_response: Option<String>,
    /// The provider's status code.
    pub response_code: Option<i32>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// How long the provider took.
    pub latency_ms: i32,
    /// When it ended.
    pub created_at: DateTime<Utc>,
}

/// The attempts of one notification of `tenant_id`, oldest first.
#[tracing::instrument(skip_all)]
pub async fn attempts(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as!(
        Attempt,
        r#"select attempt, outcome as "outcome: AttemptOutcome", provider, provider_response, response_code, error, latency_ms, created_at
         from delivery_attempts where tenant_id = $1 and notification_id = $2 order by attempt, id"#,
        tenant_id as _,
        id as _,
    )
    .fetch_all(db)
    .await
}

/// Marks rows of `tenants` as not in Redis (their push failed, the window
/// was full, or a worker handed their job back), so the dispatcher's next
/// sweep pushes them. Called through [`crate::outbox`], for any number of
/// jobs at once.
#[tracing::instrument(skip_all)]
pub async fn release_dispatch(
    db: impl PgExecutor<'_>,
    tenants: &[TenantId],
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    super::release_dispatched(
        db,
        "notifications",
        "status in ('queued', 'deferred')",
        tenants,
        ids,
    )
    .await
}

/// Marks queued rows of `tenant_id` as pushed by their caller, who pushes
/// them after the commit (through [`crate::outbox::Enqueued`], which calls
/// [`release_dispatch`] if that fails).
#[tracing::instrument(skip_all)]
pub async fn mark_dispatched(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update notifications set dispatched_at = now()
         where tenant_id = $1 and id = any($2) and status = 'queued'",
        tenant_id as _,
        ids as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A row a worker now holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Its id.
    pub id: NotificationId,
    /// Its recipient.
    pub recipient: String,
    /// Its content.
    pub content: Json<Value>,
    /// This attempt's number.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The subscriber it is for (always for in-app).
    pub subscriber_id: Option<SubscriberId>,
    /// Its category.
    pub category: Option<String>,
    /// Whether it ignores preferences and quiet hours.
    pub critical: bool,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
}

/// Claims the due, queued rows among `ids` for one attempt, holding them for
/// `lease`. Rows already claimed, finished or not yet due are skipped, so a
/// duplicate job claims nothing.
#[tracing::instrument(skip_all)]
pub async fn claim(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[NotificationId],
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"update notifications
         set status = 'sending', attempts = attempts + 1, dispatched_at = null,
             run_at = now() + make_interval(secs => $3)
         where tenant_id = $1 and id = any($2) and status in ('queued', 'deferred') and run_at <= now()
           and attempts < max_attempts
         returning id as "id: NotificationId", recipient, content as "content: Json<Value>", attempts,
                   max_attempts, subscriber_id as "subscriber_id: SubscriberId", category, critical,
                   created_at"#,
        tenant_id as _,
        ids as _,
        lease.as_secs_f64(),
    )
    .fetch_all(db)
    .await
}

/// Whether the worker that claimed attempt `attempt` of a row still holds
/// it: the row is still `sending` with that attempt, not cancelled (or
/// failed, or taken over after the lease ran out) since. Asked right before
/// a provider is called.
#[tracing::instrument(skip_all)]
pub async fn still_claimed(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
    attempt: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from notifications
                        where tenant_id = $1 and id = $2 and status = 'sending' and attempts = $3) as "exists!""#,
        tenant_id as _,
        id as _,
        attempt,
    )
    .fetch_one(db)
    .await
}

/// What [`cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It had not reached a provider and is now `cancelled`.
    Done,
    /// It is already finished (sent, failed, …): this status.
    TooLate(NotificationStatus),
    /// No such notification for this tenant.
    NotFound,
}

/// Cancels a notification of `tenant_id` that has not gone out yet
/// (queued, deferred, scheduled, or held by a worker: `sending`). A worker
/// holding it sees the cancel before it calls a provider and stops; only a
/// provider that already has it can still accept it (the row then ends
/// `sent`).
#[tracing::instrument(skip_all)]
pub async fn cancel(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    id: NotificationId,
) -> Result<Cancelled, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications set status = 'cancelled', dispatched_at = null,
             last_error = 'cancelled by the sender'
         where tenant_id = $1 and id = $2 and status in ('queued', 'deferred', 'sending')",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Cancelled::Done);
    }
    let status = super::status_owned(&mut *db, "notifications", tenant_id, id).await?;
    Ok(status.map_or(Cancelled::NotFound, Cancelled::TooLate))
}

/// The error recorded for an attempt whose worker vanished.
pub const LOST_WORKER: &str = "the worker stopped during the attempt; the outcome is unknown";

/// Puts back rows of `channel` whose claim's lease ran out (their worker
/// died or hung): they are queued again, or `failed` if that was their last
/// attempt, and the lost attempt is recorded. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn recover_expired_leases(
    db: impl PgExecutor<'_>,
    channel: Channel,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "with lost as (
             update notifications
             set status = case when attempts >= max_attempts then 'failed' else 'queued' end,
                 last_error = $2, run_at = now(), dispatched_at = null
             where id in (
                 select id from notifications
                 where channel = $1 and stage = 1 and status = 'sending' and run_at <= now()
                 order by run_at limit 1000
                 for update skip locked)
             returning id, tenant_id, attempts, status
         )
         insert into delivery_attempts
             (tenant_id, notification_id, attempt, outcome, provider, error, latency_ms, worker)
         select tenant_id, id, attempts, case status when 'failed' then 'failed' else 'retry' end,
                'unknown', $2, 0, 'dispatcher'
         from lost",
        channel as _,
        LOST_WORKER,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Picks up to `limit` due rows of `channel` that are not in Redis (never
/// pushed, or pushed longer than `redispatch_after` ago and still unclaimed)
/// and marks them pushed. Concurrent dispatchers pick disjoint rows. Works
/// across tenants; the result is ordered by tenant so callers can group it.
#[tracing::instrument(skip_all)]
pub async fn take_due(
    db: impl PgExecutor<'_>,
    channel: Channel,
    limit: usize,
    redispatch_after: Duration,
) -> Result<Vec<(TenantId, NotificationId)>, sqlx::Error> {
    sqlx::query!(
        r#"with due as (
             select id from notifications
             where channel = $1 and stage = 1 and status in ('queued', 'deferred') and run_at <= now()
               and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $2))
             order by run_at
             limit $3
             for update skip locked
         )
         update notifications n set dispatched_at = now()
         from due where n.id = due.id
         returning n.tenant_id as "tenant_id: TenantId", n.id as "id: NotificationId""#,
        channel as _,
        redispatch_after.as_secs_f64(),
        limit as i64,
    )
    .fetch_all(db)
    .await
    .map(|rows| {
        let mut rows: Vec<(TenantId, NotificationId)> =
            rows.into_iter().map(|r| (r.tenant_id, r.id)).collect();
        rows.sort_unstable();
        rows
    })
}

/// Forgets that queued rows of `channel` were pushed, after Redis lost its
/// data; the next sweep pushes them again. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(
    db: impl PgExecutor<'_>,
    channel: Channel,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications set dispatched_at = null
         where channel = $1 and stage = 1 and status in ('queued', 'deferred')
           and dispatched_at is not null",
        channel as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Erases the content and metadata of up to `limit` finished notifications
/// older than `days`. Status, attempts and timestamps stay. In-app messages
/// still in a user's inbox are the user's to keep; they are erased once the
/// user deletes them. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn redact_expired_content(
    db: impl PgExecutor<'_>,
    days: u32,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications
         set content = '{}'::jsonb, metadata = '{}'::jsonb, content_redacted_at = now()
         where id in (
             select id from notifications
             where stage in (2, 3) and content_redacted_at is null
               and created_at < now() - make_interval(days => $1)
               and updated_at < now() - make_interval(days => $1)
             limit $2
             for update skip locked)",
        days as i32,
        limit,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
