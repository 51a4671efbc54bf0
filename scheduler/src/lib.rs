//! The scheduler: cron ticks and the dispatcher.
//!
//! * [`cron::CronTicker`] fires each `jobs.toml` cron entry once per tick,
//!   however many schedulers run: the tick is a row whose primary key only one
//!   of them can insert.
//! * [`dispatcher::Dispatcher`] moves due work from Postgres (the source of
//!   truth) into Redis: rows the API could not push, retries whose backoff has
//!   passed, rows whose worker died, and everything again after Redis lost its
//!   data. It keeps each queue's Redis backlog under a high-water mark, so
//!   millions of rows wait cheaply in Postgres and the Redis backend never
//!   sees the due-job burst that crashes it. [`dispatcher::Pacing`] slows
//!   its sweeps down while they find nothing; writers wake it.
//! * [`fleet::FleetReports`] tells operators when the dispatcher last swept,
//!   which replica won each cron tick, and how many workers serve each queue.
//! * [`alerts::Alerting`] evaluates alert rules once per period across
//!   replicas and makes the outgoing calls (Slack, PagerDuty, webhooks) of
//!   alerts' transitions.
//! * [`workflows::Runner`] executes the due steps of workflow runs, each
//!   once, claimed with `for update skip locked` so replicas split them.
//! * [`reports::Reporting`] folds the delivery rollups and emails scheduled
//!   reports once per firing across replicas.
//!
//! Several schedulers can run side by side; they split the work between them.

pub mod alerts;
pub mod cron;
pub mod dispatcher;
pub mod fleet;
pub mod reports;
pub mod workflows;

use std::{future::Future, time::Duration};

use shared::config::Settings;

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (pool, queues) = shared::connect(
        &settings,
        shared::db::scope::Fallback::Platform("scheduler"),
    )
    .await?;
    let mut wakes = queues.subscribe_dispatcher_wakes();
    let dispatcher =
        dispatcher::Dispatcher::new(pool.clone(), queues.clone(), settings.jobs.clone());
    let alerting = alerts::Alerting::start(&settings, pool.clone(), queues.clone())?;
    let runner = workflows::Runner::new(pool.clone(), settings.jobs.clone())
        .with_quotas(queues.connection(), queues.prefix())
        .spawn();
    let reporting = reports::Reporting::start(&settings, pool.clone());
    let mut reports = fleet::FleetReports::new(pool.clone(), queues.clone(), settings.jobs.clone());
    let mut ticker = cron::CronTicker::new(
        pool.clone(),
        queues,
        settings.jobs.cron.clone(),
        chrono::Utc::now(),
    );
    let mut pacing = dispatcher::Pacing::new(settings.jobs.dispatcher.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(entries = settings.jobs.cron.len(), "scheduler starting");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            () = wakes.woken() => pacing.woken(),
            () = pacing.due() => {
                let found_work = match dispatcher.sweep().await {
                    Ok(report) => {
                        if let Err(error) = reports.swept().await {
                            tracing::debug!(error = format!("{error:#}"), "cannot report the sweep");
                        }
                        report.found_work()
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "dispatcher sweep failed; retrying");
                        true
                    }
                };
                pacing.swept(found_work);
            }
            _ = tick.tick() => {
                match ticker.tick(chrono::Utc::now()).await {
                    Ok(won) => if let Err(error) = reports.ticked(&won).await {
                        tracing::debug!(error = format!("{error:#}"), "cannot note the ticks' winner");
                    },
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "cron tick failed; retrying"),
                }
                shared::db::ops_actions::advance_logged(&pool).await;
            }
        }
    }
    alerting.stop().await;
    runner.abort();
    let _ = runner.await;
    reporting.stop().await;
    pool.close().await;
    tracing::info!("scheduler stopped");
    Ok(())
}
