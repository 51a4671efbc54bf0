//! Workflows: the healthcare escalation (in-app, then SMS if unread after an
//! hour, then email to the care team if still unread a day later) on both
//! of its branches, versions kept by runs, cancellation that stops pending
//! steps and unsent notifications, events, digests, throttles, preferences
//! applied to workflow sends, exactly-once execution under racing runners,
//! and bad input.
//!
//! The scheduler's runner works in real time beside the tests; the tests
//! move time by calling [`Runner::advance`] with the time they choose, so
//! an hour's wait takes no time and nothing sleeps.

mod admin;
mod push;
mod quotas;
mod runs;
mod validation;
mod wakes;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use scheduler::workflows::Runner;
use serde_json::{Value, json};
use testkit::TestApp;

pub use crate::support::{call, expect};

pub const WAIT: Duration = Duration::from_secs(30);
pub const WORKFLOWS: &str = "/api/v1/services/workflows";

/// The escalation's templates, a patient with a phone and an email, and
/// the platform.
pub async fn clinic(app: &TestApp) {
    for t in [
        json!({
            "key": "care.alert",
            "name": "Care alert",
            "category": "care",
            "default_locale": "en",
            "default_channels": ["inapp"],
            "locales": {"en": {
                "inapp": {"title": "Your care team sent a message about {{topic}}", "action_url": "/care"},
                "sms": {"body": "Your care team sent you a message. Open the app to read it."},
                "email": {"subject": "A message from your care team", "text": "Open the app to read it."}
            }}
        }),
        json!({
            "key": "care.escalation",
            "name": "Unread care alert",
            "default_locale": "en",
            "default_channels": ["email"],
            "locales": {"en": {
                "email": {"subject": "A patient has not read a care alert", "text": "Patient {{patient_ref}} has not read an alert for a day."}
            }}
        }),
        json!({
            "key": "care.digest",
            "name": "Digest",
            "default_locale": "en",
            "default_channels": ["inapp"],
            "locales": {"en": {
                "inapp": {"title": "{{digest.count}} updates from your care team", "body": "{{#each digest.items}}[{{n}}]{{/each}}", "action_url": "/care"}
            }}
        }),
    ] {
        app.add_template(&t).await;
    }
    patient(app, "pat").await;
}

