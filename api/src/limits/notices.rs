//! Send-quota notices: when a send takes a quota past 80%, or a quota first
//! refuses a send, in its period. The counting script says which send did
//! it (a flag per quota and period, set once); that replica then raises the
//! notice in Postgres: a notice row keyed by organisation, quota, period
//! and kind, the `quota.warning` / `quota.exceeded` webhook deliveries to
//! the organisation's subscribed endpoints and an audit row, in one
//! transaction that only the first insert of the row completes. So each
//! notice goes out once per period even if Redis forgets its flag. When
//! Postgres cannot take it, the flag is dropped again so the next send that
//! qualifies tries again.

use chrono::{DateTime, Utc};
use shared::db::{
    audit,
    limits::Quota,
    quota_notices::{self, Kind, Notice},
};

use super::{Limiter, Period, WARNING_SHARE};
use shared::domain::TenantId;

/// The `kind` notice of quota `q` for the period holding `now`, `used`
/// being the count the script saw.
pub(super) fn notice(
    q: &Quota,
    period: Period,
    now: DateTime<Utc>,
    used: i64,
    kind: Kind,
) -> Notice<'_> {
    Notice {
        kind,
        channel: &q.channel,
        period: period.as_str(),
        period_start: period.start(now),
        quota: q.quota,
        used,
        resets_at: period.end(now),
    }
}

impl Limiter {
    /// Raises `notice` of `tenant` ([`notice`]); `flag` is the script's
    /// once-per-period flag for it.
    pub(super) async fn notify(
        &self,
        tenant: TenantId,
        request_id: Option<&str>,
        notice: Notice<'_>,
        flag: String,
    ) {
        let kind = notice.kind;
        let raised = self.raise(tenant, request_id, &notice);
        match shared::db::scope::tenant(tenant, raised).await {
            Ok(true) => {
                if kind == Kind::Warning {
                    metrics::counter!("send_quota_warnings_total", "channel" => notice.channel.to_owned(), "period" => notice.period.to_owned())
                        .increment(1);
                }
                tracing::info!(%tenant, channel = %notice.channel, period = notice.period, notice = kind.as_str(), "send quota notice raised");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, notice = kind.as_str(), "cannot raise a send quota notice; the next send tries again");
                let mut conn = self.conn.clone();
                let dropped = tokio::time::timeout(
                    self.config.redis_timeout(),
                    redis::cmd("DEL").arg(&flag).query_async::<i64>(&mut conn),
                )
                .await;
                if !matches!(dropped, Ok(Ok(_))) {
                    tracing::warn!("cannot drop a send quota notice's flag");
                }
            }
        }
    }

    /// The notice row, its webhook deliveries and its audit row, in one
    /// transaction; false when the notice was raised before this period.
    async fn raise(
        &self,
        tenant: TenantId,
        request_id: Option<&str>,
        notice: &Notice<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let recorded =
            quota_notices::record(&mut *tx, tenant, notice, self.webhook_attempts).await?;
        if !recorded.raised {
            return Ok(false);
        }
        let action = match notice.kind {
            Kind::Warning => "quota.warning",
            Kind::Exceeded => "quota.exceeded",
        };
        let mut details = serde_json::json!({
            "channel": notice.channel,
            "period": notice.period,
            "quota": notice.quota,
            "used": notice.used,
            "webhook_deliveries": recorded.deliveries,
        });
        if notice.kind == Kind::Warning {
            details["share"] = serde_json::json!(WARNING_SHARE);
        }
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant_id: Some(tenant),
                actor: "system",
                action,
                resource_type: "organization",
                resource_id: Some(tenant.to_string()),
                result: "success",
                request_id,
                details,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
