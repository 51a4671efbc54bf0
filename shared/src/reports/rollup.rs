//! The hourly delivery rollups (`delivery_hours`): folding the deltas the
//! notification triggers append, and the one-off backfill from existing
//! notifications.
//!
//! Every statement that writes notifications appends aggregated deltas
//! (migration `20261207000500_delivery_reports.sql`); [`fold`] adds them to
//! the hours in one statement and deletes them. Schedulers fold about once
//! a second ([`spawn_folder`]); two folding at once take disjoint deltas.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::throughput::BUCKETS;

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
         )
         select (select count(*) from taken), (select count(*) from upserted)"
    );
    let mut total = 0u64;
    loop {
        let (taken, _): (i64, i64) = sqlx::query_as(&sql)
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
