//! Alerts' outgoing calls (Slack, PagerDuty, webhooks) waiting to be made:
//! claimed with a lease so one scheduler makes each at a time, and finished
//! with the outcome of each attempt.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{AlertId, TenantId};

/// An outgoing call to make.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery.
    pub id: Uuid,
    /// The alert.
    pub alert_id: AlertId,
    /// `webhook`, `slack` or `pagerduty`.
    pub channel: String,
    /// The channel's spec.
    pub target: Value,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: String,
    /// Calls made before this one.
    pub attempts: i32,
    /// The transition's kind.
    pub kind: String,
    /// The alert's organisation.
    pub tenant_id: Option<TenantId>,
    /// The alert's subject.
    pub subject: String,
    /// The alert's severity.
    pub severity: String,
    /// The alert's summary.
    pub summary: String,
    /// The alert's status now.
    pub status: String,
    /// The rule's name.
    pub rule_name: String,
    /// When the transition happened.
    pub at: DateTime<Utc>,
}

/// Claims up to `limit` outgoing calls due at `now`, leased until `lease`
/// (a claim whose sender died is claimed again after it).
#[tracing::instrument(skip_all)]
pub async fn claim_outgoing(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    lease: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Outgoing>, sqlx::Error> {
    sqlx::query_as!(
        Outgoing,
        r#"with c as (
             update alert_deliveries set status = 'sending', run_at = $2
             where id in (select id from alert_deliveries
                          where status in ('queued', 'sending') and run_at <= $1
                          order by run_at limit $3 for update skip locked)
             returning id, alert_id, event_id, channel, target, action, attempts)
         select c.id as "id!", c.alert_id as "alert_id!: AlertId", c.channel as "channel!",
                c.target as "target!", c.action as "action!", c.attempts as "attempts!", e.kind,
                a.tenant_id as "tenant_id: TenantId", a.subject, a.severity, a.summary, a.status,
                r.name as rule_name, e.at
         from c join alert_events e on e.id = c.event_id join alerts a on a.id = c.alert_id
              join alert_rules r on r.id = a.rule_id"#,
        now,
        lease,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Records how a call ended: `sent`, `failed` for good, or `queued` again
/// at `retry_at`.
#[tracing::instrument(skip_all)]
pub async fn finish_outgoing(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: &str,
    response_status: Option<i32>,
    error: Option<&str>,
    at: DateTime<Utc>,
    retry_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update alert_deliveries set status = $2, attempts = attempts + 1,
             response_status = $3, last_error = left($4, 1000), run_at = $6,
             sent_at = case when $2 = 'sent' then $5::timestamptz end
         where id = $1",
        id,
        status,
        response_status,
        error,
        at,
        retry_at,
    )
    .execute(db)
    .await?;
    Ok(())
}
