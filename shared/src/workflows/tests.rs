use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;

fn escalation() -> Value {
    json!([
        {"key": "inapp", "type": "send", "template": "care.alert", "channels": ["inapp"]},
        {"key": "wait-read", "type": "wait_for", "step": "inapp", "status": "read", "timeout_secs": 3600},
        {"key": "read-in-time", "type": "branch", "if": {"step": "wait-read", "outcome": "met"}, "then": "end"},
        {"key": "sms", "type": "send", "template": "care.alert", "channels": ["sms"]},
        {"key": "wait-day", "type": "wait_for", "step": "inapp", "status": "read", "timeout_secs": 86400},
        {"key": "read-later", "type": "branch", "if": {"step": "wait-day", "outcome": "met"}, "then": "end"},
        {"key": "care-team", "type": "send", "template": "care.escalation", "channels": ["email"],
         "to": "care-team@clinic.example"},
        {"key": "pause", "type": "delay", "until_local_time": "09:00"},
        {"key": "collect", "type": "digest", "window_secs": 600, "group_by": "ward"},
        {"key": "limit", "type": "throttle", "limit": 3, "window_secs": 3600, "on_limit": "merge"},
        {"key": "urgent", "type": "branch", "if": {"field": "score", "op": "gte", "value": 7}, "then": "end"},
        {"key": "event", "type": "wait_for", "event": "appointment.confirmed", "timeout_secs": 60},
    ])
}

#[test]
fn a_valid_definition_round_trips_through_its_stored_form() {
    let steps = parse_steps(&escalation()).unwrap();
    assert_eq!(steps.len(), 12);
    let stored = serde_json::to_value(&steps).unwrap();
    let back: Vec<Step> = serde_json::from_value(stored).unwrap();
    assert_eq!(back, steps);
}

fn errors(steps: Value) -> Vec<(String, String)> {
    parse_steps(&steps)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.step, e.field))
        .collect()
}

#[test]
fn every_problem_names_its_step_and_field() {
    let e = errors(json!([
        {"key": "a", "type": "teleport"},
        {"key": "b", "type": "branch", "if": {"step": "a", "outcome": "sent"}, "then": "nowhere"},
        {"key": "c", "type": "delay", "duration_secs": 40_000_000},
        {"key": "d", "type": "branch", "if": {"field": "x", "op": "eq", "value": 1}, "then": "b"},
        {"key": "d", "type": "delay", "duration_secs": 5},
        {"type": "delay", "duration_secs": 5},
        {"key": "f", "type": "send", "template": "t", "channels": ["inapp", "fax"], "colour": 1},
        {"key": "g", "type": "wait_for", "step": "h", "status": "read", "timeout_secs": 5},
        {"key": "h", "type": "send", "template": "t", "channels": ["sms", "email"], "to": "x@y.example"},
    ]));
    assert!(e.contains(&("a".into(), "type".into())), "{e:?}");
    assert!(e.contains(&("b".into(), "then".into())), "{e:?}");
    assert!(e.contains(&("c".into(), "duration_secs".into())), "{e:?}");
    assert!(
        e.contains(&("d".into(), "then".into())),
        "a jump back is a cycle: {e:?}"
    );
    assert!(e.contains(&("d".into(), "key".into())), "{e:?}");
    assert!(e.contains(&("steps[5]".into(), "key".into())), "{e:?}");
    assert!(e.contains(&("f".into(), "channels[1]".into())), "{e:?}");
    assert!(
        e.contains(&("g".into(), "step".into())),
        "a later step: {e:?}"
    );
    assert!(e.contains(&("h".into(), "to".into())), "{e:?}");
}

#[test]
fn more_than_fifty_steps_are_refused() {
    let steps: Vec<Value> = (0..51)
        .map(|i| json!({"key": format!("s{i}"), "type": "delay", "duration_secs": 1}))
        .collect();
    assert_eq!(
        errors(Value::Array(steps)),
        vec![("steps".into(), "steps".into())]
    );
}

#[test]
fn a_local_time_delay_ends_at_the_next_such_minute_in_the_zone() {
    let now = Utc.with_ymd_and_hms(2026, 3, 7, 20, 0, 0).unwrap();
    let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let end = delay_end(&Delay::UntilLocalTime("09:00".into()), &json!({}), tz, now).unwrap();
    assert_eq!(
        end,
        Utc.with_ymd_and_hms(2026, 3, 8, 13, 0, 0).unwrap(),
        "after the DST change"
    );
    let field = Delay::UntilField("appt.at".into());
    let payload = json!({"appt": {"at": "2026-03-09T10:00:00Z"}});
    assert_eq!(
        delay_end(&field, &payload, tz, now).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 9, 10, 0, 0).unwrap()
    );
    assert!(delay_end(&field, &json!({}), tz, now).is_err());
}

#[test]
fn field_comparisons_follow_json_values() {
    let p = json!({"score": 7, "kind": "lab", "nested": {"flag": true}});
    assert!(compare(&p, "score", Op::Gte, Some(&json!(7))));
    assert!(!compare(&p, "score", Op::Gt, Some(&json!(7))));
    assert!(compare(&p, "kind", Op::Eq, Some(&json!("lab"))));
    assert!(compare(&p, "nested.flag", Op::Exists, None));
    assert!(compare(&p, "nested.other", Op::Missing, None));
    assert!(!compare(&p, "kind", Op::Lt, Some(&json!(3))));
}
