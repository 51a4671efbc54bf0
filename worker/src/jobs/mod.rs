//! Job handlers, one module per job. Each handler claims its unit of work in
//! Postgres before any side effect, records the outcome there, and returns
//! `Ok` to the queue for business failures: retries are scheduled in Postgres
//! (`run_at`), never by the Redis backend, whose own retry ignores max
//! attempts.

pub mod deliver_webhooks;
pub mod expand_batch_chunk;
pub mod expand_bulk_chunk;
pub mod maintenance;
pub mod parse_bulk_csv;
pub mod persist;
pub mod poll_ups;
pub mod remind_baa_expiry;
pub mod send_invitation;
pub mod send_notifications;
pub mod together;
