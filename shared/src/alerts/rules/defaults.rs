//! The rules every organisation starts with, created once.

use super::*;
use crate::db::alert_rule_defaults;

/// The default rules: `(builtin key, spec)`. Each notifies the
/// organisation's admins in-app and by email at once.
pub fn defaults() -> Vec<(&'static str, RuleSpec)> {
    let admins = vec![Level {
        after_minutes: 0,
        channels: vec![ChannelSpec::InApp, ChannelSpec::Email],
    }];
    let spec =
        |name: &str, metric, scope: Value, threshold, window_secs, severity, cooldown| RuleSpec {
            name: name.to_owned(),
            metric,
            scope,
            threshold,
            window_secs,
            severity,
            cooldown_secs: cooldown,
            escalation: admins.clone(),
            enabled: true,
        };
    vec![
        (
            "high_failure_rate",
            spec(
                "High failure rate",
                Metric::FailureRate,
                json!({"min_events": 20}),
                25.0,
                900,
                Severity::Critical,
                1800,
            ),
        ),
        (
            "stuck_queue",
            spec(
                "Stuck queue",
                Metric::QueueOldestDueAge,
                json!({}),
                900.0,
                300,
                Severity::Warning,
                1800,
            ),
        ),
        (
            "breaker_open",
            spec(
                "Provider circuit breaker open",
                Metric::CircuitOpen,
                json!({}),
                1.0,
                60,
                Severity::Critical,
                900,
            ),
        ),
        (
            "baa_expiring",
            spec(
                "BAA expiring",
                Metric::BaaExpiring,
                json!({}),
                30.0,
                86_400,
                Severity::Warning,
                86_400,
            ),
        ),
    ]
}

/// Creates `tenant`'s default rules if it never had them; returns 1 if it
/// got them, else 0.
pub async fn ensure_defaults(
    db: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> Result<u64, sqlx::Error> {
    let fresh = alert_rule_defaults::claim(&mut *db, tenant).await?;
    insert_defaults(db, &fresh).await
}

/// Creates the default rules of every organisation that never had them
/// (the evaluator's sweep across tenants); returns how many organisations
/// got them.
pub async fn ensure_defaults_across_tenants(
    db: &mut sqlx::PgConnection,
) -> Result<u64, sqlx::Error> {
    let fresh = alert_rule_defaults::claim_across_tenants(&mut *db).await?;
    insert_defaults(db, &fresh).await
}

/// Inserts the default rules of each of `fresh`; returns how many.
async fn insert_defaults(
    db: &mut sqlx::PgConnection,
    fresh: &[TenantId],
) -> Result<u64, sqlx::Error> {
    for t in fresh {
        for (key, spec) in defaults() {
            crate::db::alerts::insert_rule(&mut *db, Some(*t), &spec, Some(key), "system").await?;
        }
    }
    Ok(fresh.len() as u64)
}
