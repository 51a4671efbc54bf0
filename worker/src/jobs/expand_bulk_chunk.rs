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
    db::bulk,
    jobs::{ExpandBulkChunk, Job, QueueName},
};
use tracing::Instrument;

use super::expansion;
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
        let created = expansion::run(
            &state,
            QueueName::BulkChunk,
            &job,
            job.tenant_id,
            expand(&state, &job),
        )
        .await;
        if let Some(created) = created {
            metrics::counter!("bulk_notifications_created_total").increment(created);
            tracing::debug!(created, "chunk expanded");
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
    let place_inapp = expansion::place_inapp(&mut tx, job.tenant_id).await?;
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
    expansion::commit(state, tx, job.tenant_id, written).await
}
