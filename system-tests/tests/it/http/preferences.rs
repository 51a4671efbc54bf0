//! Users' own preferences: stored and validated, and honoured when their
//! notifications go out (opt-outs suppress, quiet hours defer email,
//! critical notifications go out regardless).

use std::time::Duration;

use chrono::{Timelike, Utc};
use serde_json::{Value, json};
use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(20);

async fn pat_token(app: &TestApp) -> String {
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[])
}

async fn put(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.put_with_token("/api/v1/users/me/preferences", token, body)
        .await
}

async fn get(app: &TestApp, token: &str) -> Value {
    let resp = app
        .get_with_token("/api/v1/users/me/preferences", token)
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn send(app: &TestApp, body: Value) -> String {
    let resp = app.send_email(&body).await;
    assert_eq!(resp.status(), 202, "{body}");
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferences_are_stored_and_bad_ones_refused_with_the_key_named() {
    let app = TestApp::spawn_api_only().await;
    let token = pat_token(&app).await;
    assert_eq!(
        get(&app, &token).await,
        json!({"channels": {}, "categories": {}})
    );
    let prefs = json!({
        "channels": {"email": false},
        "categories": {"marketing": {"enabled": false, "channels": {}}},
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America/Chicago"},
    });
    let resp = put(&app, &token, &prefs).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&app, &token).await, prefs);
    for (bad, key) in [
        (json!({"channel": {}}), "channel"),
        (json!({"channels": {"fax": true}}), "channels"),
        (
            json!({"quiet_hours": {"start": "7pm", "end": "07:00", "timezone": "UTC"}}),
            "quiet_hours.start",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Nowhere/Land"}}),
            "quiet_hours.timezone",
        ),
        (json!({"quiet_hours": {"start": "22:00"}}), "end"),
        (json!([]), "object"),
    ] {
        let resp = put(&app, &token, &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let problem: Value = resp.json().await.unwrap();
        let reason = problem["invalid_params"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(key), "{bad}: {reason}");
    }
    assert_eq!(
        get(&app, &token).await,
        prefs,
        "unchanged by the refused updates"
    );
    let anon = app.get_anonymous("/api/v1/users/me/preferences").await;
    assert_eq!(anon.status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opt_outs_suppress_sends_unless_they_are_critical() {
    let app = TestApp::builder().spawn().await;
    let token = pat_token(&app).await;
    let resp = put(
        &app,
        &token,
        &json!({"channels": {"email": false}, "categories": {"marketing": {"enabled": false}}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let promo = send(&app, json!({"channel": "inapp", "subscriber_id": "pat", "title": "20% off", "category": "marketing"})).await;
    let result = send(&app, json!({"channel": "inapp", "subscriber_id": "pat", "title": "Result ready", "category": "results"})).await;
    let email = send(
        &app,
        json!({"to": "pat@example.org", "subscriber_id": "pat", "subject": "Hi", "text": "t"}),
    )
    .await;
    let critical = send(&app, json!({"to": "pat@example.org", "subscriber_id": "pat", "subject": "Critical result", "text": "Call us.", "critical": true})).await;
    let n = app.wait_for_status(&promo, "suppressed", WAIT).await;
    assert_eq!(n["attempts"][0]["outcome"], "suppressed");
    assert!(
        n["last_error"].as_str().unwrap().contains("marketing"),
        "{n}"
    );
    app.wait_for_status(&result, "sent", WAIT).await;
    app.wait_for_status(&email, "suppressed", WAIT).await;
    app.wait_for_status(&critical, "sent", WAIT).await;
    let mails = app.smtp.received();
    assert_eq!(mails.len(), 1, "only the critical email");
    assert_eq!(mails[0].parsed().subject(), Some("Critical result"));
    let inbox: Value = app
        .get_with_token("/api/v1/users/me/notifications", &token)
        .await
        .json()
        .await
        .unwrap();
    let titles: Vec<&str> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Result ready"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_hours_defer_email_to_the_end_of_the_window() {
    let app = TestApp::builder().spawn().await;
    let token = pat_token(&app).await;
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let end = now + chrono::Duration::hours(1);
    let quiet = json!({"quiet_hours": {"start": hhmm(now - chrono::Duration::hours(1)), "end": hhmm(end), "timezone": "UTC"}});
    assert_eq!(put(&app, &token, &quiet).await.status(), 200);
    let email = send(&app, json!({"to": "pat@example.org", "subscriber_id": "pat", "subject": "Reminder", "text": "t"})).await;
    let critical = send(&app, json!({"to": "pat@example.org", "subscriber_id": "pat", "subject": "Urgent", "text": "t", "critical": true})).await;
    let inapp = send(
        &app,
        json!({"channel": "inapp", "subscriber_id": "pat", "title": "Quietly"}),
    )
    .await;
    app.wait_for_status(&critical, "sent", WAIT).await;
    app.wait_for_status(&inapp, "sent", WAIT).await;
    let deferred = testkit::eventually("the email to be deferred", WAIT, || async {
        let (status, run_at, attempts): (String, chrono::DateTime<Utc>, i32) = sqlx::query_as(
            "select status, run_at, attempts from notifications where id = $1::uuid",
        )
        .bind(&email)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (status == "deferred" && run_at > now + chrono::Duration::minutes(30))
            .then_some((run_at, attempts))
    })
    .await;
    let expected = end.with_second(0).unwrap().with_nanosecond(0).unwrap();
    assert_eq!(deferred.0, expected, "held until the window ends");
    assert_eq!(deferred.1, 0, "deferring spends no attempt");
    app.wait_settled(WAIT).await;
    let subjects: Vec<String> = app
        .smtp
        .received()
        .iter()
        .filter_map(|m| m.parsed().subject().map(str::to_owned))
        .collect();
    assert_eq!(subjects, vec!["Urgent"]);
    app.shutdown().await;
}

/// The deferred send goes out when the window ends. Windows are whole
/// minutes, so this one ends at the next minute boundary (at least 20 s away)
/// and the test waits for the real clock to get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_send_goes_out_when_the_quiet_window_ends() {
    let app = TestApp::builder().spawn().await;
    let token = pat_token(&app).await;
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let mut end = (now + chrono::Duration::minutes(1))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    if end - now < chrono::Duration::seconds(20) {
        end += chrono::Duration::minutes(1);
    }
    let quiet = json!({"quiet_hours": {"start": hhmm(now - chrono::Duration::hours(1)), "end": hhmm(end), "timezone": "UTC"}});
    assert_eq!(put(&app, &token, &quiet).await.status(), 200);
    let email = send(&app, json!({"to": "pat@example.org", "subscriber_id": "pat", "subject": "After hours", "text": "t"})).await;
    app.wait_settled(WAIT).await;
    assert!(app.smtp.received().is_empty(), "held during quiet hours");
    let n = app
        .wait_for_status(&email, "sent", Duration::from_secs(150))
        .await;
    let sent_at: chrono::DateTime<Utc> = n["sent_at"].as_str().unwrap().parse().unwrap();
    assert!(
        sent_at >= end,
        "sent at {sent_at}, the window ends at {end}"
    );
    assert!(
        sent_at < end + chrono::Duration::seconds(10),
        "sent promptly after the window: {sent_at}"
    );
    assert_eq!(n["attempt_count"], 1);
    app.shutdown().await;
}
