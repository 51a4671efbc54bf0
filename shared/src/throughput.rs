//! Per-minute throughput of every queue, kept as work completes.
//!
//! Each process (api, worker) holds one [`Throughput`]: finished work is
//! added to counters in memory, per queue, organisation and minute, and a
//! background task adds them to `queue_minutes` once a second in one
//! statement. The operators' charts and counters read that small table, so
//! they cost the same at a million notifications as at ten. A process killed
//! with `kill -9` loses at most its last second of counts; the notifications
//! themselves are unaffected.
//!
//! Durations and latencies are kept as counts per bucket of a fixed
//! log-spaced histogram ([`BOUNDS_MS`]); percentiles read from it are the
//! bucket's upper bound, interpolated within the bucket.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{domain::TenantId, jobs::QueueName};

/// Why [`spawn_flusher`](Throughput::spawn_flusher) writes in platform scope (`db_platform_scope_total{reason}`).
pub const SCOPE_REASON: &str = "queue_throughput";

/// Upper bounds of the histogram buckets in milliseconds; a last bucket
/// holds everything slower.
pub const BOUNDS_MS: [u64; 18] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
    900_000, 3_600_000,
];

/// Buckets per histogram.
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// How often counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long rows are kept: the charts show at most 7 days.
const KEEP: TimeDelta = TimeDelta::days(8);

/// How one unit of work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: sent to the provider, placed in the inbox, or the job finished.
    Sent,
    /// Failed for good.
    Failed,
    /// Failed this time; another attempt is scheduled.
    Retried,
}

/// The bucket a duration falls in.
pub fn bucket(d: Duration) -> usize {
    let ms = d.as_millis() as u64;
    BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BOUNDS_MS.len())
}

