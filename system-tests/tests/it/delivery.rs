//! The worker's integration tests, against real Postgres, Redis and SMTP; one binary so CI links it once.

mod baa_reminders;
mod bulk_csv;
mod cancel;
mod channels;
mod defects;
mod delivery;
mod dropped_jobs;
mod durability;
mod heartbeat;
mod logs;
mod maintenance;
mod notices;
mod recording;
mod send_windows;
mod startup;
mod support;
mod templated;
mod ups;
mod webhooks;
