use super::*;
use chrono::Timelike;
use proptest::prelude::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn hm(s: &str) -> NaiveTime {
    parse_hh_mm(s).unwrap()
}

fn window(start: &str, end: &str) -> Window {
    Window {
        start: hm(start),
        end: hm(end),
    }
}

const NEW_YORK: Tz = Tz::America__New_York;

#[test]
fn windows_contain_their_start_not_their_end_and_may_cross_midnight() {
    let day = window("08:00", "21:00");
    assert!(day.contains(hm("08:00")));
    assert!(day.contains(hm("20:59")));
    assert!(!day.contains(hm("21:00")));
    assert!(!day.contains(hm("07:59")));
    let night = window("22:00", "07:00");
    assert!(night.contains(hm("22:00")));
    assert!(night.contains(hm("00:00")));
    assert!(night.contains(hm("06:59")));
    assert!(!night.contains(hm("07:00")));
    assert!(!night.contains(hm("12:00")));
    assert_eq!(night.complement(), window("07:00", "22:00"));
    assert!(window("09:00", "09:00").contains(hm("03:00")));
}

#[test]
fn a_window_opens_later_today_or_tomorrow_in_local_time() {
    let sms = window("08:00", "21:00");
    // 10:00 EST: inside.
    assert_eq!(sms.next_opening(NEW_YORK, at("2026-01-15T15:00:00Z")), None);
    // 06:15 EST: today at 08:00 EST.
    assert_eq!(
        sms.next_opening(NEW_YORK, at("2026-01-15T11:15:00Z")),
        Some(at("2026-01-15T13:00:00Z"))
    );
    // 21:00 EST exactly: closed, tomorrow 08:00.
    assert_eq!(
        sms.next_opening(NEW_YORK, at("2026-01-16T02:00:00Z")),
        Some(at("2026-01-16T13:00:00Z"))
    );
    // 23:59:59 EST: tomorrow, which is already the next UTC day's morning.
    assert_eq!(
        sms.next_opening(NEW_YORK, at("2026-01-16T04:59:59Z")),
        Some(at("2026-01-16T13:00:00Z"))
    );
    // Summer (EDT, UTC-4).
    assert_eq!(
        sms.next_opening(NEW_YORK, at("2026-07-15T10:00:00Z")),
        Some(at("2026-07-15T12:00:00Z"))
    );
    // Across midnight: 22:00–06:00 UTC, at noon: tonight.
    let night = window("22:00", "06:00");
    assert_eq!(
        night.next_opening(Tz::UTC, at("2026-01-15T12:00:00Z")),
        Some(at("2026-01-15T22:00:00Z"))
    );
    assert_eq!(
        night.next_opening(Tz::UTC, at("2026-01-15T23:00:00Z")),
        None
    );
    assert_eq!(
        night.next_opening(Tz::UTC, at("2026-01-16T05:59:59Z")),
        None
    );
    // Zones east of UTC: 08:00 in Tokyo (UTC+9) is 23:00 UTC the day before.
    assert_eq!(
        sms.next_opening(Tz::Asia__Tokyo, at("2026-01-15T20:00:00Z")),
        Some(at("2026-01-15T23:00:00Z"))
    );
    // Half-hour zones: 08:00 in Kolkata (UTC+5:30).
    assert_eq!(
        sms.next_opening(Tz::Asia__Kolkata, at("2026-01-15T00:00:00Z")),
        Some(at("2026-01-15T02:30:00Z"))
    );
}

#[test]
fn a_start_the_clock_skips_opens_when_it_jumps() {
    // 8 March 2026, New York: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    let w = window("02:30", "21:00");
    assert_eq!(
        w.next_opening(NEW_YORK, at("2026-03-08T06:00:00Z")),
        Some(at("2026-03-08T07:00:00Z"))
    );
    // A window wholly in the skipped hour opens the next day (EDT).
    let w = window("02:10", "02:40");
    assert_eq!(
        w.next_opening(NEW_YORK, at("2026-03-08T06:00:00Z")),
        Some(at("2026-03-09T06:10:00Z"))
    );
    // The day before the jump is still EST.
    assert_eq!(
        window("08:00", "21:00").next_opening(NEW_YORK, at("2026-03-07T02:00:00Z")),
        Some(at("2026-03-07T13:00:00Z"))
    );
    // And the day after is EDT.
    assert_eq!(
        window("08:00", "21:00").next_opening(NEW_YORK, at("2026-03-09T02:00:00Z")),
        Some(at("2026-03-09T12:00:00Z"))
    );
}

