//! Organisations' webhook endpoints and the deliveries to them (see
//! [`crate::webhooks`]).
//!
//! An endpoint's signing secret is stored sealed; this module never sees it
//! in the clear. A delivery row is the unit of work of the `webhook` queue,
//! with the same life as a notification:
//!
//! ```text
//! queued ──claim──▶ sending ──▶ delivered
//!   ▲                  │  └────▶ failed   (out of attempts, or its endpoint was disabled)
//!   └── retry (run_at = now + backoff) ◀┘
//! ```
//!
//! A worker [`claim`]s rows before the HTTP call, with a lease that ends at
//! `run_at`; a duplicate job finds nothing to claim, and a row whose worker
//! died is put back by [`recover_expired_leases`]. A delivery that fails its
//! last attempt counts against its endpoint, which is disabled after enough
//! of them in a row ([`record_attempt`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, types::Json};
use uuid::Uuid;

use crate::{
    crypto::Sealed,
    domain::{NotificationId, TenantId, WebhookEndpointId},
    webhooks::WebhookEvent,
};

/// An endpoint as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    /// Its id.
    pub id: WebhookEndpointId,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The organisation's note about it.
    pub description: String,
    /// The events it hears about.
    pub events: Vec<String>,
    /// Which key sealed the secret.
    pub key_id: String,
    /// The sealed signing secret.
    pub secret_ciphertext: Vec<u8>,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// Deliveries in a row that failed their last attempt.
    pub consecutive_failures: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// The sealed signing secret.
    pub fn sealed(&self) -> Sealed {
        Sealed {
            key_id: self.key_id.clone(),
            bytes: self.secret_ciphertext.clone(),
        }
    }
}

/// An endpoint's fields an administrator sets.
#[derive(Debug, Clone)]
pub struct EndpointWrite<'a> {
    /// Where deliveries go.
    pub url: &'a str,
    /// A note.
    pub description: &'a str,
    /// The events it hears about (names of [`WebhookEvent`]s).
    pub events: Vec<String>,
    /// Whether deliveries go to it.
    pub enabled: bool,
}

const COLUMNS: &str = "id, url, description, events, key_id, secret_ciphertext, enabled, disabled_reason, \
                       consecutive_failures, created_at, updated_at";

/// The reason recorded when an administrator turns an endpoint off.
pub const DISABLED_BY_ADMIN: &str = "disabled by an administrator";

/// Creates an endpoint with the given id (the id is part of the secret's
/// associated data, so the caller picks it before sealing).
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: WebhookEndpointId,
    new: EndpointWrite<'_>,
    secret: &Sealed,
) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        r#"insert into webhook_endpoints
             (id, tenant_id, url, description, events, enabled, disabled_reason, key_id, secret_ciphertext)
         values ($1, $2, $3, $4, $5, $6, case when $6 then null else $9 end, $7, $8)
         returning id as "id: WebhookEndpointId", url, description, events, key_id, secret_ciphertext,
             enabled, disabled_reason, consecutive_failures, created_at, updated_at"#,
        id.0,
        tenant_id.0,
        new.url,
        new.description,
        &new.events,
        new.enabled,
        &secret.key_id,
        &secret.bytes,
        DISABLED_BY_ADMIN,
    )
    .fetch_one(db)
    .await
}

super::owned_rows! {
    "webhook_endpoints", id: WebhookEndpointId;
    /// How many endpoints `tenant_id` has.
    count;
    /// One endpoint of `tenant_id`.
    get -> Endpoint, COLUMNS;
    /// Deletes an endpoint and its deliveries.
    delete;
}

/// The endpoints of `tenant_id`, oldest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        r#"select id as "id: WebhookEndpointId", url, description, events, key_id, secret_ciphertext,
             enabled, disabled_reason, consecutive_failures, created_at, updated_at
         from webhook_endpoints where tenant_id = $1 order by created_at, id"#,
        tenant_id.0,
    )
    .fetch_all(db)
    .await
}

