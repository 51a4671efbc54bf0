//! Evaluating rules, and moving alerts through their lifecycle.
//!
//! [`Evaluator::evaluate`] takes `now` as an argument, so tests move time
//! instead of sleeping. Time is cut into periods of the evaluation interval;
//! a rule is claimed for a period by the one evaluator whose update moves its
//! `evaluated_for` forward ([`alerts::claim_rules`]), so however many
//! schedulers run, each rule is evaluated once per period.
//!
//! For one rule, in one transaction that locks its unresolved alerts:
//! subjects over the threshold without an alert open one (unless the last
//! one about the subject resolved within the cooldown); unresolved alerts
//! whose subject is no longer over it resolve as `auto`; open (not
//! acknowledged) alerts notify each escalation level whose minutes have
//! passed, once.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Metric, Rule,
    measure::{self, Sources},
    notify,
};
use crate::{
    config::JobsConfig,
    db::alerts::{self, Alert},
    domain::TenantId,
    jobs::Queues,
};

/// Evaluates alert rules.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pool: PgPool,
    queues: Queues,
    jobs: JobsConfig,
    queue_names: Vec<String>,
    interval: Duration,
}

/// What one evaluation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Rules this evaluator evaluated (claimed for the period).
    pub rules: usize,
    /// Alerts opened.
    pub opened: usize,
    /// Escalation levels notified after the first.
    pub escalated: usize,
    /// Alerts resolved because their condition cleared.
    pub resolved: usize,
}

impl Evaluator {
    /// An evaluator whose periods last `interval`.
    pub fn new(pool: PgPool, queues: Queues, jobs: JobsConfig, interval: Duration) -> Self {
        let queue_names = jobs.queues.keys().cloned().collect();
        Self {
            pool,
            queues,
            jobs,
            queue_names,
            interval: interval.max(Duration::from_secs(1)),
        }
    }

    /// The start of the period `now` falls in.
    pub fn period(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let step = self.interval.as_millis() as i64;
        let ms = now.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(now)
    }

