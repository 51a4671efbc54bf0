//! `DeliverWebhooks`: POST a group of signed events of one tenant to their
//! endpoints.
//!
//! The group is claimed in one statement (a duplicate job claims nothing).
//! Each delivery is signed with its endpoint's secret and sent through the
//! guarded client ([`crate::webhooks`]). A 2xx answer delivers it; anything
//! else (another status, a redirect, a timeout, a refused connection) is
//! tried again with the queue's backoff until its last attempt, when it is
//! `failed` and counts against its endpoint, which is disabled after enough
//! failures in a row.

use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use futures::StreamExt;
use shared::{
    db::webhooks::{self, Claimed, DeliveryOutcome, Recorded},
    domain::TenantId,
    jobs::{DeliverWebhooks, Job, QueueName},
    outbox::{self, Enqueued},
};
use tracing::Instrument;

use crate::{WorkerState, webhooks::CallResult};

/// Calls within one job run at most this many at once.
const PARALLEL_CALLS: usize = 8;

/// Runs one `DeliverWebhooks` job.
pub async fn handle(
    job: DeliverWebhooks,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let queue = job.queue();
    let span = tracing::info_span!(
        "job",
        queue = %queue,
        job = DeliverWebhooks::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        size = job.delivery_ids.len(),
    );
    async move {
        if state.queues.is_paused(queue).await {
            // Back to Postgres: the dispatcher feeds them once resumed.
            outbox::hand_back(&state.pool, &job).await;
            return Ok(());
        }
        let config = state.jobs.queue(queue);
        let rounds = job.delivery_ids.len().div_ceil(PARALLEL_CALLS) as u32 + 1;
        let lease = config.timeout() * rounds;
        let claimed =
            match webhooks::claim(&state.pool, job.tenant_id, &job.delivery_ids, lease).await {
                Ok(c) => c,
                Err(error) => {
                    // The rows stay queued; the dispatcher pushes them again.
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        "cannot claim webhook deliveries"
                    );
                    metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
                    return Ok(());
                }
            };
        futures::stream::iter(claimed)
            .for_each_concurrent(PARALLEL_CALLS, |row| {
                let state = state.clone();
                async move { deliver(&state, job.tenant_id, row).await }
            })
            .await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Pushes the job of deliveries just queued (committed, and marked pushed).
/// If the push fails they are marked not pushed, and the dispatcher's next
/// sweep pushes them.
pub async fn push(state: &WorkerState, tenant_id: TenantId, delivery_ids: Vec<uuid::Uuid>) {
    if delivery_ids.is_empty() {
        return;
    }
    let enqueued = Enqueued::one(DeliverWebhooks {
        tenant_id,
        delivery_ids,
    });
    if let Err(error) = enqueued.push(&state.queues, &state.pool).await {
        // They are pushed again once `redispatch_after` has passed.
        tracing::error!(
            error = &error as &dyn std::error::Error,
            "cannot release webhook deliveries"
        );
    }
}

/// Makes one claimed delivery's call and records it.
async fn deliver(state: &WorkerState, tenant_id: TenantId, row: Claimed) {
    let queue = QueueName::Webhook;
    let span = tracing::info_span!(
        "webhook",
        tenant_id = %tenant_id,
        delivery_id = %row.id,
        endpoint_id = %row.endpoint_id,
        attempt = row.attempts,
    );
    async move {
        metrics::counter!("jobs_started_total", "queue" => queue.as_str()).increment(1);
        let started = std::time::Instant::now();
        let result = match open_secret(state, tenant_id, &row) {
            Ok(secret) => {
                let body = serde_json::to_vec(&row.payload.0).unwrap_or_default();
                let timestamp = chrono::Utc::now().timestamp();
                state
                    .webhooks
                    .post(&row.url, &secret, &row.id.to_string(), timestamp, body)
                    .await
            }
            Err(why) => CallResult::Refused(None, why),
        };
        let config = state.jobs.queue(queue);
        let outcome = match result {
            CallResult::Accepted(code) => DeliveryOutcome::Delivered { code },
            CallResult::Refused(code, error) if row.attempts < row.max_attempts => {
                DeliveryOutcome::Retry {
                    code,
                    error,
                    after: config.backoff.delay(row.attempts as u32),
                }
            }
            CallResult::Refused(code, error) => DeliveryOutcome::Failed { code, error },
        };
        let recorded = webhooks::record_attempt(
            &state.pool,
            tenant_id,
            row.id,
            row.attempts,
            &outcome,
            state.webhook_disable_after,
        )
        .await;
        match recorded {
            Ok(Recorded::Written) => {}
            Ok(Recorded::EndpointDisabled) => {
                tracing::warn!("disabled the endpoint after repeated failed deliveries")
            }
            Ok(Recorded::Lost) => {
                tracing::warn!("the claim expired before the outcome was recorded")
            }
            Err(error) => {
                // The lease runs out and the dispatcher puts the row back.
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "cannot record the webhook attempt"
                );
            }
        }
        let latency = started.elapsed();
        metrics::histogram!("job_duration_seconds", "queue" => queue.as_str())
            .record(latency.as_secs_f64());
        let done = match &outcome {
            DeliveryOutcome::Delivered { .. } => shared::throughput::Outcome::Sent,
            DeliveryOutcome::Retry { .. } => shared::throughput::Outcome::Retried,
            DeliveryOutcome::Failed { .. } => shared::throughput::Outcome::Failed,
        };
        state
            .throughput
            .record(queue, Some(tenant_id), done, 1, Some(latency), None);
        match &outcome {
            DeliveryOutcome::Delivered { code } => {
                metrics::counter!("jobs_succeeded_total", "queue" => queue.as_str()).increment(1);
                tracing::info!(
                    code,
                    latency_ms = latency.as_millis() as u64,
                    "webhook delivered"
                );
            }
            DeliveryOutcome::Retry { code, error, after } => {
                metrics::counter!("jobs_retried_total", "queue" => queue.as_str()).increment(1);
                tracing::info!(
                    code,
                    %error,
                    retry_in_ms = after.as_millis() as u64,
                    "webhook not accepted; will retry"
                );
            }
            DeliveryOutcome::Failed { code, error } => {
                metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
                tracing::warn!(code, %error, "webhook failed its last attempt");
            }
        }
    }
    .instrument(span)
    .await
}

/// The endpoint's signing secret, opened.
fn open_secret(state: &WorkerState, tenant_id: TenantId, row: &Claimed) -> Result<String, String> {
    let keyring = state
        .keyring
        .as_ref()
        .ok_or("no encryption key is configured (ENCRYPTION_KEYS)")?;
    let plain = keyring
        .open(
            &row.sealed(),
            &shared::webhooks::aad(tenant_id, row.endpoint_id),
        )
        .map_err(|e| format!("the endpoint's secret does not open: {e}"))?;
    String::from_utf8(plain).map_err(|_| "the endpoint's secret is not text".to_owned())
}
