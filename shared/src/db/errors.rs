//! Error groups ([`crate::errors`]): counting occurrences, and reading
//! groups, their organisations, recoveries and statistics.
//!
//! Reads take a [`Reach`] first: an operator's platform-wide reach sums
//! every organisation's counts, one organisation's reads its counts only,
//! and a group it has none of is not found.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::scope::Reach;
use crate::{
    domain::{ErrorGroupId, TenantId},
    errors::{ErrorClass, ErrorKind},
};

/// What an occurrence is counted under: its group's kind and reason, where
/// it came from (empty when nowhere in particular), and its organisation
/// (none for the platform's own).
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    /// The kind of error.
    pub kind: ErrorKind,
    /// Its reason within the kind.
    pub reason: &'static str,
    /// Where it came from (a route, a job, a provider), or empty.
    pub source: &'a str,
    /// The organisation it happened to.
    pub tenant: Option<TenantId>,
}

/// Occurrences to count, as parallel columns for `record_errors`.
#[derive(Debug, Clone, Default)]
pub struct Occurrences {
    kinds: Vec<&'static str>,
    reasons: Vec<&'static str>,
    providers: Vec<Option<String>>,
    channels: Vec<Option<String>>,
    sources: Vec<Option<String>>,
    tenants: Vec<Option<TenantId>>,
    samples: Vec<Option<String>>,
    counts: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
}

impl Occurrences {
    /// Adds `n` occurrences of one cause, the last at `at`.
    pub fn push(&mut self, cause: &Cause<'_>, sample: Option<String>, n: i64, at: DateTime<Utc>) {
        let Cause {
            kind,
            reason,
            source,
            tenant,
        } = *cause;
        self.kinds.push(kind.as_str());
        self.reasons.push(reason);
        self.providers.push(None);
        self.channels.push(None);
        self.sources
            .push((!source.is_empty()).then(|| source.to_owned()));
        self.tenants.push(tenant);
        self.samples.push(sample);
        self.counts.push(n);
        self.ats.push(at);
    }

    /// Whether there is nothing to count.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// Counts `rows` in their groups, in one statement; API 5xx are also
/// counted per organisation and minute (`api_error_minutes`) for alert
/// rules.
#[tracing::instrument(skip_all, fields(rows = rows.kinds.len()))]
pub async fn record(db: impl PgExecutor<'_>, rows: &Occurrences) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"with api as (
             insert into api_error_minutes as m (tenant_id, minute, occurrences)
             select coalesce(u.tenant, '00000000-0000-0000-0000-000000000000'::uuid),
                    date_trunc('minute', u.at), sum(u.n)
             from unnest($1::text[], $6::uuid[], $8::int8[], $9::timestamptz[])
                 as u(kind, tenant, n, at)
             where u.kind = 'api' and u.n > 0
             group by 1, 2
             order by 1, 2
             on conflict (tenant_id, minute) do update
             set occurrences = m.occurrences + excluded.occurrences
         )
         select record_errors($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::uuid[], $7::text[], $8::int8[], $9::timestamptz[])
             as "recorded: ()""#,
        &rows.kinds as _,
        &rows.reasons as _,
        &rows.providers as _,
        &rows.channels as _,
        &rows.sources as _,
        &rows.tenants as _,
        &rows.samples as _,
        &rows.counts,
        &rows.ats,
    )
    .fetch_one(db)
    .await?;
    Ok(())
}

/// Drops hourly counts and recoveries from before `before` (API 5xx per
/// minute from before two days ago, or `before` if later), each
/// organisation's counts of groups it has not seen since, and groups no
/// organisation has left. Across tenants (housekeeping).
#[tracing::instrument(skip_all)]
pub async fn prune(db: &sqlx::PgPool, before: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with h as (delete from error_hours where hour < $1),
              r as (delete from error_recoveries where recovered_at < $1),
              m as (delete from api_error_minutes
                    where minute < greatest($1, now() - interval '2 days'))
         delete from error_group_tenants where last_seen < $1",
        before,
    )
    .execute(db)
    .await?;
    sqlx::query!(
        "delete from error_groups g
         where g.created_at < $1
           and not exists (select 1 from error_group_tenants t where t.group_id = g.id)",
        before,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Which groups: every field narrows, `None` does not.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One class.
    pub class: Option<ErrorClass>,
    /// One kind.
    pub kind: Option<ErrorKind>,
    /// One channel.
    pub channel: Option<String>,
    /// One provider.
    pub provider: Option<String>,
    /// Seen at or after.
    pub since: Option<DateTime<Utc>>,
}

/// One group, with its counts in scope.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    /// Its id.
    pub id: ErrorGroupId,
    /// Its kind.
    pub kind: String,
    /// Its class.
    pub class: String,
    /// The platform's reason code.
    pub reason: String,
    /// The provider.
    pub provider: Option<String>,
    /// The channel.
    pub channel: Option<String>,
    /// The queue of a job, the route template of an API request.
    pub source: Option<String>,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
    /// Organisations with occurrences (the platform's own counts as one).
    pub organizations: i64,
    /// First seen.
    pub first_seen: DateTime<Utc>,
    /// Last seen.
    pub last_seen: DateTime<Utc>,
    /// Last recovery.
    pub last_recovered_at: Option<DateTime<Utc>>,
    /// The newest sample ids.
    pub sample_ids: Vec<String>,
}

