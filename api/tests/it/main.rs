//! The API's integration tests, against real Postgres, Redis and SMTP; one binary so CI links it once.

mod audit;
mod batches;
mod bulk_csv;
mod caches;
mod callbacks;
mod cli;
mod client_address;
mod edge;
mod identity;
mod inbox;
mod invitations;
mod logs;
mod operations;
mod org_support;
mod organizations;
mod preferences;
mod providers;
mod rate_limits;
mod realtime;
mod send_email;
mod sessions;
mod shipments;
mod subscribers;
mod templates;
mod users;
mod webhooks;
