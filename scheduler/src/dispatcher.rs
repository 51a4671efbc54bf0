//! The dispatcher: due work from Postgres into Redis, under a bounded window.
//!
//! Each sweep, for each delivery queue:
//!
//! 1. puts back rows whose worker died mid-send (their claim's lease ran out);
//! 2. measures the queue's Redis backlog and, while it is under the
//!    high-water mark, takes due rows that are not in Redis, groups them by
//!    tenant into jobs of up to `group_size` ids, and pushes them.
//!
//! The `webhook` queue is fed the same way from `webhook_deliveries`: lost
//! claims put back, due deliveries to enabled endpoints grouped by tenant.
//!
//! Rows taken but not pushed (the window filled, or Redis failed) are released
//! at once for the next sweep. Cron ticks whose job never reached Redis are
//! pushed too.
//!
//! Redis losing its data (a restart without persistence, a flush, a failover)
//! is detected by a marker key: when the marker is gone, every queued row is
//! treated as not pushed and goes out again. Workers' claims make the repeats
//! harmless.

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context;
use shared::{
    config::{CronJob, JobsConfig},
    db::{
        batches, bulk, cron_ticks,
        locks::{self, LockKey},
        notifications, queue_ops, webhooks,
    },
    domain::{Channel, NotificationId, TenantId},
    jobs::{
        DeliverWebhooks, ExpandBatchChunk, ExpandBulkChunk, ParseBulkCsv, QueueName, Queues,
        SendNotifications,
    },
};
use sqlx::PgPool;

use crate::cron::push_tick;