/// The `p`-th quantile (0 < p ≤ 1) of a histogram, in milliseconds, or
/// `None` when it is empty.
pub fn quantile(counts: &[i64], p: f64) -> Option<f64> {
    let total: i64 = counts.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = (p * total as f64).ceil().max(1.0);
    let mut seen = 0.0;
    for (i, c) in counts.iter().enumerate() {
        let c = *c as f64;
        if c > 0.0 && seen + c >= rank {
            let low = if i == 0 { 0 } else { BOUNDS_MS[i - 1] } as f64;
            let high = BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or(BOUNDS_MS[BOUNDS_MS.len() - 1] * 2) as f64;
            return Some(low + (high - low) * ((rank - seen) / c));
        }
        seen += c;
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    queue: &'static str,
    minute: DateTime<Utc>,
    tenant: Uuid,
}

#[derive(Debug, Clone)]
struct Cell {
    sent: i64,
    failed: i64,
    retried: i64,
    duration: [i64; BUCKETS],
    latency: [i64; BUCKETS],
}

impl Default for Cell {
    fn default() -> Self {
        Self {
            sent: 0,
            failed: 0,
            retried: 0,
            duration: [0; BUCKETS],
            latency: [0; BUCKETS],
        }
    }
}

/// A provider's counts are kept per organisation, minute, channel and
/// provider name.
type ProviderKey = (Uuid, DateTime<Utc>, &'static str, String);

/// Counts finished work and writes it to `queue_minutes`, and each
/// provider's answers to `provider_minutes`.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    pending: Arc<Mutex<HashMap<Key, Cell>>>,
    /// Sent and failed per provider.
    providers: Arc<Mutex<HashMap<ProviderKey, (i64, i64)>>>,
}

impl Throughput {
    /// A recorder that holds its counts until [`Throughput::flush`] or the
    /// task [`Throughput::spawn_flusher`] starts writes them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` units of `queue`'s work of `tenant` (`None`: the
    /// platform's own) that ended with `outcome`, each having taken
    /// `duration` (if known) and, when sent, `latency` from acceptance.
    pub fn record(
        &self,
        queue: QueueName,
        tenant: Option<TenantId>,
        outcome: Outcome,
        n: u64,
        duration: Option<Duration>,
        latency: Option<Duration>,
    ) {
        if n == 0 {
            return;
        }
        let now = Utc::now();
        let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let key = Key {
            queue: queue.as_str(),
            minute,
            tenant: tenant.map(|t| t.0).unwrap_or_else(Uuid::nil),
        };
        let n = n as i64;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let cell = pending.entry(key).or_default();
        match outcome {
            Outcome::Sent => cell.sent += n,
            Outcome::Failed => cell.failed += n,
            Outcome::Retried => cell.retried += n,
        }
        if let Some(d) = duration {
            cell.duration[bucket(d)] += n;
        }
        if let Some(l) = latency {
            cell.latency[bucket(l)] += n;
        }
    }

    /// Counts one answer of `provider` on `channel` for `tenant`: a send
    /// it took (`sent`) or an attempt it failed, transient or not.
    pub fn record_provider(
        &self,
        channel: &'static str,
        tenant: TenantId,
        provider: &str,
        sent: bool,
    ) {
        let now = Utc::now();
        let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let mut pending = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let cell = pending
            .entry((tenant.0, minute, channel, provider.to_owned()))
            .or_default();
        if sent {
            cell.0 += 1;
        } else {
            cell.1 += 1;
        }
    }

    /// Adds the counts held so far to `queue_minutes` and
    /// `provider_minutes`, one statement each. On failure they are kept
    /// for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        self.flush_providers(pool).await?;
        self.flush_queues(pool).await
    }

    async fn flush_providers(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken: Vec<crate::db::queue_ops::ProviderMinute> = {
            let mut pending = self.providers.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            pending.drain().collect()
        };
        let mut rows = taken.clone();
        // One order for every process, so concurrent flushes cannot deadlock.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let written = crate::db::queue_ops::add_provider_minutes(pool, &rows).await;
        if let Err(error) = written {
            let mut pending = self.providers.lock().unwrap_or_else(|p| p.into_inner());
            for (key, (sent, failed)) in taken {
                let held = pending.entry(key).or_default();
                held.0 += sent;
                held.1 += failed;
            }
            return Err(error);
        }
        Ok(())
    }

    async fn flush_queues(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken: Vec<(Key, Cell)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            pending.drain().collect()
        };
        let mut rows = taken.clone();
        // One order for every process, so concurrent flushes cannot deadlock.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let written = crate::db::queue_ops::add_minutes(
            pool,
            &rows
                .iter()
                .map(|(k, c)| crate::db::queue_ops::MinuteRow {
                    queue: k.queue,
                    minute: k.minute,
                    tenant_id: k.tenant,
                    sent: c.sent,
                    failed: c.failed,
                    retried: c.retried,
                    duration_ms: c.duration.to_vec(),
                    latency_ms: c.latency.to_vec(),
                })
                .collect::<Vec<_>>(),
        )
        .await;
        if let Err(error) = written {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (key, cell) in taken {
                let held = pending.entry(key).or_default();
                held.sent += cell.sent;
                held.failed += cell.failed;
                held.retried += cell.retried;
                for i in 0..BUCKETS {
                    held.duration[i] += cell.duration[i];
                    held.latency[i] += cell.latency[i];
                }
            }
            return Err(error);
        }
        Ok(())
    }

    /// Writes the counts every second until the returned handle is dropped
    /// or aborted, and once an hour drops rows older than 8 days.
    pub fn spawn_flusher(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        // Every organisation's counts: platform scope, whatever the pool's
        // fallback.
        tokio::spawn(crate::db::scope::platform(SCOPE_REASON, async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if let Err(error) = this.flush(&pool).await {
                    tracing::warn!(%error, "cannot record queue throughput; keeping it for the next try");
                }
                if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    if let Err(error) =
                        crate::db::queue_ops::prune_minutes(&pool, Utc::now() - KEEP).await
                    {
                        tracing::warn!(%error, "cannot prune old queue throughput");
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket() {
        assert_eq!(bucket(Duration::from_micros(300)), 0);
        assert_eq!(bucket(Duration::from_millis(1)), 0);
        assert_eq!(bucket(Duration::from_millis(3)), 2);
        assert_eq!(bucket(Duration::from_millis(150)), 7);
        assert_eq!(bucket(Duration::from_secs(7200)), BOUNDS_MS.len());
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut counts = [0i64; BUCKETS];
        assert_eq!(quantile(&counts, 0.5), None);
        // 90 fast ones (≤ 10 ms) and 10 slow ones (500 ms–1 s).
        counts[3] = 90;
        counts[9] = 10;
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        let p99 = quantile(&counts, 0.99).unwrap();
        assert!((500.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(quantile(&counts, 1.0), Some(1000.0));
    }

    #[test]
    fn counts_add_up_per_queue_tenant_and_minute() {
        let t = Throughput::new();
        let tenant = TenantId::new();
        t.record(
            QueueName::Email,
            Some(tenant),
            Outcome::Sent,
            3,
            Some(Duration::from_millis(4)),
            Some(Duration::from_millis(40)),
        );
        t.record(
            QueueName::Email,
            Some(tenant),
            Outcome::Failed,
            1,
            None,
            None,
        );
        t.record(QueueName::Maintenance, None, Outcome::Sent, 1, None, None);
        let pending = t.pending.lock().unwrap();
        assert_eq!(pending.len(), 2);
        let email = pending
            .iter()
            .find(|(k, _)| k.queue == "email")
            .map(|(_, c)| c)
            .unwrap();
        assert_eq!((email.sent, email.failed, email.retried), (3, 1, 0));
        assert_eq!(email.duration[bucket(Duration::from_millis(4))], 3);
        assert_eq!(email.latency[bucket(Duration::from_millis(40))], 3);
        assert!(pending.keys().any(|k| k.tenant.is_nil()));
    }
}
