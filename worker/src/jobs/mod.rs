//! Job handlers, one module per job. Each handler claims its unit of work in
//! Postgres before any side effect, records the outcome there, and returns
//! `Ok` to the queue for business failures: retries are scheduled in Postgres
//! (`run_at`), never by the Redis backend, whose own retry ignores max
//! attempts.

pub mod deliver_webhooks;
pub mod detached;
pub mod expand_batch_chunk;
pub mod expand_bulk_chunk;
pub mod expansion;
pub mod maintenance;
pub mod parse_bulk_csv;
pub mod persist;
pub mod poll_ups;
pub mod remind_baa_expiry;
pub mod send_invitation;
pub mod send_notifications;
pub mod together;

/// Counts one job of a queue whose jobs are the unit of work (not a
/// notification) in the operators' throughput: done, or failed (it runs
/// again). A failure is also counted for error tracking.
pub fn count_job(
    state: &crate::WorkerState,
    queue: shared::jobs::QueueName,
    tenant: Option<shared::domain::TenantId>,
    ok: bool,
    started: std::time::Instant,
) {
    let outcome = if ok {
        shared::throughput::Outcome::Sent
    } else {
        state.errors.record(
            shared::errors::ErrorKind::Job,
            shared::errors::reasons::JOB_FAILED,
            queue.as_str(),
            tenant,
            None,
        );
        shared::throughput::Outcome::Retried
    };
    state
        .throughput
        .record(queue, tenant, outcome, 1, Some(started.elapsed()), None);
}
