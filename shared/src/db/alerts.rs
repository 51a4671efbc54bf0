//! Alert rules, alerts, their transitions and their deliveries
//! ([`crate::alerts`]).
//!
//! [`Reach`] arguments confine a read or change to one organisation's rows
//! or let it see every row, platform-wide ones included (an operator's
//! platform-wide reach: platform admins and the evaluator).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::scope::Reach;
use crate::{
    alerts::{Level, Metric, Rule, RuleSpec, Severity},
    domain::{AlertId, AlertRuleId, TenantId},
};

pub mod bulk;
pub mod outgoing;

pub use outgoing::{Outgoing, claim_outgoing, finish_outgoing};

#[derive(sqlx::FromRow)]
struct RuleRow {
    id: AlertRuleId,
    tenant_id: Option<TenantId>,
    name: String,
    metric: String,
    scope: Value,
    threshold: f64,
    window_secs: i32,
    severity: String,
    cooldown_secs: i32,
    escalation: Value,
    enabled: bool,
    builtin: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<RuleRow> for Rule {
    fn from(r: RuleRow) -> Self {
        Rule {
            id: r.id,
            tenant_id: r.tenant_id,
            spec: RuleSpec {
                name: r.name,
                metric: Metric::parse(&r.metric).unwrap_or(Metric::FailureRate),
                scope: r.scope,
                threshold: r.threshold,
                window_secs: r.window_secs,
                severity: Severity::parse(&r.severity).unwrap_or(Severity::Warning),
                cooldown_secs: r.cooldown_secs,
                escalation: serde_json::from_value::<Vec<Level>>(r.escalation).unwrap_or_default(),
                enabled: r.enabled,
            },
            builtin: r.builtin,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const RULE_COLUMNS: &str = "id, tenant_id, name, metric, scope, threshold, window_secs, severity,
    cooldown_secs, escalation, enabled, builtin, created_by, created_at, updated_at";

/// Stores a new rule; returns its id.
#[tracing::instrument(skip_all)]
pub async fn insert_rule(
    db: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
    spec: &RuleSpec,
    builtin: Option<&str>,
    by: &str,
) -> Result<AlertRuleId, sqlx::Error> {
    let id = AlertRuleId::new();
    sqlx::query!(
        "insert into alert_rules (id, tenant_id, name, metric, scope, threshold, window_secs,
             severity, cooldown_secs, escalation, enabled, builtin, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        id.0,
        tenant as _,
        spec.name,
        spec.metric.as_str(),
        spec.scope,
        spec.threshold,
        spec.window_secs,
        spec.severity.as_str(),
        spec.cooldown_secs,
        serde_json::to_value(&spec.escalation).unwrap_or_default(),
        spec.enabled,
        builtin,
        by,
    )
    .execute(db)
    .await?;
    Ok(id)
}

/// Replaces rule `id`'s definition; `None` when `reach` has no such rule.
#[tracing::instrument(skip_all)]
pub async fn update_rule(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: AlertRuleId,
    spec: &RuleSpec,
) -> Result<Option<Rule>, sqlx::Error> {
    let row = sqlx::query_as!(
        RuleRow,
        r#"update alert_rules set name = $3, metric = $4, scope = $5, threshold = $6,
             window_secs = $7, severity = $8, cooldown_secs = $9, escalation = $10, enabled = $11
         where id = $2 and ($1::uuid is null or tenant_id = $1)
         returning id as "id: AlertRuleId", tenant_id as "tenant_id: TenantId", name, metric, scope, threshold, window_secs,
             severity, cooldown_secs, escalation, enabled, builtin, created_by, created_at,
             updated_at"#,
        reach.param(),
        id.0,
        spec.name,
        spec.metric.as_str(),
        spec.scope,
        spec.threshold,
        spec.window_secs,
        spec.severity.as_str(),
        spec.cooldown_secs,
        serde_json::to_value(&spec.escalation).unwrap_or_default(),
        spec.enabled,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Deletes rule `id` with its alerts; false when `reach` has no such rule.
#[tracing::instrument(skip_all)]
pub async fn delete_rule(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: AlertRuleId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "delete from alert_rules where id = $2 and ($1::uuid is null or tenant_id = $1)",
        reach.param(),
        id.0,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Rule `id`, if `reach` has it.
#[tracing::instrument(skip_all)]
pub async fn get_rule(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: AlertRuleId,
) -> Result<Option<Rule>, sqlx::Error> {
    let row = sqlx::query_as!(
        RuleRow,
        r#"select id as "id: AlertRuleId", tenant_id as "tenant_id: TenantId", name, metric, scope, threshold, window_secs,
             severity, cooldown_secs, escalation, enabled, builtin, created_by, created_at,
             updated_at
         from alert_rules
         where id = $2 and ($1::uuid is null or tenant_id = $1)"#,
        reach.param(),
        id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Rules within `reach`, or of exactly `only` (`Some(None)`: platform-wide
/// rules), oldest first, at most 1,000.
#[tracing::instrument(skip_all)]
pub async fn list_rules(
    db: impl PgExecutor<'_>,
    reach: Reach,
    only: Option<Option<TenantId>>,
) -> Result<Vec<Rule>, sqlx::Error> {
    let mut qb =
        QueryBuilder::<Postgres>::new(format!("select {RULE_COLUMNS} from alert_rules where true"));
    if let Reach::Tenant(t) = reach {
        qb.push(" and tenant_id = ").push_bind(t);
    }
    match only {
        None => {}
        Some(None) => {
            qb.push(" and tenant_id is null");
        }
        Some(Some(t)) => {
            qb.push(" and tenant_id = ").push_bind(t);
        }
    }
    qb.push(" order by created_at, id limit 1000");
    let rows: Vec<RuleRow> = qb.build_query_as().fetch_all(db).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Claims up to `limit` enabled rules not yet evaluated for `period`; rules
/// a rival evaluator is claiming are skipped, so each rule is claimed once
/// per period.
#[tracing::instrument(skip_all)]
pub async fn claim_rules(
    db: impl PgExecutor<'_>,
    period: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Rule>, sqlx::Error> {
    let rows = sqlx::query_as!(
        RuleRow,
        r#"update alert_rules set evaluated_for = $1
         where id in (select id from alert_rules
                      where enabled and (evaluated_for is null or evaluated_for < $1)
                      order by id limit $2 for update skip locked)
         returning id as "id: AlertRuleId", tenant_id as "tenant_id: TenantId", name, metric, scope, threshold, window_secs,
             severity, cooldown_secs, escalation, enabled, builtin, created_by, created_at,
             updated_at"#,
        period,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// An alert.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Alert {
    /// Its id (PagerDuty's dedup key).
    pub id: AlertId,
    /// Its organisation (`None`: platform-wide).
    pub tenant_id: Option<TenantId>,
    /// The rule that opened it.
    pub rule_id: AlertRuleId,
    /// What it is about (a channel, queue, organisation).
    pub subject: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// The rule's severity when it opened.
    pub severity: String,
    /// What is wrong, for people.
    pub summary: String,
    /// The metric's latest value.
    pub value: f64,
    /// Escalation levels notified so far.
    pub level: i32,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// By whom.
    pub acknowledged_by: Option<String>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// By whom (`auto`: the condition cleared).
    pub resolved_by: Option<String>,
}

const ALERT_COLUMNS: &str = "id, tenant_id, rule_id, subject, status, severity, summary, value,
    level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by";

/// Rule `rule`'s unresolved alerts.
pub async fn active(db: impl PgExecutor<'_>, rule: AlertRuleId) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as!(
        Alert,
        r#"select id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by
         from alerts where rule_id = $1 and status <> 'resolved'
         order by subject for update"#,
        rule.0,
    )
    .fetch_all(db)
    .await
}

/// When the last alert of `rule` about `subject` resolved.
pub async fn last_resolved(
    db: impl PgExecutor<'_>,
    rule: AlertRuleId,
    subject: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select max(resolved_at) as "max?" from alerts where rule_id = $1 and subject = $2
         and status = 'resolved'"#,
        rule.0,
        subject,
    )
    .fetch_one(db)
    .await
}

/// Notes the metric's latest value of an unresolved alert.
pub async fn set_value(
    db: impl PgExecutor<'_>,
    id: AlertId,
    value: f64,
    summary: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update alerts set value = $2, summary = $3 where id = $1 and status <> 'resolved'",
        id.0,
        value,
        summary,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Notes that `level` levels were notified.
pub async fn set_level(
    db: impl PgExecutor<'_>,
    id: AlertId,
    level: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update alerts set level = greatest(level, $2) where id = $1",
        id.0,
        level,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Acknowledges or resolves alert `id` within `reach` by `by` at `at`; the alert
/// after the change, or `Err(status)` with its status when it cannot move
/// (already acknowledged or resolved), or `Ok(None)` when there is none.
pub async fn transition(
    db: &mut sqlx::PgConnection,
    reach: Reach,
    id: AlertId,
    to: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<Option<Result<Alert, String>>, sqlx::Error> {
    let current = sqlx::query_as!(
        Alert,
        r#"select id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by
         from alerts where id = $2 and ($1::uuid is null or tenant_id = $1)
         for update"#,
        reach.param(),
        id.0,
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    let allowed = match to {
        "acknowledged" => current.status == "open",
        _ => current.status != "resolved",
    };
    if !allowed {
        return Ok(Some(Err(current.status)));
    }
    let alert = if to == "acknowledged" {
        sqlx::query_as!(
            Alert,
            r#"update alerts set status = 'acknowledged', acknowledged_at = $2, acknowledged_by = $3
             where id = $1
             returning id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by"#,
            id.0,
            at,
            by,
        )
        .fetch_one(&mut *db)
        .await?
    } else {
        sqlx::query_as!(
            Alert,
            r#"update alerts set status = 'resolved', resolved_at = $2, resolved_by = $3
             where id = $1
             returning id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by"#,
            id.0,
            at,
            by,
        )
        .fetch_one(&mut *db)
        .await?
    };
    Ok(Some(Ok(alert)))
}

/// Records a transition; returns its id.
pub async fn event(
    db: impl PgExecutor<'_>,
    alert: &Alert,
    kind: &str,
    level: Option<i32>,
    actor: &str,
    at: DateTime<Utc>,
    details: Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into alert_events (alert_id, tenant_id, kind, level, actor, at, details)
         values ($1, $2, $3, $4, $5, $6, $7) returning id",
        alert.id.0,
        alert.tenant_id as _,
        kind,
        level,
        actor,
        at,
        details,
    )
    .fetch_one(db)
    .await
}

/// One notification of a transition.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// The transition.
    pub event_id: i64,
    /// `in_app`, `email`, `sms`, `webhook`, `slack`, `pagerduty`.
    pub channel: &'a str,
    /// Tells targets of one channel apart.
    pub target_key: String,
    /// The channel's spec (URL, key), for the sender.
    pub target: Value,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: &'a str,
    /// `queued` for outgoing calls, `sent` when handed to the platform's
    /// notifications, `skipped` when nobody could be reached.
    pub status: &'a str,
    /// The platform notifications it became.
    pub notification_ids: Vec<Uuid>,
    /// When it is due.
    pub run_at: DateTime<Utc>,
}

/// Records a delivery; false when the transition already has it.
pub async fn deliver(
    db: impl PgExecutor<'_>,
    alert: &Alert,
    d: NewDelivery<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "insert into alert_deliveries (id, alert_id, event_id, tenant_id, channel, target_key,
             target, action, status, notification_ids, run_at, sent_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 case when $9 = 'sent' then $11::timestamptz end)
         on conflict on constraint alert_deliveries_once do nothing",
        Uuid::now_v7(),
        alert.id.0,
        d.event_id,
        alert.tenant_id as _,
        d.channel,
        d.target_key,
        d.target,
        d.action,
        d.status,
        d.notification_ids.as_slice(),
        d.run_at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The outgoing targets alert `id` triggered so far: `(channel, target_key,
/// target)`.
pub async fn triggered(
    db: impl PgExecutor<'_>,
    id: AlertId,
) -> Result<Vec<(String, String, Value)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select distinct on (channel, target_key) channel, target_key, target
         from alert_deliveries where alert_id = $1 and action = 'trigger'
         order by channel, target_key, created_at",
        id.0,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.channel, r.target_key, r.target))
        .collect())
}

/// Which alerts to list: every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// One rule.
    pub rule: Option<AlertRuleId>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Opened before.
    pub until: Option<DateTime<Utc>>,
    /// After this `(opened_at, id)` in newest-first order.
    pub after: Option<(DateTime<Utc>, AlertId)>,
}

/// Alerts within `reach` matching `filter`, newest first, at most `limit`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: Reach,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<Alert>, sqlx::Error> {
    let mut qb =
        QueryBuilder::<Postgres>::new(format!("select {ALERT_COLUMNS} from alerts where true"));
    if let Reach::Tenant(t) = reach {
        qb.push(" and tenant_id = ").push_bind(t);
    }
    if let Some(s) = &filter.status {
        qb.push(" and status = ").push_bind(s.clone());
    }
    if let Some(s) = &filter.severity {
        qb.push(" and severity = ").push_bind(s.clone());
    }
    if let Some(r) = filter.rule {
        qb.push(" and rule_id = ").push_bind(r);
    }
    if let Some(s) = filter.since {
        qb.push(" and opened_at >= ").push_bind(s);
    }
    if let Some(u) = filter.until {
        qb.push(" and opened_at < ").push_bind(u);
    }
    if let Some((at, id)) = filter.after {
        qb.push(" and (opened_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" order by opened_at desc, id desc limit ")
        .push_bind(limit);
    qb.build_query_as().fetch_all(db).await
}

/// Alert `id`, if `reach` has it.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: AlertId,
) -> Result<Option<Alert>, sqlx::Error> {
    sqlx::query_as!(
        Alert,
        r#"select id as "id: AlertId", tenant_id as "tenant_id: TenantId",
             rule_id as "rule_id: AlertRuleId", subject, status, severity, summary,
             value, level, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by
         from alerts where id = $2 and ($1::uuid is null or tenant_id = $1)"#,
        reach.param(),
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// One transition.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its id.
    pub id: i64,
    /// `opened`, `escalated`, `acknowledged` or `resolved`.
    pub kind: String,
    /// The escalation level it notified.
    pub level: Option<i32>,
    /// `evaluator`, `auto` or an audit actor.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The metric's value and threshold.
    pub details: Value,
}

/// One notification of a transition, as recorded.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// The transition.
    pub event_id: i64,
    /// The channel.
    pub channel: String,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: String,
    /// `queued`, `sending`, `sent`, `failed` or `skipped`.
    pub status: String,
    /// Calls made.
    pub attempts: i32,
    /// The last answer's status code.
    pub response_status: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// The platform notifications it became (in-app, email).
    pub notification_ids: Vec<Uuid>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Alert `id`'s transitions and notifications, oldest first.
#[tracing::instrument(skip_all)]
pub async fn history(
    db: &mut sqlx::PgConnection,
    id: AlertId,
) -> Result<(Vec<Event>, Vec<Delivery>), sqlx::Error> {
    let events = sqlx::query_as!(
        Event,
        "select id, kind, level, actor, at, details from alert_events
         where alert_id = $1 order by id",
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    let deliveries = sqlx::query_as!(
        Delivery,
        "select id, event_id, channel, action, status, attempts, response_status, last_error,
                notification_ids, sent_at
         from alert_deliveries where alert_id = $1 order by event_id, channel, target_key",
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok((events, deliveries))
}

/// Alert counts and response times.
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    /// Unresolved alerts per severity: `(severity, count)`.
    pub open_by_severity: Vec<(String, i64)>,
    /// Mean seconds from opening to acknowledgement, over alerts opened in
    /// the window and acknowledged.
    pub mean_secs_to_acknowledge: Option<f64>,
    /// Mean seconds from opening to resolution, over alerts opened in the
    /// window and resolved.
    pub mean_secs_to_resolve: Option<f64>,
    /// Alerts opened in the window.
    pub opened: i64,
}

/// Statistics within `reach` over alerts opened in
/// `[since, until)`; open counts are of now.
#[tracing::instrument(skip_all)]
pub async fn statistics(
    db: &mut sqlx::PgConnection,
    reach: Reach,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Statistics, sqlx::Error> {
    let open_by_severity = sqlx::query!(
        r#"select severity, count(*) as "count!" from alerts
         where status <> 'resolved' and ($1::uuid is null or tenant_id = $1)
         group by severity order by severity"#,
        reach.param(),
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.severity, r.count))
    .collect();
    let window = sqlx::query!(
        r#"select avg(extract(epoch from acknowledged_at - opened_at))::float8 as "ack?",
                avg(extract(epoch from resolved_at - opened_at))::float8 as "resolve?",
                count(*) as "opened!"
         from alerts
         where ($1::uuid is null or tenant_id = $1) and opened_at >= $2 and opened_at < $3"#,
        reach.param(),
        since,
        until,
    )
    .fetch_one(&mut *db)
    .await?;
    Ok(Statistics {
        open_by_severity,
        mean_secs_to_acknowledge: window.ack,
        mean_secs_to_resolve: window.resolve,
        opened: window.opened,
    })
}
