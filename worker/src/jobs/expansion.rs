//! What the two chunk expansions ([`super::expand_batch_chunk`] and
//! [`super::expand_bulk_chunk`]) share: running one chunk's job under its
//! queue's pause, and writing in-app notifications straight into the
//! inboxes when nothing is left to decide.

use std::time::Instant;

use anyhow::Context;
use shared::{
    db::{batches::ExpandedChunk, webhooks},
    domain::TenantId,
    events::Event,
    jobs::QueueName,
    outbox::OutboxJob,
    webhooks::WebhookEvent,
};

use crate::WorkerState;

/// Runs `expand` for `job` of `queue` (in the caller's span): while the
/// queue is paused the job goes back to Postgres instead, for the
/// dispatcher to feed it once resumed. The job is counted; a failure is
/// logged (rolled back: the chunk stays unexpanded and the dispatcher
/// pushes it again). Returns how many notifications it created: `None`
/// when it was already expanded, handed back, or failed.
pub async fn run<J: OutboxJob>(
    state: &WorkerState,
    queue: QueueName,
    job: &J,
    tenant: TenantId,
    expand: impl Future<Output = anyhow::Result<Option<u64>>>,
) -> Option<u64> {
    if state.queues.is_paused(queue).await {
        shared::outbox::hand_back(&state.pool, job).await;
        return None;
    }
    let started = Instant::now();
    let expanded = expand.await;
    super::count_job(state, queue, Some(tenant), expanded.is_ok(), started);
    match expanded {
        Ok(None) => {
            tracing::debug!("chunk already expanded");
            None
        }
        Ok(created) => created,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot expand the chunk");
            metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
            None
        }
    }
}

/// Whether in-app rows go straight into the inboxes: not when someone
/// hears of each send on its own (a webhook subscribed to `sent`), which
/// the channel queue's worker tells.
pub async fn place_inapp(tx: &mut sqlx::PgConnection, tenant: TenantId) -> anyhow::Result<bool> {
    let hooked = webhooks::subscribed_events(&mut *tx, tenant)
        .await
        .context("while reading webhook subscriptions")?;
    Ok(!hooked.iter().any(|h| h == WebhookEvent::Sent.as_str()))
}

/// Ends an expansion of `tenant`'s chunk that `written` holds: records the
/// inbox events of the in-app notifications it placed, commits, and then
/// announces them ([`announce_placed`]). Returns how many notifications it
/// created.
pub async fn commit(
    state: &WorkerState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: TenantId,
    written: ExpandedChunk,
) -> anyhow::Result<Option<u64>> {
    let placed = written.placed.len() as u64;
    let events = shared::events::announce_placed(&mut tx, tenant, written.placed, &written.created)
        .await
        .context("while recording inbox events")?;
    tx.commit().await.context("while committing")?;
    announce_placed(state, tenant, placed, &events).await;
    if written.inserted > placed {
        // The rows not placed wait for the dispatcher; an idle one sweeps
        // now instead of at its next idle sweep.
        state.queues.wake_dispatcher().await;
    }
    Ok(Some(written.inserted))
}

/// Counts `placed` in-app notifications written straight into the inboxes
/// of `tenant` as sent, and publishes their inbox `events` (after the
/// commit).
pub async fn announce_placed(state: &WorkerState, tenant: TenantId, placed: u64, events: &[Event]) {
    if placed == 0 {
        return;
    }
    metrics::counter!("jobs_succeeded_total", "queue" => "inapp").increment(placed);
    metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
        .increment(placed);
    state.throughput.record(
        QueueName::InApp,
        Some(tenant),
        shared::throughput::Outcome::Sent,
        placed,
        None,
        None,
    );
    if let Err(error) = shared::events::publish(&state.queues, events).await {
        // Connected clients catch up from Postgres when they reconnect.
        tracing::warn!(%error, "cannot publish inbox events");
    }
}
