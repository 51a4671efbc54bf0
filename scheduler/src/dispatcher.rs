//! The dispatcher: due work from Postgres into Redis, under a bounded window.
//!
//! Every kind of queued work is an [`Outbox`] (see [`shared::outbox`]), and
//! [`KINDS`] lists them all: each channel's notifications, webhook
//! deliveries, batch chunks, CSV bulk jobs, CSV chunks and invitations. Each
//! sweep, for each kind:
//!
//! 1. puts back rows whose worker died mid-work (their claim's lease ran
//!    out; [`Outbox::recover`]);
//! 2. unless an operator paused the queue, [`Dispatcher::dispatch`]es it:
//!    one dispatcher at a time per queue (an advisory lock), it measures the
//!    queue's Redis backlog and, while it is under the high-water mark,
//!    takes due rows that are not in Redis, turns them into jobs (grouped by
//!    tenant into jobs of up to `group_size` ids for deliveries), and pushes
//!    them.
//!
//! Rows taken but not pushed (the window filled, or Redis failed) are released
//! at once for the next sweep. Cron ticks whose job never reached Redis are
//! pushed too.
//!
//! Redis losing its data (a restart without persistence, a flush, a failover)
//! is detected by a marker key: when the marker is gone, every kind forgets
//! its dispatch marks ([`Outbox::forget`]) and every queued row goes out
//! again. Workers' claims make the repeats harmless.

use std::{collections::BTreeSet, future::Future, pin::Pin, time::Duration};

use anyhow::Context;
use shared::{
    config::{CronJob, DispatcherConfig, JobsConfig},
    db::{
        cron_ticks,
        locks::{self, LockKey},
        queue_ops,
        scope::Reach,
    },
    domain::Channel,
    jobs::{QueueName, Queues},
    outbox::{
        Outbox, OutboxJob,
        kinds::{BatchChunks, BulkChunks, BulkJobs, Invitations, Notifications, WebhookDeliveries},
    },
};
use sqlx::PgPool;

use crate::cron::push_tick;

/// Every kind of queued work the dispatcher feeds, in sweep order. The
/// sweep and the Redis-loss marker both walk this one list.
pub static KINDS: &[&dyn Feed] = &[
    &Notifications(Channel::Email),
    &Notifications(Channel::Sms),
    &Notifications(Channel::Push),
    &Notifications(Channel::WhatsApp),
    &Notifications(Channel::InApp),
    &WebhookDeliveries,
    &BatchChunks,
    &BulkJobs,
    &BulkChunks,
    &Invitations,
];

/// Most rows one take asks for.
const MAX_TAKE: usize = 20_000;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An [`Outbox`] kind with its job type erased, so [`KINDS`] can list them
/// all.
pub trait Feed: Send + Sync {
    /// The queue its jobs travel on.
    fn queue(&self) -> QueueName;
    /// Whether its rows count in `dispatched_notifications_total`.
    fn grouped(&self) -> bool;
    /// [`Dispatcher::dispatch`] for this kind.
    fn dispatch<'a>(&'a self, dispatcher: &'a Dispatcher) -> BoxFuture<'a, anyhow::Result<Fed>>;
    /// [`Outbox::forget`].
    fn forget<'a>(&'a self, db: &'a PgPool) -> BoxFuture<'a, Result<u64, sqlx::Error>>;
    /// [`Outbox::recover`].
    fn recover<'a>(&'a self, db: &'a PgPool) -> BoxFuture<'a, Result<u64, sqlx::Error>>;
}

impl<K: Outbox> Feed for K {
    fn queue(&self) -> QueueName {
        Outbox::queue(self)
    }

    fn grouped(&self) -> bool {
        K::GROUPED
    }

    fn dispatch<'a>(&'a self, dispatcher: &'a Dispatcher) -> BoxFuture<'a, anyhow::Result<Fed>> {
        Box::pin(dispatcher.dispatch(self))
    }

    fn forget<'a>(&'a self, db: &'a PgPool) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(Outbox::forget(self, db))
    }

    fn recover<'a>(&'a self, db: &'a PgPool) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(Outbox::recover(self, db))
    }
}

