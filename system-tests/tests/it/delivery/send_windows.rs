//! Organisations' send windows and subscribers' quiet hours on SMS, push and
//! WhatsApp: outside a window a message waits for its opening (in the
//! recipient's zone, without spending an attempt), critical ones go at
//! once, in-app is never held back.
//!
//! The worker decides at the real current time, so every window here is
//! placed hours away from it (minutes are whole, so the opening expected is
//! exact), in Asia/Kolkata (UTC+05:30, no daylight saving time): a zone
//! read wrongly as UTC is five and a half hours off and fails the test.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};

const WAIT: Duration = Duration::from_secs(20);
const PATIENT: &str = "+15005550006";
/// `t` as `HH:MM` in Asia/Kolkata (always UTC+05:30).
fn local(t: DateTime<Utc>) -> String {
    let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap();
    t.with_timezone(&kolkata).format("%H:%M").to_string()
}

/// `t` without its seconds.
fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

fn hours(h: i64) -> chrono::Duration {
    chrono::Duration::hours(h)
}

async fn app_with_twilio(fake: &FakeProviders) -> TestApp {
    let app = TestApp::builder().providers(fake).spawn().await;
    app.add_provider(&twilio_config("twilio-main", TWILIO_SID_A, None))
        .await;
    app
}

