//! The metrics beyond sends and queues: API 5xx answers, disabled
//! webhook endpoints and one provider's failure rate. Each opens once, resolves by itself when the
//! condition clears, and refuses the fields that do not apply, under an
//! injected clock.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shared::{
    db::errors::{Cause, Occurrences},
    errors::ErrorKind,
};

use super::{alerts_of, app, app_with_admin, create_rule, evaluator, start};
use crate::http::org_support::{answer_json, platform_admin, user};
use testkit::{TestApp, alerting::FakeTarget};

/// Records `n` API 5xx answers (the platform's own, as the API counts
/// them) at `at`.
async fn server_errors(app: &TestApp, n: i64, at: DateTime<Utc>) {
    let mut rows = Occurrences::default();
    let cause = Cause {
        kind: ErrorKind::Api,
        reason: shared::errors::reasons::INTERNAL_ERROR,
        source: "/api/v1/services/notifications",
        tenant: None,
    };
    rows.push(&cause, None, n, at);
    shared::db::errors::record(&app.pool, &rows).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_server_errors_open_one_platform_alert_that_resolves_once_the_window_passes() {
    let pagerduty = FakeTarget::pagerduty().await;
    let app = app(&pagerduty).await;
    let root = platform_admin(&app).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let body = json!({
        "name": "API failing",
        "metric": "api_server_errors",
        "threshold": 5,
        "window_secs": 300,
        "escalation": [{"after_minutes": 0, "channels": [{"type": "in_app"}]}],
    });
    // An organisation's rule cannot watch what is counted platform-wide.
    let refused = answer_json(
        &app,
        Method::POST,
        "/api/v1/admin/alert-rules",
        &admin.token,
        &body,
        400,
    )
    .await;
    assert_eq!(refused["invalid_params"][0]["name"], "metric", "{refused}");
    let rule = create_rule(&app, &root, body).await;
    assert_eq!(rule["organization_id"], Value::Null);
    assert_eq!(rule["unit"], "5xx answers");
    let rule_id = rule["id"].as_str().unwrap().to_owned();

    let eval = evaluator(&app);
    let t0 = start();
    server_errors(&app, 3, t0 - TimeDelta::minutes(2)).await;
    eval.evaluate(t0).await.unwrap();
    assert!(alerts_of(&app, &rule_id).await.is_empty(), "3 < 5");

    server_errors(&app, 4, t0 - TimeDelta::minutes(1)).await;
    for s in [5, 10, 15] {
        eval.evaluate(t0 + TimeDelta::seconds(s)).await.unwrap();
    }
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1, "opens once: {alerts:?}");
    assert_eq!(alerts[0].1, "open");
    let value: f64 = sqlx::query_scalar("select value from alerts where id = $1")
        .bind(alerts[0].0)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(value, 7.0);

    // Five minutes on, the answers are out of the window.
    eval.evaluate(t0 + TimeDelta::minutes(6)).await.unwrap();
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1, "resolved");
    assert_eq!(alerts[0].2.as_deref(), Some("auto"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_webhook_endpoint_opens_one_alert_and_re_enabling_it_resolves_it() {
    let (_pagerduty, app, admin) = app_with_admin().await;
    let endpoint = |n: u16| json!({"url": format!("http://127.0.0.1:9/hook{n}"), "events": ["notification.failed"]});
    let mut ids = Vec::new();
    for n in 0..2 {
        let created = answer_json(
            &app,
            Method::POST,
            "/api/v1/admin/webhooks",
            &app.api_key,
            &endpoint(n),
            201,
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let any = create_rule(
        &app,
        &admin,
        json!({"name": "Endpoint off", "metric": "webhook_endpoint_disabled",
               "threshold": 1, "window_secs": 60, "cooldown_secs": 0}),
    )
    .await;
    let automatic = create_rule(
        &app,
        &admin,
        json!({"name": "Endpoint gave up", "metric": "webhook_endpoint_disabled",
               "disabled_by": "failures", "threshold": 1, "window_secs": 60}),
    )
    .await;
    assert_eq!(automatic["disabled_by"], "failures");
    let (any, automatic) = (
        any["id"].as_str().unwrap().to_owned(),
        automatic["id"].as_str().unwrap().to_owned(),
    );
    let eval = evaluator(&app);
    let t0 = start();
    eval.evaluate(t0).await.unwrap();
    assert!(alerts_of(&app, &any).await.is_empty(), "all enabled");

    // An administrator disables one: the rule for any reason fires, the
    // one for failures only does not.
    let path = format!("/api/v1/admin/webhooks/{}", ids[0]);
    let mut off = endpoint(0);
    off["enabled"] = json!(false);
    answer_json(&app, Method::PUT, &path, &app.api_key, &off, 200).await;
    for s in [5, 10] {
        eval.evaluate(t0 + TimeDelta::seconds(s)).await.unwrap();
    }
    let alerts = alerts_of(&app, &any).await;
    assert_eq!(alerts.len(), 1, "opens once");
    assert!(alerts_of(&app, &automatic).await.is_empty());

    // The other one is disabled after failing deliveries.
    sqlx::query(
        "update webhook_endpoints set enabled = false, consecutive_failures = 5,
             disabled_reason = 'disabled after 5 deliveries in a row failed their last attempt'
         where id = $1::uuid",
    )
    .bind(&ids[1])
    .execute(&app.pool)
    .await
    .unwrap();
    eval.evaluate(t0 + TimeDelta::seconds(15)).await.unwrap();
    assert_eq!(alerts_of(&app, &automatic).await.len(), 1);
    assert_eq!(alerts_of(&app, &any).await.len(), 1, "still one alert");

    // Both enabled again: both alerts resolve by themselves.
    for (i, id) in ids.iter().enumerate() {
        let mut on = endpoint(i as u16);
        on["enabled"] = json!(true);
        answer_json(
            &app,
            Method::PUT,
            &format!("/api/v1/admin/webhooks/{id}"),
            &app.api_key,
            &on,
            200,
        )
        .await;
    }
    eval.evaluate(t0 + TimeDelta::seconds(20)).await.unwrap();
    for rule in [&any, &automatic] {
        let alerts = alerts_of(&app, rule).await;
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].1.as_str(), alerts[0].2.as_deref()),
            ("resolved", Some("auto"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fields_that_do_not_apply_to_the_new_metrics_are_refused_naming_them() {
    let (_pagerduty, app, admin) = app_with_admin().await;
    let cases = [
        (
            json!({"metric": "failure_rate", "threshold": 10, "disabled_by": "admin"}),
            "disabled_by",
        ),
        (
            json!({"metric": "webhook_endpoint_disabled", "threshold": 1, "disabled_by": "cron"}),
            "disabled_by",
        ),
        (
            json!({"metric": "webhook_endpoint_disabled", "threshold": 1, "channel": "sms"}),
            "channel",
        ),
        (
            json!({"metric": "webhook_endpoint_disabled", "threshold": 0}),
            "threshold",
        ),
        // Only a failure rate is narrowed to a provider.
        (
            json!({"metric": "webhook_endpoint_disabled", "threshold": 1, "provider": "twilio"}),
            "provider",
        ),
        (
            json!({"metric": "failure_rate", "threshold": 10, "provider": ""}),
            "provider",
        ),
    ];
    for (patch, field) in cases {
        let mut body = json!({"name": "r", "window_secs": 60});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = answer_json(
            &app,
            Method::POST,
            "/api/v1/admin/alert-rules",
            &admin.token,
            &body,
            400,
        )
        .await;
        let named = problem["invalid_params"]
            .as_array()
            .map(|ps| ps.iter().any(|p| p["name"] == field))
            .unwrap_or(false)
            || problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(field));
        assert!(named, "{body} → {problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_rate_narrowed_to_one_provider_watches_that_provider_alone() {
    let (_pagerduty, app, admin) = app_with_admin().await;
    let rule = create_rule(
        &app,
        &admin,
        json!({"name": "Twilio main failing", "metric": "failure_rate", "provider": "Twilio main",
               "channel": "sms", "min_events": 4, "threshold": 50, "window_secs": 300}),
    )
    .await;
    assert_eq!(rule["provider"], "Twilio main");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    // Only a failure rate can be narrowed to a provider.
    let refused = answer_json(
        &app,
        Method::POST,
        "/api/v1/admin/alert-rules",
        &admin.token,
        &json!({"name": "x", "metric": "queue_depth", "provider": "Twilio main",
                          "threshold": 5, "window_secs": 60}),
        400,
    )
    .await;
    assert_eq!(
        refused["invalid_params"][0]["name"], "provider",
        "{refused}"
    );

    // The answers as the workers count them: the main provider fails three
    // of four, the backup takes everything, another organisation's main
    // provider fails too (not this rule's business).
    let counts = shared::throughput::Throughput::new();
    let (other, _) = app.other_tenant().await;
    for sent in [true, false, false, false] {
        counts.record_provider("sms", app.tenant_id, "Twilio main", sent);
    }
    for _ in 0..10 {
        counts.record_provider("sms", app.tenant_id, "Backup", true);
        counts.record_provider("sms", other, "Twilio main", false);
    }
    counts.flush(&app.pool).await.unwrap();
    let minute: DateTime<Utc> = sqlx::query_scalar("select max(minute) from provider_minutes")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let eval = evaluator(&app);
    eval.evaluate(minute + TimeDelta::seconds(30))
        .await
        .unwrap();
    eval.evaluate(minute + TimeDelta::seconds(35))
        .await
        .unwrap();
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1, "opens once: {alerts:?}");
    assert_eq!(alerts[0].1, "open");
    let (subject, value): (String, f64) =
        sqlx::query_as("select subject, value from alerts where id = $1")
            .bind(alerts[0].0)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((subject.as_str(), value), ("sms:Twilio main", 75.0));

    // Once the answers leave the window, it resolves by itself.
    eval.evaluate(minute + TimeDelta::minutes(6)).await.unwrap();
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].1, "resolved");
    assert_eq!(alerts[0].2.as_deref(), Some("auto"));
}
