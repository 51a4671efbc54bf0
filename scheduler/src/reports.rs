//! Delivery analytics in the scheduler: every `REPORTS_TICK_SECS` it folds
//! the delivery deltas the notification triggers appended into the hourly
//! and daily rollups ([`shared::reports::rollup::fold`]), folds the batch
//! and CSV job status deltas into their counts
//! ([`shared::db::group_counts::fold_all_tenants`]) and emails the
//! scheduled reports that are due ([`shared::reports::deliver::run_due`]),
//! each firing once across replicas. About once an hour it drops rollups
//! past their retention ([`shared::reports::rollup::prune`]: hours after
//! 90 days, days after 800).

use chrono::Utc;
use shared::{config::Settings, reports};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// How often rollups past retention are dropped.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The scheduler's reporting task.
#[derive(Debug)]
pub struct Reporting {
    task: Option<JoinHandle<()>>,
}

impl Reporting {
    /// Starts folding and sending every `REPORTS_TICK_SECS` (not at all when
    /// it is 0).
    pub fn start(settings: &Settings, pool: PgPool) -> Self {
        let Some(interval) = settings.reports_interval else {
            return Self { task: None };
        };
        let jobs = settings.jobs.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if last_prune.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
                    last_prune = Some(tokio::time::Instant::now());
                    match reports::rollup::prune(&pool, Utc::now()).await {
                        Ok(p) => tracing::debug!(
                            hours = p.hours,
                            hour_totals = p.hour_totals,
                            days = p.days,
                            "pruned delivery rollups"
                        ),
                        Err(error) => {
                            tracing::warn!(%error, "cannot prune delivery rollups; retrying in an hour")
                        }
                    }
                }
                if let Err(error) = reports::rollup::fold(&pool).await {
                    tracing::warn!(%error, "cannot fold delivery rollups; retrying");
                }
                if let Err(error) = shared::db::group_counts::fold_all_tenants(&pool).await {
                    tracing::warn!(%error, "cannot fold batch and CSV job counts; retrying");
                }
                if let Err(error) = reports::deliver::run_due(&pool, &jobs, Utc::now()).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "scheduled reports failed; retrying"
                    );
                }
            }
        });
        Self { task: Some(task) }
    }

    /// Stops the task (a pass cut off is rolled back and done by the next).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}
