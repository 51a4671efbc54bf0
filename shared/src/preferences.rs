//! A subscriber's preferences: which channels and categories they want, and
//! when they do not want to be disturbed.
//!
//! Stored as JSON, parsed strictly (unknown keys are errors). Anything not
//! mentioned is allowed; `"enabled": false` at the top level opts out of
//! everything. A critical notification ignores all of it. Quiet hours hold
//! back email, SMS, push and WhatsApp (never in-app) and are applied with an
//! organisation's send windows (see [`crate::send_windows`]).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{domain::Channel, send_windows::Window};

/// A subscriber's preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Everything on or off (absent: on). Off suppresses every channel and
    /// category; only critical notifications still go out. Shown only when
    /// off, so preferences that never used it keep their shape.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Channels turned on or off (absent: on).
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    /// Per category: on or off as a whole, or per channel.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryPreference>,
    /// A daily window without email, SMS, push or WhatsApp (in-app is never
    /// held back: an inbox makes no sound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// One category's preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPreference {
    /// The whole category on or off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Channels of this category turned on or off.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            enabled: true,
            channels: BTreeMap::new(),
            categories: BTreeMap::new(),
            quiet_hours: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A daily quiet window in the subscriber's time zone; it may run past
/// midnight (`22:00`–`07:00`). Start equal to end means no quiet hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM`.
    #[serde(with = "hh_mm")]
    pub start: NaiveTime,
    /// End, `HH:MM`.
    #[serde(with = "hh_mm")]
    pub end: NaiveTime,
    /// An IANA time zone, e.g. `America/Chicago`. Absent: the subscriber's
    /// profile time zone, else the organisation's (`settings.timezone`),
    /// else UTC.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "tz_name",
        deserialize_with = "tz_parse"
    )]
    pub timezone: Option<chrono_tz::Tz>,
}

/// `HH:MM` times, exactly.
pub(crate) mod hh_mm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        crate::send_windows::parse_hh_mm(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a time as HH:MM")))
    }
}

fn tz_name<S: Serializer>(tz: &Option<chrono_tz::Tz>, s: S) -> Result<S::Ok, S::Error> {
    match tz {
        Some(tz) => s.serialize_str(tz.name()),
        None => s.serialize_none(),
    }
}

fn tz_parse<'de, D: Deserializer<'de>>(d: D) -> Result<Option<chrono_tz::Tz>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an IANA time zone")))
}

