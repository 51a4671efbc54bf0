//! The delivery rollups' upkeep ([`crate::reports::rollup`]): folding the
//! deltas the notification triggers append (`delivery_deltas`) into the
//! hours (`delivery_hours`), the days (`delivery_days`) and each
//! organisation's hour totals (`delivery_hour_totals`); the one-off
//! backfill from the notifications (`delivery_rollup_state`); pruning past
//! retention. Every function works across tenants.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::throughput::BUCKETS;

/// `array[f(1), …, f(19)]` over the latency buckets.
fn buckets(f: impl Fn(usize) -> String) -> String {
    let parts: Vec<String> = (1..=BUCKETS).map(f).collect();
    format!("array[{}]::bigint[]", parts.join(", "))
}

/// Folds up to `limit` pending deltas (skipping those another fold holds)
/// into the hours, the days and the hour totals, and deletes them, in one
/// statement; returns how many it took. Deltas of a deleted organisation
/// are dropped.
pub async fn fold_deltas_across_tenants(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<i64, sqlx::Error> {
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
    let (taken, _, _, _): (i64, i64, i64, i64) =
        sqlx::query_as(&sql).bind(limit).fetch_one(db).await?;
    Ok(taken)
}

/// The backfill's state, locked until the end of the transaction: since
/// when the triggers count, and when the backfill ran, if it did.
pub async fn lock_backfill_state(
    tx: impl PgExecutor<'_>,
) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>), sqlx::Error> {
    let row =
        sqlx::query!("select counting_since, backfilled_at from delivery_rollup_state for update")
            .fetch_one(tx)
            .await?;
    Ok((row.counting_since, row.backfilled_at))
}

/// Appends, as deltas, every event of the notifications that happened
/// before `since` (of notifications created before it), counted from the
/// notifications themselves. Works across tenants.
pub async fn append_deltas_before_across_tenants(
    tx: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
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
    sqlx::query(&sql).bind(since).execute(tx).await?;
    Ok(())
}

/// Records that the backfill ran, now.
pub async fn mark_backfilled(tx: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("update delivery_rollup_state set backfilled_at = now()")
        .execute(tx)
        .await?;
    Ok(())
}

/// A rollup table that is pruned by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// `delivery_hours`, by hour.
    Hours,
    /// `delivery_hour_totals`, by hour.
    HourTotals,
    /// `delivery_days`, by day.
    Days,
}

impl Rollup {
    fn table_and_column(self) -> (&'static str, &'static str) {
        match self {
            Self::Hours => ("delivery_hours", "hour"),
            Self::HourTotals => ("delivery_hour_totals", "hour"),
            Self::Days => ("delivery_days", "day"),
        }
    }
}

/// Deletes up to `limit` rows of `rollup` of hours (or days) before
/// `before`; returns how many. Works across tenants.
pub async fn prune_before_across_tenants(
    db: impl PgExecutor<'_>,
    rollup: Rollup,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let (table, column) = rollup.table_and_column();
    let sql = format!(
        "delete from {table} where ctid = any(array(
             select ctid from {table} where {column} < $1 limit $2))"
    );
    let done = sqlx::query(&sql)
        .bind(before)
        .bind(limit)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
