//! The evaluator's set-based writes: a whole pass's alerts are locked,
//! updated, opened and resolved a statement at a time, whatever the number
//! of rules.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Alert;
use crate::domain::{AlertId, AlertRuleId, TenantId};

/// The unresolved alerts of `rules`, locked, by rule and subject.
pub async fn active_of(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
) -> Result<Vec<Alert>, sqlx::Error> {
    let rules: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    sqlx::query_as!(
        Alert,
        r#"select id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by
         from alerts where rule_id = any($1) and status <> 'resolved'
         order by rule_id, subject for update"#,
        &rules,
    )
    .fetch_all(db)
    .await
}

/// When the last alert of each `(rule, subject)` pair resolved (pairs that
/// never had one are absent).
pub async fn last_resolved_of(
    db: impl PgExecutor<'_>,
    pairs: &[(AlertRuleId, String)],
) -> Result<HashMap<(AlertRuleId, String), DateTime<Utc>>, sqlx::Error> {
    let rules: Vec<Uuid> = pairs.iter().map(|(r, _)| r.0).collect();
    let subjects: Vec<&str> = pairs.iter().map(|(_, s)| s.as_str()).collect();
    let rows = sqlx::query!(
        r#"select p.rule_id as "rule_id!: AlertRuleId", p.subject as "subject!", l.at as "at!"
         from unnest($1::uuid[], $2::text[]) as p(rule_id, subject)
         cross join lateral (select max(a.resolved_at) as at from alerts a
                             where a.rule_id = p.rule_id and a.subject = p.subject
                               and a.status = 'resolved') l
         where l.at is not null"#,
        &rules,
        &subjects as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.rule_id, r.subject), r.at))
        .collect())
}

/// The latest value and wording of unresolved alerts.
pub async fn set_values(
    db: impl PgExecutor<'_>,
    values: &[(AlertId, f64, String)],
) -> Result<(), sqlx::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = values.iter().map(|v| v.0.0).collect();
    let vals: Vec<f64> = values.iter().map(|v| v.1).collect();
    let summaries: Vec<&str> = values.iter().map(|v| v.2.as_str()).collect();
    sqlx::query!(
        "update alerts a set value = v.value, summary = v.summary
         from unnest($1::uuid[], $2::float8[], $3::text[]) as v(id, value, summary)
         where a.id = v.id and a.status <> 'resolved'
           and (a.value is distinct from v.value or a.summary is distinct from v.summary)",
        &ids,
        &vals,
        &summaries as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One alert to open.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// Its organisation (`None`: platform-wide).
    pub tenant_id: Option<Uuid>,
    /// The rule.
    pub rule_id: AlertRuleId,
    /// What it is about.
    pub subject: String,
    /// The rule's severity.
    pub severity: &'static str,
    /// What is wrong.
    pub summary: String,
    /// The metric's value.
    pub value: f64,
}

/// Opens `alerts` at `at`; those whose rule and subject already have an
/// unresolved alert are left out of the result.
pub async fn open_many(
    db: impl PgExecutor<'_>,
    alerts: &[NewAlert],
    at: DateTime<Utc>,
) -> Result<Vec<Alert>, sqlx::Error> {
    if alerts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = alerts.iter().map(|_| AlertId::new().0).collect();
    let tenants: Vec<Option<Uuid>> = alerts.iter().map(|a| a.tenant_id).collect();
    let rules: Vec<Uuid> = alerts.iter().map(|a| a.rule_id.0).collect();
    let subjects: Vec<&str> = alerts.iter().map(|a| a.subject.as_str()).collect();
    let severities: Vec<&str> = alerts.iter().map(|a| a.severity).collect();
    let summaries: Vec<&str> = alerts.iter().map(|a| a.summary.as_str()).collect();
    let values: Vec<f64> = alerts.iter().map(|a| a.value).collect();
    sqlx::query_as!(
        Alert,
        r#"insert into alerts (id, tenant_id, rule_id, subject, status, severity, summary, value,
             opened_at)
         select id, tenant_id, rule_id, subject, 'open', severity, summary, value, $8
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                     $7::float8[]) as n(id, tenant_id, rule_id, subject, severity, summary, value)
         on conflict (rule_id, subject) where status <> 'resolved' do nothing
         returning id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by"#,
        &ids,
        &tenants as _,
        &rules,
        &subjects as _,
        &severities as _,
        &summaries as _,
        &values,
        at,
    )
    .fetch_all(db)
    .await
}

/// Resolves unresolved alerts `ids` as `by` at `at`; the alerts it moved.
pub async fn resolve_many(
    db: impl PgExecutor<'_>,
    ids: &[AlertId],
    by: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Alert>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query_as!(
        Alert,
        r#"update alerts set status = 'resolved', resolved_at = $2, resolved_by = $3
         where id = any($1) and status <> 'resolved'
         returning id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by"#,
        &ids,
        at,
        by,
    )
    .fetch_all(db)
    .await
}

/// Records one transition `kind` by `actor` at `at` for each alert, with
/// its details; returns each alert's event id.
pub async fn events(
    db: impl PgExecutor<'_>,
    alerts: &[(&Alert, Value)],
    kind: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<HashMap<AlertId, i64>, sqlx::Error> {
    if alerts.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = alerts.iter().map(|(a, _)| a.id.0).collect();
    let tenants: Vec<Option<Uuid>> = alerts
        .iter()
        .map(|(a, _)| a.tenant_id.map(|t| t.0))
        .collect();
    let details: Vec<Value> = alerts.iter().map(|(_, d)| d.clone()).collect();
    let rows = sqlx::query!(
        r#"insert into alert_events (alert_id, tenant_id, kind, actor, at, details)
         select alert_id, tenant_id, $3, $4, $5, details
         from unnest($1::uuid[], $2::uuid[], $6::jsonb[]) as e(alert_id, tenant_id, details)
         returning id, alert_id as "alert_id: AlertId""#,
        &ids,
        &tenants as _,
        kind,
        actor,
        at,
        &details,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.alert_id, r.id)).collect())
}
