//! When a message may reach its recipient: an organisation's daily send
//! windows per channel, a subscriber's quiet hours, and the time zone both
//! are read in.
//!
//! An organisation's `settings` may hold `timezone` (an IANA name) and
//! `send_windows` (`{"sms": {"start": "08:00", "end": "21:00"}}`): a message
//! on a channel with a window goes out only while the recipient's local time
//! is inside it (a window may run past midnight; its end is excluded).
//! Outside, the message is deferred to the window's next opening, never
//! dropped. A subscriber's quiet hours are the opposite: a daily window
//! without messages. The recipient's zone is the subscriber's profile time
//! zone, else the one in their quiet hours, else the organisation's, else
//! UTC. A critical notification ignores both; an in-app notification is
//! never held back (an inbox makes no sound).
//!
//! All of it is pure time math on a `now` the caller passes in, so the
//! worker decides the time at one place and tests choose it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{domain::Channel, preferences::Preferences};

/// A daily window in local time, `[start, end)`; it runs past midnight when
/// `end` is before `start`. A window whose start equals its end is always
/// open (the settings API refuses one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Opening, `HH:MM`.
    #[serde(with = "crate::preferences::hh_mm")]
    pub start: NaiveTime,
    /// Closing, `HH:MM` (excluded).
    #[serde(with = "crate::preferences::hh_mm")]
    pub end: NaiveTime,
}

impl Window {
    /// Whether the local time `t` is inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start == self.end {
            true
        } else if self.start < self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The window's complement: quiet hours `[22:00, 07:00)` allow
    /// `[07:00, 22:00)`.
    pub fn complement(&self) -> Window {
        Window {
            start: self.end,
            end: self.start,
        }
    }

    /// The first instant after `now` at which the local time in `tz` is
    /// inside the window, or `None` when it is inside now. DST-correct: a
    /// start that does not exist that day (spring forward) opens at the
    /// transition, a start that happens twice (fall back) opens at the first
    /// one after `now`, and a window that falls wholly in a skipped hour
    /// opens the next day.
    pub fn next_opening(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz);
        if self.contains(local.time()) {
            return None;
        }
        // Local time enters the window either by passing its start or by
        // a jump of the clock (a transition); both are candidates.
        let today = local.date_naive();
        let days = (-1..=2).filter_map(|d| today.checked_add_signed(Duration::days(d)));
        let mut candidates = Vec::new();
        for day in days {
            candidates.extend(resolve(tz, day.and_time(self.start)));
            candidates.extend(transition_on(tz, day));
        }
        candidates
            .into_iter()
            .filter(|t| *t > now && self.contains(t.with_timezone(&tz).time()))
            .min()
    }
}

/// The instants a local date-time names in `tz`: one, two when the clock
/// falls back over it, none when it is skipped.
fn resolve(tz: Tz, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        chrono::LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
        chrono::LocalResult::None => Vec::new(),
    }
}

/// The UTC offset of `tz` at `t`, in seconds.
fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The instant the offset of `tz` changes within the 36 hours around the
/// local `day` (a zone changes at most once in that span), to the second.
fn transition_on(tz: Tz, day: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = day.and_time(NaiveTime::MIN).and_utc().timestamp();
    let offset = |s: i64| offset_at(tz, DateTime::from_timestamp(s, 0).unwrap_or_default());
    let (mut lo, mut hi) = (midnight - 14 * 3600, midnight + 22 * 3600);
    let before = offset(lo);
    if offset(hi) == before {
        return None;
    }
    // The first whole second with the new offset.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(mid) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// The earliest instant from `now` on that is inside every window in
/// `allowed` (each in its own zone), or `None` when `now` is. Windows that
/// never meet (quiet hours covering a whole send window) give `None` from
/// the search; then `fallback` alone decides.
fn hold_until(
    now: DateTime<Utc>,
    allowed: &[(Window, Tz)],
    fallback: Option<(Window, Tz)>,
) -> Option<DateTime<Utc>> {
    let mut t = now;
    // Each step opens one more window; daily windows that meet do so
    // within a few steps.
    for _ in 0..16 {
        let next = allowed
            .iter()
            .filter_map(|(w, tz)| w.next_opening(*tz, t))
            .max();
        match next {
            None => return (t > now).then_some(t),
            Some(n) => t = n,
        }
    }
    fallback.and_then(|(w, tz)| w.next_opening(tz, now))
}

/// An organisation's send rules, from its `settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendRules {
    /// `settings.timezone`: the zone of recipients without one of their own.
    pub timezone: Option<Tz>,
    /// `settings.send_windows`: per channel, when messages may go out.
    pub windows: BTreeMap<Channel, Window>,
}

