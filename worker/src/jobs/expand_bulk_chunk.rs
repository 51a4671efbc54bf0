//! `ExpandBulkChunk`: turn one chunk of a CSV bulk job (up to 1,000 valid
//! rows, rendered and held by the parser) into notifications.
//!
//! The chunk row is locked, its job's status read, and all its
//! notifications inserted in one statement in the same transaction that
//! marks the chunk expanded and drops its payload. A repeated or concurrent
//! job finds the chunk expanded and does nothing; a crash rolls everything
//! back and the scheduler's dispatcher pushes the chunk again. In-app
//! notifications that leave nothing to decide are written once, already in
//! their inboxes with their real-time events, like a batch's; the others
//! are born undispatched, so the dispatcher feeds them to the channel
//! queues under its window.

use std::sync::Arc;

use anyhow::Context;
use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use shared::{
    db::{bulk, webhooks},
    jobs::{ExpandBulkChunk, Job, QueueName},
    webhooks::WebhookEvent,
};
use tracing::Instrument;

use crate::WorkerState;

/// Runs one `ExpandBulkChunk` job.
pub async fn handle(
    job: ExpandBulkChunk,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        queue = %QueueName::BulkChunk,
        job = ExpandBulkChunk::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        bulk_job_id = %job.job_id,
        seq = job.seq,
    );
    async move {
        if state.queues.is_paused(QueueName::BulkChunk).await {
            // Back to Postgres: the dispatcher feeds it once resumed.
            shared::outbox::hand_back(&state.pool, &job).await;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let expanded = expand(&state, &job).await;
        crate::jobs::count_job(
            &state,
            QueueName::BulkChunk,
            Some(job.tenant_id),
            expanded.is_ok(),
            started,
        );
        match expanded {
            Ok(Some(created)) => {
                metrics::counter!("bulk_notifications_created_total").increment(created);
                tracing::debug!(created, "chunk expanded");
            }
            Ok(None) => tracing::debug!("chunk already expanded"),
            Err(error) => {
                // Rolled back: the chunk stays unexpanded and the dispatcher
                // pushes it again.
                tracing::error!(error = %format!("{error:#}"), "cannot expand the chunk");
                metrics::counter!("jobs_failed_total", "queue" => QueueName::BulkChunk.as_str())
                    .increment(1);
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Expands the chunk; `None` if it was already expanded.
async fn expand(state: &WorkerState, job: &ExpandBulkChunk) -> anyhow::Result<Option<u64>> {
    let mut tx = state.pool.begin().await.context("while starting")?;
    let Some(chunk) = bulk::take_chunk(&mut tx, job.tenant_id, job.job_id, job.seq)
        .await
        .context("while locking the chunk")?
    else {
        return Ok(None);
    };
    // Someone who hears of each send on its own gets it from the channel
    // queue's worker; otherwise in-app rows go straight into the inboxes.
    let hooked = webhooks::subscribed_events(&mut *tx, job.tenant_id)
        .await
        .context("while reading webhook subscriptions")?;
    let place_inapp = !hooked.iter().any(|h| h == WebhookEvent::Sent.as_str());
    let written = bulk::expand_chunk(
        &mut tx,
        job.tenant_id,
        job.job_id,
        job.seq,
        &chunk,
        place_inapp,
    )
    .await
    .context("while inserting the notifications")?;
    let placed = written.placed.len() as u64;
    let events =
        shared::events::announce_placed(&mut tx, job.tenant_id, written.placed, &written.created)
            .await
            .context("while recording inbox events")?;
    tx.commit().await.context("while committing")?;
    if placed > 0 {
        metrics::counter!("jobs_succeeded_total", "queue" => "inapp").increment(placed);
        metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
            .increment(placed);
        state.throughput.record(
            QueueName::InApp,
            Some(job.tenant_id),
            shared::throughput::Outcome::Sent,
            placed,
            None,
            None,
        );
        if let Err(error) = shared::events::publish(&state.queues, &events).await {
            // Connected clients catch up from Postgres when they reconnect.
            tracing::warn!(%error, "cannot publish inbox events");
        }
    }
    Ok(Some(written.inserted))
}
