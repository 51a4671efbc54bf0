//! What providers reported after they accepted a message (see
//! [`crate::callbacks`]): each accepted event is one `provider_events` row,
//! and moves its notification forward when
//! [`NotificationStatus::after_report`] allows it.
//!
//! An event is recorded once: a repeated callback finds its key taken and
//! changes nothing. Events are always looked up within the tenant whose
//! provider config received them, so another organisation's message ids
//! match nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::{
    callbacks::{ReportedEvent, Target},
    domain::{NotificationId, NotificationStatus, ProviderId, TenantId},
    providers::ProviderKind,
};

/// What [`record`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// No notification of the tenant on the provider's channel matches it;
    /// nothing was written.
    Unmatched,
    /// The same event was recorded before; nothing was written.
    Repeated,
    /// Recorded, but the notification's status stays (a late or redundant
    /// report).
    Unchanged,
    /// Recorded, and the notification moved to this status.
    Moved(NotificationId, NotificationStatus),
}

/// Records one event reported through provider config `provider_id` of
/// `tenant_id` and moves its notification forward. Run it in a transaction:
/// the notification is locked until the commit, so concurrent reports about
/// one message apply one after the other.
#[tracing::instrument(skip_all)]
pub async fn record(
    db: &mut PgConnection,
    tenant_id: TenantId,
    provider_id: ProviderId,
    provider: ProviderKind,
    event: &ReportedEvent,
) -> Result<Recorded, sqlx::Error> {
    let channel = provider.channel();
    let found: Option<(NotificationId, NotificationStatus)> = match &event.target {
        Target::Notification(id) => sqlx::query!(
            r#"select id as "id: NotificationId", status as "status: NotificationStatus"
             from notifications
             where tenant_id = $1 and channel = $2 and id = $3
             for update"#,
            tenant_id.0,
            channel as _,
            id,
        )
        .fetch_optional(&mut *db)
        .await?
        .map(|r| (r.id, r.status)),
        Target::MessageId(message_id) => sqlx::query!(
            r#"select id as "id: NotificationId", status as "status: NotificationStatus"
             from notifications
             where tenant_id = $1 and channel = $2 and channel <> 'inapp' and provider_message_id = $3
             order by created_at desc limit 1
             for update"#,
            tenant_id.0,
            channel as _,
            message_id,
        )
        .fetch_optional(&mut *db)
        .await?
        .map(|r| (r.id, r.status)),
    };
    let Some((id, status)) = found else {
        return Ok(Recorded::Unmatched);
    };
    let next = status.after_report(event.report);
    let inserted: Option<i64> = sqlx::query_scalar!(
        "insert into provider_events
             (tenant_id, notification_id, provider_id, provider, event_key, event, status,
              provider_message_id, error_code, occurred_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (tenant_id, provider, event_key) do nothing
         returning id",
        tenant_id.0,
        id.0,
        provider_id.0,
        provider as _,
        &event.key,
        &event.event,
        next as _,
        event.provider_message_id.as_deref(),
        event.error_code.as_deref(),
        event.occurred_at,
    )
    .fetch_optional(&mut *db)
    .await?;
    if inserted.is_none() {
        return Ok(Recorded::Repeated);
    }
    let Some(next) = next else {
        return Ok(Recorded::Unchanged);
    };
    sqlx::query!(
        "update notifications
         set status = $3,
             delivered_at = case when $3 in ('delivered', 'read')
                                 then coalesce(delivered_at, $4, now()) else delivered_at end,
             read_at = case when $3 = 'read' then coalesce(read_at, $4, now()) else read_at end,
             last_error = case when $3 in ('failed', 'bounced') then $5 else last_error end
         where tenant_id = $1 and id = $2",
        tenant_id.0,
        id.0,
        next as _,
        event.occurred_at,
        event.error.as_deref(),
    )
    .execute(&mut *db)
    .await?;
    Ok(Recorded::Moved(id, next))
}

/// Records that the subscriber of `tenant_id` whose WhatsApp number is
/// `number` (E.164) wrote to the organisation at `at` (never later than now;
/// an earlier message does not move the time back). Returns how many
/// subscribers matched.
#[tracing::instrument(skip_all)]
pub async fn record_whatsapp_inbound(
    db: &mut PgConnection,
    tenant_id: TenantId,
    number: &str,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update subscribers
         set whatsapp_last_inbound_at = greatest(whatsapp_last_inbound_at, least($3::timestamptz, now()))
         where tenant_id = $1 and whatsapp = $2",
        tenant_id.0,
        number,
        at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// When the person with WhatsApp number `number` (E.164) last wrote to the
/// organisation, as far as its callbacks have told; `None` when unknown.
#[tracing::instrument(skip_all)]
pub async fn last_whatsapp_inbound(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: TenantId,
    number: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select max(whatsapp_last_inbound_at) from subscribers
         where tenant_id = $1 and whatsapp = $2",
        tenant_id.0,
        number,
    )
    .fetch_one(db)
    .await
}
