//! Reports computed from the rollups alone: totals and rates, the
//! breakdowns by channel, provider, template and category, latency
//! percentiles, the busiest hours, the days of the range, the previous
//! period of the same length and the trend.
//!
//! Three statements ([`crate::db::delivery_reports`]) run side by side on
//! the pool: one reads the range's whole UTC days from `delivery_days` and
//! its partial days at the edges from `delivery_hours` (added up per day
//! and key), then takes the totals,
//! slices and days from those with grouping sets; one finds the busiest
//! hours in `delivery_hour_totals` (a row per organisation and hour); one
//! adds up the previous period the same way (counts only: a comparison
//! needs no latencies). The three tables are kept by the same fold, so a
//! report counts the same whichever it reads. A month costs the same at
//! ten notifications as at tens of millions: what it reads grows with the
//! days (and edge hours) and the distinct channels, providers, templates
//! and categories, not with the notifications.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::ReportRange;
use crate::{
    db::{
        delivery_reports::{self, RangeGroup},
        scope::Reach,
    },
    domain::TenantId,
    throughput::quantile,
};

/// Counts and what follows from them, for the whole range or one slice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Notifications accepted.
    pub accepted: i64,
    /// Handed to a provider (or placed in the inbox).
    pub sent: i64,
    /// Reported delivered by the provider.
    pub delivered: i64,
    /// Failed for good.
    pub failed: i64,
    /// Bounced (reported by the provider).
    pub bounced: i64,
    /// Read (reported by the provider, or marked read in the inbox).
    pub read: i64,
    /// `delivered / sent`, in percent.
    pub delivery_rate: Option<f64>,
    /// `failed / (sent + failed)`, in percent.
    pub failure_rate: Option<f64>,
    /// `bounced / sent`, in percent.
    pub bounce_rate: Option<f64>,
    /// `read / sent`, in percent.
    pub read_rate: Option<f64>,
    /// Median accepted-to-sent latency in milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the accepted-to-sent latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
}

fn pct(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 10_000.0 / whole as f64).round() / 100.0)
}

impl Totals {
    /// Totals of the counts `[accepted, sent, delivered, failed, bounced,
    /// read]` and the latency histogram.
    pub fn new(counts: [i64; 6], latency: &[i64]) -> Self {
        let [accepted, sent, delivered, failed, bounced, read] = counts;
        let round = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            accepted,
            sent,
            delivered,
            failed,
            bounced,
            read,
            delivery_rate: pct(delivered, sent),
            failure_rate: pct(failed, sent + failed),
            bounce_rate: pct(bounced, sent),
            read_rate: pct(read, sent),
            latency_p50_ms: quantile(latency, 0.5).map(round),
            latency_p99_ms: quantile(latency, 0.99).map(round),
        }
    }
}

/// One slice of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    /// The channel, provider, template or category; `none` when there is
    /// none (accepted sends have no provider yet).
    pub key: String,
    /// Its counts.
    #[serde(flatten)]
    pub totals: Totals,
}

/// One hour or day of the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// Its start (UTC).
    pub start: DateTime<Utc>,
    /// Its counts.
    #[serde(flatten)]
    pub totals: Totals,
}

/// The change from the previous period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The previous period's start.
    pub from: DateTime<Utc>,
    /// The previous period's end (the range's start).
    pub to: DateTime<Utc>,
    /// Its totals.
    pub totals: Totals,
    /// Change of accepted notifications, in percent of the previous.
    pub accepted_change: Option<f64>,
    /// Change of the delivery rate, in percentage points.
    pub delivery_rate_change: Option<f64>,
    /// Change of the failure rate, in percentage points.
    pub failure_rate_change: Option<f64>,
}