pub async fn patient(app: &TestApp, id: &str) {
    let resp = call(
        app,
        &app.api_key,
        Method::PUT,
        &format!("/api/v1/services/subscribers/{id}"),
        Some(json!({"email": format!("{id}@patients.example"), "phone": "+14155550100"})),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

pub fn escalation() -> Value {
    json!({
        "name": "Unread care alert escalation",
        "steps": [
            {"key": "inapp", "type": "send", "template": "care.alert", "channels": ["inapp"]},
            {"key": "wait-read", "type": "wait_for", "step": "inapp", "status": "read", "timeout_secs": 3600},
            {"key": "read-in-time", "type": "branch", "if": {"step": "wait-read", "outcome": "met"}, "then": "end"},
            {"key": "sms", "type": "send", "template": "care.alert", "channels": ["sms"]},
            {"key": "wait-day", "type": "wait_for", "step": "inapp", "status": "read", "timeout_secs": 86400},
            {"key": "read-later", "type": "branch", "if": {"step": "wait-day", "outcome": "met"}, "then": "end"},
            {"key": "care-team", "type": "send", "template": "care.escalation", "channels": ["email"],
             "to": "care-team@clinic.example"}
        ]
    })
}

pub async fn save(app: &TestApp, key: &str, body: Value) -> Value {
    let resp = call(
        app,
        &app.api_key,
        Method::PUT,
        &format!("{WORKFLOWS}/{key}"),
        Some(body),
    )
    .await;
    let status = resp.status().as_u16();
    assert!(
        status == 200 || status == 201,
        "{}",
        resp.text().await.unwrap()
    );
    resp.json().await.unwrap()
}

/// Triggers `key`; returns the run ids.
pub async fn trigger(app: &TestApp, key: &str, body: Value) -> Vec<String> {
    let answer = expect(
        call(
            app,
            &app.api_key,
            Method::POST,
            &format!("{WORKFLOWS}/{key}/trigger"),
            Some(body),
        )
        .await,
        202,
    )
    .await;
    answer["run_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Triggers workflow `key` with `body`; the first run it started.
pub async fn first_run(app: &TestApp, key: &str, body: Value) -> String {
    trigger(app, key, body).await[0].clone()
}

/// Triggers workflow `key` for subscriber `who` with payload `topic`; the
/// first run it started.
pub async fn run_for(app: &TestApp, key: &str, who: &str, topic: &str) -> String {
    first_run(
        app,
        key,
        json!({"subscriber_id": who, "payload": {"topic": topic}}),
    )
    .await
}

/// The clinic (see [`clinic`]) in an app without a scheduler or a worker:
/// runs move only when the test drives the runner.
pub async fn driven_clinic() -> TestApp {
    let app = TestApp::builder()
        .without_scheduler()
        .without_worker()
        .spawn()
        .await;
    clinic(&app).await;
    app
}

pub async fn run(app: &TestApp, id: &str) -> Value {
    expect(
        call(
            app,
            &app.api_key,
            Method::GET,
            &format!("{WORKFLOWS}/runs/{id}"),
            None,
        )
        .await,
        200,
    )
    .await
}

pub fn step<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no step {key} in {run}"))
}

pub fn runner(app: &TestApp) -> Runner {
    Runner::new(app.pool.clone(), app.settings.jobs.clone())
}

/// Runs due steps at `now` until `done` holds for run `id`.
pub async fn advance_until(
    app: &TestApp,
    id: &str,
    now: DateTime<Utc>,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let runner = runner(app);
    testkit::eventually(what, WAIT, || async {
        runner.advance(now).await.unwrap();
        let r = run(app, id).await;
        done(&r).then_some(r)
    })
    .await
}

async fn sms_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from notifications where channel = 'sms'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_care_alert_read_within_the_hour_sends_no_sms() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    save(&app, "care-alert", escalation()).await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[]);
    let ids = trigger(
        &app,
        "care-alert",
        json!({"subscriber_id": "pat", "payload": {"topic": "your results"}}),
    )
    .await;
    let id = &ids[0];
    let start = Utc::now();
    let r = advance_until(&app, id, start, "the in-app message", |r| {
        step(r, "inapp")["state"] == "done"
    })
    .await;
    assert_eq!(step(&r, "inapp")["outcome"], "sent");
    assert_eq!(r["current_step"], "wait-read");
    assert_eq!(step(&r, "wait-read")["state"], "current");
    let inapp = step(&r, "inapp")["notification_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let n = app.wait_for_status(&inapp, "sent", WAIT).await;
    assert_eq!(n["channel"], "inapp");

    // Read 20 minutes in (the runner's clock), well within the hour.
    let read = app
        .patch_with_token(
            &format!("/api/v1/users/me/notifications/{inapp}/read"),
            &pat,
        )
        .await;
    assert_eq!(read.status(), 200);
    let r = advance_until(
        &app,
        id,
        start + TimeDelta::minutes(20),
        "the run to end",
        |r| r["status"] == "completed",
    )
    .await;
    assert_eq!(step(&r, "wait-read")["outcome"], "met");
    assert_eq!(step(&r, "read-in-time")["outcome"], "taken");
    for later in ["sms", "wait-day", "read-later", "care-team"] {
        assert_eq!(step(&r, later)["state"], "not_run", "{later}");
    }
    // A day later nothing more happens.
    runner(&app)
        .advance(start + TimeDelta::days(2))
        .await
        .unwrap();
    assert_eq!(
        sms_count(&app).await,
        0,
        "no SMS for a message read in time"
    );
    assert_eq!(run(&app, id).await["status"], "completed");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unread_care_alert_goes_by_sms_after_an_hour_and_to_the_care_team_after_a_day() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    save(&app, "care-alert", escalation()).await;
    let ids = trigger(
        &app,
        "care-alert",
        json!({"subscriber_id": "pat", "payload": {"topic": "your results", "patient_ref": "P-7"}}),
    )
    .await;
    let id = &ids[0];
    let r = advance_until(&app, id, Utc::now(), "the in-app message", |r| {
        step(r, "inapp")["state"] == "done"
    })
    .await;
    let start = Utc::now();
    let waiting = step(&r, "wait-read")["due_at"].as_str().unwrap();
    let deadline: DateTime<Utc> = waiting.parse().unwrap();
    assert!(
        deadline <= start + TimeDelta::minutes(60) && deadline > start + TimeDelta::minutes(59)
    );

    // 59 minutes: still waiting, no SMS.
    runner(&app)
        .advance(start + TimeDelta::minutes(59))
        .await
        .unwrap();
    assert_eq!(run(&app, id).await["current_step"], "wait-read");
    assert_eq!(sms_count(&app).await, 0);

    // 61 minutes: the wait times out and the SMS goes.
    let r = advance_until(&app, id, start + TimeDelta::minutes(61), "the SMS", |r| {
        r["current_step"] == "wait-day"
    })
    .await;
    assert_eq!(step(&r, "wait-read")["outcome"], "timed_out");
    assert_eq!(step(&r, "read-in-time")["outcome"], "not_taken");
    assert_eq!(step(&r, "sms")["outcome"], "sent");
    let sms = step(&r, "sms")["notification_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let n = app.notification(&sms).await;
    assert_eq!(
        (n["channel"].as_str(), n["to"].as_str()),
        (Some("sms"), Some("+14155550100"))
    );
    assert_eq!(sms_count(&app).await, 1);

    // A day after that, still unread: the care team's address is emailed.
    let r = advance_until(
        &app,
        id,
        start + TimeDelta::minutes(61) + TimeDelta::hours(24) + TimeDelta::minutes(1),
        "the care team's email",
        |r| r["status"] == "completed",
    )
    .await;
    assert_eq!(step(&r, "wait-day")["outcome"], "timed_out");
    assert_eq!(step(&r, "care-team")["outcome"], "sent");
    let email = step(&r, "care-team")["notification_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let n = app.wait_for_status(&email, "sent", WAIT).await;
    assert_eq!(n["to"], "care-team@clinic.example");
    assert_eq!(sms_count(&app).await, 1, "one SMS in all");
    // Running the runner again changes nothing.
    runner(&app)
        .advance(start + TimeDelta::days(30))
        .await
        .unwrap();
    let again = run(&app, id).await;
    assert_eq!(again["steps"], r["steps"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patients_opt_out_holds_back_a_workflows_email_to_them_but_not_to_the_care_team() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[]);
    let prefs = app
        .put_with_token(
            "/api/v1/users/me/preferences",
            &pat,
            &json!({"channels": {"email": false}, "categories": {}}),
        )
        .await;
    assert_eq!(prefs.status(), 200);
    save(&app, "both", json!({"name": "Both", "steps": [
        {"key": "patient", "type": "send", "template": "care.alert", "channels": ["email"]},
        {"key": "team", "type": "send", "template": "care.alert", "channels": ["email"], "to": "care-team@clinic.example"}
    ]}))
    .await;
    let id = run_for(&app, "both", "pat", "x").await;
    let r = advance_until(&app, &id, Utc::now(), "the run", |r| {
        r["status"] == "completed"
    })
    .await;
    let to_patient = step(&r, "patient")["notification_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let to_team = step(&r, "team")["notification_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&to_patient, "suppressed", WAIT).await;
    app.wait_for_status(&to_team, "sent", WAIT).await;
    app.shutdown().await;
}
