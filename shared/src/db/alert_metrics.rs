//! What the alert evaluator reads from Postgres to measure its rules'
//! metrics ([`crate::alerts::measure`]), one statement per metric kind for
//! every rule of that kind.
//!
//! The rules travel as parallel arrays: their ids, their organisations
//! (the nil uuid for a platform-wide rule, which reads every
//! organisation's rows) and the starts of their windows, which end at
//! `now`. Reads over "every organisation (`all`) or the listed ones
//! (`ids`)" serve a set of rules at once. Every function works across
//! tenants.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    domain::{AlertRuleId, TenantId},
    throughput::BUCKETS,
};

/// When the current BAA of each active organisation (not the platform)
/// expires, for every organisation (`all`) or the listed ones.
pub async fn baa_expiry(
    db: impl PgExecutor<'_>,
    all: bool,
    ids: &[Uuid],
) -> Result<Vec<(TenantId, NaiveDate)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select t.id as "id: TenantId", b.expires_on from tenants t
             join baa_agreements b on b.id = t.current_baa_id
             where t.type <> 'platform' and t.status = 'active'
               and ($1 or t.id = any($2))"#,
        all,
        ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.expires_on)).collect())
}

/// Per rule (`ids`, of `tenants`, since `since`, of `providers`) and per
/// channel the rule's provider served: its sends and failed attempts from
/// the minute of `since` to `now` (`provider_minutes`), in rule and channel
/// order.
pub async fn provider_minute_sums(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
    tenants: &[Uuid],
    since: &[DateTime<Utc>],
    providers: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<(AlertRuleId, String, i64, i64)>, sqlx::Error> {
    let ids: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    let rows = sqlx::query!(
        r#"with r as (select id, tenant_id, date_trunc('minute', since) as since, provider
                    from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[])
                    as r(id, tenant_id, since, provider))
         select r.id as "id!: AlertRuleId", p.channel as "channel!", sum(p.sent)::int8 as "sent!",
                sum(p.failed)::int8 as "failed!"
         from r join provider_minutes p
           on p.provider = r.provider
          and (r.tenant_id = '00000000-0000-0000-0000-000000000000' or p.tenant_id = r.tenant_id)
          and p.minute >= r.since and p.minute <= $5
         group by r.id, p.channel
         order by 1, 2"#,
        &ids,
        tenants,
        since,
        providers,
        now,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.channel, r.sent, r.failed))
        .collect())
}

/// One rule's sums over one queue's minutes: rule, queue, sent, failed and
/// the latency histogram's buckets.
pub type QueueSumsRow = (AlertRuleId, String, i64, i64, Vec<Option<i64>>);

/// Per rule (`ids`, of `tenants`, since `since`) and queue: sent, failed
/// and the latency histogram from the minute of `since` to `now`
/// (`queue_minutes`), in rule and queue order, in one statement. An
/// organisation's rule reads its own rows by `(tenant_id, minute)`; a
/// platform-wide one every organisation's.
pub async fn queue_minute_sums(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
    tenants: &[Uuid],
    since: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<Vec<QueueSumsRow>, sqlx::Error> {
    let ids: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    let latency = (1..=BUCKETS)
        .map(|i| format!("sum(q.latency_ms[{i}])"))
        .collect::<Vec<_>>()
        .join(", ");
    // Rules of one organisation with the same window read the same rows:
    // each distinct (organisation, window start) is summed once and the
    // sums are handed to every rule that asked for them.
    let sums = format!(
        "sum(q.sent)::int8 as sent, sum(q.failed)::int8 as failed, array[{latency}]::int8[] as latency"
    );
    let sql = format!(
        "with r as (select id, tenant_id, date_trunc('minute', since) as since
                    from unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                    as r(id, tenant_id, since)),
         k as (select distinct tenant_id, since from r),
         s as (select k.tenant_id, k.since, q.queue, {sums}
               from k join queue_minutes q
                 on q.tenant_id = k.tenant_id and q.minute >= k.since and q.minute <= $4
               where k.tenant_id <> '00000000-0000-0000-0000-000000000000'
               group by k.tenant_id, k.since, q.queue
               union all
               select k.tenant_id, k.since, q.queue, {sums}
               from k join queue_minutes q
                 on q.minute >= k.since and q.minute <= $4
               where k.tenant_id = '00000000-0000-0000-0000-000000000000'
               group by k.tenant_id, k.since, q.queue)
         select r.id, s.queue, s.sent, s.failed, s.latency
         from r join s on s.tenant_id = r.tenant_id and s.since = r.since
         order by 1, 2"
    );
    sqlx::query_as(&sql)
        .bind(&ids)
        .bind(tenants)
        .bind(since)
        .bind(now)
        .fetch_all(db)
        .await
}