/// Where daily volume is heading over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    /// `rising`, `falling` or `flat` (the least-squares slope of accepted
    /// per day is within 5% of the daily mean).
    pub direction: &'static str,
    /// Least-squares slope of accepted notifications per day.
    pub slope_per_day: f64,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Its template.
    pub template: &'static str,
    /// The organisation; absent for a platform-wide report.
    pub organization_id: Option<TenantId>,
    /// The range's start (inclusive, a whole hour, UTC).
    pub from: DateTime<Utc>,
    /// The range's end (exclusive, a whole hour, UTC).
    pub to: DateTime<Utc>,
    /// The whole range.
    pub totals: Totals,
    /// Per channel, busiest first.
    pub by_channel: Vec<Slice>,
    /// Per provider, busiest first.
    pub by_provider: Vec<Slice>,
    /// Per template, busiest first.
    pub by_template: Vec<Slice>,
    /// Per category, busiest first.
    pub by_category: Vec<Slice>,
    /// The busiest hours by accepted notifications (at most 5; counts
    /// only, no latencies).
    pub busiest_hours: Vec<Period>,
    /// Every day of the range with activity (UTC days), oldest first.
    pub days: Vec<Period>,
    /// The previous period of the same length (counts only, no
    /// latencies).
    pub previous: Comparison,
    /// Daily volume's direction.
    pub trend: Trend,
}

/// The whole UTC days inside `[from, to)`: `(first, end)`, with
/// `first == end == to` when there is none. Rows of those days are read
/// from `delivery_days`; the hours before `first` and from `end` on from
/// `delivery_hours`.
pub fn whole_days(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = TimeDelta::days(1);
    let floor = |t: DateTime<Utc>| t.duration_trunc(day).unwrap_or(t);
    let first = if floor(from) == from {
        from
    } else {
        floor(from) + day
    };
    let end = floor(to);
    if first < end { (first, end) } else { (to, to) }
}

/// Computes the report of `range` within `reach` (one organisation's, or
/// an operator's of every organisation).
pub async fn report(
    pool: &PgPool,
    reach: Reach,
    range: &ReportRange,
) -> Result<Report, sqlx::Error> {
    report_of(pool, reach, range, None).await
}

/// Computes the report of `range` within `reach` (one organisation's, or
/// an operator's of every organisation), of one `channel` only when given (its busiest hours are
/// then read from the hourly rollup, as the hour totals are of every
/// channel).
#[tracing::instrument(skip_all)]
pub async fn report_of(
    pool: &PgPool,
    reach: Reach,
    range: &ReportRange,
    channel: Option<&str>,
) -> Result<Report, sqlx::Error> {
    let days_of = whole_days(range.from, range.to);
    let (rows, hour_rows, previous) = tokio::try_join!(
        delivery_reports::range_sums(pool, reach, range.from, range.to, days_of, channel),
        delivery_reports::busiest_hours(pool, reach, range.from, range.to, channel),
        previous_totals(pool, reach, range, channel),
    )?;
    let mut totals = Totals::new([0; 6], &[]);
    let (mut by_channel, mut by_provider, mut by_template, mut by_category) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut days = Vec::new();
    let mut hours: Vec<Period> = hour_rows
        .into_iter()
        .map(|row| Period {
            start: row.hour,
            totals: Totals::new(row.counts, &[]),
        })
        .collect();
    for row in rows {
        let sums = Totals::new(row.counts, &row.latency_ms);
        let slice = |key: String, totals| Slice {
            key: if key.is_empty() { "none".into() } else { key },
            totals,
        };
        match row.group {
            RangeGroup::Channel(key) => by_channel.push(slice(key, sums)),
            RangeGroup::Provider(key) => by_provider.push(slice(key, sums)),
            RangeGroup::Template(key) => by_template.push(slice(key, sums)),
            RangeGroup::Category(key) => by_category.push(slice(key, sums)),
            RangeGroup::Day(start) => days.push(Period {
                start,
                totals: sums,
            }),
            RangeGroup::Total => totals = sums,
        }
    }
    for list in [
        &mut by_channel,
        &mut by_provider,
        &mut by_template,
        &mut by_category,
    ] {
        list.sort_by(|a, b| {
            (b.totals.accepted + b.totals.sent)
                .cmp(&(a.totals.accepted + a.totals.sent))
                .then_with(|| a.key.cmp(&b.key))
        });
    }
    hours.retain(|h| h.totals.accepted > 0);
    days.sort_by_key(|d| d.start);
    let previous = compare(range, &totals, previous);
    let trend = trend(range, &days);
    Ok(Report {
        template: range.template.as_str(),
        organization_id: reach.tenant(),
        from: range.from,
        to: range.to,
        totals,
        by_channel,
        by_provider,
        by_template,
        by_category,
        busiest_hours: hours,
        days,
        previous,
        trend,
    })
}

