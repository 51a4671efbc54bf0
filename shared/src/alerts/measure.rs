//! Reading the rules' metrics at a given moment, per rule and subject, a
//! whole set of rules at once.
//!
//! Each metric kind is read by one statement for every rule of that kind
//! (the rules travel as arrays and are joined to the data grouped by
//! organisation), so a pass costs a handful of statements however many
//! rules it evaluates. Rates and latencies read the per-minute rollup
//! (`queue_minutes`, indexed by organisation and minute) over each rule's
//! window ending at `now`, so a test that moves `now` moves the window.
//! Queue ages are measured from `now` to the oldest due item; circuits and
//! live workers are read from the state the workers share in Redis
//! ([`crate::fleet`]), once per pass. API 5xx are read from their
//! per-minute counts (`api_error_minutes`) and disabled webhook endpoints
//! from the endpoints themselves. The statements are in
//! [`crate::db::alert_metrics`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Metric, Rule};
use crate::{
    db::alert_metrics,
    domain::{AlertRuleId, TenantId},
    fleet,
    jobs::Queues,
};

/// One subject's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// What it is about.
    pub subject: String,
    /// The value, in the metric's unit.
    pub value: f64,
}

/// What the readings need.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// Postgres.
    pub pool: &'a sqlx::PgPool,
    /// Redis (heartbeats, circuits).
    pub queues: &'a Queues,
    /// The queues `jobs.toml` serves.
    pub queue_names: &'a [String],
}

/// Readings per rule id.
pub type Readings = HashMap<AlertRuleId, Vec<Reading>>;

/// Reads every rule's metric at `now`, for its organisation (every one for
/// a platform-wide rule): one statement (or Redis read) per metric kind.
pub async fn read_all(
    src: &Sources<'_>,
    rules: &[Rule],
    now: DateTime<Utc>,
) -> anyhow::Result<Readings> {
    let mut out: Readings = rules.iter().map(|r| (r.id, Vec::new())).collect();
    let of = |m: Metric| rules.iter().filter(move |r| r.spec.metric == m);
    let (by_provider, by_channel): (Vec<&Rule>, Vec<&Rule>) =
        of(Metric::FailureRate).partition(|r| r.provider().is_some());
    if !by_provider.is_empty() {
        let sums = provider_minutes(src.pool, &by_provider, now).await?;
        for rule in by_provider {
            let readings = out.entry(rule.id).or_default();
            for (channel, sent, failed) in sums.get(&rule.id).into_iter().flatten() {
                if rule.channel().is_some_and(|c| c != channel) {
                    continue;
                }
                readings.push(Reading {
                    subject: format!("{channel}:{}", rule.provider().unwrap_or_default()),
                    value: failure_percent(rule, *sent, *failed),
                });
            }
        }
    }
    let rates: Vec<&Rule> = by_channel
        .into_iter()
        .chain(of(Metric::LatencyP99))
        .collect();
    if !rates.is_empty() {
        let sums = minutes(src.pool, &rates, now).await?;
        for rule in rates {
            let readings = out.entry(rule.id).or_default();
            for (queue, sent, failed, latency) in sums.get(&rule.id).into_iter().flatten() {
                if rule.channel().is_some_and(|c| c != queue) || !is_channel(queue) {
                    continue;
                }
                let subject = queue.clone();
                if rule.spec.metric == Metric::LatencyP99 {
                    if let Some(p99) = crate::throughput::quantile(latency, 0.99) {
                        readings.push(Reading {
                            subject,
                            value: p99,
                        });
                    }
                    continue;
                }
                readings.push(Reading {
                    subject,
                    value: failure_percent(rule, *sent, *failed),
                });
            }
        }
    }
    let queued: Vec<&Rule> = of(Metric::QueueOldestDueAge)
        .chain(of(Metric::QueueDepth))
        .collect();
    if !queued.is_empty() {
        let waiting = waiting(src.pool, &tenants_of(&queued)).await?;
        for rule in queued {
            let readings = out.entry(rule.id).or_default();
            for (queue, (due, oldest)) in merged(&waiting, rule.tenant_id) {
                if rule.queue().is_some_and(|q| q != queue) {
                    continue;
                }
                let value = if rule.spec.metric == Metric::QueueDepth {
                    due as f64
                } else {
                    oldest.map_or(0.0, |at| {
                        (now - at).num_milliseconds().max(0) as f64 / 1000.0
                    })
                };
                readings.push(Reading {
                    subject: queue,
                    value,
                });
            }
        }
    }
    let circuits: Vec<&Rule> = of(Metric::CircuitOpen).collect();
    if !circuits.is_empty() {
        circuit_readings(src, &circuits, &mut out).await?;
    }
    let workers: Vec<&Rule> = of(Metric::NoWorkerAlive).collect();
    if !workers.is_empty() {
        let mut conn = src.queues.connection();
        let live = fleet::live_workers(&mut conn, src.queues.prefix()).await?;
        for rule in workers {
            let readings = out.entry(rule.id).or_default();
            for queue in src.queue_names {
                if rule.queue().is_some_and(|q| q != queue) {
                    continue;
                }
                let alive = live
                    .iter()
                    .filter(|w| w.queues.iter().any(|q| q == queue))
                    .count();
                readings.push(Reading {
                    subject: queue.clone(),
                    value: alive as f64,
                });
            }
        }
    }
    let baa: Vec<&Rule> = of(Metric::BaaExpiring).collect();
    if !baa.is_empty() {
        let (all, ids) = tenants_of(&baa);
        let rows = alert_metrics::baa_expiry(src.pool, all, &ids).await?;
        let today = now.date_naive();
        for rule in baa {
            let readings = out.entry(rule.id).or_default();
            for (t, expires) in &rows {
                if rule.tenant_id.is_some_and(|r| r != *t) {
                    continue;
                }
                readings.push(Reading {
                    subject: t.to_string(),
                    value: (*expires - today).num_days() as f64,
                });
            }
        }
    }
    let failed: Vec<&Rule> = of(Metric::FailedWork).collect();
    if !failed.is_empty() {
        for (id, n) in failed_work(src.pool, &failed, now).await? {
            out.entry(id).or_default().push(Reading {
                subject: "failed_work".to_owned(),
                value: n as f64,
            });
        }
    }
    let api: Vec<&Rule> = of(Metric::ApiServerErrors).collect();
    if !api.is_empty() {
        for (id, n) in api_server_errors(src.pool, &api, now).await? {
            out.entry(id).or_default().push(Reading {
                subject: "api".to_owned(),
                value: n as f64,
            });
        }
    }
    let hooks: Vec<&Rule> = of(Metric::WebhookEndpointDisabled).collect();
    if !hooks.is_empty() {
        for (id, tenant, n) in disabled_endpoints(src.pool, &hooks).await? {
            out.entry(id).or_default().push(Reading {
                subject: tenant.to_string(),
                value: n as f64,
            });
        }
    }
    Ok(out)
}

