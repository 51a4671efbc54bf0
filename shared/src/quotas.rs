//! Send quotas as every process counts them: the periods, the Redis key of
//! an organisation's counter for a channel and period (the API's sends and
//! the workflow runner's sends count on the same keys), and the charge the
//! workflow runner makes when a send step creates notifications.
//!
//! The API charges with its own script, which also raises the 80 % warning
//! and the first refusal's notice; [`charge`] only counts and refuses, and
//! leaves those flags alone, so the API's next send still raises them.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use redis::aio::ConnectionManager;

use crate::{
    db::limits::Quota,
    domain::{Channel, TenantId},
};

/// A quota's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A calendar month (UTC).
    Month,
}

impl Period {
    /// `day` or `month`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// `daily` or `monthly`.
    pub fn adjective(self) -> &'static str {
        match self {
            Self::Day => "daily",
            Self::Month => "monthly",
        }
    }

    /// The first day of the period holding `now`.
    pub fn start(self, now: DateTime<Utc>) -> NaiveDate {
        let date = now.date_naive();
        match self {
            Self::Day => date,
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The period holding `now`, as its counter's key names it.
    pub fn label(self, now: DateTime<Utc>) -> String {
        match self {
            Self::Day => format!("day:{}", now.format("%Y%m%d")),
            Self::Month => format!("month:{}", now.format("%Y%m")),
        }
    }

    /// When the period holding `now` ends.
    pub fn end(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let date = now.date_naive();
        let next = match self {
            Self::Day => date.succ_opt(),
            Self::Month => {
                let (y, m) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
            }
        }
        .unwrap_or(date);
        Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
    }
}

/// The Redis key counting `tenant`'s sends on `channel` in the `period`
/// holding `now`, under the deployment's `prefix`.
pub fn key(
    prefix: &str,
    tenant: TenantId,
    channel: &str,
    period: Period,
    now: DateTime<Utc>,
) -> String {
    format!("{prefix}:quota:{tenant}:{channel}:{}", period.label(now))
}

/// Takes ARGV's amounts from every counter, or nothing. KEYS: counters.
/// ARGV: quota, add, expiry (unix seconds), for each. Returns {1}, or
/// {0, index (1-based), used} for the first quota the charge would pass.
const CHARGE: &str = r"
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    return {0, i, used}
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
  redis.call('EXPIREAT', KEYS[i], ARGV[3 * i])
end
return {1}
";

/// What [`charge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Counted (or no quota applies).
    Counted,
    /// Over quota `name` (`sms:day`): nothing was counted; `detail` says
    /// by how much and when it renews.
    Refused {
        /// The quota, `channel:period`.
        name: String,
        /// What is used up, for people.
        detail: String,
    },
}

/// Counts `add` notifications on `channel` against `tenant`'s `quotas`
/// (every period of that channel at once, or none). An error means Redis
/// did not answer: the caller decides (the runner sends uncounted, as the
/// API does while Redis is away).
pub async fn charge(
    conn: &mut ConnectionManager,
    prefix: &str,
    tenant: TenantId,
    quotas: &[Quota],
    channel: Channel,
    add: u64,
    now: DateTime<Utc>,
) -> Result<Charged, redis::RedisError> {
    let applied: Vec<(&Quota, Period)> = quotas
        .iter()
        .filter(|q| q.channel == channel.as_str())
        .filter_map(|q| Period::parse(&q.period).map(|p| (q, p)))
        .collect();
    if applied.is_empty() || add == 0 {
        return Ok(Charged::Counted);
    }
    let script = redis::Script::new(CHARGE);
    let mut invocation = script.prepare_invoke();
    for (q, period) in &applied {
        invocation
            .key(key(prefix, tenant, &q.channel, *period, now))
            .arg(q.quota)
            .arg(add)
            .arg(period.end(now).timestamp() + 60);
    }
    let answer: Vec<i64> = invocation.invoke_async(conn).await?;
    if answer.first() == Some(&1) {
        return Ok(Charged::Counted);
    }
    let index = answer.get(1).copied().unwrap_or(1).max(1) as usize - 1;
    let used = answer.get(2).copied().unwrap_or(0);
    let (q, period) = applied[index.min(applied.len() - 1)];
    Ok(Charged::Refused {
        name: format!("{}:{}", q.channel, period.as_str()),
        detail: format!(
            "the {} {} quota of {} is used up ({used} sent this period, {add} more needed); it renews at {}",
            period.adjective(),
            q.channel,
            q.quota,
            period
                .end(now)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_end_at_the_next_utc_midnight_or_month() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            Period::Day.end(at("2026-12-05T13:00:00Z")),
            at("2026-12-06T00:00:00Z")
        );
        assert_eq!(
            Period::Month.end(at("2026-12-05T13:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            Period::Month.end(at("2026-02-28T23:59:59Z")),
            at("2026-03-01T00:00:00Z")
        );
    }

    #[test]
    fn keys_name_the_organisation_channel_and_period() {
        let at = "2026-12-05T13:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let t = TenantId(uuid::Uuid::nil());
        assert_eq!(
            key("p", t, "sms", Period::Month, at),
            format!("p:quota:{}:sms:month:202612", uuid::Uuid::nil())
        );
        assert_eq!(
            key("p", t, "sms", Period::Day, at),
            format!("p:quota:{}:sms:day:20261205", uuid::Uuid::nil())
        );
    }
}
