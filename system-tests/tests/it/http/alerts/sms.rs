//! The SMS alert channel: on-call numbers and the admins' own phones are
//! texted through the organisation's SMS provider (a local Twilio stand-in)
//! when an alert opens and when it resolves, once per transition and
//! number, never on acknowledgement; numbers are checked and shown masked.

use crate::support::invalid_param_names;
use chrono::TimeDelta;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};

use super::{WAIT, alerts_of, create_rule, drop_default_failure_rule, evaluator, sends, start};
use crate::http::org_support::{answer, request_json, user};

const ON_CALL: &str = "+15005550006";
const ADMIN_PHONE: &str = "+447700900123";

async fn platform() -> (TestApp, FakeProviders) {
    let fake = FakeProviders::start().await;
    let app = TestApp::builder()
        .var("ALERTS_EVALUATE_SECS", 0)
        .providers(&fake)
        .spawn()
        .await;
    app.add_provider(&twilio_config("sms-main", TWILIO_SID_A, None))
        .await;
    (app, fake)
}

/// `(To, Body)` of every text the Twilio stand-in accepted, in order.
fn texts(fake: &FakeProviders) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fake
        .requests(Kind::Twilio)
        .into_iter()
        .filter(|r| r.status < 300)
        .map(|r| {
            let field = |k: &str| r.body[k].as_str().unwrap_or_default().to_owned();
            (field("To"), field("Body"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_texts_the_on_call_number_and_the_admins_once_when_it_opens_and_once_when_it_resolves()
 {
    let (app, fake) = platform().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    // The admin's subscriber profile (external id: the user's id) has a phone.
    let resp = app
        .put_with_key(
            &format!("/api/v1/services/subscribers/{}", admin.id),
            &json!({"phone": ADMIN_PHONE}),
        )
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    drop_default_failure_rule(&app, &admin).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({"name": "Push failing", "metric": "failure_rate", "channel": "push",
               "threshold": 10, "window_secs": 600, "severity": "critical", "escalation": [
                   {"after_minutes": 0, "channels": [
                       {"type": "sms", "to": [ON_CALL]}, {"type": "sms"}]}]}),
    )
    .await;
    assert_eq!(
        rule["escalation"][0]["channels"],
        json!([{"type": "sms", "to": ["+…0006"]}, {"type": "sms"}]),
        "numbers are shown masked"
    );
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let eval = evaluator(&app);
    let t0 = start();
    sends(&app, app.tenant_id, "push", t0, 0, 30).await;

    assert_eq!(eval.evaluate(t0).await.unwrap().opened, 1);
    // A second pass over the same failures notifies nobody again.
    assert_eq!(
        eval.evaluate(t0 + TimeDelta::minutes(1))
            .await
            .unwrap()
            .opened,
        0
    );
    app.wait_settled(WAIT).await;
    let alert = alerts_of(&app, &rule_id).await[0].0;
    let opened = texts(&fake);
    assert_eq!(
        opened.iter().map(|(to, _)| to.as_str()).collect::<Vec<_>>(),
        [ON_CALL, ADMIN_PHONE],
        "one text to each number: {opened:?}"
    );
    for (_, body) in &opened {
        assert!(
            body.starts_with("[critical] Push failing (push): ")
                && body.contains(&alert.to_string()),
            "{body}"
        );
    }

    // Acknowledging does not text anyone.
    answer(
        &app,
        Method::POST,
        &format!("/api/v1/admin/alerts/{alert}/acknowledge"),
        &admin.token,
        200,
    )
    .await;
    app.wait_settled(WAIT).await;
    assert_eq!(texts(&fake).len(), 2, "no text on acknowledgement");

    // The failures leave the window: the alert resolves by itself and both
    // numbers hear of it, once.
    let later = t0 + TimeDelta::minutes(30);
    assert_eq!(eval.evaluate(later).await.unwrap().resolved, 1);
    assert_eq!(
        eval.evaluate(later + TimeDelta::minutes(1))
            .await
            .unwrap()
            .resolved,
        0
    );
    app.wait_settled(WAIT).await;
    let all = texts(&fake);
    let resolved: Vec<&(String, String)> = all
        .iter()
        .filter(|(_, b)| b.starts_with("Resolved: "))
        .collect();
    assert_eq!(
        resolved
            .iter()
            .map(|(to, _)| to.as_str())
            .collect::<Vec<_>>(),
        [ON_CALL, ADMIN_PHONE],
        "{all:?}"
    );
    assert_eq!(all.len(), 4);

    // The alert's history shows each text's delivery.
    let (sent, skipped): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'sent'), count(*) filter (where status = 'skipped')
         from alert_deliveries where alert_id = $1 and channel = 'sms'",
    )
    .bind(alert)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((sent, skipped), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_without_a_phone_is_skipped_and_the_alert_still_opens() {
    let (app, fake) = platform().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    drop_default_failure_rule(&app, &admin).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({"name": "Push failing", "metric": "failure_rate", "channel": "push",
               "threshold": 10, "window_secs": 600, "escalation": [
                   {"after_minutes": 0, "channels": [{"type": "sms"}]}]}),
    )
    .await;
    let t0 = start();
    sends(&app, app.tenant_id, "push", t0, 0, 30).await;
    assert_eq!(evaluator(&app).evaluate(t0).await.unwrap().opened, 1);
    app.wait_settled(WAIT).await;
    let alert = alerts_of(&app, rule["id"].as_str().unwrap()).await[0].0;
    assert!(texts(&fake).is_empty());
    let status: String = sqlx::query_scalar(
        "select status from alert_deliveries where alert_id = $1 and channel = 'sms'",
    )
    .bind(alert)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_numbers_are_checked_and_each_mistake_is_named() {
    let app = TestApp::builder()
        .without_worker()
        .var("ALERTS_EVALUATE_SECS", 0)
        .spawn()
        .await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let eleven: Vec<String> = (0..11).map(|i| format!("+1500555{i:04}")).collect();
    let cases: [(Value, &str); 3] = [
        (
            json!({"type": "sms", "to": ["(555) 010-0000"]}),
            "escalation[0].channels[0].to[0]",
        ),
        (
            json!({"type": "sms", "to": [ON_CALL, " +15005550006 "]}),
            "escalation[0].channels[0].to[1]",
        ),
        (
            json!({"type": "sms", "to": eleven}),
            "escalation[0].channels[0].to",
        ),
    ];
    for (channel, field) in cases {
        let resp = post_rule(&app, &admin.token, channel.clone()).await;
        assert_eq!(resp.status(), 400, "{channel}");
        let problem: Value = resp.json().await.unwrap();
        let names = invalid_param_names(&problem);
        assert_eq!(names, [field], "{channel} → {problem}");
    }
    // Not a list of numbers at all.
    let resp = post_rule(&app, &admin.token, json!({"type": "sms", "to": ON_CALL})).await;
    assert_eq!(resp.status(), 400);
    let none: i64 =
        sqlx::query_scalar("select count(*) from alert_rules where name = 'Push failing'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(none, 0, "nothing was saved");
}

async fn post_rule(app: &TestApp, token: &str, channel: Value) -> reqwest::Response {
    request_json(
        app,
        Method::POST,
        "/api/v1/admin/alert-rules",
        token,
        &json!({"name": "Push failing", "metric": "failure_rate", "channel": "push",
                      "threshold": 10, "window_secs": 600,
                      "escalation": [{"after_minutes": 0, "channels": [channel]}]}),
    )
    .await
}
