//! Job handlers, one module per job. Each handler claims its unit of work in
//! Postgres before any side effect, records the outcome there, and returns
//! `Ok` to the queue for business failures: retries are scheduled in Postgres
//! (`run_at`), never by the Redis backend, whose own retry ignores max
//! attempts.

pub mod deliver_webhooks;
pub mod maintenance;
pub mod poll_ups;
pub mod send_notifications;
