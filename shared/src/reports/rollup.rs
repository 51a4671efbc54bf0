//! The delivery rollups: hourly (`delivery_hours`), daily (`delivery_days`)
//! and each organisation's hour totals (`delivery_hour_totals`); folding
//! the deltas the notification triggers append, the one-off backfill from
//! existing notifications, and pruning past retention.
//!
//! Every statement that writes notifications appends aggregated deltas
//! (migration `20261207000500_delivery_reports.sql`); [`fold`] adds them to
//! the hours, the days and the hour totals in one statement and deletes
//! them. Schedulers fold about once a second ([`spawn_folder`]); two
//! folding at once take disjoint deltas. [`prune`] drops hours and hour
//! totals older than [`HOURS_KEPT`] and days older than [`DAYS_KEPT`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::db::delivery_rollups::{self, Rollup};

/// How long hourly rollups and hour totals are kept.
pub const HOURS_KEPT: TimeDelta = TimeDelta::days(90);
/// How long daily rollups are kept: the longest custom range (366 days)
/// and the previous period it is compared with, with a month to spare.
pub const DAYS_KEPT: TimeDelta = TimeDelta::days(800);
/// Rows dropped per pruning statement.
const PRUNE_BATCH: i64 = 10_000;

/// Deltas folded per statement.
const FOLD_BATCH: i64 = 50_000;

/// Folds pending deltas into `delivery_hours` until none is left; returns
/// how many were folded.
#[tracing::instrument(skip_all)]
pub async fn fold(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let taken = delivery_rollups::fold_deltas_across_tenants(pool, FOLD_BATCH).await?;
        total += taken as u64;
        if taken < FOLD_BATCH {
            return Ok(total);
        }
    }
}

/// Folds every second until the handle is dropped or aborted.
pub fn spawn_folder(pool: PgPool, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = fold(&pool).await {
                tracing::warn!(%error, "cannot fold delivery rollups; retrying");
            }
        }
    })
}

/// What [`backfill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Counted the events before this time from the notifications.
    Done(DateTime<Utc>),
    /// It had run already (at this time); nothing was counted again.
    AlreadyDone(DateTime<Utc>),
}

/// Builds the rollups of every event that happened before the triggers
/// started counting (the migration's time, `delivery_rollup_state`), from
/// the notifications themselves, once: run it after upgrading to a version
/// with reports. Events from then on are the triggers'; a second call does
/// nothing. Notifications already deleted by retention are not counted.
#[tracing::instrument(skip_all)]
pub async fn backfill(pool: &PgPool) -> Result<Backfill, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (since, done) = delivery_rollups::lock_backfill_state(&mut *tx).await?;
    if let Some(at) = done {
        return Ok(Backfill::AlreadyDone(at));
    }
    delivery_rollups::append_deltas_before_across_tenants(&mut *tx, since).await?;
    delivery_rollups::mark_backfilled(&mut *tx).await?;
    tx.commit().await?;
    fold(pool).await?;
    Ok(Backfill::Done(since))
}

/// What [`prune`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Hourly rows.
    pub hours: u64,
    /// Hour totals.
    pub hour_totals: u64,
    /// Daily rows.
    pub days: u64,
}

/// Drops hourly rollups and hour totals of hours before `now - HOURS_KEPT`
/// and daily rollups of days before `now - DAYS_KEPT`, in batches. `now`
/// is an argument, so tests move time instead of waiting.
#[tracing::instrument(skip_all)]
pub async fn prune(pool: &PgPool, now: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let mut pruned = Pruned::default();
    for (rollup, keep, count) in [
        (Rollup::Hours, HOURS_KEPT, &mut pruned.hours),
        (Rollup::HourTotals, HOURS_KEPT, &mut pruned.hour_totals),
        (Rollup::Days, DAYS_KEPT, &mut pruned.days),
    ] {
        loop {
            let done = delivery_rollups::prune_before_across_tenants(
                pool,
                rollup,
                now - keep,
                PRUNE_BATCH,
            )
            .await?;
            *count += done;
            if done < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(pruned)
}
