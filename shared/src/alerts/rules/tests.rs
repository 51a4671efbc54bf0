//! Checks of rules on save, and the defaults.

use super::*;

fn input(v: Value) -> RuleInput {
    let mut base =
        json!({"name": "r", "metric": "failure_rate", "threshold": 10.0, "window_secs": 60});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    RuleInput {
        name: base["name"].as_str().map(str::to_owned),
        metric: base["metric"].as_str().map(str::to_owned),
        channel: base["channel"].as_str().map(str::to_owned),
        queue: base["queue"].as_str().map(str::to_owned),
        provider: base["provider"].as_str().map(str::to_owned),
        min_events: base["min_events"].as_i64(),
        disabled_by: base["disabled_by"].as_str().map(str::to_owned),
        threshold: base["threshold"].as_f64(),
        window_secs: base["window_secs"].as_i64(),
        severity: base["severity"].as_str().map(str::to_owned),
        cooldown_secs: base["cooldown_secs"].as_i64(),
        escalation: base["escalation"].as_array().cloned(),
        enabled: base["enabled"].as_bool(),
    }
}

fn fields(v: Value) -> Vec<String> {
    input(v)
        .check(false)
        .expect_err("refused")
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

#[test]
fn a_valid_rule_gets_in_app_beside_email_and_defaults() {
    let spec =
        input(json!({"escalation": [{"after_minutes": 0, "channels": [{"type": "email"}]}]}))
            .check(false)
            .unwrap();
    assert_eq!(
        spec.escalation[0].channels,
        [ChannelSpec::InApp, ChannelSpec::Email]
    );
    assert_eq!(spec.severity, Severity::Warning);
    assert_eq!(spec.cooldown_secs, 900);
    assert!(spec.enabled);
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(fields(json!({"metric": "cpu"})), ["metric"]);
    assert_eq!(fields(json!({"window_secs": 0})), ["window_secs"]);
    assert_eq!(fields(json!({"window_secs": -1})), ["window_secs"]);
    assert_eq!(fields(json!({"window_secs": 86_401})), ["window_secs"]);
    assert_eq!(fields(json!({"threshold": 100.5})), ["threshold"]);
    assert_eq!(
        fields(json!({"metric": "baa_expiring", "threshold": 400})),
        ["threshold"]
    );
    assert_eq!(fields(json!({"queue": "sms"})), ["queue"]);
    assert_eq!(fields(json!({"disabled_by": "admin"})), ["disabled_by"]);
    assert_eq!(
        fields(json!({"metric": "latency_p99", "threshold": 100, "provider": "twilio"})),
        ["provider"]
    );
    assert_eq!(fields(json!({"provider": " "})), ["provider"]);
    assert_eq!(fields(json!({"provider": "a\u{7}b"})), ["provider"]);
    assert_eq!(fields(json!({"provider": "p".repeat(101)})), ["provider"]);
    let narrowed = input(json!({"provider": "Twilio main", "channel": "sms"}))
        .check(false)
        .expect("a failure rate narrowed to one provider");
    assert_eq!(narrowed.scope["provider"], "Twilio main");
    assert_eq!(narrowed.scope["channel"], "sms");
    assert_eq!(
        fields(
            json!({"metric": "webhook_endpoint_disabled", "threshold": 1, "disabled_by": "cron"})
        ),
        ["disabled_by"]
    );
    assert_eq!(
        fields(json!({"metric": "api_server_errors", "threshold": 5, "channel": "sms"})),
        ["channel"]
    );
    assert_eq!(
        fields(json!({"metric": "webhook_endpoint_disabled", "threshold": 0})),
        ["threshold"]
    );
    assert_eq!(
        fields(json!({"metric": "queue_depth", "threshold": 5, "queue": "nope"})),
        ["queue"]
    );
    assert_eq!(
        fields(json!({"escalation": [{"after_minutes": 0, "channels": [
            {"type": "slack", "url": "https://127.0.0.1/x"}]}]})),
        ["escalation[0].channels[0].url"]
    );
    assert_eq!(
        fields(json!({"escalation": [{"after_minutes": 0, "channels": [
            {"type": "in_app"}, {"type": "in_app"}]}]})),
        ["escalation[0].channels"]
    );
}

#[test]
fn thresholds_compare_the_way_each_metric_reads() {
    assert!(Metric::FailureRate.fires(25.0, 25.0));
    assert!(!Metric::FailureRate.fires(24.9, 25.0));
    assert!(Metric::NoWorkerAlive.fires(0.0, 1.0));
    assert!(!Metric::NoWorkerAlive.fires(1.0, 1.0));
    assert!(Metric::BaaExpiring.fires(-3.0, 30.0));
    assert!(!Metric::BaaExpiring.fires(31.0, 30.0));
}

#[test]
fn the_defaults_pass_their_own_checks() {
    for (_, spec) in defaults() {
        let (lo, hi) = spec.metric.threshold_range();
        assert!(
            spec.threshold >= lo && spec.threshold <= hi,
            "{}",
            spec.name
        );
        assert!(spec.window_secs > 0 && i64::from(spec.window_secs) <= MAX_WINDOW_SECS);
    }
}

#[test]
fn masked_channels_keep_no_secret() {
    let c = ChannelSpec::Webhook {
        url: "https://hooks.example.org/secret/path".into(),
        secret: "whsec_abcdefghijklmnop".into(),
    };
    let shown = c.masked().to_string();
    assert!(
        !shown.contains("secret/path") && !shown.contains("abcdefghijklmnop"),
        "{shown}"
    );
}

#[test]
fn sms_numbers_are_normalised_shown_masked_and_told_apart_by_the_set_of_numbers() {
    let spec = input(json!({"escalation": [{"after_minutes": 0, "channels": [
        {"type": "sms", "to": [" +15005550006", "+447700900123"]},
        {"type": "sms"}]}]}))
    .check(false)
    .expect("valid");
    let ChannelSpec::Sms { to } = &spec.escalation[0].channels[0] else {
        panic!("an sms channel");
    };
    assert_eq!(to, &["+15005550006", "+447700900123"], "trimmed");
    let shown = spec.escalation[0].channels[0].masked().to_string();
    assert!(
        shown.contains("+…0006") && !shown.contains("5550006"),
        "{shown}"
    );
    assert_eq!(spec.escalation[0].channels[1].target_key(), "admins");
    let swapped = ChannelSpec::Sms {
        to: vec!["+447700900123".into(), "+15005550006".into()],
    };
    assert_eq!(
        swapped.target_key(),
        spec.escalation[0].channels[0].target_key(),
        "the same numbers in another order are the same target"
    );
    assert_eq!(
        serde_json::to_value(&spec.escalation[0].channels[1]).unwrap(),
        json!({"type": "sms"})
    );
}
