//! Operators' search and a notification's timeline.
//!
//! Search finds notifications, batches, bulk jobs and subscribers by an id,
//! an idempotency key or a subscriber's external id, within a [`Reach`]
//! (an operator's: every organisation). Lookups by key use the per-tenant unique
//! indexes, one probe per organisation, so they stay cheap across tenants.
//!
//! The timeline is a notification's history, oldest first: accepted, each
//! delivery attempt, provider callbacks, webhook deliveries about it, its
//! status now. No recipient and no content are read.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::scope::Reach;
use crate::domain::{NotificationId, TenantId};

/// Most matches a search returns.
pub const MAX_MATCHES: i64 = 50;

/// One search match.
#[derive(Debug, Clone)]
pub struct Match {
    /// `notification`, `batch`, `bulk_job` or `subscriber`.
    pub kind: String,
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Its status, where it has one.
    pub status: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// What it is, without PHI.
    pub summary: String,
}

/// What `q` (an id, an idempotency key or a subscriber's external id)
/// finds within `reach`, newest first.
#[tracing::instrument(skip_all)]
pub async fn search(
    db: impl PgExecutor<'_>,
    reach: Reach,
    q: &str,
) -> Result<Vec<Match>, sqlx::Error> {
    let id = Uuid::parse_str(q).ok();
    sqlx::query_as!(
        Match,
        r#"with scope as (
             select id from tenants where $1::uuid is null or id = $1
         ),
         found as (
             select 'notification'::text as kind, n.id, n.tenant_id, n.status, n.created_at,
                    n.channel || ' notification, ' || n.status || ', ' || n.attempts || ' of '
                        || n.max_attempts || ' attempts' as summary
             from notifications n
             where n.id = $2 and ($1::uuid is null or n.tenant_id = $1)
             union all
             select 'notification', n.id, n.tenant_id, n.status, n.created_at,
                    n.channel || ' notification, ' || n.status || ', ' || n.attempts || ' of '
                        || n.max_attempts || ' attempts (idempotency key)'
             from scope s join notifications n on n.tenant_id = s.id and n.idempotency_key = $3
             union all
             select 'batch', b.id, b.tenant_id, b.status, b.created_at,
                    'batch of template ' || b.template_key || ' on ' || array_to_string(b.channels, ', ')
             from batches b
             where b.id = $2 and ($1::uuid is null or b.tenant_id = $1)
             union all
             select 'batch', b.id, b.tenant_id, b.status, b.created_at,
                    'batch of template ' || b.template_key || ' on ' || array_to_string(b.channels, ', ')
                        || ' (idempotency key)'
             from scope s join batches b on b.tenant_id = s.id and b.idempotency_key = $3
             union all
             select 'bulk_job', j.id, j.tenant_id, j.status, j.created_at,
                    'bulk CSV job of template ' || j.template_key || ', ' || j.rows_read || ' rows read, '
                        || j.rows_valid || ' valid'
             from bulk_jobs j
             where j.id = $2 and ($1::uuid is null or j.tenant_id = $1)
             union all
             select 'bulk_job', j.id, j.tenant_id, j.status, j.created_at,
                    'bulk CSV job of template ' || j.template_key || ', ' || j.rows_read || ' rows read, '
                        || j.rows_valid || ' valid (idempotency key)'
             from scope s join bulk_jobs j on j.tenant_id = s.id and j.idempotency_key = $3
             union all
             select 'subscriber', sub.id, sub.tenant_id, null, sub.created_at,
                    'subscriber (external id)'
             from scope s join subscribers sub on sub.tenant_id = s.id and sub.external_id = $3
             union all
             select 'subscriber', sub.id, sub.tenant_id, null, sub.created_at, 'subscriber'
             from subscribers sub
             where sub.id = $2 and ($1::uuid is null or sub.tenant_id = $1)
         )
         select distinct on (kind, id) kind as "kind!", id as "id!",
                tenant_id as "tenant_id!: TenantId", status, created_at as "created_at!",
                summary as "summary!"
         from found order by kind, id, summary
         limit $4"#,
        reach.param(),
        id,
        q,
        MAX_MATCHES,
    )
    .fetch_all(db)
    .await
    .map(|mut rows: Vec<Match>| {
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        rows
    })
}

