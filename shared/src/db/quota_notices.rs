//! Send-quota notices: the `quota.warning` (80% used) and `quota.exceeded`
//! (first refusal) webhook events, each at most once per organisation,
//! quota and period. A notice row keyed by (organisation, channel, period,
//! period start, kind) is inserted in the same statement that queues its
//! webhook deliveries, so however many API replicas see the crossing, only
//! the one whose insert lands queues them.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;

use crate::{domain::TenantId, webhooks::WebhookEvent};

/// Which notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 80% of the quota is used.
    Warning,
    /// A send was refused: the quota is used up.
    Exceeded,
}

impl Kind {
    /// `warning` or `exceeded`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Warning => "warning",
            Kind::Exceeded => "exceeded",
        }
    }

    /// The webhook event it raises.
    pub fn event(self) -> WebhookEvent {
        match self {
            Kind::Warning => WebhookEvent::QuotaWarning,
            Kind::Exceeded => WebhookEvent::QuotaExceeded,
        }
    }
}

/// One notice about one quota in one period.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Which notice.
    pub kind: Kind,
    /// The channel counted.
    pub channel: &'a str,
    /// `day` or `month`.
    pub period: &'a str,
    /// The first day of the period (UTC).
    pub period_start: NaiveDate,
    /// Notifications allowed per period.
    pub quota: i64,
    /// Notifications counted this period when the notice was raised.
    pub used: i64,
    /// When the period ends.
    pub resets_at: DateTime<Utc>,
}

/// What [`record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Whether this call raised the notice (false: it was raised before in
    /// this period).
    pub raised: bool,
    /// Webhook deliveries queued (one per enabled endpoint subscribed to the
    /// event).
    pub deliveries: u64,
}

/// Raises `notice` for `tenant_id` unless it was raised this period, and
/// then queues one webhook delivery of its event to each enabled endpoint
/// of the organisation subscribed to it, all in one statement. The
/// dispatcher pushes the deliveries. The payload names the quota, its limit,
/// what was used and when it resets: never a recipient or content.
#[tracing::instrument(skip_all)]
pub async fn record(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    notice: &Notice<'_>,
    max_attempts: u32,
) -> Result<Recorded, sqlx::Error> {
    let event = notice.kind.event().as_str();
    let data = serde_json::json!({
        "quota": format!("quota:{}:{}", notice.channel, notice.period),
        "channel": notice.channel,
        "period": notice.period,
        "limit": notice.quota,
        "used": notice.used,
        "resets_at": notice.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let counts = sqlx::query!(
        r#"with notice as (
             insert into quota_notices (tenant_id, channel, period, period_start, kind, quota, used)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict do nothing
             returning 1
         ), queued as (
             insert into webhook_deliveries (id, tenant_id, endpoint_id, event, max_attempts, payload)
             select t.id, $1, t.endpoint_id, $8, $9,
                    jsonb_build_object(
                        'id', t.id,
                        'type', $8,
                        'created_at', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        'data', $10::jsonb)
             from (select gen_random_uuid() as id, e.id as endpoint_id
                   from webhook_endpoints e
                   where e.tenant_id = $1 and e.enabled and $8 = any(e.events)
                     and exists (select 1 from notice)) t
             returning 1
         )
         select (select count(*) from notice) as "raised!", (select count(*) from queued) as "deliveries!""#,
        tenant_id.0,
        notice.channel,
        notice.period,
        notice.period_start,
        notice.kind.as_str(),
        notice.quota,
        notice.used,
        event,
        max_attempts.max(1) as i32,
        &data,
    )
    .fetch_one(db)
    .await?;
    let (raised, deliveries) = (counts.raised, counts.deliveries);
    Ok(Recorded {
        raised: raised > 0,
        deliveries: deliveries.max(0) as u64,
    })
}
