//! The worker: runs the jobs on the Redis queues.
//!
//! A worker process serves the queues `WORKER_QUEUES` names (all by default),
//! each with the concurrency `jobs.toml` gives it. Replicas are stateless and
//! can be added or removed at any time: every unit of work is a Postgres row,
//! claimed before any side effect, so a job delivered twice does its work once
//! and a worker killed mid-job loses nothing (its lease runs out and the
//! scheduler's dispatcher hands the row to another worker).
//!
//! On SIGTERM the worker stops fetching, lets in-flight jobs finish within
//! `SHUTDOWN_TIMEOUT_SECS`, and exits 0.
//!
//! * [`registry`]: the one place every queue is wired to its job type,
//!   handler and concurrency.
//! * [`jobs`]: one module per job.
//! * [`providers`]: the outside services notifications are delivered
//!   through, tried in order behind a shared rate limit and circuit breaker.
//! * [`tracking`]: carriers whose shipments are polled (UPS), which deliver
//!   nothing.
//! * [`webhooks`]: the client that calls organisations' webhook endpoints,
//!   guarded against server-side request forgery.
//! * [`coalesce`]: the same statement of many concurrent jobs, asked as one.
//! * [`heartbeat`]: what the process reports about itself to operators.

pub mod coalesce;
pub mod heartbeat;
pub mod jobs;
pub mod providers;
pub mod registry;
pub mod tracking;
pub mod webhooks;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use apalis::prelude::Monitor;
use lettre::message::Mailbox;
use shared::{
    config::{JobsConfig, Settings},
    jobs::{QueueName, Queues},
};
use sqlx::PgPool;

use crate::providers::{HttpProviders, email::EmailSender, guard::Guard};

/// What every job handler of this process shares.
#[derive(Debug)]
pub struct WorkerState {
    /// Postgres.
    pub pool: PgPool,
    /// The Redis queues.
    pub queues: Queues,
    /// Queue settings.
    pub jobs: JobsConfig,
    /// Email transport.
    pub email: EmailSender,
    /// The `From` of every email.
    pub email_from: Mailbox,
    /// This process's unique name (host, pid and a random suffix).
    pub name: String,
    /// How often an idle queue worker looks for jobs it was not woken for.
    pub poll_interval: Duration,
    /// How often a queue worker tells Redis it is alive; three missed ones
    /// and its peers take its in-flight jobs back.
    pub heartbeat: Duration,
    /// Wake-ups for the queues this process serves, so a pushed job is
    /// fetched at once.
    pub wakes: shared::wake::Wakes,
    /// Opens providers' sealed credentials.
    pub keyring: Option<shared::crypto::Keyring>,
    /// HTTP providers' client and addresses.
    pub http: HttpProviders,
    /// Providers' shared rate limits and circuit breakers.
    pub guard: Guard,
    /// Calls organisations' webhook endpoints.
    pub webhooks: webhooks::WebhookClient,
    /// Failed deliveries in a row that disable a webhook endpoint.
    pub webhook_disable_after: u32,
    /// Talks to UPS (tokens shared through Redis).
    pub ups: tracking::ups::UpsClient,
    /// The delivery jobs' statements, asked together with those of the
    /// jobs running beside them.
    pub together: jobs::together::Together,
    /// The delivery jobs' own tasks, bounded per queue by its concurrency
    /// ([`jobs::detached`]).
    pub slots: jobs::detached::Slots,
    /// Jobs running now, for the heartbeat ([`heartbeat`]).
    pub in_flight: heartbeat::InFlight,
    /// Finished work per queue and minute, for the operators' charts.
    pub throughput: shared::throughput::Throughput,
    /// Failed jobs, counted per cause for error tracking.
    pub errors: shared::errors::ErrorTracker,
}