/// What one [`Dispatcher::dispatch`] pushed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Rows pushed.
    pub rows: usize,
    /// Jobs pushed.
    pub jobs: usize,
    /// Whether the queue's window was full (due rows may still wait).
    pub full: bool,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Rows whose lost claim was put back.
    pub recovered: u64,
    /// Rows pushed (a chunk, a CSV file and an invitation are one row).
    pub dispatched: usize,
    /// Jobs pushed.
    pub jobs: usize,
    /// Whether Redis was found to have lost its data.
    pub redis_reset: bool,
    /// Whether some queue's window was full, so due rows may still wait.
    pub full: bool,
}

impl SweepReport {
    /// Whether the sweep found anything to do, so the next one should come
    /// soon (see [`shared::config::DispatcherConfig::next_pause`]).
    pub fn found_work(&self) -> bool {
        self.recovered > 0 || self.dispatched > 0 || self.redis_reset || self.full
    }
}

/// How often the dispatcher counts the work waiting in Postgres for the
/// `queue_due` and `queue_oldest_due_seconds` gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Moves due work into Redis.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: PgPool,
    queues: Queues,
    config: JobsConfig,
    gauged: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Dispatcher {
    /// A dispatcher over `pool` and `queues`.
    pub fn new(pool: PgPool, queues: Queues, config: JobsConfig) -> Self {
        Self {
            pool,
            queues,
            config,
            gauged: Default::default(),
        }
    }

    /// Reads the paused queues from Postgres (the truth), makes Redis hold
    /// the same for every process, and sets the `queue_paused` gauges.
    async fn paused(&self) -> anyhow::Result<BTreeSet<QueueName>> {
        let paused: BTreeSet<QueueName> = queue_ops::pauses(&self.pool)
            .await?
            .iter()
            .filter_map(|p| p.queue.parse().ok())
            .collect();
        if self.queues.paused_queues().await != paused {
            self.queues
                .publish_paused(&paused)
                .await
                .context("while publishing the paused queues")?;
        }
        for q in QueueName::ALL {
            metrics::gauge!("queue_paused", "queue" => q.as_str()).set(if paused.contains(q) {
                1.0
            } else {
                0.0
            });
        }
        // Present from the first sweep, at 0, so a rate over it is 0 rather
        // than absent until the first push.
        for kind in KINDS.iter().filter(|k| k.grouped()) {
            metrics::counter!("dispatched_notifications_total", "queue" => kind.queue().as_str())
                .increment(0);
        }
        Ok(paused)
    }

    /// Every [`GAUGES_EVERY`], sets `queue_due` and
    /// `queue_oldest_due_seconds` for every queue.
    async fn gauge_waiting(&self) -> anyhow::Result<()> {
        {
            let mut at = self.gauged.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|t| t.elapsed() < GAUGES_EVERY) {
                return Ok(());
            }
            *at = Some(std::time::Instant::now());
        }
        // The queues this dispatcher does not feed get their Redis depth here.
        for &q in QueueName::ALL
            .iter()
            .filter(|q| !KINDS.iter().any(|k| k.queue() == **q))
        {
            if let Ok(n) = self.queues.backlog(q).await {
                metrics::gauge!("queue_depth", "queue" => q.as_str()).set(n as f64);
            }
        }
        let every = shared::db::scope::platform_wide()
            .context("the dispatcher's gauges run walled to one organisation")?;
        let waiting = queue_ops::waiting(&self.pool, Reach::Platform(every)).await?;
        let now = chrono::Utc::now();
        for q in QueueName::ALL {
            let w = waiting.get(q.as_str()).cloned().unwrap_or_default();
            metrics::gauge!("queue_due", "queue" => q.as_str()).set(w.due as f64);
            let age = w
                .oldest_due
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("queue_oldest_due_seconds", "queue" => q.as_str()).set(age);
        }
        Ok(())
    }

    fn marker_key(&self) -> String {
        format!("{}:dispatcher:marker", self.queues.prefix())
    }

    /// Sets the marker if it is missing; true when it was missing, which means
    /// Redis is new or lost its data.
    async fn redis_was_reset(&self) -> anyhow::Result<bool> {
        let mut conn = self.queues.connection();
        let created: Option<String> = redis::cmd("SET")
            .arg(self.marker_key())
            .arg(uuid::Uuid::new_v4().to_string())
            .arg("NX")
            .query_async(&mut conn)
            .await
            .context("while checking the Redis marker")?;
        Ok(created.is_some())
    }

    /// One pass over every kind.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        if self.redis_was_reset().await? {
            let mut n = 0;
            for kind in KINDS {
                n += kind.forget(&self.pool).await?;
            }
            if n > 0 {
                tracing::warn!(
                    rows = n,
                    "Redis lost its queues; pushing every queued row again"
                );
            }
            report.redis_reset = true;
        }
        // A paused queue is not fed: its work waits in Postgres.
        let paused = self.paused().await?;
        for kind in KINDS {
            report.recovered += kind.recover(&self.pool).await?;
            if paused.contains(&kind.queue()) {
                continue;
            }
            let fed = kind.dispatch(self).await?;
            report.dispatched += fed.rows;
            report.jobs += fed.jobs;
            report.full |= fed.full;
        }
        if let Err(error) = self.gauge_waiting().await {
            tracing::warn!(%error, "cannot count the work waiting in Postgres");
        }
        self.push_unenqueued_ticks().await?;
        if report.recovered > 0 {
            tracing::warn!(
                rows = report.recovered,
                "put back notifications or webhook deliveries whose worker stopped mid-send"
            );
        }
        Ok(report)
    }

    /// Feeds one kind's queue, unless another dispatcher is doing it right
    /// now (one at a time keeps the window a true bound): while the queue's
    /// Redis backlog is under the high-water mark, takes due rows, turns them
    /// into jobs, pushes as many as there is room for and releases the rest.
    /// Rows whose push failed are released too.
    pub async fn dispatch<K: Outbox>(&self, kind: &K) -> anyhow::Result<Fed> {
        let queue = Outbox::queue(kind);
        let key =
            LockKey::Dispatch(QueueName::ALL.iter().position(|q| *q == queue).unwrap_or(0) as u16);
        let mut lock = self.pool.acquire().await?;
        if !locks::try_lock(&mut lock, key).await? {
            return Ok(Fed::default());
        }
        let result = self.dispatch_locked(kind).await;
        locks::unlock(&mut lock, key).await?;
        result
    }

    async fn dispatch_locked<K: Outbox>(&self, kind: &K) -> anyhow::Result<Fed> {
        let queue = Outbox::queue(kind);
        let d = &self.config.dispatcher;
        let group_size = if K::GROUPED { d.group_size } else { 1 };
        let redispatch_after = kind.redispatch_after(&self.config);
        let mut fed = Fed::default();
        loop {
            let backlog = self.queues.backlog(queue).await?;
            metrics::gauge!("queue_depth", "queue" => queue.as_str()).set(backlog as f64);
            let room = d.high_water_mark.saturating_sub(backlog);
            if room == 0 {
                fed.full = true;
                break;
            }
            let limit = (room * group_size).min(MAX_TAKE);
            let rows = kind.take(&self.pool, limit, redispatch_after).await?;
            if rows.is_empty() {
                break;
            }
            let taken = rows.len();
            let mut jobs = kind.group(rows, group_size);
            let over = over_the_window(&mut jobs, room);
            if !over.is_empty() {
                fed.full = true;
                K::Job::release(&self.pool, &over).await?;
            }
            let rows: usize = jobs.iter().map(OutboxJob::rows).sum();
            let count = jobs.len();
            if let Err(error) = self.queues.push_all(queue, jobs.clone()).await {
                K::Job::release(&self.pool, &jobs).await?;
                return Err(error).with_context(|| format!("while pushing due {queue} jobs"));
            }
            fed.rows += rows;
            fed.jobs += count;
            if K::GROUPED {
                metrics::counter!("dispatched_notifications_total", "queue" => queue.as_str())
                    .increment(rows as u64);
            }
            // A short take means nothing more is due.
            if taken < limit {
                break;
            }
        }
        Ok(fed)
    }

    async fn push_unenqueued_ticks(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (name, at, job) in cron_ticks::lock_unenqueued(&mut *tx).await? {
            let Ok(job) = job.parse::<CronJob>() else {
                tracing::warn!(entry = %name, %job, "a recorded tick names a job this version does not know");
                continue;
            };
            push_tick(&self.queues, job, at).await?;
            cron_ticks::mark_enqueued(&mut *tx, &name, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// When the dispatcher sweeps next: every `interval` while sweeps find
/// work, slowing down to `idle_interval` while they find none (see
/// [`DispatcherConfig::next_pause`]), so an idle platform costs a sweep a
/// second rather than four. A wake-up ([`shared::wake::DispatcherWakes`])
/// brings the next sweep forward, but never closer than `interval` to the
/// one before it, so a stream of wake-ups under load does not add sweeps.
#[derive(Debug)]
pub struct Pacing {
    config: DispatcherConfig,
    pause: Duration,
    swept: tokio::time::Instant,
    next: tokio::time::Instant,
}

impl Pacing {
    /// The first sweep is due at once.
    pub fn new(config: DispatcherConfig) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            pause: config.interval(),
            config,
            swept: now,
            next: now,
        }
    }

    /// Resolves when the next sweep is due. Cancel-safe.
    pub async fn due(&self) {
        tokio::time::sleep_until(self.next).await
    }

    /// When the next sweep is due.
    pub fn next(&self) -> tokio::time::Instant {
        self.next
    }

    /// A sweep just ended; `found_work` says whether it did anything.
    pub fn swept(&mut self, found_work: bool) {
        self.swept_at(tokio::time::Instant::now(), found_work);
    }

    /// A sweep ended `at`.
    fn swept_at(&mut self, at: tokio::time::Instant, found_work: bool) {
        self.pause = self.config.next_pause(self.pause, found_work);
        self.swept = at;
        self.next = at + self.pause;
    }

    /// Someone committed work only the dispatcher feeds.
    pub fn woken(&mut self) {
        self.next = self.next.min(self.swept + self.config.interval());
    }
}

/// Splits off the jobs past the first `room`: there is no room for them in
/// the window.
fn over_the_window<J>(jobs: &mut Vec<J>, room: usize) -> Vec<J> {
    if jobs.len() > room {
        jobs.split_off(room)
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_past_the_window_are_left_over() {
        let mut jobs: Vec<usize> = (0..7).collect();
        assert_eq!(over_the_window(&mut jobs, 5), vec![5, 6]);
        assert_eq!(jobs, vec![0, 1, 2, 3, 4]);
        assert!(over_the_window(&mut jobs, 10).is_empty());
        assert_eq!(jobs.len(), 5);
    }

    fn pacing() -> Pacing {
        let config: DispatcherConfig = serde_json::from_value(serde_json::json!({
            "interval_ms": 250,
            "idle_interval_ms": 1_000,
            "high_water_mark": 2_000,
            "group_size": 100,
            "redispatch_after_secs": 120,
        }))
        .unwrap();
        Pacing::new(config)
    }

    #[test]
    fn empty_sweeps_slow_down_and_a_sweep_with_work_speeds_up() {
        let mut pacing = pacing();
        let start = pacing.next();
        let mut gaps = Vec::new();
        for found_work in [false, false, false, false, true] {
            // Each sweep takes 10 ms.
            let at = pacing.next() + Duration::from_millis(10);
            pacing.swept_at(at, found_work);
            gaps.push((pacing.next() - at).as_millis());
        }
        assert_eq!(gaps, [500, 1_000, 1_000, 1_000, 250]);
        assert_eq!((pacing.next() - start).as_millis(), 3_800);
    }

    #[test]
    fn a_wake_up_brings_an_idle_sweep_forward_but_not_closer_than_the_interval() {
        let mut pacing = pacing();
        let mut at = pacing.next();
        for _ in 0..3 {
            at = pacing.next();
            pacing.swept_at(at, false);
        }
        assert_eq!(pacing.next() - at, Duration::from_millis(1_000));
        pacing.woken();
        assert_eq!(
            pacing.next() - at,
            Duration::from_millis(250),
            "due one interval after the last sweep"
        );
        pacing.woken();
        assert_eq!(pacing.next() - at, Duration::from_millis(250));
        // Under load the next sweep is already that close: unchanged.
        pacing.swept_at(at, true);
        pacing.woken();
        assert_eq!(pacing.next() - at, Duration::from_millis(250));
    }

    #[test]
    fn every_channel_and_every_fed_queue_has_one_kind() {
        for &channel in Channel::ALL {
            let queue = QueueName::for_channel(channel);
            assert_eq!(KINDS.iter().filter(|k| k.queue() == queue).count(), 1);
        }
        let queues: BTreeSet<QueueName> = KINDS.iter().map(|k| k.queue()).collect();
        assert_eq!(queues.len(), KINDS.len(), "one kind per queue");
    }
}