/// Merges `settings` into the organisation's (before its first send, so
/// no worker has its rules yet).
async fn set_settings(app: &TestApp, settings: Value) {
    sqlx::query("update tenants set settings = settings || $1 where id = $2")
        .bind(settings)
        .bind(app.tenant_id)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn send(app: &TestApp, body: Value) -> String {
    let resp = app.post_send(&app.api_key, None, &body).await;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn put_subscriber(app: &TestApp, who: &str, profile: Value, preferences: Value) {
    for (path, body) in [
        (format!("/api/v1/services/subscribers/{who}"), profile),
        (
            format!("/api/v1/services/subscribers/{who}/preferences"),
            preferences,
        ),
    ] {
        let resp = app.put_with_key(&path, &body).await;
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
}

/// Waits until the notification is deferred; its run_at and attempts.
async fn deferred(app: &TestApp, id: &str) -> (DateTime<Utc>, i32) {
    testkit::eventually("the notification to be deferred", WAIT, || async {
        let (status, run_at, attempts): (String, DateTime<Utc>, i32) = sqlx::query_as(
            "select status, run_at, attempts from notifications where id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (status == "deferred").then_some((run_at, attempts))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_inside_the_organisations_window_goes_out() {
    let fake = FakeProviders::start().await;
    let app = app_with_twilio(&fake).await;
    let now = Utc::now();
    set_settings(
        &app,
        json!({"timezone": "Asia/Kolkata",
               "send_windows": {"sms": {"start": local(now - hours(1)), "end": local(now + hours(2))}}}),
    )
    .await;
    let id = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "text": "Your results are ready."}),
    )
    .await;
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(n["attempt_count"], 1);
    assert_eq!(fake.requests(Kind::Twilio).len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_outside_the_window_waits_for_its_opening_in_the_organisations_zone_and_critical_goes_at_once()
 {
    let fake = FakeProviders::start().await;
    let app = app_with_twilio(&fake).await;
    let now = Utc::now();
    let opening = now + hours(2);
    set_settings(
        &app,
        json!({"timezone": "Asia/Kolkata",
               "send_windows": {"sms": {"start": local(opening), "end": local(now + hours(4))}}}),
    )
    .await;
    let later = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "text": "Your results are ready."}),
    )
    .await;
    let critical = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "text": "Call us now.", "critical": true}),
    )
    .await;
    app.wait_for_status(&critical, "sent", WAIT).await;
    let (run_at, attempts) = deferred(&app, &later).await;
    assert_eq!(run_at, minute(opening), "held until the window opens");
    assert_eq!(attempts, 0, "deferring spends no attempt");
    let n = app.notification(&later).await;
    assert_eq!(n["status"], "deferred", "held, never dropped: {n}");
    let sent: Vec<String> = fake
        .requests(Kind::Twilio)
        .iter()
        .map(|r| r.body["Body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sent,
        vec!["Call us now."],
        "only the critical message went out"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_hours_defer_sms_push_and_whatsapp_in_the_subscribers_zone_but_not_in_app() {
    let fake = FakeProviders::start().await;
    let app = app_with_twilio(&fake).await;
    let now = Utc::now();
    let end = now + hours(1);
    // The organisation's zone is UTC: the subscriber's own one must win.
    set_settings(&app, json!({"timezone": "UTC"})).await;
    put_subscriber(
        &app,
        "pat",
        json!({"phone": PATIENT, "whatsapp": PATIENT, "push_tokens": ["device-token-1"], "timezone": "Asia/Kolkata"}),
        json!({"quiet_hours": {"start": local(now - hours(1)), "end": local(end)}}),
    )
    .await;
    let sms = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "subscriber_id": "pat", "text": "Reminder"}),
    )
    .await;
    let push = send(
        &app,
        json!({"channel": "push", "to": "device-token-1", "subscriber_id": "pat", "title": "Reminder"}),
    )
    .await;
    let whatsapp = send(
        &app,
        json!({"channel": "whatsapp", "to": PATIENT, "subscriber_id": "pat", "text": "Reminder"}),
    )
    .await;
    let inapp = send(
        &app,
        json!({"channel": "inapp", "subscriber_id": "pat", "title": "Quietly"}),
    )
    .await;
    let critical = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "subscriber_id": "pat", "text": "Urgent", "critical": true}),
    )
    .await;
    app.wait_for_status(&inapp, "sent", WAIT).await;
    app.wait_for_status(&critical, "sent", WAIT).await;
    for (channel, id) in [("sms", &sms), ("push", &push), ("whatsapp", &whatsapp)] {
        let (run_at, attempts) = deferred(&app, id).await;
        assert_eq!(
            run_at,
            minute(end),
            "{channel}: held until the quiet hours end"
        );
        assert_eq!(attempts, 0, "{channel}: deferring spends no attempt");
    }
    assert_eq!(
        fake.requests(Kind::Twilio).len(),
        1,
        "only the critical SMS"
    );
    assert!(fake.requests(Kind::Fcm).is_empty());
    assert!(fake.requests(Kind::WhatsApp).is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_hours_fall_back_to_the_organisations_zone_when_the_subscriber_has_none() {
    let fake = FakeProviders::start().await;
    let app = app_with_twilio(&fake).await;
    let now = Utc::now();
    let end = now + hours(2);
    set_settings(&app, json!({"timezone": "Asia/Kolkata"})).await;
    put_subscriber(
        &app,
        "sam",
        json!({"phone": PATIENT}),
        json!({"quiet_hours": {"start": local(now - hours(1)), "end": local(end)}}),
    )
    .await;
    let sms = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "subscriber_id": "sam", "text": "Reminder"}),
    )
    .await;
    let (run_at, attempts) = deferred(&app, &sms).await;
    assert_eq!(run_at, minute(end));
    assert_eq!(attempts, 0);
    assert!(fake.requests(Kind::Twilio).is_empty());
    app.shutdown().await;
}

/// Windows are whole minutes, so this one opens at the next minute boundary
/// (at least 20 s away) and the test waits for the real clock to get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_sms_goes_out_when_the_window_opens() {
    let fake = FakeProviders::start().await;
    let app = app_with_twilio(&fake).await;
    let now = Utc::now();
    let mut opening = minute(now + chrono::Duration::minutes(1));
    if opening - now < chrono::Duration::seconds(20) {
        opening += chrono::Duration::minutes(1);
    }
    set_settings(
        &app,
        json!({"timezone": "Asia/Kolkata",
               "send_windows": {"sms": {"start": local(opening), "end": local(opening + hours(3))}}}),
    )
    .await;
    let id = send(
        &app,
        json!({"channel": "sms", "to": PATIENT, "text": "Good morning"}),
    )
    .await;
    let (run_at, _) = deferred(&app, &id).await;
    assert_eq!(run_at, opening);
    let n = app
        .wait_for_status(&id, "sent", Duration::from_secs(150))
        .await;
    let sent_at: DateTime<Utc> = n["sent_at"].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= opening, "sent at {sent_at}, opening {opening}");
    assert_eq!(n["attempt_count"], 1, "the deferral spent no attempt");
    app.shutdown().await;
}
