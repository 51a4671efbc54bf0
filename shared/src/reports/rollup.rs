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

use crate::throughput::BUCKETS;

/// How long hourly rollups and hour totals are kept.
pub const HOURS_KEPT: TimeDelta = TimeDelta::days(90);
/// How long daily rollups are kept: the longest custom range (366 days)
/// and the previous period it is compared with, with a month to spare.
pub const DAYS_KEPT: TimeDelta = TimeDelta::days(800);
/// Rows dropped per pruning statement.
const PRUNE_BATCH: i64 = 10_000;

/// Deltas folded per statement.
const FOLD_BATCH: i64 = 50_000;

/// `array[f(1), …, f(19)]` over the latency buckets.
fn buckets(f: impl Fn(usize) -> String) -> String {
    let parts: Vec<String> = (1..=BUCKETS).map(f).collect();
    format!("array[{}]::bigint[]", parts.join(", "))
}

/// Folds pending deltas into `delivery_hours` until none is left; returns
/// how many were folded.
#[tracing::instrument(skip_all)]
pub async fn fold(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let sum = buckets(|i| format!("sum(latency_ms[{i}])"));
    let add = buckets(|i| format!("h.latency_ms[{i}] + excluded.latency_ms[{i}]"));
    let add_day = buckets(|i| format!("d.latency_ms[{i}] + excluded.latency_ms[{i}]"));
    let sql = format!(
        "with taken as (
             delete from delivery_deltas
             where id in (select id from delivery_deltas order by id limit $1 for update skip locked)
             returning *
         ),
         summed as (
             select tenant_id, hour, channel, provider, template, category,
                    sum(accepted)::bigint as accepted, sum(sent)::bigint as sent,
                    sum(delivered)::bigint as delivered, sum(failed)::bigint as failed,
                    sum(bounced)::bigint as bounced, sum(read)::bigint as read,
                    {sum} as latency_ms
             from taken
             where exists (select 1 from tenants t where t.id = taken.tenant_id)
             group by tenant_id, hour, channel, provider, template, category
             order by tenant_id, hour, channel, provider, template, category
         ),
         upserted as (
             insert into delivery_hours as h
                 (tenant_id, hour, channel, provider, template, category,
                  accepted, sent, delivered, failed, bounced, read, latency_ms)
             select * from summed
             on conflict (tenant_id, hour, channel, provider, template, category) do update set
                 accepted = h.accepted + excluded.accepted,
                 sent = h.sent + excluded.sent,
                 delivered = h.delivered + excluded.delivered,
                 failed = h.failed + excluded.failed,
                 bounced = h.bounced + excluded.bounced,
                 read = h.read + excluded.read,
                 latency_ms = {add}
             returning 1
         ),
         days as (
             insert into delivery_days as d
                 (tenant_id, day, channel, provider, template, category,
                  accepted, sent, delivered, failed, bounced, read, latency_ms)
             select tenant_id, date_trunc('day', hour, 'UTC'), channel, provider, template,
                    category, sum(accepted), sum(sent), sum(delivered), sum(failed),
                    sum(bounced), sum(read), {sum}
             from summed
             group by 1, 2, 3, 4, 5, 6
             order by 1, 2, 3, 4, 5, 6
             on conflict (tenant_id, day, channel, provider, template, category) do update set
                 accepted = d.accepted + excluded.accepted,
                 sent = d.sent + excluded.sent,
                 delivered = d.delivered + excluded.delivered,
                 failed = d.failed + excluded.failed,
                 bounced = d.bounced + excluded.bounced,
                 read = d.read + excluded.read,
                 latency_ms = {add_day}
             returning 1
         ),
         totals as (
             insert into delivery_hour_totals as t
                 (tenant_id, hour, accepted, sent, delivered, failed, bounced, read)
             select tenant_id, hour, sum(accepted), sum(sent), sum(delivered), sum(failed),
                    sum(bounced), sum(read)
             from summed
             group by 1, 2
             order by 1, 2
             on conflict (tenant_id, hour) do update set
                 accepted = t.accepted + excluded.accepted,
                 sent = t.sent + excluded.sent,
                 delivered = t.delivered + excluded.delivered,
                 failed = t.failed + excluded.failed,
                 bounced = t.bounced + excluded.bounced,
                 read = t.read + excluded.read
             returning 1
         )
         select (select count(*) from taken), (select count(*) from upserted),
                (select count(*) from days), (select count(*) from totals)"
    );
    let mut total = 0u64;
    loop {
        let (taken, _, _, _): (i64, i64, i64, i64) = sqlx::query_as(&sql)
            .bind(FOLD_BATCH)
            .fetch_one(pool)
            .await?;
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
    let (since, done): (DateTime<Utc>, Option<DateTime<Utc>>) = sqlx::query_as(
        "select counting_since, backfilled_at from delivery_rollup_state for update",
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some(at) = done {
        return Ok(Backfill::AlreadyDone(at));
    }
    let lat = buckets(|i| format!("count(*) filter (where kind = 'sent' and lb = {})", i - 1));
    let sql = format!(
        "insert into delivery_deltas (tenant_id, hour, channel, provider, template, category,
                                      accepted, sent, delivered, failed, bounced, read, latency_ms)
         select tenant_id, hour, channel, provider, template, category,
                count(*) filter (where kind = 'accepted'), count(*) filter (where kind = 'sent'),
                count(*) filter (where kind = 'delivered'), count(*) filter (where kind = 'failed'),
                count(*) filter (where kind = 'bounced'), count(*) filter (where kind = 'read'),
                {lat}
         from (
             select n.tenant_id, date_trunc('hour', e.at, 'UTC') as hour, n.channel,
                    case when e.kind = 'accepted' then ''
                         when n.channel = 'inapp' then 'inbox'
                         else coalesce((select a.provider from delivery_attempts a
                                        where a.notification_id = n.id
                                        order by a.attempt desc limit 1), n.failed_provider, '')
                    end as provider,
                    coalesce(n.template_key, '') as template, coalesce(n.category, '') as category,
                    e.kind,
                    case when e.kind = 'sent'
                         then delivery_latency_bucket(floor(extract(epoch from n.sent_at - n.created_at) * 1000))
                         else -1 end as lb
             from notifications n
             cross join lateral (values
                 ('accepted', n.created_at),
                 ('sent', n.sent_at),
                 ('delivered', n.delivered_at),
                 ('read', n.read_at),
                 ('failed', case when n.status = 'failed' then coalesce(n.failed_at, n.updated_at) end),
                 ('bounced', case when n.status = 'bounced' then coalesce(n.failed_at, n.updated_at) end)
             ) as e(kind, at)
             where e.at is not null and e.at < $1 and n.created_at < $1
         ) c
         group by tenant_id, hour, channel, provider, template, category"
    );
    sqlx::query(&sql).bind(since).execute(&mut *tx).await?;
    sqlx::query("update delivery_rollup_state set backfilled_at = now()")
        .execute(&mut *tx)
        .await?;
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
    for (table, column, keep, count) in [
        ("delivery_hours", "hour", HOURS_KEPT, &mut pruned.hours),
        (
            "delivery_hour_totals",
            "hour",
            HOURS_KEPT,
            &mut pruned.hour_totals,
        ),
        ("delivery_days", "day", DAYS_KEPT, &mut pruned.days),
    ] {
        let sql = format!(
            "delete from {table} where ctid = any(array(
                 select ctid from {table} where {column} < $1 limit $2))"
        );
        loop {
            let done = sqlx::query(&sql)
                .bind(now - keep)
                .bind(PRUNE_BATCH)
                .execute(pool)
                .await?;
            *count += done.rows_affected();
            if done.rows_affected() < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(pruned)
}
