//! Alert rules and alerts: the lifecycle under an injected clock (opens
//! once, escalates once, notifies each channel once, resolves by itself,
//! opens again only after the cooldown), racing evaluators, a storm of
//! failures, validation, tenancy, and the Slack, PagerDuty and webhook
//! request shapes checked by local servers.
//!
//! The running scheduler's own evaluation is off (`ALERTS_EVALUATE_SECS=0`):
//! the tests call [`Evaluator::evaluate`] and [`Sender::deliver`] with the
//! time they choose.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use reqwest::Method;
use scheduler::alerts::Sender;
use serde_json::{Value, json};
use shared::{
    alerts::Evaluator,
    db::queue_ops::{self, MinuteRow},
    domain::TenantId,
    jobs::Queues,
    throughput::BUCKETS,
};
use testkit::{TestApp, alerting::FakeTarget, webhooks::Receiver};
use uuid::Uuid;

use crate::http::org_support::{Signed, answer, answer_json, request, user};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";
const SECRET: &str = "alert-signing-secret-42";
const WAIT: Duration = Duration::from_secs(20);

async fn app(pagerduty: &FakeTarget) -> TestApp {
    TestApp::builder()
        .var("ALERTS_EVALUATE_SECS", 0)
        .var("WEBHOOKS_ALLOW_LOOPBACK", "true")
        .var("PAGERDUTY_BASE_URL", pagerduty.base())
        .spawn()
        .await
}

/// The PagerDuty stand-in, the app sending to it, and an admin of the
/// app's organisation.
async fn app_with_admin() -> (FakeTarget, TestApp, Signed) {
    let pagerduty = FakeTarget::pagerduty().await;
    let app = app(&pagerduty).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    (pagerduty, app, admin)
}

fn evaluator(app: &TestApp) -> Evaluator {
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    Evaluator::new(
        app.pool.clone(),
        queues,
        app.settings.jobs.clone(),
        Duration::from_secs(5),
    )
}

/// A minute boundary a little in the past, so windows ending at the test's
/// times read the rows the test wrote.
fn start() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::hours(3)
}

/// Adds `sent` and `failed` sends of `queue` for `tenant` at `minute`.
async fn sends(
    app: &TestApp,
    tenant: TenantId,
    queue: &'static str,
    minute: DateTime<Utc>,
    sent: i64,
    failed: i64,
) {
    queue_ops::add_minutes(
        &app.pool,
        &[MinuteRow {
            queue,
            minute: minute.duration_trunc(TimeDelta::minutes(1)).unwrap(),
            tenant_id: tenant.0,
            sent,
            failed,
            retried: 0,
            duration_ms: vec![0; BUCKETS],
            latency_ms: vec![0; BUCKETS],
        }],
    )
    .await
    .unwrap();
}

/// The org admin's view of its rules; deletes the default failure-rate
/// rule so the tests' own rule is the only one that reads failures.
async fn drop_default_failure_rule(app: &TestApp, admin: &Signed) {
    let rules = answer(
        app,
        Method::GET,
        "/api/v1/admin/alert-rules",
        &admin.token,
        200,
    )
    .await;
    let builtins: Vec<&str> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["builtin"].as_str())
        .collect();
    assert_eq!(
        builtins,
        [
            "high_failure_rate",
            "stuck_queue",
            "breaker_open",
            "baa_expiring"
        ],
        "every organisation gets the default rules"
    );
    let id = rules["items"][0]["id"].as_str().unwrap();
    let path = format!("/api/v1/admin/alert-rules/{id}");
    let resp = request(app, Method::DELETE, &path, &admin.token).await;
    assert_eq!(resp.status(), 204);
}

async fn create_rule(app: &TestApp, admin: &Signed, body: Value) -> Value {
    answer_json(
        app,
        Method::POST,
        "/api/v1/admin/alert-rules",
        &admin.token,
        &body,
        201,
    )
    .await
}

