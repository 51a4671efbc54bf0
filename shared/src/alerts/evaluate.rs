//! Evaluating rules, and moving alerts through their lifecycle.
//!
//! [`Evaluator::evaluate`] takes `now` as an argument, so tests move time
//! instead of sleeping. Time is cut into periods of the evaluation interval;
//! a rule is claimed for a period by the one evaluator whose update moves its
//! `evaluated_for` forward ([`alerts::claim_rules`]), so however many
//! schedulers run, each rule is evaluated once per period.
//!
//! The claimed rules are evaluated as a set: every metric kind is read by
//! one statement for all rules of that kind ([`measure::read_all`]), then,
//! in one transaction that locks their unresolved alerts (one statement):
//! subjects over the threshold without an alert open one (unless the last
//! one about the subject resolved within the cooldown), all in one insert;
//! unresolved alerts whose subject is no longer over it resolve as `auto`,
//! in one update; the others' values are updated in one statement; open
//! (not acknowledged) alerts notify each escalation level whose minutes
//! have passed, once. Only transitions cost statements per alert (their
//! notices go through the platform's send path), so a quiet pass costs
//! about a dozen statements whatever the number of rules.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::{
    Metric, Rule,
    measure::{self, Sources},
    notify,
};
use crate::{
    config::JobsConfig,
    db::{
        alert_rule_names,
        alerts::{self, Alert, bulk},
        scope::Reach,
    },
    domain::{AlertId, AlertRuleId},
    jobs::Queues,
};

/// Rules claimed and evaluated together.
const CLAIM: i64 = 5_000;

