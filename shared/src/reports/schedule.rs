//! A report schedule's timing: a five-field cron expression read in an
//! IANA time zone, firing at most once an hour.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Firings looked at when checking that a schedule fires at most hourly.
const CHECKED_FIRINGS: usize = 400;

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct ReportCron {
    expression: String,
    zone: Tz,
    schedule: cron::Schedule,
}

/// Why a schedule was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CronError {
    /// `cron` or `timezone`.
    pub field: &'static str,
    /// Why.
    pub reason: String,
    /// Whether it parsed but fires too often (422 rather than 400).
    pub too_often: bool,
}

impl ReportCron {
    /// Parses `minute hour day-of-month month day-of-week` (e.g.
    /// `0 7 * * MON`) in `timezone` (e.g. `America/New_York`); refuses one
    /// that fires more than once in any hour.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let bad = |field, reason: String| CronError {
            field,
            reason,
            too_often: false,
        };
        let zone = Tz::from_str(timezone)
            .map_err(|_| bad("timezone", "is not an IANA time zone name".into()))?;
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != 5 || expression.len() > 200 {
            return Err(bad(
                "cron",
                "must have five fields: minute hour day-of-month month day-of-week".into(),
            ));
        }
        let schedule = cron::Schedule::from_str(&format!("0 {}", fields.join(" ")))
            .map_err(|e| bad("cron", format!("does not parse: {e}")))?;
        let start = zone
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_else(|| Utc::now().with_timezone(&zone));
        let mut firings = schedule.after(&start).take(CHECKED_FIRINGS);
        let Some(mut previous) = firings.next() else {
            return Err(bad("cron", "never fires".into()));
        };
        for next in firings {
            if next.with_timezone(&Utc) - previous.with_timezone(&Utc) < TimeDelta::hours(1) {
                return Err(CronError {
                    field: "cron",
                    reason: "fires more often than once an hour".into(),
                    too_often: true,
                });
            }
            previous = next;
        }
        Ok(Self {
            expression: fields.join(" "),
            zone,
            schedule,
        })
    }

    /// The expression, fields separated by single spaces.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name.
    pub fn zone(&self) -> &'static str {
        self.zone.name()
    }

    /// The first firing after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.zone))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked() {
        let c = ReportCron::parse("0  7 * * MON", "America/New_York").unwrap();
        assert_eq!(c.expression(), "0 7 * * MON");
        let next = c
            .next_after("2026-12-05T00:00:00Z".parse().unwrap())
            .unwrap();
        assert_eq!(
            next,
            "2026-12-07T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(ReportCron::parse("0 * * * *", "UTC").is_ok());
        let e = ReportCron::parse("*/30 * * * *", "UTC").unwrap_err();
        assert!(e.too_often);
        let e = ReportCron::parse("0,30 9 * * *", "UTC").unwrap_err();
        assert!(e.too_often);
        assert_eq!(
            ReportCron::parse("0 7 * *", "UTC").unwrap_err().field,
            "cron"
        );
        assert_eq!(
            ReportCron::parse("0 99 * * *", "UTC").unwrap_err().field,
            "cron"
        );
        assert_eq!(
            ReportCron::parse("0 7 * * *", "Mars/Base")
                .unwrap_err()
                .field,
            "timezone"
        );
    }
}
