//! What the worker does with the work the API queued: deliveries on every
//! channel, retries and failures, cancels, send windows, recording of
//! provider outcomes, housekeeping jobs (maintenance, BAA reminders, UPS
//! tracking), and the worker process itself (startup, logs, heartbeats,
//! surviving Redis and the apalis defects, kills in the middle of a job).

mod baa_reminders;
mod bulk_csv;
mod cancel;
mod channels;
mod defects;
mod dropped_jobs;
mod durability;
mod email;
mod heartbeat;
mod logs;
mod maintenance;
mod notices;
mod recording;
mod send_windows;
mod startup;
mod templated;
mod ups;
mod webhooks;
