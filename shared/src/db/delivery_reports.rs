//! Reads of the delivery rollups for reports and forecasts
//! ([`crate::reports`]): a range's sums by channel, provider, template,
//! category and day, its busiest hours, a period's counts, and accepted
//! notifications per channel and day.
//!
//! A range's whole UTC days are read from `delivery_days` and its partial
//! days at the edges from `delivery_hours`; the caller says which days are
//! whole (`days`: the first whole day and the end of the last, both equal
//! to the range's end when there is none). Each read is within a
//! [`Reach`]: one organisation's rows, or every organisation's.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor, Row, postgres::PgRow};

use super::scope::Reach;
use crate::throughput::BUCKETS;

/// Counts `[accepted, sent, delivered, failed, bounced, read]`.
pub type Counts = [i64; 6];

const SUMS: &str = "sum(accepted)::bigint as accepted, sum(sent)::bigint as sent,
     sum(delivered)::bigint as delivered, sum(failed)::bigint as failed,
     sum(bounced)::bigint as bounced, sum(read)::bigint as read";

fn latency_sum() -> String {
    let parts: Vec<String> = (1..=BUCKETS)
        .map(|i| format!("sum(latency_ms[{i}])::bigint"))
        .collect();
    format!("array[{}] as latency_ms", parts.join(", "))
}

fn tenant_scope(reach: Reach) -> &'static str {
    match reach {
        Reach::Tenant(_) => "tenant_id = $1",
        Reach::Platform(_) => "$1::uuid is null",
    }
}

/// The rows of a range (`$2` to `$3`, whole days `$4` to `$5`, of channel
/// `$6` when not null) with `columns` of both rollups: hours at the edges,
/// days in between.
fn range_rows(reach: Reach, hour_columns: &str, day_columns: &str) -> String {
    let t = tenant_scope(reach);
    let c = "($6::text is null or channel = $6)";
    format!(
        "select {hour_columns} from delivery_hours
         where {t} and {c} and hour >= $2 and hour < $4
         union all
         select {hour_columns} from delivery_hours
         where {t} and {c} and hour >= $5 and hour < $3
         union all
         select {day_columns} from delivery_days
         where {t} and {c} and day >= $4 and day < $5"
    )
}

/// The counts of a row of [`SUMS`] (0 where there was nothing to add up).
fn counts(row: &PgRow) -> Result<Counts, sqlx::Error> {
    let get = |c: &str| -> Result<i64, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(c)?.unwrap_or(0))
    };
    Ok([
        get("accepted")?,
        get("sent")?,
        get("delivered")?,
        get("failed")?,
        get("bounced")?,
        get("read")?,
    ])
}

/// What a [`RangeSums`] adds up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeGroup {
    /// The whole range.
    Total,
    /// One channel.
    Channel(String),
    /// One provider (empty for accepted sends, which have none yet).
    Provider(String),
    /// One template (empty for none).
    Template(String),
    /// One category (empty for none).
    Category(String),
    /// One UTC day.
    Day(DateTime<Utc>),
}

/// A range's counts and latency histogram for one [`RangeGroup`].
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSums {
    /// What they add up.
    pub group: RangeGroup,
    /// The counts.
    pub counts: Counts,
    /// The accepted-to-sent latency histogram's buckets.
    pub latency_ms: Vec<i64>,
}

impl FromRow<'_, PgRow> for RangeSums {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let flag = |c: &str| -> Result<bool, sqlx::Error> { Ok(row.try_get::<i32, _>(c)? == 0) };
        let group = if flag("g_channel")? {
            RangeGroup::Channel(row.try_get("channel")?)
        } else if flag("g_provider")? {
            RangeGroup::Provider(row.try_get("provider")?)
        } else if flag("g_template")? {
            RangeGroup::Template(row.try_get("template")?)
        } else if flag("g_category")? {
            RangeGroup::Category(row.try_get("category")?)
        } else if flag("g_day")? {
            RangeGroup::Day(row.try_get("day")?)
        } else {
            RangeGroup::Total
        };
        let latency: Vec<Option<i64>> = row.try_get("latency_ms")?;
        Ok(Self {
            group,
            counts: counts(row)?,
            latency_ms: latency.into_iter().map(|c| c.unwrap_or(0)).collect(),
        })
    }
}