/// Replaces an endpoint's fields. Enabling it clears its disabled reason and
/// failure count; disabling it records [`DISABLED_BY_ADMIN`] and fails its
/// queued deliveries.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: WebhookEndpointId,
    new: EndpointWrite<'_>,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        r#"with changed as (
             update webhook_endpoints
             set url = $3, description = $4, events = $5, enabled = $6,
                 disabled_reason = case when $6 then null when enabled then $7 else disabled_reason end,
                 consecutive_failures = case when $6 and not enabled then 0 else consecutive_failures end
             where tenant_id = $1 and id = $2
             returning id, url, description, events, key_id, secret_ciphertext, enabled,
                 disabled_reason, consecutive_failures, created_at, updated_at
         ),
         dropped as (
             update webhook_deliveries d set status = 'failed', last_error = 'the endpoint was disabled',
                 dispatched_at = null
             from changed c
             where not c.enabled and d.tenant_id = $1 and d.endpoint_id = c.id and d.status = 'queued'
         )
         select id as "id!: WebhookEndpointId", url as "url!", description as "description!", events as "events!",
             key_id as "key_id!", secret_ciphertext as "secret_ciphertext!", enabled as "enabled!",
             disabled_reason as "disabled_reason?", consecutive_failures as "consecutive_failures!",
             created_at as "created_at!", updated_at as "updated_at!"
         from changed"#,
        tenant_id.0,
        id.0,
        new.url,
        new.description,
        &new.events,
        new.enabled,
        DISABLED_BY_ADMIN,
    )
    .fetch_optional(db)
    .await
}

/// Replaces an endpoint's secret.
#[tracing::instrument(skip_all)]
pub async fn set_secret(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: WebhookEndpointId,
    secret: &Sealed,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update webhook_endpoints set key_id = $3, secret_ciphertext = $4 where tenant_id = $1 and id = $2",
        tenant_id.0,
        id.0,
        &secret.key_id,
        &secret.bytes,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Queues one delivery of `event` about a notification to each enabled
/// endpoint of `tenant_id` that subscribed to it, and returns their ids. Run
/// it in the transaction that changes the notification's status: the payload
/// is a snapshot of the row (ids, channel, status, provider, the caller's
/// metadata, and the error with the recipient blanked out), never its content
/// or recipient. The rows are marked pushed: the caller pushes their job after
/// the commit through [`crate::outbox::Enqueued`], which releases them if
/// that push fails.
#[tracing::instrument(skip_all)]
pub async fn enqueue_for_notification(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    notification_id: NotificationId,
    event: WebhookEvent,
    max_attempts: u32,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "with targets as (
             select gen_random_uuid() as id, e.id as endpoint_id
             from webhook_endpoints e
             where e.tenant_id = $1 and e.enabled and $3 = any(e.events)
         )
         insert into webhook_deliveries
             (id, tenant_id, endpoint_id, event, notification_id, max_attempts, dispatched_at, payload)
         select t.id, $1, t.endpoint_id, $3, n.id, $4, now(),
                jsonb_build_object(
                    'id', t.id,
                    'type', $3,
                    'created_at', to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    'data', jsonb_build_object(
                        'notification_id', n.id,
                        'channel', n.channel,
                        'status', n.status,
                        'provider', (select a.provider from delivery_attempts a
                                     where a.tenant_id = $1 and a.notification_id = n.id and a.outcome <> 'failover'
                                     order by a.attempt desc, a.id desc limit 1),
                        'provider_message_id', n.provider_message_id,
                        'error', replace(n.last_error, n.recipient, '[recipient]'),
                        'metadata', n.metadata))
         from targets t
         join notifications n on n.tenant_id = $1 and n.id = $2
         returning id",
        tenant_id.0,
        notification_id.0,
        event.as_str(),
        max_attempts.max(1) as i32,
    )
    .fetch_all(tx)
    .await
}

/// The deliveries whose job may be in Redis.
const QUEUED: &str = "status = 'queued'";

/// Marks deliveries of `tenants` as not in Redis (their push failed, the
/// window was full, or a worker handed their job back), so the dispatcher's
/// next sweep pushes them. Called through [`crate::outbox`].
#[tracing::instrument(skip_all)]
pub async fn release_dispatch(
    db: impl PgExecutor<'_>,
    tenants: &[TenantId],
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    super::release_dispatched(db, "webhook_deliveries", QUEUED, tenants, ids).await
}

/// A delivery a worker now holds, with what it needs to make the call.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id (also the event's `id` and `Webhook-Id`).
    pub id: Uuid,
    /// Its endpoint.
    pub endpoint_id: WebhookEndpointId,
    /// This attempt's number.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The body to POST.
    pub payload: Json<Value>,
    /// The endpoint's URL.
    pub url: String,
    /// Which key sealed the endpoint's secret.
    pub key_id: String,
    /// The endpoint's sealed secret.
    pub secret_ciphertext: Vec<u8>,
}