/// Per organisation and queue, for every organisation (`all`) or the
/// listed ones: items due now and when the oldest became due, over every
/// source of work (notifications by channel, webhook deliveries, batch and
/// bulk chunks, bulk CSV jobs). "Now" is the database's.
pub async fn waiting(
    db: impl PgExecutor<'_>,
    all: bool,
    ids: &[Uuid],
) -> Result<Vec<(TenantId, String, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select tenant_id as "tenant_id!: TenantId", channel as "queue!",
                count(*) filter (where status in ('queued', 'deferred') and run_at <= now()
                                 and dispatched_at is null) as "due!",
                min(run_at) filter (where status in ('queued', 'deferred') and run_at <= now())
                    as "oldest?"
         from notifications
         where status in ('queued', 'deferred', 'sending') and ($1 or tenant_id = any($2))
         group by tenant_id, channel
         union all
         select tenant_id, 'webhook',
                count(*) filter (where status = 'queued' and run_at <= now() and dispatched_at is null),
                min(run_at) filter (where status = 'queued' and run_at <= now())
         from webhook_deliveries
         where status in ('queued', 'sending') and ($1 or tenant_id = any($2))
         group by tenant_id
         union all
         select tenant_id, 'batch_chunk', count(*) filter (where dispatched_at is null),
                min(created_at) filter (where dispatched_at is null)
         from batch_chunks where expanded_at is null and ($1 or tenant_id = any($2))
         group by tenant_id
         union all
         select tenant_id, 'bulk_chunk', count(*) filter (where dispatched_at is null),
                min(created_at) filter (where dispatched_at is null)
         from bulk_chunks where expanded_at is null and ($1 or tenant_id = any($2))
         group by tenant_id
         union all
         select tenant_id, 'bulk_csv', count(*) filter (where status = 'queued'),
                min(created_at) filter (where status = 'queued')
         from bulk_jobs where status in ('queued', 'parsing') and ($1 or tenant_id = any($2))
         group by tenant_id"#,
        all,
        ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.queue, r.due, r.oldest))
        .collect())
}

/// The provider configs of every organisation (`all`) or the listed ones:
/// id, organisation and channel, in id order.
pub async fn provider_configs(
    db: impl PgExecutor<'_>,
    all: bool,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, TenantId, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id, tenant_id as "tenant_id: TenantId", channel from provider_configs
         where ($1 or tenant_id = any($2)) order by id"#,
        all,
        ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.tenant_id, r.channel))
        .collect())
}

/// Per rule (`ids`, of `tenants`, since `since`): items that failed for
/// good from `since` to `now`.
pub async fn failed_work_counts(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
    tenants: &[Uuid],
    since: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<Vec<(AlertRuleId, i64)>, sqlx::Error> {
    let ids: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    let rows = sqlx::query!(
        r#"with r as (select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                    as r(id, tenant_id, since))
         select r.id as "id!: AlertRuleId", (select count(*) from failed_work f
                       where f.tenant_id = r.tenant_id and f.failed_at >= r.since
                         and f.failed_at <= $4) as "failed!"
         from r where r.tenant_id <> '00000000-0000-0000-0000-000000000000'
         union all
         select r.id, (select count(*) from failed_work f
                       where f.failed_at >= r.since and f.failed_at <= $4)
         from r where r.tenant_id = '00000000-0000-0000-0000-000000000000'"#,
        &ids,
        tenants,
        since,
        now,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.failed)).collect())
}

/// Per rule (`ids`, of `tenants`, since `since`): API requests answered
/// 5xx from the minute of `since` to `now` (`api_error_minutes`). A
/// platform-wide rule counts every organisation's and the platform's own.
pub async fn api_server_error_counts(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
    tenants: &[Uuid],
    since: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<Vec<(AlertRuleId, i64)>, sqlx::Error> {
    let ids: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    let rows = sqlx::query!(
        r#"with r as (select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                    as r(id, tenant_id, since))
         select r.id as "id!: AlertRuleId", (select coalesce(sum(m.occurrences), 0)::int8 from api_error_minutes m
                       where m.minute >= date_trunc('minute', r.since) and m.minute <= $4
                         and (r.tenant_id = '00000000-0000-0000-0000-000000000000'
                              or m.tenant_id = r.tenant_id)) as "errors!"
         from r"#,
        &ids,
        tenants,
        since,
        now,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.errors)).collect())
}

/// Per rule (`ids`, of `tenants`, counting endpoints disabled
/// `disabled_by`) and organisation with webhook endpoints: how many are
/// disabled. `disabled_by` is `admin` for those an administrator disabled,
/// any other non-empty value for those disabled after failures, empty for
/// both.
pub async fn disabled_endpoint_counts(
    db: impl PgExecutor<'_>,
    rules: &[AlertRuleId],
    tenants: &[Uuid],
    disabled_by: &[String],
) -> Result<Vec<(AlertRuleId, TenantId, i64)>, sqlx::Error> {
    let ids: Vec<Uuid> = rules.iter().map(|r| r.0).collect();
    let rows = sqlx::query!(
        r#"with r as (select * from unnest($1::uuid[], $2::uuid[], $3::text[])
                    as r(id, tenant_id, disabled_by))
         select r.id as "id!: AlertRuleId", e.tenant_id as "tenant_id!: TenantId",
                count(*) filter (where not e.enabled
                                 and (r.disabled_by = ''
                                      or (r.disabled_by = 'admin')
                                         = (e.disabled_reason is not distinct from $4)))
                    as "disabled!"
         from r join webhook_endpoints e
           on r.tenant_id = '00000000-0000-0000-0000-000000000000' or e.tenant_id = r.tenant_id
         group by r.id, e.tenant_id"#,
        &ids,
        tenants,
        disabled_by,
        super::webhooks::DISABLED_BY_ADMIN,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.tenant_id, r.disabled))
        .collect())
}