/// The previous period's counts (without latencies, which a comparison
/// does not use).
async fn previous_totals(
    pool: &PgPool,
    reach: Reach,
    range: &ReportRange,
    channel: Option<&str>,
) -> Result<Totals, sqlx::Error> {
    let from = range.from - (range.to - range.from);
    let counts = delivery_reports::range_counts(
        pool,
        reach,
        from,
        range.from,
        whole_days(from, range.from),
        channel,
    )
    .await?;
    Ok(Totals::new(counts, &[]))
}

fn compare(range: &ReportRange, now: &Totals, before: Totals) -> Comparison {
    let diff =
        |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| ((a - b) * 100.0).round() / 100.0);
    Comparison {
        from: range.from - (range.to - range.from),
        to: range.from,
        accepted_change: pct(now.accepted - before.accepted, before.accepted),
        delivery_rate_change: diff(now.delivery_rate, before.delivery_rate),
        failure_rate_change: diff(now.failure_rate, before.failure_rate),
        totals: before,
    }
}

/// The least-squares slope of accepted per day over every day of the range
/// (days without activity count as 0).
fn trend(range: &ReportRange, days: &[Period]) -> Trend {
    let n = ((range.to - range.from).num_hours() as f64 / 24.0)
        .ceil()
        .max(1.0) as usize;
    let mut series = vec![0.0; n];
    for d in days {
        let i = ((d.start - range.from).num_hours().max(0) / 24) as usize;
        if let Some(v) = series.get_mut(i) {
            *v += d.totals.accepted as f64;
        }
    }
    let slope = slope(&series);
    let mean = series.iter().sum::<f64>() / n as f64;
    let direction = if n < 2 || slope.abs() <= 0.05 * mean.max(f64::MIN_POSITIVE) {
        "flat"
    } else if slope > 0.0 {
        "rising"
    } else {
        "falling"
    };
    Trend {
        direction,
        slope_per_day: (slope * 100.0).round() / 100.0,
    }
}

/// Least-squares slope of `ys` against their index.
pub(crate) fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_counts() {
        let t = Totals::new([10, 8, 6, 2, 1, 4], &[]);
        assert_eq!(t.delivery_rate, Some(75.0));
        assert_eq!(t.failure_rate, Some(20.0));
        assert_eq!(t.bounce_rate, Some(12.5));
        assert_eq!(t.read_rate, Some(50.0));
        assert_eq!(t.latency_p50_ms, None);
        assert_eq!(Totals::new([0; 6], &[]).delivery_rate, None);
    }

    #[test]
    fn whole_days_are_the_utc_days_inside_the_range() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            whole_days(at("2026-03-05T10:00:00Z"), at("2026-04-05T10:00:00Z")),
            (at("2026-03-06T00:00:00Z"), at("2026-04-05T00:00:00Z"))
        );
        assert_eq!(
            whole_days(at("2026-03-05T00:00:00Z"), at("2026-03-07T00:00:00Z")),
            (at("2026-03-05T00:00:00Z"), at("2026-03-07T00:00:00Z"))
        );
        // No whole day: everything from the hours.
        let to = at("2026-03-06T09:00:00Z");
        assert_eq!(whole_days(at("2026-03-05T10:00:00Z"), to), (to, to));
        assert_eq!(
            whole_days(at("2026-03-05T00:00:00Z"), at("2026-03-05T23:00:00Z")).0,
            at("2026-03-05T23:00:00Z")
        );
    }

    #[test]
    fn slope_of_a_line_is_its_step() {
        assert!((slope(&[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[4.0]), 0.0);
    }
}
