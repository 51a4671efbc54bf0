//! `RunMaintenance`: housekeeping started by cron ticks.
//!
//! * `vacuum_queues` drops the bookkeeping the Redis backend keeps for
//!   finished jobs (their data, metadata and the `done` set), which would
//!   otherwise grow without bound.
//! * `redact_expired_content` erases the bodies of finished notifications,
//!   and the payloads of workflow runs that ended, past the retention period.
//! * `expire_invitations` expires invitations past due and pushes lost
//!   invitation jobs again.
//! * `prune_events` drops real-time events kept for catch-up past their
//!   retention, and security events past theirs (in batches).

use std::{sync::Arc, time::Instant};

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use shared::{
    config::CronJob,
    db::notifications,
    jobs::{Job, QueueName, RunMaintenance},
};
use tracing::Instrument;

use crate::WorkerState;

/// Runs one `RunMaintenance` job.
pub async fn handle(
    job: RunMaintenance,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("job", queue = %job.queue(), job = RunMaintenance::NAME, job_id = %task_id, task = ?job.task);
    async move {
        let queue = job.queue().as_str();
        metrics::counter!("jobs_started_total", "queue" => queue).increment(1);
        let started = Instant::now();
        let result = match job.task {
            CronJob::VacuumQueues => vacuum_queues(&state).await,
            CronJob::RedactExpiredContent => redact(&state).await,
            CronJob::ExpireInvitations => expire_invitations(&state, job.scheduled_for).await,
            // Travels on its own queue; a stray one here does the same work.
            CronJob::RemindBaaExpiry => {
                crate::jobs::remind_baa_expiry::remind(&state, job.scheduled_for)
                    .await
                    .map(u64::from)
            }
            CronJob::PruneEvents => prune_events(&state, job.scheduled_for).await,
            // Travels on the `ups_poll` queue; here only if pushed by mistake.
            CronJob::PollUpsShipments => crate::jobs::poll_ups::sweep(&state, job.scheduled_for)
                .await
                .map(|n| n as u64),
        };
        metrics::histogram!("job_duration_seconds", "queue" => queue)
            .record(started.elapsed().as_secs_f64());
        crate::jobs::count_job(
            &state,
            QueueName::Maintenance,
            None,
            result.is_ok(),
            started,
        );
        match result {
            Ok(count) => {
                metrics::counter!("jobs_succeeded_total", "queue" => queue).increment(1);
                tracing::info!(count, "maintenance done");
            }
            Err(error) => {
                // The next tick tries again; nothing is lost by waiting.
                metrics::counter!("jobs_failed_total", "queue" => queue).increment(1);
                tracing::error!(error = format!("{error:#}"), "maintenance failed");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

async fn vacuum_queues(state: &WorkerState) -> anyhow::Result<u64> {
    use apalis_core::backend::Vacuum;
    let mut total = 0;
    for queue in QueueName::ALL {
        let mut storage = state.queues.storage::<RunMaintenance>(*queue, 1);
        total += storage
            .vacuum_before(std::time::Duration::from_secs(
                state.jobs.retention.finished_jobs_secs,
            ))
            .await
            .map_err(|e| anyhow::anyhow!("while vacuuming {queue}: {e}"))? as u64;
        // The backend adds every finished id to this set and never removes it.
        let done = format!("{}:done", state.queues.namespace(*queue));
        let mut conn = state.queues.connection();
        redis::cmd("DEL")
            .arg(&done)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(total)
}

/// Expires open invitations past due as of the tick. (Invitation jobs that
/// never reached Redis are pushed by the dispatcher, like every other kind.)
async fn expire_invitations(
    state: &WorkerState,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u64> {
    Ok(shared::db::invitations::expire(&state.pool, now).await?)
}

/// Drops real-time events past their retention, then security events older
/// than `security_events_days` before the tick, a batch at a time.
async fn prune_events(
    state: &WorkerState,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u64> {
    const BATCH: i64 = 5_000;
    let mut total =
        shared::db::events::prune(&state.pool, state.jobs.retention.events_hours).await?;
    let before = now - chrono::Duration::days(i64::from(state.jobs.retention.security_events_days));
    loop {
        let n = shared::db::security_events::prune(&state.pool, before, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

async fn redact(state: &WorkerState) -> anyhow::Result<u64> {
    let days = state.jobs.retention.content_days;
    let mut total = 0;
    loop {
        let n = notifications::redact_expired_content(&state.pool, days, 5_000).await?;
        total += n;
        if n < 5_000 {
            break;
        }
    }
    loop {
        let n = shared::db::workflow_runs::redact_finished(&state.pool, days, 5_000).await?;
        total += n;
        if n < 5_000 {
            return Ok(total);
        }
    }
}
