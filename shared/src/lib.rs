//! The parts the api, worker and scheduler share.
//!
//! * [`cache`]: in-process caches with a stated staleness bound.
//! * [`config`]: `jobs.toml` plus the environment, read once at startup.
//! * [`domain`]: ids, email addresses, subjects, channels and statuses, each
//!   parsed at the edge.
//! * [`crypto`]: secrets sealed at rest with AES-256-GCM.
//! * [`providers`]: the delivery providers organisations configure.
//! * [`db`]: Postgres access, one module per aggregate, tenant id first.
//! * [`events`]: real-time events, recorded for catch-up and published
//!   through Redis to every API instance.
//! * [`jobs`]: job payloads next to their queues, and the [`jobs::Queues`]
//!   handle that pushes them to Redis.
//! * [`outbox`]: how committed rows reach their queues: the push after the
//!   commit, and each kind of work as the dispatcher sweeps it.
//! * [`telemetry`]: logs and metrics.
//! * [`templates`]: tenants' message templates and their strict renderer.
//! * [`webhooks`]: signed outgoing webhooks and the guard on where they may go.
//! * [`pauses`]: queues an operator paused, as every process sees them.
//! * [`throughput`]: per-minute counts of finished work for the operators'
//!   charts.
//! * [`fleet`]: what the running processes report about themselves, and
//!   providers' live state, for operators.
//! * [`reports`]: delivery analytics: hourly rollups, reports, scheduled
//!   reports and a forecast.
//! * [`wake`]: wake-ups that let idle workers fetch a pushed job at once.
//! * [`workflows`]: organisations' multi-step notification journeys, checked
//!   on save.
//! * [`errors`]: error tracking, failures counted per cause and organisation.
//! * [`lookups`]: the lists of values callers pick from.
//! * [`alerts`]: alert rules, the alerts they open, and who hears about
//!   them.
//! * [`callbacks`]: providers' delivery callbacks: signature checks and
//!   how each provider's events are read.
//! * [`csv_rows`]: CSV records read from a byte stream fed in pieces, with
//!   resumable offsets.
//! * [`notices`]: what the platform sends on its own behalf (invitations,
//!   BAA-expiry reminders, shipment updates).
//! * [`permissions`]: `resource:action` permissions and the built-in
//!   permission sets.
//! * [`preferences`]: subscribers' channel and category preferences and
//!   quiet hours.
//! * [`quotas`]: send quotas as every process counts them.
//! * [`roles`]: user roles, invitation types and who may invite whom.
//! * [`send_windows`]: organisations' send windows, subscribers' quiet
//!   hours and the time zone they are read in.
//! * [`shipments`]: UPS-tracked shipments, their statuses and polling
//!   cadence.

pub mod alerts;
pub mod cache;
pub mod callbacks;
pub mod config;
pub mod crypto;
pub mod csv_rows;
pub mod db;
pub mod domain;
pub mod errors;
pub mod events;
pub mod fleet;
pub mod jobs;
pub mod lookups;
pub mod notices;
pub mod outbox;
pub mod pauses;
pub mod permissions;
pub mod preferences;
pub mod providers;
pub mod quotas;
pub mod reports;
pub mod roles;
pub mod send_windows;
pub mod shipments;
pub mod telemetry;
pub mod templates;
pub mod throughput;
pub mod wake;
pub mod webhooks;
pub mod workflows;

/// Opens the Postgres pool and the Redis queue handle every service needs.
/// Redis connects lazily, so a service starts while Redis is away.
/// `fallback` is the database scope of work in a task without one
/// ([`db::scope::Fallback`]): platform for the services that work across
/// organisations, nothing for the API.
pub async fn connect(
    settings: &config::Settings,
    fallback: db::scope::Fallback,
) -> anyhow::Result<(sqlx::PgPool, jobs::Queues)> {
    use anyhow::Context;
    let pool = db::connect(settings, fallback)
        .await
        .context("while connecting to Postgres")?;
    let queues = jobs::Queues::new(&settings.redis_url, &settings.redis_prefix)
        .context("while configuring Redis")?;
    Ok((pool, queues))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
