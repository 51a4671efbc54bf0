//! The one place every queue is wired: which job type it carries, which
//! handler runs it, and its concurrency from `jobs.toml`.

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use shared::jobs::{
    DeliverWebhooks, ExpandBatchChunk, ExpandBulkChunk, ParseBulkCsv, PollUpsShipments, QueueName,
    RemindBaaExpiry, RunMaintenance, SendInvitation, SendNotifications,
};

use crate::{WorkerState, jobs};

/// A restarted queue worker waits this long per earlier restart (at most 10 s),
/// so a Redis outage does not spin.
fn restart_delay(restarts: usize) -> Duration {
    Duration::from_secs(restarts.min(10) as u64)
}

/// Registers, on `$monitor`, a worker for `$queue` that runs `$handler` on
/// jobs of type `$job`. Every queue worker is built the same way: a unique
/// name per (re)start, the backend fetching when a push wakes it
/// ([`shared::wake`]) and otherwise every `poll_interval` (an idle worker
/// would else wait for its heartbeat), a delay before a restart (counted
/// in `queue_worker_restarts_total`), and the queue's concurrency.
macro_rules! queue_worker {
    ($monitor:expr, $state:expr, $queue:expr, $job:ty, $handler:path) => {{
        let state: Arc<WorkerState> = $state.clone();
        let queue: QueueName = $queue;
        let concurrency = state.jobs.queue(queue).concurrency;
        $monitor.register(move |restarts| {
            if restarts > 0 {
                // The worker's earlier future, with the jobs it ran, is
                // gone by now (delivery jobs run on: see
                // [`jobs::detached`]).
                metrics::counter!("queue_worker_restarts_total", "queue" => queue.as_str())
                    .increment(1);
            }
            let delay = restart_delay(restarts);
            let config = state
                .queues
                .backend_config(queue, concurrency)
                .heartbeat_interval(state.heartbeat);
            let backend = apalis_redis::RedisStorage::<$job>::new(state.queues.connection())
                .with_config(config)
                .before_start(move |_| async move {
                    tokio::time::sleep(delay).await;
                    Ok(())
                })
                .poll_with_strategy(
                    Strategy::new()
                        .apply(state.wakes.strategy(queue))
                        .interval(state.poll_interval),
                );
            WorkerBuilder::new(format!("{}:{queue}:{restarts}", state.name))
                .backend(backend)
                .data(state.clone())
                .concurrency(concurrency)
                .layer(state.in_flight.clone())
                .build($handler)
        })
    }};
}

/// Registers a worker for each queue this replica serves.
pub fn register(mut monitor: Monitor, state: &Arc<WorkerState>, queues: &[QueueName]) -> Monitor {
    for &queue in queues {
        monitor = match queue {
            QueueName::Email
            | QueueName::Sms
            | QueueName::Push
            | QueueName::WhatsApp
            | QueueName::InApp => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    SendNotifications,
                    jobs::send_notifications::handle
                )
            }
            QueueName::Webhook => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    DeliverWebhooks,
                    jobs::deliver_webhooks::handle
                )
            }
            QueueName::BatchChunk => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    ExpandBatchChunk,
                    jobs::expand_batch_chunk::handle
                )
            }
            QueueName::BulkCsv => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    ParseBulkCsv,
                    jobs::parse_bulk_csv::handle
                )
            }
            QueueName::BulkChunk => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    ExpandBulkChunk,
                    jobs::expand_bulk_chunk::handle
                )
            }
            QueueName::Maintenance => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    RunMaintenance,
                    jobs::maintenance::handle
                )
            }
            QueueName::Invitation => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    SendInvitation,
                    jobs::send_invitation::handle
                )
            }
            QueueName::BaaReminder => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    RemindBaaExpiry,
                    jobs::remind_baa_expiry::handle
                )
            }
            QueueName::UpsPoll => {
                queue_worker!(
                    monitor,
                    state,
                    queue,
                    PollUpsShipments,
                    jobs::poll_ups::handle
                )
            }
        };
    }
    monitor
}
