//! Reading a rule's metric at a given moment, per subject.
//!
//! Rates and latencies read the per-minute rollup (`queue_minutes`) over the
//! rule's window ending at `now`, so a test that moves `now` moves the
//! window. Queue ages are measured from `now` to the oldest due item
//! ([`crate::db::queue_ops::waiting`]); circuits and live workers are read
//! from the state the workers share in Redis ([`crate::fleet`]).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Metric, Rule};
use crate::{
    db::{failed_work, queue_ops},
    domain::TenantId,
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

/// Reads `rule`'s metric at `now`, for its organisation (every one for a
/// platform-wide rule).
pub async fn read(
    src: &Sources<'_>,
    rule: &Rule,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Reading>> {
    let tenant = rule.tenant_id;
    let since = now - TimeDelta::seconds(i64::from(rule.spec.window_secs));
    let mut out = Vec::new();
    match rule.spec.metric {
        Metric::FailureRate => {
            for (queue, sent, failed, _) in minutes(src.pool, tenant, since, now).await? {
                if rule.channel().is_some_and(|c| c != queue) || !is_channel(&queue) {
                    continue;
                }
                let total = sent + failed;
                if total < rule.min_events() || total == 0 {
                    out.push(Reading {
                        subject: queue,
                        value: 0.0,
                    });
                    continue;
                }
                out.push(Reading {
                    subject: queue,
                    value: (failed as f64) * 100.0 / (total as f64),
                });
            }
        }
        Metric::LatencyP99 => {
            for (queue, _, _, latency) in minutes(src.pool, tenant, since, now).await? {
                if rule.channel().is_some_and(|c| c != queue) || !is_channel(&queue) {
                    continue;
                }
                if let Some(p99) = crate::throughput::quantile(&latency, 0.99) {
                    out.push(Reading {
                        subject: queue,
                        value: p99,
                    });
                }
            }
        }
        Metric::QueueOldestDueAge | Metric::QueueDepth => {
            for (queue, w) in queue_ops::waiting(src.pool, tenant).await? {
                if rule.queue().is_some_and(|q| q != queue) {
                    continue;
                }
                let value = if rule.spec.metric == Metric::QueueDepth {
                    w.due as f64
                } else {
                    w.oldest_due.map_or(0.0, |at| {
                        (now - at).num_milliseconds().max(0) as f64 / 1000.0
                    })
                };
                out.push(Reading {
                    subject: queue,
                    value,
                });
            }
        }
        Metric::CircuitOpen => {
            let configs: Vec<(uuid::Uuid, String)> = sqlx::query_as(
                "select id, channel from provider_configs
                 where ($1::uuid is null or tenant_id = $1) order by id",
            )
            .bind(tenant)
            .fetch_all(src.pool)
            .await?;
            let ids: Vec<uuid::Uuid> = configs.iter().map(|(id, _)| *id).collect();
            let mut conn = src.queues.connection();
            let open = fleet::open_circuits(&mut conn, src.queues.prefix(), &ids).await?;
            let mut by_channel: BTreeMap<String, f64> = BTreeMap::new();
            for ((_, channel), open) in configs.into_iter().zip(open) {
                if rule.channel().is_some_and(|c| c != channel) {
                    continue;
                }
                *by_channel.entry(channel).or_default() += if open { 1.0 } else { 0.0 };
            }
            out.extend(
                by_channel
                    .into_iter()
                    .map(|(subject, value)| Reading { subject, value }),
            );
        }
        Metric::NoWorkerAlive => {
            let mut conn = src.queues.connection();
            let workers = fleet::live_workers(&mut conn, src.queues.prefix()).await?;
            for queue in src.queue_names {
                if rule.queue().is_some_and(|q| q != queue) {
                    continue;
                }
                let alive = workers
                    .iter()
                    .filter(|w| w.queues.iter().any(|q| q == queue))
                    .count();
                out.push(Reading {
                    subject: queue.clone(),
                    value: alive as f64,
                });
            }
        }
        Metric::BaaExpiring => {
            let rows: Vec<(TenantId, chrono::NaiveDate)> = sqlx::query_as(
                "select t.id, b.expires_on from tenants t
                 join baa_agreements b on b.id = t.current_baa_id
                 where t.type <> 'platform' and t.status = 'active'
                   and ($1::uuid is null or t.id = $1)",
            )
            .bind(tenant)
            .fetch_all(src.pool)
            .await?;
            let today = now.date_naive();
            out.extend(rows.into_iter().map(|(t, expires)| Reading {
                subject: t.to_string(),
                value: (expires - today).num_days() as f64,
            }));
        }
        Metric::FailedWork => {
            let filter = failed_work::Filter {
                tenant,
                since: Some(since),
                ..Default::default()
            };
            let n = failed_work::count(src.pool, &filter, now).await?;
            out.push(Reading {
                subject: "failed_work".to_owned(),
                value: n as f64,
            });
        }
    }
    Ok(out)
}

fn is_channel(queue: &str) -> bool {
    super::rules::CHANNELS.contains(&queue)
}

type MinuteSums = (String, i64, i64, Vec<i64>);

/// Per queue: sent, failed and the latency histogram over `(since, now]`
/// by whole minutes.
async fn minutes(
    pool: &sqlx::PgPool,
    tenant: Option<TenantId>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<MinuteSums>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select queue, sum(sent)::int8, sum(failed)::int8 from queue_minutes
         where minute >= date_trunc('minute', $2::timestamptz) and minute <= $3
           and ($1::uuid is null or tenant_id = $1)
         group by queue order by queue",
    )
    .bind(tenant)
    .bind(since)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let buckets: Vec<(String, i64, i64)> = sqlx::query_as(
        "select queue, u.i, sum(u.l)::int8
         from queue_minutes, unnest(latency_ms) with ordinality as u(l, i)
         where minute >= date_trunc('minute', $2::timestamptz) and minute <= $3
           and ($1::uuid is null or tenant_id = $1)
         group by queue, u.i",
    )
    .bind(tenant)
    .bind(since)
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(queue, sent, failed)| {
            let mut latency = vec![0; crate::throughput::BUCKETS];
            for (q, i, n) in &buckets {
                if *q == queue
                    && let Some(slot) = usize::try_from(*i - 1)
                        .ok()
                        .and_then(|i| latency.get_mut(i))
                {
                    *slot = *n;
                }
            }
            (queue, sent, failed, latency)
        })
        .collect())
}