#[test]
fn a_start_the_clock_passes_twice_opens_at_the_next_one() {
    // 1 November 2026, New York: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
    let w = window("01:30", "01:45");
    // 01:00 EDT: the first 01:30 (EDT).
    assert_eq!(
        w.next_opening(NEW_YORK, at("2026-11-01T05:00:00Z")),
        Some(at("2026-11-01T05:30:00Z"))
    );
    // 01:50 EDT: the second 01:30 (EST).
    assert_eq!(
        w.next_opening(NEW_YORK, at("2026-11-01T05:50:00Z")),
        Some(at("2026-11-01T06:30:00Z"))
    );
    // A window the clock falls back into without passing its start opens
    // at the fall: 00:30–01:30, at 01:45 EDT; at 06:00 UTC it is 01:00 EST.
    let w = window("00:30", "01:30");
    assert_eq!(
        w.next_opening(NEW_YORK, at("2026-11-01T05:45:00Z")),
        Some(at("2026-11-01T06:00:00Z"))
    );
}

#[test]
fn a_thirty_minute_shift_is_followed() {
    // Lord Howe Island moves by 30 minutes: 5 April 2026, 02:00 (+11)
    // becomes 01:30 (+10:30) at 15:00 UTC the day before.
    let tz = Tz::Australia__Lord_Howe;
    let w = window("01:40", "01:50");
    // 01:45 +11 is inside; at 01:55 +11 (14:55 UTC) the second 01:40 is
    // 15:10 UTC.
    assert_eq!(w.next_opening(tz, at("2026-04-04T14:45:00Z")), None);
    assert_eq!(
        w.next_opening(tz, at("2026-04-04T14:55:00Z")),
        Some(at("2026-04-04T15:10:00Z"))
    );
}

const ZONES: &[Tz] = &[
    Tz::UTC,
    Tz::America__New_York,
    Tz::America__Chicago,
    Tz::America__St_Johns,
    Tz::Europe__London,
    Tz::Europe__Dublin,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
    Tz::Asia__Kolkata,
    Tz::America__Santiago,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Against a brute-force walk minute by minute: the opening is after
    /// `now`, inside the window, and no whole minute before it is.
    #[test]
    fn the_next_opening_is_the_first_moment_inside_the_window(
        zone in 0..ZONES.len(),
        start in 0u32..1440,
        end in 0u32..1440,
        // 2020 to 2031, to the second.
        now in 1_577_836_800i64..1_924_991_999,
    ) {
        prop_assume!(start != end);
        let tz = ZONES[zone];
        let w = Window {
            start: NaiveTime::from_hms_opt(start / 60, start % 60, 0).unwrap(),
            end: NaiveTime::from_hms_opt(end / 60, end % 60, 0).unwrap(),
        };
        let now = DateTime::from_timestamp(now, 0).unwrap();
        let inside = |t: DateTime<Utc>| w.contains(t.with_timezone(&tz).time());
        match w.next_opening(tz, now) {
            None => prop_assert!(inside(now)),
            Some(t) => {
                prop_assert!(!inside(now));
                prop_assert!(t > now);
                prop_assert!(inside(t));
                prop_assert_eq!(t.second(), 0);
                prop_assert!(t - now <= Duration::days(2));
                let mut m = now + Duration::seconds(60 - i64::from(now.second()));
                while m < t {
                    prop_assert!(!inside(m), "inside at {} before {}", m, t);
                    m += Duration::minutes(1);
                }
            }
        }
    }
}

fn rules(settings: Value) -> SendRules {
    SendRules::parse(&settings).unwrap()
}

fn send_to(tz: Option<Tz>) -> Recipient<'static> {
    Recipient {
        preferences: None,
        timezone: tz,
        category: None,
        critical: false,
    }
}