impl Claimed {
    /// The endpoint's sealed secret.
    pub fn sealed(&self) -> Sealed {
        Sealed {
            key_id: self.key_id.clone(),
            bytes: self.secret_ciphertext.clone(),
        }
    }
}

/// Claims the due, queued deliveries among `ids` whose endpoint is enabled,
/// for one attempt, holding them for `lease`. Rows already claimed, finished
/// or not yet due are skipped, so a duplicate job claims nothing.
#[tracing::instrument(skip_all)]
pub async fn claim(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[Uuid],
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"update webhook_deliveries d
         set status = 'sending', attempts = d.attempts + 1, dispatched_at = null,
             run_at = now() + make_interval(secs => $3)
         from webhook_endpoints e
         where d.tenant_id = $1 and d.id = any($2) and d.status = 'queued' and d.run_at <= now()
           and d.attempts < d.max_attempts
           and e.tenant_id = $1 and e.id = d.endpoint_id and e.enabled
         returning d.id, d.endpoint_id as "endpoint_id: WebhookEndpointId", d.attempts, d.max_attempts, d.payload as "payload: Json<Value>",
             e.url, e.key_id, e.secret_ciphertext"#,
        tenant_id.0,
        ids as &[Uuid],
        lease.as_secs_f64(),
    )
    .fetch_all(db)
    .await
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// Its status code.
        code: u16,
    },
    /// It failed; try again after `after`.
    Retry {
        /// The endpoint's status code, if it answered.
        code: Option<u16>,
        /// What went wrong.
        error: String,
        /// The backoff.
        after: Duration,
    },
    /// It failed its last attempt.
    Failed {
        /// The endpoint's status code, if it answered.
        code: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// What [`record_attempt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The claim was lost meanwhile (its lease ran out); nothing was written.
    Lost,
    /// Written.
    Written,
    /// Written, and the endpoint is now disabled: its queued deliveries
    /// were failed.
    EndpointDisabled,
}