/// A notification as its timeline shows it: no recipient, no content.
#[derive(Debug, Clone)]
pub struct Header {
    /// Its id.
    pub id: NotificationId,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Its channel.
    pub channel: String,
    /// Its status now.
    pub status: String,
    /// Attempts made in this round (a retry starts them again).
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was pushed to its queue, while it waits for a worker.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (while queued).
    pub run_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// The last error, with the recipient blanked out.
    pub last_error: Option<String>,
    /// Its class.
    pub error_class: Option<String>,
    /// When it failed, if it did.
    pub failed_at: Option<DateTime<Utc>>,
    /// When an operator discarded its failure.
    pub discarded_at: Option<DateTime<Utc>>,
    /// Its category.
    pub category: Option<String>,
    /// Its batch.
    pub batch_id: Option<Uuid>,
    /// Its bulk job.
    pub bulk_job_id: Option<Uuid>,
    /// When retention erased its content.
    pub content_redacted_at: Option<DateTime<Utc>>,
}

/// One delivery attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Its number within its round.
    pub attempt: i32,
    /// `sent`, `retry`, `failed`, `suppressed` or `failover`.
    pub outcome: String,
    /// The provider config tried.
    pub provider: String,
    /// The provider's status code.
    pub response_code: Option<i32>,
    /// The error, with the recipient blanked out.
    pub error: Option<String>,
    /// How long the provider took.
    pub latency_ms: i32,
    /// The worker.
    pub worker: String,
    /// When it ended.
    pub created_at: DateTime<Utc>,
}

/// One provider callback event.
#[derive(Debug, Clone)]
pub struct ProviderEventRow {
    /// `sendgrid`, `twilio` or `whatsapp`.
    pub provider: String,
    /// The provider's name of the event.
    pub event: String,
    /// The status it moved the notification to, if any.
    pub status: Option<String>,
    /// The provider's error code.
    pub error_code: Option<String>,
    /// When it happened at the provider.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// One webhook delivery about the notification.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Its id.
    pub id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The event.
    pub event: String,
    /// Its status.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The endpoint's last status code.
    pub last_status_code: Option<i32>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Everything a timeline is made of.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The notification.
    pub header: Header,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// Its provider events, oldest first.
    pub provider_events: Vec<ProviderEventRow>,
    /// Webhook deliveries about it, oldest first.
    pub webhooks: Vec<WebhookRow>,
}

/// The timeline of notification `id` within `reach`, or `None`.
#[tracing::instrument(skip_all)]
pub async fn timeline(
    db: &mut sqlx::PgConnection,
    reach: Reach,
    id: NotificationId,
) -> Result<Option<Timeline>, sqlx::Error> {
    let header: Option<Header> = sqlx::query_as!(
        Header,
        r#"select id as "id: NotificationId", tenant_id as "tenant_id: TenantId", channel, status, attempts,
                max_attempts, created_at, updated_at, dispatched_at, run_at, sent_at, delivered_at,
                provider_message_id,
                case when notification_error_class(last_error) = 'other'
                     then 'an unclassified error (its text is withheld)'
                     else replace(last_error, recipient, '[recipient]') end as "last_error?",
                error_class, failed_at, discarded_at, category, batch_id, bulk_job_id,
                content_redacted_at
         from notifications where id = $1 and ($2::uuid is null or tenant_id = $2)"#,
        id.0,
        reach.param(),
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(header) = header else {
        return Ok(None);
    };
    let attempts = sqlx::query_as!(
        AttemptRow,
        r#"select a.attempt, a.outcome, a.provider, a.response_code,
                case when notification_error_class(a.error) = 'other'
                     then 'an unclassified error (its text is withheld)'
                     else replace(a.error, n.recipient, '[recipient]') end as "error?",
                a.latency_ms, a.worker, a.created_at
         from delivery_attempts a join notifications n on n.id = a.notification_id
         where a.tenant_id = $1 and a.notification_id = $2
         order by a.created_at, a.id"#,
        header.tenant_id.0,
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    let provider_events = sqlx::query_as!(
        ProviderEventRow,
        "select provider, event, status, error_code, occurred_at, received_at
         from provider_events where tenant_id = $1 and notification_id = $2
         order by received_at, id",
        header.tenant_id.0,
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    let webhooks = sqlx::query_as!(
        WebhookRow,
        "select id, endpoint_id, event, status, attempts, last_status_code, created_at, delivered_at
         from webhook_deliveries where tenant_id = $1 and notification_id = $2
         order by created_at, id",
        header.tenant_id.0,
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(Some(Timeline {
        header,
        attempts,
        provider_events,
        webhooks,
    }))
}