async fn alerts_of(app: &TestApp, rule: &str) -> Vec<(Uuid, String, Option<String>)> {
    sqlx::query_as(
        "select id, status, resolved_by from alerts where rule_id = $1::uuid order by opened_at",
    )
    .bind(rule)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// `(state, channel, count)` of the admins' notifications about `alert`.
async fn admin_notices(app: &TestApp, alert: Uuid) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "select metadata->>'alert_state', channel, count(*) from notifications
         where metadata->>'alert_id' = $1 group by 1, 2 order by 1, 2",
    )
    .bind(alert.to_string())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_opens_once_escalates_once_notifies_each_channel_once_resolves_itself_and_waits_out_its_cooldown()
 {
    let pagerduty = FakeTarget::pagerduty().await;
    let slack = FakeTarget::slack().await;
    let hook = Receiver::start().await;
    let app = app(&pagerduty).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    drop_default_failure_rule(&app, &admin).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({
            "name": "SMS failing",
            "metric": "failure_rate",
            "channel": "sms",
            "min_events": 10,
            "threshold": 50,
            "window_secs": 3600,
            "severity": "critical",
            "cooldown_secs": 1800,
            "escalation": [
                {"after_minutes": 0, "channels": [
                    {"type": "email"},
                    {"type": "slack", "url": slack.url("/services/T0/B0/x")},
                ]},
                {"after_minutes": 10, "channels": [
                    {"type": "pagerduty", "routing_key": ROUTING_KEY},
                    {"type": "webhook", "url": hook.url("/alerts"), "secret": SECRET},
                ]},
            ],
        }),
    )
    .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    // Email never goes alone: in-app was added beside it.
    assert_eq!(rule["escalation"][0]["channels"][0]["type"], "in_app");
    assert_eq!(rule["escalation"][1]["channels"][0]["routing_key"], "R0UT…");

    let eval = evaluator(&app);
    let sender = Sender::new(app.pool.clone(), &app.settings).unwrap();
    let t0 = start();
    sends(
        &app,
        app.tenant_id,
        "sms",
        t0 - TimeDelta::minutes(1),
        10,
        90,
    )
    .await;

    // Opens once, however many evaluations see the condition.
    let first = eval.evaluate(t0).await.unwrap();
    assert_eq!(first.opened, 1, "{first:?}");
    for s in [5, 10, 15] {
        let r = eval.evaluate(t0 + TimeDelta::seconds(s)).await.unwrap();
        assert_eq!((r.opened, r.escalated, r.resolved), (0, 0, 0), "{r:?}");
    }
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1);
    let alert = alerts[0].0;
    sender.deliver(t0 + TimeDelta::seconds(15)).await.unwrap();
    assert_eq!(slack.calls().len(), 1, "level 0 reached Slack once");
    assert!(pagerduty.calls().is_empty(), "level 1 is not due yet");

    // Escalates once, after ten unacknowledged minutes.
    let r = eval.evaluate(t0 + TimeDelta::minutes(9)).await.unwrap();
    assert_eq!(r.escalated, 0);
    let r = eval.evaluate(t0 + TimeDelta::minutes(11)).await.unwrap();
    assert_eq!(r.escalated, 1);
    let r = eval.evaluate(t0 + TimeDelta::minutes(12)).await.unwrap();
    assert_eq!(r.escalated, 0);
    sender.deliver(t0 + TimeDelta::minutes(12)).await.unwrap();
    let pd = pagerduty.calls();
    assert_eq!(pd.len(), 1, "{pd:?}");
    assert_eq!(pd[0].status, 202, "{:?}", pd[0].body);
    assert_eq!(pd[0].path, "/v2/enqueue");
    assert_eq!(pd[0].body["event_action"], "trigger");
    assert_eq!(pd[0].body["routing_key"], ROUTING_KEY);
    assert_eq!(pd[0].body["dedup_key"], alert.to_string());
    assert_eq!(pd[0].body["payload"]["severity"], "critical");
    assert_eq!(
        pd[0].body["payload"]["source"],
        format!("notify/organization/{}", app.tenant_id)
    );
    assert!(
        pd[0].body["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("sms: 90.0%")
    );
    let hooks = hook.wait_for(1, WAIT).await;
    assert_eq!(hooks.len(), 1);
    let t11 = t0 + TimeDelta::minutes(12);
    shared::webhooks::verify(
        SECRET,
        &hooks[0].id,
        &hooks[0].timestamp,
        &hooks[0].body,
        &hooks[0].signature,
        t11,
    )
    .expect("the webhook is signed with the channel's secret");
    assert_eq!(hooks[0].json()["type"], "alert.escalated");
    assert_eq!(hooks[0].json()["data"]["alert_id"], alert.to_string());

    // Resolves by itself once the window no longer holds the failures.
    let t_clear = t0 + TimeDelta::minutes(70);
    let r = eval.evaluate(t_clear).await.unwrap();
    assert_eq!(r.resolved, 1, "{r:?}");
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts[0].1, "resolved");
    assert_eq!(alerts[0].2.as_deref(), Some("auto"));
    sender.deliver(t_clear).await.unwrap();
    let pd = pagerduty.calls();
    assert_eq!(pd.len(), 2);
    assert_eq!(pd[1].body["event_action"], "resolve");
    assert_eq!(pd[1].body["dedup_key"], alert.to_string());
    assert_eq!(pd[1].status, 202);
    let sl = slack.calls();
    assert_eq!(sl.len(), 2, "opened and resolved, once each");
    assert!(
        sl.iter()
            .all(|c| c.status == 200 && c.content_type.starts_with("application/json"))
    );
    assert!(sl[1].body["text"].as_str().unwrap().contains("Resolved"));
    let hooks = hook.wait_for(2, WAIT).await;
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["type"], "alert.resolved");

    // The admin heard it in-app and by email once per transition.
    assert_eq!(
        admin_notices(&app, alert).await,
        vec![
            ("opened".to_owned(), "email".to_owned(), 1),
            ("opened".to_owned(), "inapp".to_owned(), 1),
            ("resolved".to_owned(), "email".to_owned(), 1),
            ("resolved".to_owned(), "inapp".to_owned(), 1),
        ]
    );

    // The history shows every transition with its notifications.
    let detail = answer(
        &app,
        Method::GET,
        &format!("/api/v1/admin/alerts/{alert}"),
        &admin.token,
        200,
    )
    .await;
    let kinds: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "escalated", "resolved"]);
    assert_eq!(detail["alert"]["resolved_by"], "auto");
    let opened: Vec<&str> = detail["history"][0]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["channel"].as_str().unwrap())
        .collect();
    assert_eq!(opened, ["email", "in_app", "slack"]);
    assert!(
        detail["history"][0]["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "sent")
    );

    // The failures return: nothing opens within the cooldown, then one
    // new alert does.
    sends(&app, app.tenant_id, "sms", t_clear, 0, 50).await;
    let r = eval
        .evaluate(t_clear + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(r.opened, 0, "within the cooldown");
    let r = eval
        .evaluate(t_clear + TimeDelta::minutes(29))
        .await
        .unwrap();
    assert_eq!(r.opened, 0, "still within the cooldown");
    let r = eval
        .evaluate(t_clear + TimeDelta::minutes(31))
        .await
        .unwrap();
    assert_eq!(r.opened, 1, "after the cooldown");
    assert_eq!(alerts_of(&app, &rule_id).await.len(), 2);

    // The deleted default rule was not created again.
    let rules = answer(
        &app,
        Method::GET,
        "/api/v1/admin/alert-rules",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(
        rules["items"].as_array().unwrap().len(),
        4,
        "three defaults and the test's rule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_failures_under_two_racing_evaluators_is_evaluated_once_per_period_and_makes_one_alert()
 {
    let (_pagerduty, app, admin) = app_with_admin().await;
    drop_default_failure_rule(&app, &admin).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({"name": "Email failing", "metric": "failure_rate", "channel": "email",
               "threshold": 20, "window_secs": 900, "escalation": [
                   {"after_minutes": 0, "channels": [{"type": "in_app"}]}]}),
    )
    .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let (a, b) = (evaluator(&app), evaluator(&app));
    let t0 = start();
    // A first pass creates every organisation's default rules.
    a.evaluate(t0 - TimeDelta::minutes(1)).await.unwrap();
    let enabled: i64 = sqlx::query_scalar("select count(*) from alert_rules where enabled")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for step in 0..12 {
        let now = t0 + TimeDelta::seconds(5 * step);
        // Identical failures keep arriving.
        sends(&app, app.tenant_id, "email", now, 1, 40).await;
        let (ra, rb) = tokio::join!(a.evaluate(now), b.evaluate(now));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            ra.rules + rb.rules,
            enabled as usize,
            "each rule once in period {step}: {ra:?} {rb:?}"
        );
        // Evaluating the same period again does nothing.
        assert_eq!(a.evaluate(now).await.unwrap().rules, 0);
    }
    let alerts = alerts_of(&app, &rule_id).await;
    assert_eq!(alerts.len(), 1, "one alert for the whole storm");
    assert_eq!(alerts[0].1, "open");
    let notices: i64 =
        sqlx::query_scalar("select count(*) from notifications where metadata->>'alert_id' = $1")
            .bind(alerts[0].0.to_string())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(notices, 1, "the admin heard it once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledging_stops_the_escalation_and_tells_pagerduty_and_a_failed_call_is_retried_with_backoff()
 {
    let (pagerduty, app, admin) = app_with_admin().await;
    drop_default_failure_rule(&app, &admin).await;
    let rule = create_rule(
        &app,
        &admin,
        json!({"name": "Push failing", "metric": "failure_rate", "channel": "push",
               "threshold": 10, "window_secs": 3600, "severity": "warning", "escalation": [
                   {"after_minutes": 0, "channels": [{"type": "pagerduty", "routing_key": ROUTING_KEY}]},
                   {"after_minutes": 5, "channels": [{"type": "in_app"}]}]}),
    )
    .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let eval = evaluator(&app);
    let sender = Sender::new(app.pool.clone(), &app.settings).unwrap();
    let t0 = start();
    sends(&app, app.tenant_id, "push", t0, 0, 30).await;
    assert_eq!(eval.evaluate(t0).await.unwrap().opened, 1);
    let alert = alerts_of(&app, &rule_id).await[0].0;

    // PagerDuty is down for the first call: it is retried after its backoff.
    pagerduty.answer_next(&[503]);
    sender.deliver(t0).await.unwrap();
    let (status, attempts, code): (String, i32, Option<i32>) = sqlx::query_as(
        "select status, attempts, response_status from alert_deliveries
         where alert_id = $1 and channel = 'pagerduty'",
    )
    .bind(alert)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts, code), ("queued", 1, Some(503)));
    assert_eq!(
        sender.deliver(t0 + TimeDelta::seconds(5)).await.unwrap(),
        0,
        "not before its backoff"
    );
    assert_eq!(
        sender.deliver(t0 + TimeDelta::seconds(21)).await.unwrap(),
        1
    );
    let pd = pagerduty.calls();
    assert_eq!(pd.len(), 2);
    assert_eq!(pd[1].status, 202);
    assert_eq!(pd[1].body["payload"]["severity"], "warning");

    let acked = answer(
        &app,
        Method::POST,
        &format!("/api/v1/admin/alerts/{alert}/acknowledge"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(acked["status"], "acknowledged");
    // Twice is a conflict.
    let again = request(
        &app,
        Method::POST,
        &format!("/api/v1/admin/alerts/{alert}/acknowledge"),
        &admin.token,
    )
    .await;
    assert_eq!(again.status(), 409);
    let r = eval.evaluate(t0 + TimeDelta::minutes(6)).await.unwrap();
    assert_eq!(r.escalated, 0, "an acknowledged alert does not escalate");
    // The acknowledgement was made now, on the real clock.
    sender.deliver(Utc::now()).await.unwrap();
    let pd = pagerduty.calls();
    assert_eq!(pd.len(), 3);
    assert_eq!(pd[2].body["event_action"], "acknowledge");
    assert_eq!(pd[2].body["dedup_key"], alert.to_string());
    assert_eq!(pd[2].status, 202);

    let resolved = answer(
        &app,
        Method::POST,
        &format!("/api/v1/admin/alerts/{alert}/resolve"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved_by"], format!("user:{}", admin.id));

    let listed = answer(
        &app,
        Method::GET,
        "/api/v1/admin/alerts?status=resolved&severity=warning&limit=1",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(listed["items"][0]["id"], alert.to_string());
    let stats = answer(
        &app,
        Method::GET,
        "/api/v1/admin/alerts/statistics?since=2000-01-01T00:00:00Z",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(stats["opened"], 1);
    assert_eq!(stats["open_by_severity"]["warning"], 0);
    assert!(stats["mean_seconds_to_acknowledge"].as_f64().unwrap() > 0.0);
    assert!(stats["mean_seconds_to_resolve"].as_f64().unwrap() > 0.0);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action in ('alert.acknowledge', 'alert.resolve', 'alert_rule.create')
         and result = 'success'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 3);
}

mod access;
mod metrics;
mod sms;