    /// Creates missing default rules, then evaluates every enabled rule not
    /// yet evaluated in `now`'s period.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let mut tx = self.pool.begin().await?;
        super::ensure_defaults(&mut tx, None).await?;
        tx.commit().await?;
        let period = self.period(now);
        let mut report = Report::default();
        loop {
            let rules = alerts::claim_rules(&self.pool, period, 50).await?;
            if rules.is_empty() {
                break;
            }
            for rule in rules {
                report.rules += 1;
                if let Err(error) = self.apply(&rule, now, &mut report).await {
                    tracing::warn!(rule = %rule.id, error = format!("{error:#}"), "cannot evaluate an alert rule");
                }
            }
        }
        Ok(report)
    }

    async fn apply(
        &self,
        rule: &Rule,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let src = Sources {
            pool: &self.pool,
            queues: &self.queues,
            queue_names: &self.queue_names,
        };
        let readings = measure::read(&src, rule, now).await?;
        let firing: BTreeMap<String, f64> = readings
            .into_iter()
            .filter(|r| rule.spec.metric.fires(r.value, rule.spec.threshold))
            .map(|r| (r.subject, r.value))
            .collect();
        let mut tx = self.pool.begin().await?;
        let active = alerts::active(&mut *tx, rule.id).await?;
        for alert in &active {
            match firing.get(&alert.subject) {
                Some(value) => {
                    alerts::set_value(
                        &mut *tx,
                        alert.id,
                        *value,
                        &summary(rule, &alert.subject, *value),
                    )
                    .await?;
                    if alert.status == "open" {
                        report.escalated += self.escalate(&mut tx, rule, alert, None, now).await?;
                    }
                }
                None => {
                    let Some(Ok(resolved)) =
                        alerts::transition(&mut tx, None, alert.id, "resolved", "auto", now)
                            .await?
                    else {
                        continue;
                    };
                    let event = alerts::event(
                        &mut *tx,
                        &resolved,
                        "resolved",
                        None,
                        "auto",
                        now,
                        json!({"threshold": rule.spec.threshold}),
                    )
                    .await?;
                    notify::follow_up(
                        &mut tx,
                        &self.jobs,
                        &rule.spec.name,
                        &resolved,
                        event,
                        "resolve",
                        now,
                    )
                    .await?;
                    metrics::counter!("alerts_resolved_total", "how" => "auto").increment(1);
                    report.resolved += 1;
                }
            }
        }
        for (subject, value) in &firing {
            if active.iter().any(|a| &a.subject == subject) {
                continue;
            }
            if let Some(at) = alerts::last_resolved(&mut *tx, rule.id, subject).await?
                && at + TimeDelta::seconds(i64::from(rule.spec.cooldown_secs)) > now
            {
                continue;
            }
            let text = summary(rule, subject, *value);
            let Some(alert) = alerts::open(
                &mut *tx,
                rule.tenant_id,
                rule.id,
                subject,
                rule.spec.severity,
                &text,
                *value,
                now,
            )
            .await?
            else {
                continue;
            };
            let details = json!({"value": value, "threshold": rule.spec.threshold, "metric": rule.spec.metric.as_str()});
            let event =
                alerts::event(&mut *tx, &alert, "opened", None, "evaluator", now, details).await?;
            self.escalate(&mut tx, rule, &alert, Some(event), now)
                .await?;
            metrics::counter!("alerts_opened_total", "severity" => rule.spec.severity.as_str())
                .increment(1);
            tracing::info!(rule = %rule.id, alert = %alert.id, subject = %subject, "alert opened");
            report.opened += 1;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notifies the levels of `alert` whose minutes have passed and that
    /// were not notified yet; the first on `opened` when given. Returns how
    /// many levels after the first it notified.
    async fn escalate(
        &self,
        tx: &mut sqlx::PgConnection,
        rule: &Rule,
        alert: &Alert,
        opened: Option<i64>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let elapsed = now - alert.opened_at;
        let mut escalated = 0;
        let from = usize::try_from(alert.level).unwrap_or(0);
        for (index, level) in rule.spec.escalation.iter().enumerate().skip(from) {
            if TimeDelta::minutes(level.after_minutes) > elapsed {
                break;
            }
            let (event, state) = match opened {
                Some(e) if index == 0 => (e, "opened"),
                _ => {
                    let e = alerts::event(
                        &mut *tx,
                        alert,
                        "escalated",
                        Some(index as i32),
                        "evaluator",
                        now,
                        json!({"after_minutes": level.after_minutes}),
                    )
                    .await?;
                    (e, if index == 0 { "opened" } else { "escalated" })
                }
            };
            notify::level(tx, &self.jobs, rule, alert, index, event, state, now).await?;
            alerts::set_level(&mut *tx, alert.id, index as i32 + 1).await?;
            if index > 0 {
                escalated += 1;
            }
        }
        Ok(escalated)
    }
}

/// Acknowledges (`to = "acknowledged"`) or resolves (`"resolved"`) alert
/// `id` of `scope` on behalf of `by`, telling every target it triggered.
/// `Ok(None)`: no such alert; `Ok(Some(Err(status)))`: it cannot move from
/// `status`.
pub async fn act(
    pool: &PgPool,
    jobs: &JobsConfig,
    scope: Option<TenantId>,
    id: Uuid,
    to: &str,
    by: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Result<Alert, String>>> {
    let mut tx = pool.begin().await?;
    let moved = alerts::transition(&mut tx, scope, id, to, by, now).await?;
    let Some(Ok(alert)) = moved else {
        return Ok(moved);
    };
    let rule_name: String = sqlx::query_scalar("select name from alert_rules where id = $1")
        .bind(alert.rule_id)
        .fetch_one(&mut *tx)
        .await?;
    let (kind, action) = if to == "acknowledged" {
        ("acknowledged", "acknowledge")
    } else {
        ("resolved", "resolve")
    };
    let event = alerts::event(&mut *tx, &alert, kind, None, by, now, json!({})).await?;
    notify::follow_up(&mut tx, jobs, &rule_name, &alert, event, action, now).await?;
    tx.commit().await?;
    Ok(Some(Ok(alert)))
}

/// What is wrong, for people (no recipient, no content).
pub fn summary(rule: &Rule, subject: &str, value: f64) -> String {
    let t = rule.spec.threshold;
    let window = format_window(rule.spec.window_secs);
    match rule.spec.metric {
        Metric::FailureRate => format!(
            "{subject}: {value:.1}% of sends failed over the last {window} (threshold {t}%)"
        ),
        Metric::QueueOldestDueAge => {
            format!("{subject}: the oldest due item has waited {value:.0} s (threshold {t} s)")
        }
        Metric::QueueDepth => format!("{subject}: {value:.0} items due (threshold {t})"),
        Metric::LatencyP99 => format!(
            "{subject}: p99 accepted-to-sent latency {value:.0} ms over the last {window} (threshold {t} ms)"
        ),
        Metric::CircuitOpen => {
            format!("{subject}: {value:.0} provider circuit breaker(s) open (threshold {t})")
        }
        Metric::NoWorkerAlive => {
            format!("{subject}: {value:.0} live worker(s) serve the queue (fewer than {t})")
        }
        Metric::BaaExpiring if value < 0.0 => {
            format!(
                "organisation {subject}: the BAA expired {:.0} day(s) ago",
                -value
            )
        }
        Metric::BaaExpiring => {
            format!("organisation {subject}: the BAA expires in {value:.0} day(s) (threshold {t})")
        }
        Metric::FailedWork => {
            format!("{value:.0} items failed for good over the last {window} (threshold {t})")
        }
    }
}

fn format_window(secs: i32) -> String {
    if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}