/// Records an attempt of a delivery this worker claimed and moves it on,
/// with its endpoint's failure count, in one transaction. A delivered row
/// resets the count; a row failing its last attempt adds one, and at
/// `disable_after` failures in a row the endpoint is disabled with a reason.
#[tracing::instrument(skip_all)]
pub async fn record_attempt(
    pool: &PgPool,
    tenant_id: TenantId,
    id: Uuid,
    attempt: i32,
    outcome: &DeliveryOutcome,
    disable_after: u32,
) -> Result<Recorded, sqlx::Error> {
    let (status, delay, code, error) = match outcome {
        DeliveryOutcome::Delivered { code } => ("delivered", 0.0, Some(*code), None),
        DeliveryOutcome::Retry { code, error, after } => {
            ("queued", after.as_secs_f64(), *code, Some(error.as_str()))
        }
        DeliveryOutcome::Failed { code, error } => ("failed", 0.0, *code, Some(error.as_str())),
    };
    let mut tx = pool.begin().await?;
    let endpoint: Option<Uuid> = sqlx::query_scalar!(
        "update webhook_deliveries
         set status = $4, run_at = now() + make_interval(secs => $5), dispatched_at = null,
             last_status_code = $6, last_error = $7,
             delivered_at = case when $4 = 'delivered' then now() else delivered_at end
         where tenant_id = $1 and id = $2 and status = 'sending' and attempts = $3
         returning endpoint_id",
        tenant_id.0,
        id,
        attempt,
        status,
        delay,
        code.map(i32::from),
        error,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(endpoint_id) = endpoint else {
        return Ok(Recorded::Lost);
    };
    let mut recorded = Recorded::Written;
    match outcome {
        DeliveryOutcome::Delivered { .. } => {
            sqlx::query!(
                "update webhook_endpoints set consecutive_failures = 0
                 where tenant_id = $1 and id = $2 and consecutive_failures <> 0",
                tenant_id.0,
                endpoint_id,
            )
            .execute(&mut *tx)
            .await?;
        }
        DeliveryOutcome::Retry { .. } => {}
        DeliveryOutcome::Failed { .. } => {
            let disabled: Option<bool> = sqlx::query_scalar!(
                r#"update webhook_endpoints
                 set consecutive_failures = consecutive_failures + 1,
                     enabled = enabled and consecutive_failures + 1 < $3,
                     disabled_reason = case when enabled and consecutive_failures + 1 >= $3
                         then format('disabled after %s deliveries in a row failed their last attempt',
                                     consecutive_failures + 1)
                         else disabled_reason end
                 where tenant_id = $1 and id = $2
                 returning not enabled as "disabled!""#,
                tenant_id.0,
                endpoint_id,
                disable_after.max(1) as i32,
            )
            .fetch_optional(&mut *tx)
            .await?;
            if disabled == Some(true) {
                sqlx::query!(
                    "update webhook_deliveries set status = 'failed', last_error = 'the endpoint was disabled',
                         dispatched_at = null
                     where tenant_id = $1 and endpoint_id = $2 and status = 'queued'",
                    tenant_id.0,
                    endpoint_id,
                )
                .execute(&mut *tx)
                .await?;
                recorded = Recorded::EndpointDisabled;
            }
        }
    }
    tx.commit().await?;
    Ok(recorded)
}

/// The error recorded for an attempt whose worker vanished.
pub const LOST_WORKER: &str = "the worker stopped during the attempt; the outcome is unknown";

/// Puts back deliveries whose claim's lease ran out (their worker died or
/// hung): queued again at once, or `failed` if that was their last attempt.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn recover_expired_leases(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update webhook_deliveries
         set status = case when attempts >= max_attempts then 'failed' else 'queued' end,
             last_error = $1, run_at = now(), dispatched_at = null
         where id in (
             select id from webhook_deliveries
             where status = 'sending' and run_at <= now()
             order by run_at limit 1000
             for update skip locked)",
        LOST_WORKER,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Picks up to `limit` due deliveries to enabled endpoints that are not in
/// Redis (never pushed, or pushed longer than `redispatch_after` ago and
/// still unclaimed) and marks them pushed. Concurrent dispatchers pick
/// disjoint rows. Works across tenants; the result is ordered by tenant so
/// callers can group it.
#[tracing::instrument(skip_all)]
pub async fn take_due(
    db: impl PgExecutor<'_>,
    limit: usize,
    redispatch_after: Duration,
) -> Result<Vec<(TenantId, Uuid)>, sqlx::Error> {
    sqlx::query!(
        r#"with due as (
             select d.id from webhook_deliveries d
             join webhook_endpoints e on e.id = d.endpoint_id and e.enabled
             where d.status = 'queued' and d.run_at <= now()
               and (d.dispatched_at is null or d.dispatched_at < now() - make_interval(secs => $1))
             order by d.run_at
             limit $2
             for update of d skip locked
         )
         update webhook_deliveries d set dispatched_at = now()
         from due where d.id = due.id
         returning d.tenant_id as "tenant_id: TenantId", d.id"#,
        redispatch_after.as_secs_f64(),
        limit as i64,
    )
    .fetch_all(db)
    .await
    .map(|rows| {
        let mut rows: Vec<(TenantId, Uuid)> =
            rows.into_iter().map(|r| (r.tenant_id, r.id)).collect();
        rows.sort_unstable();
        rows
    })
}

/// Forgets that queued deliveries were pushed, after Redis lost its data.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    super::forget_dispatched(db, "webhook_deliveries", QUEUED).await
}

/// A delivery as its tenant sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id (the event's `id`).
    pub id: Uuid,
    /// The event.
    pub event: String,
    /// The notification it is about.
    pub notification_id: Option<Uuid>,
    /// `queued`, `sending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The endpoint's last status code.
    pub last_status_code: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the next attempt is due (while queued).
    pub run_at: DateTime<Utc>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The `limit` most recent deliveries to an endpoint of `tenant_id`, newest
/// first.
#[tracing::instrument(skip_all)]
pub async fn recent_deliveries(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    endpoint_id: WebhookEndpointId,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as!(
        Delivery,
        "select id, event, notification_id, status, attempts, max_attempts, last_status_code, last_error,
                run_at, delivered_at, created_at, updated_at
         from webhook_deliveries where tenant_id = $1 and endpoint_id = $2
         order by created_at desc, id desc limit $3",
        tenant_id.0,
        endpoint_id.0,
        limit,
    )
    .fetch_all(db)
    .await
}

/// The events any enabled endpoint of `tenant_id` subscribes to, by name.
/// Workers read it once per job so sends no endpoint listens for are recorded
/// without a transaction of their own.
#[tracing::instrument(skip_all)]
pub async fn subscribed_events(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select distinct unnest(events) as "event!" from webhook_endpoints
         where tenant_id = $1 and enabled"#,
        tenant_id.0,
    )
    .fetch_all(db)
    .await
}
