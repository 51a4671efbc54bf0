//! Cron ticks: one row per fired tick, which is what makes a tick fire once
//! however many schedulers run.
//!
//! A scheduler claims a tick, pushes its job and marks it enqueued in one
//! transaction: a rival's insert of the same tick waits for that transaction
//! and then finds the row, and the dispatcher's re-push of unenqueued ticks
//! never sees a tick whose first push is still under way.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Records the tick `name@scheduled_for`; true only for the one caller that
/// recorded it first.
#[tracing::instrument(skip_all)]
pub async fn claim(
    db: impl PgExecutor<'_>,
    name: &str,
    scheduled_for: DateTime<Utc>,
    job: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "insert into cron_ticks (name, scheduled_for, job) values ($1, $2, $3) on conflict do nothing",
        name,
        scheduled_for,
        job,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Notes that the tick's job reached Redis.
#[tracing::instrument(skip_all)]
pub async fn mark_enqueued(
    db: impl PgExecutor<'_>,
    name: &str,
    scheduled_for: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update cron_ticks set enqueued_at = now() where name = $1 and scheduled_for = $2",
        name,
        scheduled_for,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Locks and returns ticks of the last day whose job never reached Redis;
/// ticks another transaction holds are skipped. Call within a transaction and
/// mark each one enqueued before committing.
#[tracing::instrument(skip_all)]
pub async fn lock_unenqueued(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, DateTime<Utc>, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select name, scheduled_for, job from cron_ticks
         where enqueued_at is null and scheduled_for > now() - interval '1 day'
         order by scheduled_for limit 100
         for update skip locked",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name, r.scheduled_for, r.job))
        .collect())
}