impl SendRules {
    /// Reads and checks the rules in an organisation's `settings`; on error
    /// names the offending field (`settings.send_windows.sms.start`) and
    /// why.
    pub fn parse(settings: &Value) -> Result<Self, (String, String)> {
        let mut rules = SendRules::default();
        if let Some(tz) = settings.get("timezone") {
            let name = "settings.timezone".to_owned();
            let tz = tz
                .as_str()
                .ok_or_else(|| (name.clone(), "must be a string".to_owned()))?;
            let tz = crate::domain::parse_time_zone(tz).map_err(|e| (name, e.0))?;
            rules.timezone = Some(tz);
        }
        let Some(windows) = settings.get("send_windows") else {
            return Ok(rules);
        };
        let field = "settings.send_windows";
        let windows = windows.as_object().ok_or_else(|| {
            (
                field.to_owned(),
                "must be an object of channel to {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}"
                    .to_owned(),
            )
        })?;
        for (channel, window) in windows {
            let field = format!("{field}.{channel}");
            let parsed = match Channel::parse(channel) {
                None => {
                    return Err((field, "must be email, sms, push or whatsapp".into()));
                }
                Some(Channel::InApp) => {
                    return Err((
                        field,
                        "in-app notifications are never held back; only email, sms, push or whatsapp have windows".into(),
                    ));
                }
                Some(c) => c,
            };
            let window = window.as_object().ok_or_else(|| {
                (
                    field.clone(),
                    "must be {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}".to_owned(),
                )
            })?;
            if let Some(key) = window.keys().find(|k| *k != "start" && *k != "end") {
                return Err((
                    format!("{field}.{key}"),
                    "is not a window field; use start and end".into(),
                ));
            }
            let time = |key: &str| {
                let name = format!("{field}.{key}");
                let raw = window
                    .get(key)
                    .ok_or_else(|| (name.clone(), "is required".to_owned()))?;
                raw.as_str()
                    .and_then(parse_hh_mm)
                    .ok_or_else(|| (name, "must be a time as HH:MM, 00:00 to 23:59".to_owned()))
            };
            let (start, end) = (time("start")?, time("end")?);
            if start == end {
                return Err((
                    format!("{field}.end"),
                    "must differ from start (leave the channel out for no window)".into(),
                ));
            }
            rules.windows.insert(parsed, Window { start, end });
        }
        Ok(rules)
    }

    /// The rules in stored settings; settings stored before they were
    /// checked count as none.
    pub fn of(settings: &Value) -> Self {
        Self::parse(settings).unwrap_or_default()
    }

    /// Whether the rules can hold back a message on `channel`.
    pub fn has_window(&self, channel: Channel) -> bool {
        self.windows.contains_key(&channel)
    }
}

/// Parses `HH:MM` exactly (two digits each).
pub fn parse_hh_mm(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// One message to decide on.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The subscriber's preferences (`None`: no subscriber, or none stored).
    pub preferences: Option<&'a Preferences>,
    /// The subscriber's profile time zone.
    pub timezone: Option<Tz>,
    /// The notification's category.
    pub category: Option<&'a str>,
    /// Whether it ignores preferences, quiet hours and send windows.
    pub critical: bool,
}

/// What a message's recipient and organisation say about sending it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send now.
    Send,
    /// Opted out: never sent (the reason names the channel and category).
    Suppress(String),
    /// Held until then, without spending an attempt.
    Defer(DateTime<Utc>),
}

impl Recipient<'_> {
    /// The recipient's zone: their profile's, else their quiet hours',
    /// else the organisation's, else UTC.
    pub fn zone(&self, rules: &SendRules) -> Tz {
        self.timezone
            .or_else(|| self.preferences?.quiet_hours.as_ref()?.timezone)
            .or(rules.timezone)
            .unwrap_or(Tz::UTC)
    }
}

/// Decides a message on `channel` to `recipient` at `now` under the
/// organisation's `rules`: critical goes out; an opt-out suppresses; then
/// quiet hours and the channel's send window defer it to the first moment
/// both allow (in-app is never deferred). When quiet hours cover the whole
/// send window, the window alone decides.
pub fn decide(
    now: DateTime<Utc>,
    channel: Channel,
    rules: &SendRules,
    recipient: &Recipient<'_>,
) -> Verdict {
    if recipient.critical {
        return Verdict::Send;
    }
    let prefs = recipient.preferences;
    if let Some(p) = prefs
        && !p.allows(channel, recipient.category)
    {
        return Verdict::Suppress(match recipient.category {
            Some(c) => format!("the subscriber turned off {} for `{c}`", channel.as_str()),
            None => format!("the subscriber turned off {}", channel.as_str()),
        });
    }
    if channel == Channel::InApp {
        return Verdict::Send;
    }
    let zone = recipient.zone(rules);
    let window = rules.windows.get(&channel).map(|w| (*w, zone));
    let quiet = prefs.and_then(|p| p.allowed_hours(zone));
    let allowed: Vec<(Window, Tz)> = window.into_iter().chain(quiet).collect();
    if allowed.is_empty() {
        return Verdict::Send;
    }
    match hold_until(now, &allowed, window) {
        Some(until) => Verdict::Defer(until),
        None => Verdict::Send,
    }
}

#[cfg(test)]
mod tests;