/// How long one UPS request may take.
const UPS_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A name no other worker process has, now or after a restart.
pub fn unique_name() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "worker".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Runs the worker until `shutdown` resolves, then drains in-flight jobs for
/// at most the configured bound.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (pool, queues) =
        shared::connect(&settings, shared::db::scope::Fallback::Platform("worker")).await?;
    let email_timeout = settings.jobs.queue(QueueName::Email).timeout();
    let email =
        EmailSender::new(&settings.email, email_timeout).context("while setting up email")?;
    let http_timeout = [
        QueueName::Email,
        QueueName::Sms,
        QueueName::Push,
        QueueName::WhatsApp,
    ]
    .iter()
    .map(|q| settings.jobs.queue(*q).timeout())
    .max()
    .unwrap_or(email_timeout);
    let http = HttpProviders::new(
        settings.provider_urls.clone(),
        http_timeout,
        settings.public_base_url.clone(),
    )
    .context("while setting up the HTTP providers' client")?;
    let guard = Guard::new(
        queues.connection(),
        queues.prefix(),
        settings.jobs.circuit_breaker.clone(),
    );
    let webhooks = webhooks::WebhookClient::new(
        settings.jobs.queue(QueueName::Webhook).timeout(),
        settings.webhooks.allow_loopback,
    )
    .context("while setting up the webhook client")?;
    let ups = tracking::ups::UpsClient::new(
        &settings.provider_urls.ups,
        UPS_REQUEST_TIMEOUT,
        queues.connection(),
        queues.prefix(),
        settings.encryption.clone(),
    )
    .context("while setting up the UPS client")?;
    let wakes = queues.subscribe_wakes(&settings.worker_queues);
    let together = jobs::together::Together::new(
        pool.clone(),
        settings.encryption.clone(),
        settings.jobs.clone(),
    );
    let throughput = shared::throughput::Throughput::new();
    let flusher = throughput.spawn_flusher(pool.clone());
    let errors = shared::errors::ErrorTracker::new();
    let errors_flusher = errors.spawn_flusher(pool.clone());
    let state = Arc::new(WorkerState {
        slots: jobs::detached::Slots::new(&settings.jobs),
        in_flight: heartbeat::InFlight::default(),
        throughput,
        errors,
        together,
        wakes,
        heartbeat: settings.worker_heartbeat,
        ups,
        webhooks,
        webhook_disable_after: settings.webhooks.disable_after_failures,
        keyring: settings.encryption.clone(),
        http,
        guard,
        pool,
        queues,
        jobs: settings.jobs.clone(),
        email,
        email_from: settings.email.from.clone(),
        name: unique_name(),
        poll_interval: settings.worker_poll_interval,
    });
    tracing::info!(worker = %state.name, queues = ?settings.worker_queues, "worker starting");
    let beat = heartbeat::start(
        &state.queues,
        heartbeat::Identity {
            name: state.name.clone(),
            queues: settings.worker_queues.clone(),
            jobs: settings.jobs.clone(),
            started_at: chrono::Utc::now(),
        },
        state.in_flight.clone(),
        settings.worker_heartbeat,
    );
    let monitor = registry::register(Monitor::new(), &state, &settings.worker_queues)
        .should_restart(|ctx, error| {
            tracing::error!(worker = ctx.name(), %error, "queue worker stopped; restarting");
            true
        })
        .shutdown_timeout(settings.shutdown_timeout);
    let monitor = monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("stopping: no new jobs, draining in-flight ones");
            Ok(())
        })
        .await
        .context("while running the queue workers");
    beat.stop().await;
    monitor?;
    flusher.abort();
    errors_flusher.abort();
    if let Err(error) = state.throughput.flush(&state.pool).await {
        tracing::warn!(%error, "cannot record the last second of queue throughput");
    }
    if let Err(error) = state.errors.flush(&state.pool).await {
        tracing::warn!(%error, "cannot record the last second of error counts");
    }
    state.pool.close().await;
    tracing::info!(worker = %state.name, "worker stopped");
    Ok(())
}
