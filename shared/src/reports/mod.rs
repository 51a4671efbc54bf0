//! Delivery analytics: hourly rollups of every organisation's sends, the
//! reports computed from them, scheduled reports and a volume forecast.
//!
//! * [`rollup`]: `delivery_hours`, kept up to date from the statements that
//!   write notifications (set-based triggers append deltas; schedulers fold
//!   them once a second), and the one-off backfill for upgrades.
//! * [`compute`]: a report of a range from the rollups alone.
//! * [`deliver`]: scheduled reports emailed once per firing.
//! * [`export`]: a report as CSV rows (XLSX is the API's).
//! * [`forecast`]: the next 7 days' volume per channel from daily history.
//! * [`schedule`]: report schedules' cron and time zone, checked.
//! * [`own`]: report templates of an organisation's own.

pub mod compute;
pub mod deliver;
pub mod export;
pub mod forecast;
pub mod own;
pub mod rollup;
pub mod schedule;

use chrono::{DateTime, DurationRound, Months, TimeDelta, Utc};

/// The longest custom range.
pub const MAX_RANGE: TimeDelta = TimeDelta::days(366);

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// The day (24 hours) before its end.
    DailySummary,
    /// The 7 days before its end.
    WeeklyPerformance,
    /// The calendar month before its end (e.g. 5 March to 5 April).
    MonthlyComprehensive,
    /// `from` to `to`, at most [`MAX_RANGE`].
    Custom,
    /// An organisation's own template's period before its end.
    Own(own::OwnPeriod),
}

impl Template {
    /// Every template's name.
    pub const NAMES: [&'static str; 4] = [
        "daily_summary",
        "weekly_performance",
        "monthly_comprehensive",
        "custom",
    ];

    /// Parses a name of [`Template::NAMES`].
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "daily_summary" => Self::DailySummary,
            "weekly_performance" => Self::WeeklyPerformance,
            "monthly_comprehensive" => Self::MonthlyComprehensive,
            "custom" => Self::Custom,
            _ => return None,
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DailySummary => "daily_summary",
            Self::WeeklyPerformance => "weekly_performance",
            Self::MonthlyComprehensive => "monthly_comprehensive",
            Self::Custom => "custom",
            Self::Own(_) => "own",
        }
    }

    /// The start of the period this template covers when it ends at `to`;
    /// `None` for [`Template::Custom`].
    pub fn start(self, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::DailySummary => Some(to - TimeDelta::days(1)),
            Self::WeeklyPerformance => Some(to - TimeDelta::days(7)),
            Self::MonthlyComprehensive => to.checked_sub_months(Months::new(1)),
            Self::Custom => None,
            Self::Own(p) => p.start(to),
        }
    }
}

/// A report's checked range: whole hours, `from < to`, at most
/// [`MAX_RANGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRange {
    /// The template.
    pub template: Template,
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
}

/// Why a range was refused: the parameter and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RangeError {
    /// The query parameter.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> RangeError {
    RangeError {
        field,
        reason: reason.into(),
    }
}

/// Rounds down to the hour.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Rounds up to the hour.
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_hour(t);
    if f == t { t } else { f + TimeDelta::hours(1) }
}

impl ReportRange {
    /// Checks a request: `custom` needs `from` and `to`; the other
    /// templates take only `to` (default `now`) and cover their period
    /// before it. The range is widened to whole hours.
    pub fn new(
        template: Template,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, RangeError> {
        let (from, to) = match template {
            Template::Custom => {
                let from =
                    from.ok_or_else(|| refuse("from", "is required with template=custom"))?;
                let to = to.ok_or_else(|| refuse("to", "is required with template=custom"))?;
                (from, to)
            }
            other => {
                if from.is_some() {
                    return Err(refuse(
                        "from",
                        format!(
                            "is only for template=custom; {} covers a fixed period before `to`",
                            other.as_str()
                        ),
                    ));
                }
                let to = to.unwrap_or(now);
                let from = other
                    .start(to)
                    .ok_or_else(|| refuse("to", "is out of range"))?;
                (from, to)
            }
        };
        if from >= to {
            return Err(refuse("from", "must be before `to`"));
        }
        if to - from > MAX_RANGE {
            return Err(refuse("to", "the range may span at most 366 days"));
        }
        let low = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        let high = DateTime::<Utc>::from_timestamp(253_402_300_799 - 2 * 366 * 86_400, 0)
            .unwrap_or_default();
        if from < low || to > high {
            return Err(refuse("from", "must lie between 1970 and 9997"));
        }
        Ok(Self {
            template,
            from: floor_hour(from),
            to: ceil_hour(to),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_checked_and_widened_to_hours() {
        let now = at("2026-12-05T10:30:00Z");
        let r = ReportRange::new(Template::DailySummary, None, None, now).unwrap();
        assert_eq!(
            (r.from, r.to),
            (at("2026-12-04T10:00:00Z"), at("2026-12-05T11:00:00Z"))
        );
        let m = ReportRange::new(
            Template::MonthlyComprehensive,
            None,
            Some(at("2026-03-31T00:00:00Z")),
            now,
        )
        .unwrap();
        assert_eq!(m.from, at("2026-02-28T00:00:00Z"));
        let e = ReportRange::new(
            Template::Custom,
            Some(now),
            Some(now - TimeDelta::hours(1)),
            now,
        )
        .unwrap_err();
        assert_eq!(e.field, "from");
        let e = ReportRange::new(
            Template::Custom,
            Some(now - TimeDelta::days(367)),
            Some(now),
            now,
        )
        .unwrap_err();
        assert_eq!(e.field, "to");
        let e = ReportRange::new(Template::WeeklyPerformance, Some(now), None, now).unwrap_err();
        assert_eq!(e.field, "from");
        let e = ReportRange::new(Template::Custom, None, Some(now), now).unwrap_err();
        assert_eq!(e.field, "from");
    }
}