fn is_channel(queue: &str) -> bool {
    super::rules::CHANNELS.contains(&queue)
}

/// Whether any rule is platform-wide, and the organisations of the others.
fn tenants_of(rules: &[&Rule]) -> (bool, Vec<Uuid>) {
    let all = rules.iter().any(|r| r.tenant_id.is_none());
    let mut ids: Vec<Uuid> = rules
        .iter()
        .filter_map(|r| r.tenant_id.map(|t| t.0))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    (all, ids)
}

/// The arrays a statement joins the rules from: ids, organisations (nil
/// for platform-wide rules) and window starts.
/// A failure rate's reading: `failed` as a percentage of `sent + failed`,
/// or 0 until the rule's `min_events` have come in.
fn failure_percent(rule: &Rule, sent: i64, failed: i64) -> f64 {
    let total = sent + failed;
    if total == 0 || total < rule.min_events() {
        0.0
    } else {
        failed as f64 * 100.0 / total as f64
    }
}

fn rule_arrays(
    rules: &[&Rule],
    now: DateTime<Utc>,
) -> (Vec<AlertRuleId>, Vec<Uuid>, Vec<DateTime<Utc>>) {
    let ids = rules.iter().map(|r| r.id).collect();
    let tenants = rules
        .iter()
        .map(|r| r.tenant_id.map_or(Uuid::nil(), |t| t.0))
        .collect();
    let since = rules
        .iter()
        .map(|r| now - TimeDelta::seconds(i64::from(r.spec.window_secs)))
        .collect();
    (ids, tenants, since)
}

/// Per rule narrowed to a provider and per channel that provider served:
/// its sends and failed attempts over the rule's `(since, now]` by whole
/// minutes (`provider_minutes`), in one statement; a platform-wide rule
/// adds up every organisation's.
async fn provider_minutes(
    pool: &sqlx::PgPool,
    rules: &[&Rule],
    now: DateTime<Utc>,
) -> Result<HashMap<AlertRuleId, Vec<(String, i64, i64)>>, sqlx::Error> {
    let (ids, tenants, since) = rule_arrays(rules, now);
    let providers: Vec<String> = rules
        .iter()
        .map(|r| r.provider().unwrap_or_default().to_owned())
        .collect();
    let rows =
        alert_metrics::provider_minute_sums(pool, &ids, &tenants, &since, &providers, now).await?;
    let mut out: HashMap<AlertRuleId, Vec<(String, i64, i64)>> = HashMap::new();
    for (id, channel, sent, failed) in rows {
        out.entry(id).or_default().push((channel, sent, failed));
    }
    Ok(out)
}

type MinuteSums = (String, i64, i64, Vec<i64>);

