//! Cron ticks, exactly once per tick across scheduler replicas.
//!
//! Each pass finds, for every entry, the latest fire time since the previous
//! pass. Inserting the `(name, time)` row is the vote: the one scheduler whose
//! insert lands enqueues the job, in the same transaction; the others wait for
//! it, see the conflict and do nothing.
//! A tick whose job did not reach Redis stays marked so the dispatcher pushes
//! it later. Ticks missed while no scheduler ran are not replayed.

use chrono::{DateTime, Utc};
use shared::{
    config::{CronEntry, CronJob},
    db::cron_ticks,
    jobs::{PollUpsShipments, QueueError, Queues, RemindBaaExpiry, RunMaintenance},
};
use sqlx::PgPool;

/// Fires cron entries.
#[derive(Debug)]
pub struct CronTicker {
    pool: PgPool,
    queues: Queues,
    entries: Vec<CronEntry>,
    checked_until: DateTime<Utc>,
}

/// Pushes the job a tick of `job` at `scheduled_for` starts. The tick's time
/// travels in the job, so what the job does depends on when it was due, not
/// on when a worker got to it.
pub async fn push_tick(
    queues: &Queues,
    job: CronJob,
    scheduled_for: DateTime<Utc>,
) -> Result<(), QueueError> {
    match job {
        CronJob::RemindBaaExpiry => queues.push(RemindBaaExpiry { scheduled_for }).await,
        CronJob::VacuumQueues
        | CronJob::RedactExpiredContent
        | CronJob::PruneEvents
        | CronJob::ExpireInvitations => {
            queues
                .push(RunMaintenance {
                    task: job,
                    scheduled_for,
                })
                .await
        }
        CronJob::PollUpsShipments => {
            queues
                .push(PollUpsShipments {
                    scheduled_for,
                    tenant_id: None,
                    shipments: Vec::new(),
                })
                .await
        }
    }
}

impl CronTicker {
    /// A ticker that fires ticks after `since`.
    pub fn new(
        pool: PgPool,
        queues: Queues,
        entries: Vec<CronEntry>,
        since: DateTime<Utc>,
    ) -> Self {
        Self {
            pool,
            queues,
            entries,
            checked_until: since,
        }
    }

    /// Fires every tick due in `(previous pass, now]`; returns the ticks this
    /// scheduler won.
    pub async fn tick(
        &mut self,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        let mut won = Vec::new();
        for entry in &self.entries {
            let due = entry
                .schedule
                .schedule()
                .after(&self.checked_until)
                .take_while(|t| *t <= now)
                .last();
            let Some(at) = due else { continue };
            let mut tx = self.pool.begin().await?;
            if !cron_ticks::claim(&mut *tx, &entry.name, at, entry.job.as_str()).await? {
                continue;
            }
            tracing::info!(entry = %entry.name, scheduled_for = %at, "cron tick");
            metrics::counter!("cron_ticks_total", "entry" => entry.name.clone()).increment(1);
            match push_tick(&self.queues, entry.job, at).await {
                Ok(()) => cron_ticks::mark_enqueued(&mut *tx, &entry.name, at).await?,
                Err(error) => {
                    tracing::warn!(entry = %entry.name, %error, "tick recorded; its job will be pushed when Redis answers")
                }
            }
            tx.commit().await?;
            won.push((entry.name.clone(), at));
        }
        self.checked_until = now;
        Ok(won)
    }
}