fn select_groups(reach: Reach) -> QueryBuilder<'static, Postgres> {
    let mut qb = QueryBuilder::new(
        "select g.id, g.kind, g.class, g.reason, g.provider, g.channel, g.source,
                sum(t.occurrences)::int8 as occurrences, sum(t.recoveries)::int8 as recoveries,
                count(*) as organizations, min(t.first_seen) as first_seen,
                max(t.last_seen) as last_seen, max(t.last_recovered_at) as last_recovered_at,
                coalesce((select array_agg(x.s) from (
                    select s from error_group_tenants t2, unnest(t2.sample_ids) as s
                    where t2.group_id = g.id and (",
    );
    qb.push_bind(reach.param())
        .push("::uuid is null or t2.tenant_id = ")
        .push_bind(reach.param())
        .push(
            ") order by t2.last_seen desc limit 5) x), '{}') as sample_ids
         from error_groups g join error_group_tenants t on t.group_id = g.id
         where (",
        )
        .push_bind(reach.param())
        .push("::uuid is null or t.tenant_id = ")
        .push_bind(reach.param())
        .push(")");
    qb
}

/// Up to `limit` groups `filter` matches in scope, last seen first, after
/// `after` (last seen, id).
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: Reach,
    filter: &Filter,
    after: Option<(DateTime<Utc>, ErrorGroupId)>,
    limit: i64,
) -> Result<Vec<Group>, sqlx::Error> {
    let mut qb = select_groups(reach);
    if let Some(c) = filter.class {
        qb.push(" and g.class = ").push_bind(c.as_str());
    }
    if let Some(k) = filter.kind {
        qb.push(" and g.kind = ").push_bind(k.as_str());
    }
    if let Some(c) = &filter.channel {
        qb.push(" and g.channel = ").push_bind(c.clone());
    }
    if let Some(p) = &filter.provider {
        qb.push(" and g.provider = ").push_bind(p.clone());
    }
    qb.push(" group by g.id having true");
    if let Some(s) = filter.since {
        qb.push(" and max(t.last_seen) >= ").push_bind(s);
    }
    if let Some((at, id)) = after {
        qb.push(" and (max(t.last_seen), g.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" order by max(t.last_seen) desc, g.id desc limit ")
        .push_bind(limit);
    qb.build_query_as().fetch_all(db).await
}

/// One group in scope, or `None` (also when the scope has no occurrences
/// of it).
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: ErrorGroupId,
) -> Result<Option<Group>, sqlx::Error> {
    let mut qb = select_groups(reach);
    qb.push(" and g.id = ").push_bind(id).push(" group by g.id");
    qb.build_query_as().fetch_optional(db).await
}

/// One organisation's share of a group.
#[derive(Debug, Clone)]
pub struct Share {
    /// The organisation; the nil uuid is the platform's own.
    pub tenant_id: Uuid,
    /// Its name, if it is one.
    pub name: Option<String>,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
    /// Last seen.
    pub last_seen: DateTime<Utc>,
}

/// Most organisations listed on a group.
pub const MAX_SHARES: i64 = 100;

/// The organisations a group touches, most occurrences first (at most
/// [`MAX_SHARES`]); across tenants, for platform admins.
#[tracing::instrument(skip_all)]
pub async fn shares_across_tenants(
    db: impl PgExecutor<'_>,
    id: ErrorGroupId,
) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as!(
        Share,
        r#"select t.tenant_id, o.name as "name?", t.occurrences, t.recoveries, t.last_seen
         from error_group_tenants t left join tenants o on o.id = t.tenant_id
         where t.group_id = $1
         order by t.occurrences desc, t.tenant_id limit $2"#,
        id.0,
        MAX_SHARES,
    )
    .fetch_all(db)
    .await
}

/// One recovery.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Its position, newest highest.
    pub id: i64,
    /// The organisation.
    pub tenant_id: Uuid,
    /// The notification that was sent.
    pub notification_id: Uuid,
    /// Its failed attempts in the group before.
    pub failures: i32,
    /// When it was sent.
    pub recovered_at: DateTime<Utc>,
}

/// Up to `limit` recoveries of group `id` in scope, newest first, before
/// `before`.
#[tracing::instrument(skip_all)]
pub async fn recoveries(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: ErrorGroupId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Recovery>, sqlx::Error> {
    sqlx::query_as!(
        Recovery,
        "select id, tenant_id, notification_id, failures, recovered_at from error_recoveries
         where group_id = $2 and ($1::uuid is null or tenant_id = $1)
           and ($3::int8 is null or id < $3)
         order by id desc limit $4",
        reach.param(),
        id.0,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Counts of one class, kind and channel over a range.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The class.
    pub class: String,
    /// The kind.
    pub kind: String,
    /// The channel.
    pub channel: Option<String>,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
}

/// Occurrences and recoveries in scope in the hours from `since` (its hour
/// included) to before `until`, per class, kind and channel.
#[tracing::instrument(skip_all)]
pub async fn tallies(
    db: impl PgExecutor<'_>,
    reach: Reach,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Tally>, sqlx::Error> {
    sqlx::query_as!(
        Tally,
        r#"select g.class, g.kind, g.channel, sum(h.occurrences)::int8 as "occurrences!",
                sum(h.recoveries)::int8 as "recoveries!"
         from error_hours h join error_groups g on g.id = h.group_id
         where ($1::uuid is null or h.tenant_id = $1)
           and h.hour >= date_trunc('hour', $2::timestamptz) and h.hour < $3
         group by 1, 2, 3 order by 1, 2, 3"#,
        reach.param(),
        since,
        until,
    )
    .fetch_all(db)
    .await
}

/// The class `error_class_of` gives each reason code in `reasons`, in
/// order (for tests that hold the SQL and [`ErrorClass`] together).
pub async fn classes_of(
    db: impl PgExecutor<'_>,
    reasons: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select error_class_of(r) as "class!"
         from unnest($1::text[]) with ordinality as x(r, o) order by o"#,
        reasons as _,
    )
    .fetch_all(db)
    .await
}