/// Whether an escalation level of `alert` not notified yet is due at `now`.
fn due_level(rule: &Rule, alert: &Alert, now: DateTime<Utc>) -> bool {
    let from = usize::try_from(alert.level).unwrap_or(0);
    rule.spec
        .escalation
        .get(from)
        .is_some_and(|level| TimeDelta::minutes(level.after_minutes) <= now - alert.opened_at)
}

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
    /// yet evaluated in `now`'s period, [`CLAIM`] rules at a time: each
    /// metric kind is read by one statement for all of them, and their
    /// alerts move in one transaction (a chunk that fails is logged and
    /// evaluated again next period).
    pub async fn evaluate(&self, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let mut tx = self.pool.begin().await?;
        super::ensure_defaults_across_tenants(&mut tx).await?;
        tx.commit().await?;
        let period = self.period(now);
        let mut report = Report::default();
        loop {
            let rules = alerts::claim_rules(&self.pool, period, CLAIM).await?;
            if rules.is_empty() {
                break;
            }
            report.rules += rules.len();
            let claimed = rules.len();
            if let Err(error) = self.apply(&rules, now, &mut report).await {
                tracing::warn!(
                    rules = rules.len(),
                    error = format!("{error:#}"),
                    "cannot evaluate alert rules"
                );
            }
            if (claimed as i64) < CLAIM {
                break;
            }
        }
        Ok(report)
    }

    async fn apply(
        &self,
        rules: &[Rule],
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let src = Sources {
            pool: &self.pool,
            queues: &self.queues,
            queue_names: &self.queue_names,
        };
        let mut readings = measure::read_all(&src, rules, now).await?;
        let by_id: HashMap<AlertRuleId, &Rule> = rules.iter().map(|r| (r.id, r)).collect();
        let firing: HashMap<AlertRuleId, BTreeMap<String, f64>> = rules
            .iter()
            .map(|rule| {
                let f = readings
                    .remove(&rule.id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| rule.spec.metric.fires(r.value, rule.spec.threshold))
                    .map(|r| (r.subject, r.value))
                    .collect();
                (rule.id, f)
            })
            .collect();
        let ids: Vec<AlertRuleId> = rules.iter().map(|r| r.id).collect();
        let mut tx = self.pool.begin().await?;
        let active = bulk::active_of(&mut *tx, &ids).await?;
        let mut values = Vec::new();
        let mut still = Vec::new();
        let mut clearing = Vec::new();
        for alert in &active {
            let Some(rule) = by_id.get(&alert.rule_id) else {
                continue;
            };
            match firing.get(&rule.id).and_then(|f| f.get(&alert.subject)) {
                Some(value) => {
                    values.push((alert.id, *value, summary(rule, &alert.subject, *value)));
                    if alert.status == "open" {
                        still.push((*rule, alert));
                    }
                }
                None => clearing.push(alert.id),
            }
        }
        bulk::set_values(&mut *tx, &values).await?;
        for (rule, alert) in still {
            if due_level(rule, alert, now) {
                report.escalated += self.escalate(&mut tx, rule, alert, None, now).await?;
            }
        }
        let resolved = bulk::resolve_many(&mut *tx, &clearing, "auto", now).await?;
        let details: Vec<(&Alert, serde_json::Value)> = resolved
            .iter()
            .filter_map(|a| {
                by_id
                    .get(&a.rule_id)
                    .map(|r| (a, json!({"threshold": r.spec.threshold})))
            })
            .collect();
        let events = bulk::events(&mut *tx, &details, "resolved", "auto", now).await?;
        for alert in &resolved {
            let (Some(rule), Some(event)) = (by_id.get(&alert.rule_id), events.get(&alert.id))
            else {
                continue;
            };
            notify::follow_up(
                &mut tx,
                &self.jobs,
                &rule.spec.name,
                alert,
                *event,
                "resolve",
                now,
            )
            .await?;
            metrics::counter!("alerts_resolved_total", "how" => "auto").increment(1);
            report.resolved += 1;
        }
        let mut candidates = Vec::new();
        for rule in rules {
            for (subject, value) in firing.get(&rule.id).into_iter().flatten() {
                if !active
                    .iter()
                    .any(|a| a.rule_id == rule.id && &a.subject == subject)
                {
                    candidates.push((rule, subject, *value));
                }
            }
        }
        let pairs: Vec<(AlertRuleId, String)> = candidates
            .iter()
            .map(|(r, s, _)| (r.id, (*s).clone()))
            .collect();
        let last = if pairs.is_empty() {
            HashMap::new()
        } else {
            bulk::last_resolved_of(&mut *tx, &pairs).await?
        };
        let fresh: Vec<bulk::NewAlert> = candidates
            .into_iter()
            .filter(|(rule, subject, _)| {
                last.get(&(rule.id, (*subject).clone())).is_none_or(|at| {
                    *at + TimeDelta::seconds(i64::from(rule.spec.cooldown_secs)) <= now
                })
            })
            .map(|(rule, subject, value)| bulk::NewAlert {
                tenant_id: rule.tenant_id.map(|t| t.0),
                rule_id: rule.id,
                subject: subject.clone(),
                severity: rule.spec.severity.as_str(),
                summary: summary(rule, subject, value),
                value,
            })
            .collect();
        let opened = bulk::open_many(&mut *tx, &fresh, now).await?;
        let details: Vec<(&Alert, serde_json::Value)> = opened
            .iter()
            .filter_map(|a| {
                by_id.get(&a.rule_id).map(|r| {
                    (a, json!({"value": a.value, "threshold": r.spec.threshold, "metric": r.spec.metric.as_str()}))
                })
            })
            .collect();
        let events = bulk::events(&mut *tx, &details, "opened", "evaluator", now).await?;
        for alert in &opened {
            let (Some(rule), Some(event)) = (by_id.get(&alert.rule_id), events.get(&alert.id))
            else {
                continue;
            };
            self.escalate(&mut tx, rule, alert, Some(*event), now)
                .await?;
            metrics::counter!("alerts_opened_total", "severity" => rule.spec.severity.as_str())
                .increment(1);
            tracing::info!(rule = %rule.id, alert = %alert.id, subject = %alert.subject, "alert opened");
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
            let t = notify::Transition {
                jobs: &self.jobs,
                alert,
                event_id: event,
                wording: notify::Wording {
                    rule: &rule.spec.name,
                    state,
                },
                now,
            };
            notify::level(tx, &t, rule, index).await?;
            alerts::set_level(&mut *tx, alert.id, index as i32 + 1).await?;
            if index > 0 {
                escalated += 1;
            }
        }
        Ok(escalated)
    }
}

/// Acknowledges (`to = "acknowledged"`) or resolves (`"resolved"`) alert
/// `id` within `reach` on behalf of `by`, telling every target it triggered.
/// `Ok(None)`: no such alert; `Ok(Some(Err(status)))`: it cannot move from
/// `status`.
pub async fn act(
    pool: &PgPool,
    jobs: &JobsConfig,
    reach: Reach,
    id: AlertId,
    to: &str,
    by: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Result<Alert, String>>> {
    let mut tx = pool.begin().await?;
    let moved = alerts::transition(&mut tx, reach, id, to, by, now).await?;
    let Some(Ok(alert)) = moved else {
        return Ok(moved);
    };
    let rule_name = alert_rule_names::name(&mut *tx, alert.rule_id).await?;
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
        Metric::ApiServerErrors => {
            format!("the API answered 5xx {value:.0} times over the last {window} (threshold {t})")
        }
        Metric::WebhookEndpointDisabled => format!(
            "organisation {subject}: {value:.0} webhook endpoint(s) disabled (threshold {t})"
        ),
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