/// The sums of `[from, to)` within `reach` (of one `channel` when given):
/// the whole range's, and each channel's, provider's, template's,
/// category's and day's (of the days with rows), in one statement.
pub async fn range_sums(
    db: impl PgExecutor<'_>,
    reach: Reach,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    days: (DateTime<Utc>, DateTime<Utc>),
    channel: Option<&str>,
) -> Result<Vec<RangeSums>, sqlx::Error> {
    // Whole days from the daily rollup, the edges' hours added up per day:
    // the slices and days then add up about a 24th of the hourly rows.
    let lat = latency_sum();
    let rows_of = range_rows(
        reach,
        "date_trunc('day', hour, 'UTC') as day, channel, provider, template, category,
         accepted, sent, delivered, failed, bounced, read, latency_ms",
        "day, channel, provider, template, category,
         accepted, sent, delivered, failed, bounced, read, latency_ms",
    );
    let sql = format!(
        "with d as ({rows_of})
         select grouping(channel) as g_channel, grouping(provider) as g_provider,
                grouping(template) as g_template, grouping(category) as g_category,
                grouping(day) as g_day, channel, provider, template, category, day,
                {SUMS}, {lat}
         from d
         group by grouping sets ((), (channel), (provider), (template), (category), (day))",
    );
    sqlx::query_as(&sql)
        .bind(reach.param())
        .bind(from)
        .bind(to)
        .bind(days.0)
        .bind(days.1)
        .bind(channel)
        .fetch_all(db)
        .await
}

/// One hour's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCounts {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Its counts.
    pub counts: Counts,
}

impl FromRow<'_, PgRow> for HourCounts {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            hour: row.try_get("hour")?,
            counts: counts(row)?,
        })
    }
}

/// The 5 hours of `[from, to)` with the most accepted notifications within
/// `reach`, busiest first: of one `channel` from the hourly rollup when
/// given, else from the hour totals.
pub async fn busiest_hours(
    db: impl PgExecutor<'_>,
    reach: Reach,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channel: Option<&str>,
) -> Result<Vec<HourCounts>, sqlx::Error> {
    let (table, c) = if channel.is_some() {
        ("delivery_hours", "channel = $4")
    } else {
        ("delivery_hour_totals", "$4::text is null")
    };
    let busiest = format!(
        "select hour, {SUMS} from {table}
         where {t} and hour >= $2 and hour < $3 and {c}
         group by hour order by sum(accepted) desc, hour limit 5",
        t = tenant_scope(reach),
    );
    sqlx::query_as(&busiest)
        .bind(reach.param())
        .bind(from)
        .bind(to)
        .bind(channel)
        .fetch_all(db)
        .await
}

/// The counts of `[from, to)` within `reach` (of one `channel` when
/// given), without latencies.
pub async fn range_counts(
    db: impl PgExecutor<'_>,
    reach: Reach,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    days: (DateTime<Utc>, DateTime<Utc>),
    channel: Option<&str>,
) -> Result<Counts, sqlx::Error> {
    let columns = "accepted, sent, delivered, failed, bounced, read";
    let sql = format!(
        "select {SUMS} from ({rows}) p",
        rows = range_rows(reach, columns, columns),
    );
    let row = sqlx::query(&sql)
        .bind(reach.param())
        .bind(from)
        .bind(to)
        .bind(days.0)
        .bind(days.1)
        .bind(channel)
        .fetch_one(db)
        .await?;
    counts(&row)
}

/// Accepted notifications per channel (only `channel` when given) and UTC
/// day of `[from, to)` within `reach`, from the hourly rollup, in channel
/// and day order; days without rows are left out.
pub async fn accepted_per_channel_day(
    db: impl PgExecutor<'_>,
    reach: Reach,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    channel: Option<&str>,
) -> Result<Vec<(String, DateTime<Utc>, i64)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select channel, date_trunc('day', hour, 'UTC') as day, sum(accepted)::bigint
         from delivery_hours
         where {} and hour >= $2 and hour < $3 and ($4::text is null or channel = $4)
         group by 1, 2 order by 1, 2",
        tenant_scope(reach)
    ))
    .bind(reach.param())
    .bind(from)
    .bind(to)
    .bind(channel)
    .fetch_all(db)
    .await
}