impl Preferences {
    /// Parses preferences, naming the offending key on error.
    pub fn parse(value: serde_json::Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err("preferences must be a JSON object".into());
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }
        })
    }

    /// Whether a notification of `category` may go out on `channel`.
    pub fn allows(&self, channel: Channel, category: Option<&str>) -> bool {
        if !self.enabled {
            return false;
        }
        if self.channels.get(&channel) == Some(&false) {
            return false;
        }
        match category.and_then(|c| self.categories.get(c)) {
            Some(c) => c.enabled && c.channels.get(&channel) != Some(&false),
            None => true,
        }
    }

    /// The hours the subscriber may be disturbed (the complement of their
    /// quiet hours) and the zone they are read in: the quiet hours' own
    /// zone, else `zone`. `None` without quiet hours.
    pub fn allowed_hours(&self, zone: chrono_tz::Tz) -> Option<(Window, chrono_tz::Tz)> {
        let q = self.quiet_hours.as_ref()?;
        if q.start == q.end {
            return None;
        }
        let quiet = Window {
            start: q.start,
            end: q.end,
        };
        Some((quiet.complement(), q.timezone.unwrap_or(zone)))
    }

    /// When `channel` may next disturb the subscriber, if `now` falls in
    /// their quiet hours (read in `zone` when they name no zone). In-app
    /// never waits.
    pub fn quiet_until(
        &self,
        channel: Channel,
        now: DateTime<Utc>,
        zone: chrono_tz::Tz,
    ) -> Option<DateTime<Utc>> {
        if channel == Channel::InApp {
            return None;
        }
        let (allowed, tz) = self.allowed_hours(zone)?;
        allowed.next_opening(tz, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn channels_and_categories_opt_out() {
        let p = Preferences::parse(json!({
            "channels": {"email": false},
            "categories": {"marketing": {"enabled": false}, "billing": {"channels": {"inapp": false}}},
        }))
        .unwrap();
        assert!(!p.allows(Channel::Email, None));
        assert!(p.allows(Channel::InApp, None));
        assert!(!p.allows(Channel::InApp, Some("marketing")));
        assert!(!p.allows(Channel::InApp, Some("billing")));
        assert!(p.allows(Channel::InApp, Some("results")));
        assert!(Preferences::default().allows(Channel::Email, Some("anything")));
    }

    #[test]
    fn a_global_opt_out_suppresses_every_channel_and_category() {
        let off = Preferences::parse(json!({"enabled": false})).unwrap();
        for &channel in Channel::ALL {
            for category in [None, Some("results"), Some("marketing")] {
                assert!(!off.allows(channel, category), "{channel:?} {category:?}");
            }
        }
        // Even where a channel or category is explicitly on.
        let off = Preferences::parse(json!({
            "enabled": false,
            "channels": {"email": true},
            "categories": {"results": {"enabled": true, "channels": {"email": true}}},
        }))
        .unwrap();
        assert!(!off.allows(Channel::Email, Some("results")));
        // Explicitly on is the default, and the stored shape without the key
        // is unchanged.
        let on = Preferences::parse(json!({"enabled": true})).unwrap();
        assert_eq!(on, Preferences::default());
        assert!(on.allows(Channel::Sms, Some("results")));
        assert_eq!(
            serde_json::to_value(&on).unwrap(),
            json!({"channels": {}, "categories": {}})
        );
        assert_eq!(
            serde_json::to_value(Preferences::parse(json!({"enabled": false})).unwrap()).unwrap(),
            json!({"enabled": false, "channels": {}, "categories": {}})
        );
        assert!(
            Preferences::parse(json!({"enabled": "no"}))
                .unwrap_err()
                .contains("enabled")
        );
    }

    #[test]
    fn quiet_hours_defer_email_to_the_end_of_the_window_in_local_time() {
        let p = Preferences::parse(json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America/Chicago"}}))
            .unwrap();
        // 23:30 in Chicago (CST, UTC-6) on 15 January: quiet until 07:00 local the next day.
        assert_eq!(
            p.quiet_until(Channel::Email, at("2026-01-16T05:30:00Z"), Tz::UTC),
            Some(at("2026-01-16T13:00:00Z"))
        );
        // 03:00 local: the same morning.
        assert_eq!(
            p.quiet_until(Channel::Email, at("2026-01-16T09:00:00Z"), Tz::UTC),
            Some(at("2026-01-16T13:00:00Z"))
        );
        // 12:00 local: not quiet.
        assert_eq!(
            p.quiet_until(Channel::Email, at("2026-01-16T18:00:00Z"), Tz::UTC),
            None
        );
        // In-app never waits.
        assert_eq!(
            p.quiet_until(Channel::InApp, at("2026-01-16T05:30:00Z"), Tz::UTC),
            None
        );
        // Summer time (CDT, UTC-5).
        assert_eq!(
            p.quiet_until(Channel::Email, at("2026-07-16T04:30:00Z"), Tz::UTC),
            Some(at("2026-07-16T12:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_hold_back_every_channel_but_in_app_in_the_zone_given_when_they_name_none() {
        let p =
            Preferences::parse(json!({"quiet_hours": {"start": "22:00", "end": "07:00"}})).unwrap();
        assert_eq!(p.quiet_hours.as_ref().unwrap().timezone, None);
        let chicago: Tz = "America/Chicago".parse().unwrap();
        // 23:30 in Chicago; 05:30 in UTC (inside the quiet hours too).
        let now = at("2026-01-16T05:30:00Z");
        for channel in [
            Channel::Email,
            Channel::Sms,
            Channel::Push,
            Channel::WhatsApp,
        ] {
            assert_eq!(
                p.quiet_until(channel, now, chicago),
                Some(at("2026-01-16T13:00:00Z")),
                "{channel:?}"
            );
            assert_eq!(
                p.quiet_until(channel, now, Tz::UTC),
                Some(at("2026-01-16T07:00:00Z")),
                "{channel:?}"
            );
        }
        assert_eq!(p.quiet_until(Channel::InApp, now, chicago), None);
        // Stored without a zone, shown without one.
        assert_eq!(
            serde_json::to_value(&p).unwrap()["quiet_hours"],
            json!({"start": "22:00", "end": "07:00"})
        );
        // Their own zone wins over the one given.
        let own = Preferences::parse(
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America/Chicago"}}),
        )
        .unwrap();
        assert_eq!(
            own.quiet_until(Channel::Sms, now, Tz::Asia__Tokyo),
            Some(at("2026-01-16T13:00:00Z"))
        );
        // Equal start and end: no quiet hours.
        let none =
            Preferences::parse(json!({"quiet_hours": {"start": "07:00", "end": "07:00"}})).unwrap();
        assert_eq!(none.quiet_until(Channel::Sms, now, Tz::UTC), None);
    }

    #[test]
    fn quiet_hours_ending_in_a_skipped_hour_end_when_the_clock_jumps() {
        // 8 March 2026, Chicago springs forward from 02:00 CST to 03:00 CDT;
        // 02:30 never happens, so quiet hours ending then end at 03:00 CDT.
        let p = Preferences::parse(
            json!({"quiet_hours": {"start": "22:00", "end": "02:30", "timezone": "America/Chicago"}}),
        )
        .unwrap();
        assert_eq!(
            p.quiet_until(Channel::Sms, at("2026-03-08T07:00:00Z"), Tz::UTC),
            Some(at("2026-03-08T08:00:00Z"))
        );
    }

    #[test]
    fn bad_preferences_are_named() {
        for (bad, key) in [
            (json!({"chanels": {}}), "chanels"),
            (json!({"channels": {"fax": true}}), "channels"),
            (
                json!({"quiet_hours": {"start": "25:00", "end": "07:00", "timezone": "UTC"}}),
                "quiet_hours.start",
            ),
            (
                json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}}),
                "quiet_hours.timezone",
            ),
            (
                json!({"quiet_hours": {"start": "22:00", "end": "7:00"}}),
                "quiet_hours.end",
            ),
            (
                json!({"categories": {"x": {"enabled": "no"}}}),
                "categories.x.enabled",
            ),
        ] {
            let err = Preferences::parse(bad).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }
}
