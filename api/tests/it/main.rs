//! The API's integration tests, against real Postgres, Redis and SMTP; one binary so CI links it once.

mod callbacks;
mod cli;
mod identity;
mod inbox;
mod logs;
mod operations;
mod preferences;
mod providers;
mod realtime;
mod send_email;
mod shipments;
mod subscribers;
mod templates;
mod webhooks;