/// The channels the dispatcher feeds.
const CHANNELS: &[Channel] = Channel::ALL;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Rows whose lost claim was put back.
    pub recovered: u64,
    /// Rows pushed.
    pub dispatched: usize,
    /// Jobs pushed.
    pub jobs: usize,
    /// Whether Redis was found to have lost its data.
    pub redis_reset: bool,
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
        for q in CHANNELS
            .iter()
            .map(|c| QueueName::for_channel(*c))
            .chain([QueueName::Webhook])
        {
            metrics::counter!("dispatched_notifications_total", "queue" => q.as_str()).increment(0);
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
        for q in [
            QueueName::Maintenance,
            QueueName::Invitation,
            QueueName::BaaReminder,
            QueueName::UpsPoll,
        ] {
            if let Ok(n) = self.queues.backlog(q).await {
                metrics::gauge!("queue_depth", "queue" => q.as_str()).set(n as f64);
            }
        }
        let waiting = queue_ops::waiting(&self.pool, None).await?;
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

    /// One pass over every queue.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        if self.redis_was_reset().await? {
            let n = notifications::forget_dispatched(&self.pool).await?
                + webhooks::forget_dispatched(&self.pool).await?
                + batches::forget_dispatched(&self.pool).await?
                + bulk::forget_dispatched(&self.pool).await?;
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
        for &channel in CHANNELS {
            report.recovered += notifications::recover_expired_leases(&self.pool, channel).await?;
            if paused.contains(&QueueName::for_channel(channel)) {
                continue;
            }
            let (rows, jobs) = self.dispatch_channel(channel).await?;
            report.dispatched += rows;
            report.jobs += jobs;
        }
        report.recovered += webhooks::recover_expired_leases(&self.pool).await?;
        if !paused.contains(&QueueName::Webhook) {
            let (rows, jobs) = self.dispatch_webhooks().await?;
            report.dispatched += rows;
            report.jobs += jobs;
        }
        if !paused.contains(&QueueName::BatchChunk) {
            report.jobs += self.dispatch_batch_chunks().await?;
        }
        if !paused.contains(&QueueName::BulkCsv) {
            report.jobs += self.dispatch_bulk_jobs().await?;
        }
        if !paused.contains(&QueueName::BulkChunk) {
            report.jobs += self.dispatch_bulk_chunks().await?;
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

    /// Dispatches one channel's queue, unless another dispatcher is doing it
    /// right now: one at a time keeps the window a true bound.
    async fn dispatch_channel(&self, channel: Channel) -> anyhow::Result<(usize, usize)> {
        let queue = QueueName::for_channel(channel);
        let key =
            LockKey::Dispatch(QueueName::ALL.iter().position(|q| *q == queue).unwrap_or(0) as u16);
        let mut lock = self.pool.acquire().await?;
        if !locks::try_lock(&mut lock, key).await? {
            return Ok((0, 0));
        }
        let result = self.dispatch_locked(queue, channel).await;
        locks::unlock(&mut lock, key).await?;
        result
    }

    async fn dispatch_locked(
        &self,
        queue: QueueName,
        channel: Channel,
    ) -> anyhow::Result<(usize, usize)> {
        let d = &self.config.dispatcher;
        let redispatch_after = Duration::from_secs(d.redispatch_after_secs);
        let mut rows_pushed = 0;
        let mut jobs_pushed = 0;
        loop {
            let backlog = self.queues.backlog(queue).await?;
            metrics::gauge!("queue_depth", "queue" => queue.as_str()).set(backlog as f64);
            let room = d.high_water_mark.saturating_sub(backlog);
            if room == 0 {
                break;
            }
            let limit = (room * d.group_size).min(20_000);
            let due = notifications::take_due(&self.pool, channel, limit, redispatch_after).await?;
            if due.is_empty() {
                break;
            }
            let taken = due.len();
            let (jobs, leftover) = group(channel, due, d.group_size, room);
            if !leftover.is_empty() {
                notifications::release_taken(&self.pool, &leftover).await?;
            }
            let pushed_rows: usize = jobs.iter().map(|j| j.notification_ids.len()).sum();
            let job_count = jobs.len();
            if let Err(error) = self.queues.push_all(queue, jobs.clone()).await {
                let ids: Vec<NotificationId> =
                    jobs.into_iter().flat_map(|j| j.notification_ids).collect();
                notifications::release_taken(&self.pool, &ids).await?;
                return Err(error).context("while pushing due notifications");
            }
            rows_pushed += pushed_rows;
            jobs_pushed += job_count;
            metrics::counter!("dispatched_notifications_total", "queue" => queue.as_str())
                .increment(pushed_rows as u64);
            // A short batch means nothing more is due.
            if taken < limit {
                break;
            }
        }
        Ok((rows_pushed, jobs_pushed))
    }

    /// Pushes batch chunks that are not expanded and not in Redis (their push
    /// failed, or their job was lost), under the `batch_chunk` window.
    async fn dispatch_batch_chunks(&self) -> anyhow::Result<usize> {
        let queue = QueueName::BatchChunk;
        let d = &self.config.dispatcher;
        let backlog = self.queues.backlog(queue).await?;
        metrics::gauge!("queue_depth", "queue" => queue.as_str()).set(backlog as f64);
        let room = d.high_water_mark.saturating_sub(backlog);
        if room == 0 {
            return Ok(0);
        }
        let redispatch_after = Duration::from_secs(d.redispatch_after_secs);
        let taken = batches::take_pending_chunks(&self.pool, room, redispatch_after).await?;
        if taken.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<ExpandBatchChunk> = taken
            .iter()
            .map(|&(tenant_id, batch_id, seq)| ExpandBatchChunk {
                tenant_id,
                batch_id,
                seq,
            })
            .collect();
        let count = jobs.len();
        if let Err(error) = self.queues.push_all(queue, jobs).await {
            for (tenant_id, batch_id, seq) in taken {
                batches::release_chunk(&self.pool, tenant_id, batch_id, seq).await?;
            }
            return Err(error).context("while pushing batch chunks");
        }
        Ok(count)
    }

    /// Pushes CSV bulk jobs that wait for a parser: never pushed, or whose
    /// parser stopped committing (it died) for longer than its lease.
    async fn dispatch_bulk_jobs(&self) -> anyhow::Result<usize> {
        let queue = QueueName::BulkCsv;
        let lease = self.config.queue(queue).timeout();
        let taken = bulk::take_pending(&self.pool, lease, 100).await?;
        if taken.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<ParseBulkCsv> = taken
            .iter()
            .map(|&(tenant_id, job_id)| ParseBulkCsv { tenant_id, job_id })
            .collect();
        let count = jobs.len();
        if let Err(error) = self.queues.push_all(queue, jobs).await {
            for (tenant_id, id) in taken {
                bulk::release_dispatch(&self.pool, tenant_id, id).await?;
            }
            return Err(error).context("while pushing bulk jobs");
        }
        Ok(count)
    }

    /// Pushes CSV chunks that are not expanded and not in Redis (their push
    /// after the parser's commit failed, or their job was lost), under the
    /// `bulk_chunk` window.
    async fn dispatch_bulk_chunks(&self) -> anyhow::Result<usize> {
        let queue = QueueName::BulkChunk;
        let d = &self.config.dispatcher;
        let backlog = self.queues.backlog(queue).await?;
        metrics::gauge!("queue_depth", "queue" => queue.as_str()).set(backlog as f64);
        let room = d.high_water_mark.saturating_sub(backlog);
        if room == 0 {
            return Ok(0);
        }
        let redispatch_after = Duration::from_secs(d.redispatch_after_secs);
        let taken = bulk::take_pending_chunks(&self.pool, room, redispatch_after).await?;
        if taken.is_empty() {
            return Ok(0);
        }
        let jobs: Vec<ExpandBulkChunk> = taken
            .iter()
            .map(|&(tenant_id, job_id, seq)| ExpandBulkChunk {
                tenant_id,
                job_id,
                seq,
            })
            .collect();
        let count = jobs.len();
        if let Err(error) = self.queues.push_all(queue, jobs).await {
            for (tenant_id, id, seq) in taken {
                bulk::release_chunks(&self.pool, tenant_id, id, &[seq]).await?;
            }
            return Err(error).context("while pushing CSV chunks");
        }
        Ok(count)
    }

    /// Dispatches the `webhook` queue, one dispatcher at a time.
    async fn dispatch_webhooks(&self) -> anyhow::Result<(usize, usize)> {
        let queue = QueueName::Webhook;
        let key =
            LockKey::Dispatch(QueueName::ALL.iter().position(|q| *q == queue).unwrap_or(0) as u16);
        let mut lock = self.pool.acquire().await?;
        if !locks::try_lock(&mut lock, key).await? {
            return Ok((0, 0));
        }
        let result = self.dispatch_webhooks_locked().await;
        locks::unlock(&mut lock, key).await?;
        result
    }

    async fn dispatch_webhooks_locked(&self) -> anyhow::Result<(usize, usize)> {
        let queue = QueueName::Webhook;
        let d = &self.config.dispatcher;
        let redispatch_after = Duration::from_secs(d.redispatch_after_secs);
        let mut rows_pushed = 0;
        let mut jobs_pushed = 0;
        loop {
            let backlog = self.queues.backlog(queue).await?;
            metrics::gauge!("queue_depth", "queue" => queue.as_str()).set(backlog as f64);
            let room = d.high_water_mark.saturating_sub(backlog);
            if room == 0 {
                break;
            }
            let limit = (room * d.group_size).min(20_000);
            let due = webhooks::take_due(&self.pool, limit, redispatch_after).await?;
            if due.is_empty() {
                break;
            }
            let taken = due.len();
            let (jobs, leftover) = group_webhooks(due, d.group_size, room);
            if !leftover.is_empty() {
                webhooks::release_taken(&self.pool, &leftover).await?;
            }
            let pushed_rows: usize = jobs.iter().map(|j| j.delivery_ids.len()).sum();
            let job_count = jobs.len();
            if let Err(error) = self.queues.push_all(queue, jobs.clone()).await {
                let ids: Vec<uuid::Uuid> = jobs.into_iter().flat_map(|j| j.delivery_ids).collect();
                webhooks::release_taken(&self.pool, &ids).await?;
                return Err(error).context("while pushing due webhook deliveries");
            }
            rows_pushed += pushed_rows;
            jobs_pushed += job_count;
            metrics::counter!("dispatched_notifications_total", "queue" => queue.as_str())
                .increment(pushed_rows as u64);
            if taken < limit {
                break;
            }
        }
        Ok((rows_pushed, jobs_pushed))
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

/// Groups rows (sorted by tenant) into jobs of up to `group_size` ids of one
/// tenant, at most `max_jobs` of them; returns the jobs and the rows left over.
fn group(
    channel: Channel,
    rows: Vec<(TenantId, NotificationId)>,
    group_size: usize,
    max_jobs: usize,
) -> (Vec<SendNotifications>, Vec<NotificationId>) {
    let mut jobs: Vec<SendNotifications> = Vec::new();
    let mut leftover = Vec::new();
    for (tenant_id, id) in rows {
        let fits = jobs
            .last()
            .is_some_and(|j| j.tenant_id == tenant_id && j.notification_ids.len() < group_size);
        if fits {
            jobs.last_mut()
                .expect("checked above")
                .notification_ids
                .push(id);
        } else if jobs.len() < max_jobs {
            jobs.push(SendNotifications {
                tenant_id,
                channel,
                notification_ids: vec![id],
            });
        } else {
            leftover.push(id);
        }
    }
    (jobs, leftover)
}

/// Groups webhook deliveries (sorted by tenant) like [`group`].
fn group_webhooks(
    rows: Vec<(TenantId, uuid::Uuid)>,
    group_size: usize,
    max_jobs: usize,
) -> (Vec<DeliverWebhooks>, Vec<uuid::Uuid>) {
    let mut jobs: Vec<DeliverWebhooks> = Vec::new();
    let mut leftover = Vec::new();
    for (tenant_id, id) in rows {
        let count = jobs.len();
        match jobs.last_mut() {
            Some(j) if j.tenant_id == tenant_id && j.delivery_ids.len() < group_size => {
                j.delivery_ids.push(id)
            }
            _ if count < max_jobs => jobs.push(DeliverWebhooks {
                tenant_id,
                delivery_ids: vec![id],
            }),
            _ => leftover.push(id),
        }
    }
    (jobs, leftover)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NotificationId> {
        (0..n).map(|_| NotificationId::new()).collect()
    }

    #[test]
    fn rows_are_grouped_by_tenant_and_size() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut rows: Vec<_> = ids(5).into_iter().map(|i| (a, i)).collect();
        rows.extend(ids(2).into_iter().map(|i| (b, i)));
        let (jobs, leftover) = group(Channel::Email, rows, 2, 10);
        let sizes: Vec<_> = jobs
            .iter()
            .map(|j| (j.tenant_id, j.notification_ids.len()))
            .collect();
        assert_eq!(sizes, vec![(a, 2), (a, 2), (a, 1), (b, 2)]);
        assert!(leftover.is_empty());
    }

    #[test]
    fn webhook_deliveries_are_grouped_by_tenant_within_the_window() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut rows: Vec<_> = (0..3).map(|_| (a, uuid::Uuid::new_v4())).collect();
        rows.extend((0..2).map(|_| (b, uuid::Uuid::new_v4())));
        rows.sort_unstable();
        let (jobs, leftover) = group_webhooks(rows.clone(), 2, 10);
        let mut sizes: Vec<_> = jobs
            .iter()
            .map(|j| (j.tenant_id, j.delivery_ids.len()))
            .collect();
        sizes.sort_unstable();
        let mut expected = vec![(a, 2), (a, 1), (b, 2)];
        expected.sort_unstable();
        assert_eq!(sizes, expected);
        assert!(leftover.is_empty());
        let (jobs, leftover) = group_webhooks(rows, 2, 1);
        assert_eq!(jobs.len(), 1);
        assert_eq!(leftover.len(), 3);
    }

    #[test]
    fn rows_past_the_window_are_left_over() {
        let a = TenantId::new();
        let rows: Vec<_> = ids(7).into_iter().map(|i| (a, i)).collect();
        let (jobs, leftover) = group(Channel::Email, rows, 3, 2);
        assert_eq!(jobs.len(), 2);
        assert_eq!(leftover.len(), 1);
    }
}
