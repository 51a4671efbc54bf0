//! Who may do what with alert rules and alerts, and what a bad rule hears.

use reqwest::Method;
use serde_json::{Value, json};

use super::{alerts_of, app, app_with_admin, create_rule, evaluator, sends, start};
use crate::http::org_support::{answer, expect, platform_admin, request, request_json, user};
use crate::support::invalid_param_names;
use chrono::TimeDelta;
use testkit::alerting::FakeTarget;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rules_are_refused_naming_the_field() {
    let (_pagerduty, app, admin) = app_with_admin().await;
    let base = json!({"name": "r", "metric": "failure_rate", "threshold": 10, "window_secs": 60});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"metric": "cpu_load"}), "metric"),
        (json!({"window_secs": 0}), "window_secs"),
        (json!({"window_secs": -60}), "window_secs"),
        (json!({"window_secs": 86_401}), "window_secs"),
        (json!({"threshold": 150}), "threshold"),
        (json!({"threshold": 0}), "threshold"),
        (json!({"severity": "urgent"}), "severity"),
        (json!({"cooldown_secs": -1}), "cooldown_secs"),
        (json!({"channel": "fax"}), "channel"),
        (json!({"queue": "sms"}), "queue"),
        (json!({"escalation": []}), "escalation"),
        (
            json!({"escalation": [{"after_minutes": 5, "channels": [{"type": "in_app"}]},
                                  {"after_minutes": 5, "channels": [{"type": "email"}]}]}),
            "escalation[1].after_minutes",
        ),
        (
            json!({"escalation": [{"after_minutes": 0, "channels": [
                {"type": "slack", "url": "http://169.254.169.254/latest"}]}]}),
            "escalation[0].channels[0].url",
        ),
        (
            json!({"escalation": [{"after_minutes": 0, "channels": [
                {"type": "pagerduty", "routing_key": "not a key!"}]}]}),
            "escalation[0].channels[0].routing_key",
        ),
        (
            json!({"escalation": [{"after_minutes": 0, "channels": [
                {"type": "webhook", "url": "https://hooks.example.org/x", "secret": "short"}]}]}),
            "escalation[0].channels[0].secret",
        ),
        (
            json!({"escalation": [{"after_minutes": 0, "channels": [{"type": "carrier_pigeon"}]}]}),
            "escalation[0]",
        ),
    ];
    for (patch, field) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = request_json(
            &app,
            Method::POST,
            "/api/v1/admin/alert-rules",
            &admin.token,
            &body,
        )
        .await;
        let problem = expect(resp, 400).await;
        let names = invalid_param_names(&problem);
        assert!(names.iter().any(|n| n == field), "{body} → {problem}");
    }
    let none: i64 =
        sqlx::query_scalar("select count(*) from alert_rules where created_by <> 'system'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(none, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_organisations_rules_and_alerts_answer_404_and_platform_admins_see_all() {
    let pagerduty = FakeTarget::pagerduty().await;
    let app = app(&pagerduty).await;
    let root = platform_admin(&app).await;
    let a = user(&app, app.tenant_id, "ADMIN", "a@clinic.example").await;
    let other = shared::db::tenants::create(&app.pool, "Other Clinic")
        .await
        .unwrap();
    let b = user(&app, other.id, "ADMIN", "b@other.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let rule = create_rule(
        &app,
        &a,
        json!({"name": "WhatsApp failing", "metric": "failure_rate", "channel": "whatsapp",
               "threshold": 10, "window_secs": 600}),
    )
    .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let t0 = start();
    sends(&app, app.tenant_id, "whatsapp", t0, 0, 30).await;
    evaluator(&app).evaluate(t0).await.unwrap();
    let alert = alerts_of(&app, &rule_id).await[0].0;

    let rule_path = format!("/api/v1/admin/alert-rules/{rule_id}");
    let alert_path = format!("/api/v1/admin/alerts/{alert}");
    for (method, path) in [
        (Method::GET, rule_path.clone()),
        (Method::DELETE, rule_path.clone()),
        (Method::GET, alert_path.clone()),
        (Method::POST, format!("{alert_path}/acknowledge")),
        (Method::POST, format!("{alert_path}/resolve")),
        (
            Method::GET,
            "/api/v1/admin/alert-rules/not-a-uuid".to_owned(),
        ),
    ] {
        let resp = request(&app, method.clone(), &path, &b.token).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let put = request_json(
        &app,
        Method::PUT,
        &rule_path,
        &b.token,
        &json!({"name": "mine now", "metric": "failure_rate", "threshold": 10, "window_secs": 60}),
    )
    .await;
    assert_eq!(put.status(), 404);
    let named = request_json(
        &app,
        Method::POST,
        "/api/v1/admin/alert-rules",
        &b.token,
        &json!({"name": "x", "metric": "failure_rate", "threshold": 10, "window_secs": 60,
                      "organization_id": app.tenant_id.to_string()}),
    )
    .await;
    assert_eq!(named.status(), 404, "naming another organisation");
    let listed = answer(&app, Method::GET, "/api/v1/admin/alerts", &b.token, 200).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != alert.to_string())
    );
    let forbidden = request(
        &app,
        Method::GET,
        "/api/v1/admin/alert-rules",
        &doctor.token,
    )
    .await;
    assert_eq!(forbidden.status(), 403, "admins only");

    // The platform admin sees both organisations' alerts and makes
    // platform-wide rules.
    let seen = answer(&app, Method::GET, &alert_path, &root.token, 200).await;
    assert_eq!(seen["alert"]["organization_id"], app.tenant_id.to_string());
    let wide = create_rule(
        &app,
        &root,
        json!({"name": "Too few SMS workers", "metric": "no_worker_alive", "queue": "sms",
               "threshold": 1000, "window_secs": 60, "severity": "critical"}),
    )
    .await;
    assert!(wide["organization_id"].is_null());
    let hidden = request(
        &app,
        Method::GET,
        &format!("/api/v1/admin/alert-rules/{}", wide["id"].as_str().unwrap()),
        &a.token,
    )
    .await;
    assert_eq!(
        hidden.status(),
        404,
        "platform-wide rules are the platform's"
    );
    // Fewer than 1,000 workers serve SMS: the platform's rule fires.
    let r = evaluator(&app)
        .evaluate(t0 + TimeDelta::seconds(5))
        .await
        .unwrap();
    assert!(r.opened >= 1, "{r:?}");
    let wide_alerts = alerts_of(&app, wide["id"].as_str().unwrap()).await;
    assert_eq!(wide_alerts.len(), 1);
    let refusals: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where result = 'failure' and resource_type in ('alert', 'alert_rule')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(refusals >= 7, "refusals are audited: {refusals}");
}
