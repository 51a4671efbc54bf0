//! What operators see of the queues: paused queues, work waiting in
//! Postgres per queue, and the per-minute throughput rollup
//! (`queue_minutes`, written by [`crate::throughput`]).
//!
//! Counts read within a [`Reach`]: one tenant's, or an operator's every
//! tenant's. They read only rows still waiting (partial indexes) and the
//! small rollup table, never the whole of `notifications`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::scope::Reach;
use crate::jobs::QueueName;

/// A paused queue.
#[derive(Debug, Clone)]
pub struct Pause {
    /// The queue.
    pub queue: String,
    /// Since when.
    pub paused_at: DateTime<Utc>,
    /// Who paused it (an audit actor such as `user:…`).
    pub paused_by: String,
    /// Why, in the operator's words.
    pub reason: Option<String>,
}

/// Every paused queue.
pub async fn pauses(db: impl PgExecutor<'_>) -> Result<Vec<Pause>, sqlx::Error> {
    sqlx::query_as!(
        Pause,
        "select queue, paused_at, paused_by, reason from queue_pauses order by queue"
    )
    .fetch_all(db)
    .await
}

/// Pauses `queue`; a queue already paused keeps its first pause. Returns
/// the pause in force.
pub async fn pause(
    db: &mut sqlx::PgConnection,
    queue: QueueName,
    by: &str,
    reason: Option<&str>,
) -> Result<Pause, sqlx::Error> {
    sqlx::query!(
        "insert into queue_pauses (queue, paused_by, reason) values ($1, $2, $3)
         on conflict (queue) do nothing",
        queue.as_str(),
        by,
        reason,
    )
    .execute(&mut *db)
    .await?;
    sqlx::query_as!(
        Pause,
        "select queue, paused_at, paused_by, reason from queue_pauses where queue = $1",
        queue.as_str(),
    )
    .fetch_one(&mut *db)
    .await
}