/// Per rule and queue: sent, failed and the latency histogram over each
/// rule's `(since, now]` by whole minutes, in one statement. An
/// organisation's rule reads its own rows by `(tenant_id, minute)`; a
/// platform-wide one (`tenant` nil in the arrays) every organisation's.
async fn minutes(
    pool: &sqlx::PgPool,
    rules: &[&Rule],
    now: DateTime<Utc>,
) -> Result<HashMap<AlertRuleId, Vec<MinuteSums>>, sqlx::Error> {
    let (ids, tenants, since) = rule_arrays(rules, now);
    let rows = alert_metrics::queue_minute_sums(pool, &ids, &tenants, &since, now).await?;
    let mut out: HashMap<AlertRuleId, Vec<MinuteSums>> = HashMap::new();
    for (id, queue, sent, failed, latency) in rows {
        let latency = latency.into_iter().map(|n| n.unwrap_or(0)).collect();
        out.entry(id)
            .or_default()
            .push((queue, sent, failed, latency));
    }
    Ok(out)
}

/// Per organisation and queue: items due now and when the oldest became
/// due, for every organisation (`all`) or the listed ones; one statement
/// over every source of work. "Now" is the database's, as the dispatcher's.
async fn waiting(
    pool: &sqlx::PgPool,
    (all, ids): &(bool, Vec<Uuid>),
) -> Result<Vec<(TenantId, String, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    alert_metrics::waiting(pool, *all, ids).await
}

/// Per queue, what `tenant` (every organisation for `None`) has waiting:
/// items due, and when the oldest became due. Work queues with nothing
/// waiting read as 0, as the operators' queue view shows them.
fn merged(
    rows: &[(TenantId, String, i64, Option<DateTime<Utc>>)],
    tenant: Option<TenantId>,
) -> BTreeMap<String, (i64, Option<DateTime<Utc>>)> {
    let mut out: BTreeMap<String, (i64, Option<DateTime<Utc>>)> =
        ["webhook", "batch_chunk", "bulk_chunk", "bulk_csv"]
            .into_iter()
            .map(|q| (q.to_owned(), (0, None)))
            .collect();
    for (t, queue, due, oldest) in rows {
        if tenant.is_some_and(|r| r != *t) {
            continue;
        }
        let slot = out.entry(queue.clone()).or_default();
        slot.0 += due;
        slot.1 = match (slot.1, *oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    out
}

/// Open provider circuits per channel, for every circuit rule: one read of
/// the organisations' provider configs, one of their circuits in Redis.
async fn circuit_readings(
    src: &Sources<'_>,
    rules: &[&Rule],
    out: &mut Readings,
) -> anyhow::Result<()> {
    let (all, ids) = tenants_of(rules);
    let configs = alert_metrics::provider_configs(src.pool, all, &ids).await?;
    let config_ids: Vec<Uuid> = configs.iter().map(|(id, _, _)| *id).collect();
    let mut conn = src.queues.connection();
    let open = fleet::open_circuits(&mut conn, src.queues.prefix(), &config_ids).await?;
    for rule in rules {
        let mut by_channel: BTreeMap<String, f64> = BTreeMap::new();
        for ((_, tenant, channel), open) in configs.iter().zip(&open) {
            if rule.tenant_id.is_some_and(|t| t != *tenant)
                || rule.channel().is_some_and(|c| c != channel)
            {
                continue;
            }
            *by_channel.entry(channel.clone()).or_default() += if *open { 1.0 } else { 0.0 };
        }
        out.entry(rule.id).or_default().extend(
            by_channel
                .into_iter()
                .map(|(subject, value)| Reading { subject, value }),
        );
    }
    Ok(())
}

/// Per rule: items that failed for good within its window up to `now`, in
/// one statement.
async fn failed_work(
    pool: &sqlx::PgPool,
    rules: &[&Rule],
    now: DateTime<Utc>,
) -> Result<Vec<(AlertRuleId, i64)>, sqlx::Error> {
    let (ids, tenants, since) = rule_arrays(rules, now);
    alert_metrics::failed_work_counts(pool, &ids, &tenants, &since, now).await
}

/// Per rule: API requests answered 5xx within its window up to `now`, by
/// whole minutes (`api_error_minutes`), in one statement. A platform-wide
/// rule counts every organisation's and the platform's own.
async fn api_server_errors(
    pool: &sqlx::PgPool,
    rules: &[&Rule],
    now: DateTime<Utc>,
) -> Result<Vec<(AlertRuleId, i64)>, sqlx::Error> {
    let (ids, tenants, since) = rule_arrays(rules, now);
    alert_metrics::api_server_error_counts(pool, &ids, &tenants, &since, now).await
}

/// Per rule and organisation with webhook endpoints: how many are disabled
/// (only those disabled after failures, or by an administrator, when the
/// rule says `disabled_by`), in one statement.
async fn disabled_endpoints(
    pool: &sqlx::PgPool,
    rules: &[&Rule],
) -> Result<Vec<(AlertRuleId, TenantId, i64)>, sqlx::Error> {
    let ids: Vec<AlertRuleId> = rules.iter().map(|r| r.id).collect();
    let tenants: Vec<Uuid> = rules
        .iter()
        .map(|r| r.tenant_id.map_or(Uuid::nil(), |t| t.0))
        .collect();
    let by: Vec<String> = rules
        .iter()
        .map(|r| r.disabled_by().unwrap_or("").to_owned())
        .collect();
    alert_metrics::disabled_endpoint_counts(pool, &ids, &tenants, &by).await
}