#[test]
fn sms_inside_the_window_goes_out_and_outside_waits_for_the_opening() {
    let r = rules(json!({"send_windows": {"sms": {"start": "08:00", "end": "21:00"}}}));
    let who = send_to(Some(NEW_YORK));
    assert_eq!(
        decide(at("2026-01-15T15:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Send
    );
    assert_eq!(
        decide(at("2026-01-16T03:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Defer(at("2026-01-16T13:00:00Z"))
    );
    // Other channels have no window.
    assert_eq!(
        decide(at("2026-01-16T03:00:00Z"), Channel::Email, &r, &who),
        Verdict::Send
    );
    // Critical goes out at once.
    let critical = Recipient {
        critical: true,
        ..who
    };
    assert_eq!(
        decide(at("2026-01-16T03:00:00Z"), Channel::Sms, &r, &critical),
        Verdict::Send
    );
}

#[test]
fn the_recipients_zone_is_their_profile_then_their_quiet_hours_then_the_organisation_then_utc() {
    let r = rules(
        json!({"timezone": "America/Chicago", "send_windows": {"sms": {"start": "08:00", "end": "21:00"}}}),
    );
    let now = at("2026-01-16T03:00:00Z");
    // Profile: Tokyo (12:00 there): inside.
    assert_eq!(
        decide(now, Channel::Sms, &r, &send_to(Some(Tz::Asia__Tokyo))),
        Verdict::Send
    );
    // No profile zone: the organisation's, Chicago (21:00): tomorrow 08:00 CST.
    assert_eq!(
        decide(now, Channel::Sms, &r, &send_to(None)),
        Verdict::Defer(at("2026-01-16T14:00:00Z"))
    );
    // Quiet hours naming a zone (and none in the profile): theirs.
    let prefs = Preferences::parse(
        json!({"quiet_hours": {"start": "23:00", "end": "23:30", "timezone": "Asia/Tokyo"}}),
    )
    .unwrap();
    let who = Recipient {
        preferences: Some(&prefs),
        ..send_to(None)
    };
    assert_eq!(who.zone(&r), Tz::Asia__Tokyo);
    assert_eq!(decide(now, Channel::Sms, &r, &who), Verdict::Send);
    // Neither: UTC (03:00): today 08:00 UTC.
    let bare = rules(json!({"send_windows": {"sms": {"start": "08:00", "end": "21:00"}}}));
    assert_eq!(
        decide(now, Channel::Sms, &bare, &send_to(None)),
        Verdict::Defer(at("2026-01-16T08:00:00Z"))
    );
}

#[test]
fn quiet_hours_defer_every_channel_but_in_app_in_the_subscribers_zone() {
    let prefs =
        Preferences::parse(json!({"quiet_hours": {"start": "22:00", "end": "07:00"}})).unwrap();
    let who = Recipient {
        preferences: Some(&prefs),
        ..send_to(Some(NEW_YORK))
    };
    let none = SendRules::default();
    // 23:00 EST.
    let now = at("2026-01-16T04:00:00Z");
    for channel in [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::WhatsApp,
    ] {
        assert_eq!(
            decide(now, channel, &none, &who),
            Verdict::Defer(at("2026-01-16T12:00:00Z"))
        );
    }
    assert_eq!(decide(now, Channel::InApp, &none, &who), Verdict::Send);
    // The organisation's zone when the profile has none: Chicago, 22:00 CST.
    let chicago = rules(json!({"timezone": "America/Chicago"}));
    let who = Recipient {
        preferences: Some(&prefs),
        ..send_to(None)
    };
    assert_eq!(
        decide(now, Channel::Push, &chicago, &who),
        Verdict::Defer(at("2026-01-16T13:00:00Z"))
    );
    // Critical ignores them.
    let critical = Recipient {
        critical: true,
        ..who
    };
    assert_eq!(
        decide(now, Channel::Push, &chicago, &critical),
        Verdict::Send
    );
}

#[test]
fn quiet_hours_and_a_send_window_together_wait_for_both() {
    let r = rules(json!({"send_windows": {"sms": {"start": "08:00", "end": "21:00"}}}));
    let prefs =
        Preferences::parse(json!({"quiet_hours": {"start": "20:00", "end": "09:00"}})).unwrap();
    let who = Recipient {
        preferences: Some(&prefs),
        ..send_to(Some(Tz::UTC))
    };
    // 07:00: the window opens at 08:00, the quiet hours end at 09:00.
    assert_eq!(
        decide(at("2026-01-16T07:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Defer(at("2026-01-16T09:00:00Z"))
    );
    // 20:30: quiet now and the window closes at 21:00: tomorrow 09:00.
    assert_eq!(
        decide(at("2026-01-16T20:30:00Z"), Channel::Sms, &r, &who),
        Verdict::Defer(at("2026-01-17T09:00:00Z"))
    );
    assert_eq!(
        decide(at("2026-01-16T12:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Send
    );
    // Quiet hours covering the whole window: the window alone decides,
    // so the message is held, never lost.
    let always =
        Preferences::parse(json!({"quiet_hours": {"start": "07:00", "end": "22:00"}})).unwrap();
    let who = Recipient {
        preferences: Some(&always),
        ..who
    };
    assert_eq!(
        decide(at("2026-01-16T07:30:00Z"), Channel::Sms, &r, &who),
        Verdict::Defer(at("2026-01-16T08:00:00Z"))
    );
    assert_eq!(
        decide(at("2026-01-16T08:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Send
    );
}

#[test]
fn opt_outs_suppress_before_any_window() {
    let prefs = Preferences::parse(json!({"channels": {"sms": false}})).unwrap();
    let r = rules(json!({"send_windows": {"sms": {"start": "08:00", "end": "21:00"}}}));
    let who = Recipient {
        preferences: Some(&prefs),
        category: Some("results"),
        ..send_to(None)
    };
    assert_eq!(
        decide(at("2026-01-16T03:00:00Z"), Channel::Sms, &r, &who),
        Verdict::Suppress("the subscriber turned off sms for `results`".into())
    );
}

#[test]
fn settings_with_windows_and_a_zone_are_read_and_bad_ones_named() {
    let r = rules(json!({
        "block_phi_when_non_compliant": true,
        "timezone": "America/New_York",
        "send_windows": {"sms": {"start": "08:00", "end": "21:00"}, "push": {"start": "22:00", "end": "06:00"}},
    }));
    assert_eq!(r.timezone, Some(NEW_YORK));
    assert_eq!(r.windows[&Channel::Sms], window("08:00", "21:00"));
    assert_eq!(r.windows[&Channel::Push], window("22:00", "06:00"));
    assert!(r.has_window(Channel::Sms) && !r.has_window(Channel::Email));
    assert_eq!(rules(json!({})), SendRules::default());
    for (bad, field) in [
        (json!({"timezone": "Mars/Olympus"}), "settings.timezone"),
        (json!({"timezone": 5}), "settings.timezone"),
        (json!({"send_windows": []}), "settings.send_windows"),
        (
            json!({"send_windows": {"fax": {"start": "08:00", "end": "21:00"}}}),
            "settings.send_windows.fax",
        ),
        (
            json!({"send_windows": {"inapp": {"start": "08:00", "end": "21:00"}}}),
            "settings.send_windows.inapp",
        ),
        (
            json!({"send_windows": {"sms": "08:00-21:00"}}),
            "settings.send_windows.sms",
        ),
        (
            json!({"send_windows": {"sms": {"start": "8:00", "end": "21:00"}}}),
            "settings.send_windows.sms.start",
        ),
        (
            json!({"send_windows": {"sms": {"start": "08:00", "end": "24:00"}}}),
            "settings.send_windows.sms.end",
        ),
        (
            json!({"send_windows": {"sms": {"start": "08:00"}}}),
            "settings.send_windows.sms.end",
        ),
        (
            json!({"send_windows": {"sms": {"start": 8, "end": "21:00"}}}),
            "settings.send_windows.sms.start",
        ),
        (
            json!({"send_windows": {"sms": {"start": "08:00", "end": "08:00"}}}),
            "settings.send_windows.sms.end",
        ),
        (
            json!({"send_windows": {"sms": {"start": "08:00", "end": "21:00", "days": []}}}),
            "settings.send_windows.sms.days",
        ),
    ] {
        let (name, reason) = SendRules::parse(&bad).unwrap_err();
        assert_eq!(name, field, "{bad}: {reason}");
    }
    // Stored settings that no longer parse hold nothing back.
    assert_eq!(
        SendRules::of(&json!({"send_windows": 1})),
        SendRules::default()
    );
}

#[test]
fn times_are_read_as_two_digit_hours_and_minutes() {
    assert_eq!(parse_hh_mm("00:00"), Some(NaiveTime::MIN));
    assert_eq!(parse_hh_mm("23:59"), NaiveTime::from_hms_opt(23, 59, 0));
    for bad in [
        "",
        "7:00",
        "07:0",
        "24:00",
        "07:60",
        "0700",
        "07-00",
        " 7:00",
        "07:00:00",
        "٠٧:٠٠",
    ] {
        assert_eq!(parse_hh_mm(bad), None, "{bad:?}");
    }
}