/// Resumes `queue`; true when it was paused.
pub async fn resume(db: impl PgExecutor<'_>, queue: QueueName) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("delete from queue_pauses where queue = $1", queue.as_str())
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Work of one queue waiting in Postgres.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Due now and not handed to Redis.
    pub due: i64,
    /// Held back for a while: quiet hours, a provider's pause, a retry's
    /// backoff.
    pub deferred: i64,
    /// Scheduled for later by its sender (`send_at`).
    pub scheduled: i64,
    /// Claimed by a worker right now.
    pub in_flight: i64,
    /// When the oldest due item became due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// Work waiting per queue (queues with nothing waiting are absent), within
/// `reach`.
pub async fn waiting(
    pool: &sqlx::PgPool,
    reach: Reach,
) -> Result<HashMap<String, Waiting>, sqlx::Error> {
    let mut out = HashMap::new();
    let channels = sqlx::query_as!(
        Queued,
        r#"select channel as queue,
                count(*) filter (where status in ('queued', 'deferred') and run_at <= now()
                                 and dispatched_at is null) as "due!",
                count(*) filter (where run_at > now() and (status = 'deferred'
                                 or (status = 'queued' and attempts > 0))) as "deferred!",
                count(*) filter (where status = 'queued' and attempts = 0 and run_at > now())
                    as "scheduled!",
                count(*) filter (where status = 'sending') as "in_flight!",
                min(run_at) filter (where status in ('queued', 'deferred') and run_at <= now())
                    as oldest_due
         from notifications
         where stage = 1 and ($1::uuid is null or tenant_id = $1)
         group by channel"#,
        reach.param(),
    )
    .fetch_all(pool)
    .await?;
    let webhook = sqlx::query_as!(
        Queued,
        r#"select 'webhook' as "queue!",
                count(*) filter (where status = 'queued' and run_at <= now() and dispatched_at is null)
                    as "due!",
                count(*) filter (where status = 'queued' and attempts > 0 and run_at > now())
                    as "deferred!",
                count(*) filter (where status = 'queued' and attempts = 0 and run_at > now())
                    as "scheduled!",
                count(*) filter (where status = 'sending') as "in_flight!",
                min(run_at) filter (where status = 'queued' and run_at <= now()) as oldest_due
         from webhook_deliveries
         where status in ('queued', 'sending') and ($1::uuid is null or tenant_id = $1)"#,
        reach.param(),
    )
    .fetch_one(pool)
    .await?;
    let chunks = sqlx::query_as!(
        Queued,
        r#"select 'batch_chunk' as "queue!", count(*) filter (where dispatched_at is null) as "due!",
                0::int8 as "deferred!", 0::int8 as "scheduled!",
                count(*) filter (where dispatched_at is not null) as "in_flight!",
                min(created_at) filter (where dispatched_at is null) as oldest_due
         from batch_chunks where expanded_at is null and ($1::uuid is null or tenant_id = $1)
         union all
         select 'bulk_chunk', count(*) filter (where dispatched_at is null), 0, 0,
                count(*) filter (where dispatched_at is not null),
                min(created_at) filter (where dispatched_at is null)
         from bulk_chunks where expanded_at is null and ($1::uuid is null or tenant_id = $1)
         union all
         select 'bulk_csv', count(*) filter (where status = 'queued'), 0, 0,
                count(*) filter (where status = 'parsing'),
                min(created_at) filter (where status = 'queued')
         from bulk_jobs where status in ('queued', 'parsing') and ($1::uuid is null or tenant_id = $1)"#,
        reach.param(),
    )
    .fetch_all(pool)
    .await?;
    for q in channels.into_iter().chain([webhook]).chain(chunks) {
        out.insert(
            q.queue,
            Waiting {
                due: q.due,
                deferred: q.deferred,
                scheduled: q.scheduled,
                in_flight: q.in_flight,
                oldest_due: q.oldest_due,
            },
        );
    }
    Ok(out)
}

/// One queue's row of [`waiting`].
struct Queued {
    queue: String,
    due: i64,
    deferred: i64,
    scheduled: i64,
    in_flight: i64,
    oldest_due: Option<DateTime<Utc>>,
}

/// One row of counts to add to `queue_minutes`.
#[derive(Debug, Clone)]
pub struct MinuteRow {
    /// The queue.
    pub queue: &'static str,
    /// The minute (truncated).
    pub minute: DateTime<Utc>,
    /// The organisation (nil: the platform's own work).
    pub tenant_id: Uuid,
    /// Done.
    pub sent: i64,
    /// Failed for good.
    pub failed: i64,
    /// Failed and scheduled again.
    pub retried: i64,
    /// Counts per duration bucket.
    pub duration_ms: Vec<i64>,
    /// Counts per latency bucket.
    pub latency_ms: Vec<i64>,
}

/// Adds `rows` (sorted by key) to `queue_minutes` in one statement.
pub async fn add_minutes(db: impl PgExecutor<'_>, rows: &[MinuteRow]) -> Result<(), sqlx::Error> {
    let queue: Vec<&str> = rows.iter().map(|r| r.queue).collect();
    let minute: Vec<DateTime<Utc>> = rows.iter().map(|r| r.minute).collect();
    let tenant: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    let sent: Vec<i64> = rows.iter().map(|r| r.sent).collect();
    let failed: Vec<i64> = rows.iter().map(|r| r.failed).collect();
    let retried: Vec<i64> = rows.iter().map(|r| r.retried).collect();
    let duration: Vec<serde_json::Value> =
        rows.iter().map(|r| r.duration_ms.clone().into()).collect();
    let latency: Vec<serde_json::Value> =
        rows.iter().map(|r| r.latency_ms.clone().into()).collect();
    sqlx::query!(
        "insert into queue_minutes as q
             (queue, minute, tenant_id, sent, failed, retried, duration_ms, latency_ms)
         select r.queue, r.minute, r.tenant_id, r.sent, r.failed, r.retried,
                array(select jsonb_array_elements_text(r.duration)::int8),
                array(select jsonb_array_elements_text(r.latency)::int8)
         from unnest($1::text[], $2::timestamptz[], $3::uuid[], $4::int8[], $5::int8[],
                     $6::int8[], $7::jsonb[], $8::jsonb[])
              as r(queue, minute, tenant_id, sent, failed, retried, duration, latency)
         on conflict (queue, minute, tenant_id) do update set
             sent = q.sent + excluded.sent,
             failed = q.failed + excluded.failed,
             retried = q.retried + excluded.retried,
             duration_ms = array(select a + b from unnest(q.duration_ms, excluded.duration_ms) as t(a, b)),
             latency_ms = array(select a + b from unnest(q.latency_ms, excluded.latency_ms) as t(a, b))",
        queue.as_slice() as &[&str],
        &minute,
        &tenant,
        &sent,
        &failed,
        &retried,
        &duration,
        &latency,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A provider's answers in one minute: `((tenant, minute, channel,
/// provider), (sent, failed))`.
pub type ProviderMinute = ((Uuid, DateTime<Utc>, &'static str, String), (i64, i64));

/// Adds per-provider counts to `provider_minutes` in one statement.
pub async fn add_provider_minutes(
    db: impl PgExecutor<'_>,
    rows: &[ProviderMinute],
) -> Result<(), sqlx::Error> {
    let tenant: Vec<Uuid> = rows.iter().map(|r| r.0.0).collect();
    let minute: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0.1).collect();
    let channel: Vec<&str> = rows.iter().map(|r| r.0.2).collect();
    let provider: Vec<&str> = rows.iter().map(|r| r.0.3.as_str()).collect();
    let sent: Vec<i64> = rows.iter().map(|r| r.1.0).collect();
    let failed: Vec<i64> = rows.iter().map(|r| r.1.1).collect();
    sqlx::query!(
        "insert into provider_minutes as p (tenant_id, minute, channel, provider, sent, failed)
         select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[],
                              $5::int8[], $6::int8[])
         on conflict (tenant_id, minute, channel, provider) do update set
             sent = p.sent + excluded.sent,
             failed = p.failed + excluded.failed",
        &tenant,
        &minute,
        channel.as_slice() as &[&str],
        provider.as_slice() as &[&str],
        &sent,
        &failed,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Drops per-minute rollup rows (queues and providers) older than
/// `before`.
pub async fn prune_minutes(db: &sqlx::PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let queues = sqlx::query!("delete from queue_minutes where minute < $1", before)
        .execute(db)
        .await?;
    let providers = sqlx::query!("delete from provider_minutes where minute < $1", before)
        .execute(db)
        .await?;
    Ok(queues.rows_affected() + providers.rows_affected())
}

/// Counts of one queue over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Done.
    pub sent: i64,
    /// Failed for good.
    pub failed: i64,
    /// Failed and scheduled again.
    pub retried: i64,
}

/// One queue's last hour.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Since the start of the previous minute.
    pub last_1m: Counts,
    /// The last 15 minutes.
    pub last_15m: Counts,
    /// The last hour.
    pub last_1h: Counts,
    /// Duration histogram over the last hour.
    pub duration_ms: Vec<i64>,
    /// Accepted-to-sent histogram over the last hour.
    pub latency_ms: Vec<i64>,
}

/// Every queue's counts over the last hour (queues without any are absent),
/// within `reach`.
pub async fn recent(
    pool: &sqlx::PgPool,
    reach: Reach,
) -> Result<HashMap<String, Recent>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with w as (select date_trunc('minute', now()) as m)
         select queue,
                coalesce(sum(sent) filter (where minute >= w.m - interval '1 minute'), 0)::int8 as "s1!",
                coalesce(sum(failed) filter (where minute >= w.m - interval '1 minute'), 0)::int8 as "f1!",
                coalesce(sum(retried) filter (where minute >= w.m - interval '1 minute'), 0)::int8 as "r1!",
                coalesce(sum(sent) filter (where minute >= w.m - interval '15 minutes'), 0)::int8 as "s15!",
                coalesce(sum(failed) filter (where minute >= w.m - interval '15 minutes'), 0)::int8 as "f15!",
                coalesce(sum(retried) filter (where minute >= w.m - interval '15 minutes'), 0)::int8 as "r15!",
                sum(sent)::int8 as "s60!", sum(failed)::int8 as "f60!", sum(retried)::int8 as "r60!"
         from queue_minutes, w
         where minute >= w.m - interval '1 hour' and ($1::uuid is null or tenant_id = $1)
         group by queue"#,
        reach.param(),
    )
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<String, Recent> = HashMap::new();
    for row in rows {
        let (queue, s1, f1, r1, s15, f15, r15, s60, f60, r60) = (
            row.queue, row.s1, row.f1, row.r1, row.s15, row.f15, row.r15, row.s60, row.f60, row.r60,
        );
        out.insert(
            queue,
            Recent {
                last_1m: Counts {
                    sent: s1,
                    failed: f1,
                    retried: r1,
                },
                last_15m: Counts {
                    sent: s15,
                    failed: f15,
                    retried: r15,
                },
                last_1h: Counts {
                    sent: s60,
                    failed: f60,
                    retried: r60,
                },
                duration_ms: vec![0; crate::throughput::BUCKETS],
                latency_ms: vec![0; crate::throughput::BUCKETS],
            },
        );
    }
    let buckets = sqlx::query!(
        r#"select queue, u.i as "i!", sum(u.d)::int8 as "d!", sum(u.l)::int8 as "l!"
         from queue_minutes, unnest(duration_ms, latency_ms) with ordinality as u(d, l, i)
         where minute >= date_trunc('minute', now()) - interval '1 hour'
           and ($1::uuid is null or tenant_id = $1)
         group by queue, u.i"#,
        reach.param(),
    )
    .fetch_all(pool)
    .await?;
    for b in buckets {
        let (queue, i, d, l) = (b.queue, b.i, b.d, b.l);
        if let Some(r) = out.get_mut(&queue) {
            let i = (i - 1) as usize;
            if i < r.duration_ms.len() {
                r.duration_ms[i] = d;
                r.latency_ms[i] = l;
            }
        }
    }
    Ok(out)
}

/// One step of a queue's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The step's start.
    pub at: DateTime<Utc>,
    /// Its counts.
    pub counts: Counts,
}

/// `queue`'s counts per `step_secs` since `since` (aligned to the step),
/// only the steps with any, within `reach`.
pub async fn history(
    db: impl PgExecutor<'_>,
    reach: Reach,
    queue: QueueName,
    since: DateTime<Utc>,
    step_secs: i64,
) -> Result<Vec<Point>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select to_timestamp(floor(extract(epoch from minute) / $3) * $3) as "at!",
                sum(sent)::int8 as "sent!", sum(failed)::int8 as "failed!",
                sum(retried)::int8 as "retried!"
         from queue_minutes
         where queue = $1 and minute >= $2 and ($4::uuid is null or tenant_id = $4)
         group by 1 order by 1"#,
        queue.as_str(),
        since,
        step_secs as f64,
        reach.param(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Point {
            at: r.at,
            counts: Counts {
                sent: r.sent,
                failed: r.failed,
                retried: r.retried,
            },
        })
        .collect())
}
