//! Organisations' send windows and time zone in their settings: checked
//! field by field when set, and honoured by the workers (an email outside
//! its window waits for the opening).

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use crate::http::org_support::{answer, answer_json, platform_admin};

const ORGS: &str = "/api/v1/admin/organizations";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_windows_are_stored_and_bad_ones_refused_with_the_field_named() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let path = format!("{ORGS}/{}", app.tenant_id);
    let settings = json!({
        "block_phi_when_non_compliant": false,
        "timezone": "America/New_York",
        "send_windows": {
            "sms": {"start": "08:00", "end": "21:00"},
            "push": {"start": "22:00", "end": "06:30"},
        },
    });
    let updated = answer_json(
        &app,
        Method::PATCH,
        &path,
        &root.token,
        &json!({"settings": settings}),
        200,
    )
    .await;
    assert_eq!(updated["settings"], settings);
    let window = |w: Value| json!({"send_windows": {"sms": w}});
    for (bad, field) in [
        (json!({"timezone": "Mars/Olympus"}), "settings.timezone"),
        (json!({"timezone": ["UTC"]}), "settings.timezone"),
        (json!({"send_windows": "8-21"}), "settings.send_windows"),
        (
            json!({"send_windows": {"fax": {"start": "08:00", "end": "21:00"}}}),
            "settings.send_windows.fax",
        ),
        (
            json!({"send_windows": {"inapp": {"start": "08:00", "end": "21:00"}}}),
            "settings.send_windows.inapp",
        ),
        (window(json!(null)), "settings.send_windows.sms"),
        (
            window(json!({"start": "8am", "end": "21:00"})),
            "settings.send_windows.sms.start",
        ),
        (
            window(json!({"start": "08:00", "end": "21:60"})),
            "settings.send_windows.sms.end",
        ),
        (
            window(json!({"start": "08:00"})),
            "settings.send_windows.sms.end",
        ),
        (
            window(json!({"start": "08:00", "end": "08:00"})),
            "settings.send_windows.sms.end",
        ),
        (
            window(json!({"start": "08:00", "end": "21:00", "zone": "UTC"})),
            "settings.send_windows.sms.zone",
        ),
        (
            window(json!({"start": "x".repeat(10_000), "end": "21:00"})),
            "settings",
        ),
    ] {
        let problem = answer_json(
            &app,
            Method::PATCH,
            &path,
            &root.token,
            &json!({"settings": bad}),
            400,
        )
        .await;
        assert_eq!(
            problem["invalid_params"][0]["name"], field,
            "{bad}: {problem}"
        );
        let created = answer_json(
            &app,
            Method::POST,
            ORGS,
            &root.token,
            &json!({"name": "Night Clinic", "type": "clinic", "settings": bad}),
            400,
        )
        .await;
        assert_eq!(created["invalid_params"][0]["name"], field, "{created}");
    }
    let now = answer(&app, Method::GET, &path, &root.token, 200).await;
    assert_eq!(
        now["settings"], settings,
        "unchanged by the refused updates"
    );
    app.shutdown().await;
}

async fn send(app: &TestApp, body: Value) -> String {
    let resp = app.send_email(&body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The window is placed hours from the real current time, in UTC, so the
/// opening the email waits for is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_email_outside_the_window_set_through_the_api_waits_for_its_opening() {
    let app = TestApp::builder().spawn().await;
    let root = platform_admin(&app).await;
    let now = Utc::now();
    let hhmm = |t: DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let opening = now + chrono::Duration::hours(3);
    answer_json(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{}", app.tenant_id),
        &root.token,
        &json!({"settings": {"send_windows": {"email": {
                "start": hhmm(opening), "end": hhmm(now + chrono::Duration::hours(5))}}}}),
        200,
    )
    .await;
    let later = send(
        &app,
        json!({"to": "pat@example.org", "subject": "Newsletter", "text": "t"}),
    )
    .await;
    let critical = send(
        &app,
        json!({"to": "pat@example.org", "subject": "Urgent", "text": "t", "critical": true}),
    )
    .await;
    app.wait_for_status(&critical, "sent", WAIT).await;
    let (run_at, attempts) = testkit::eventually("the email to be deferred", WAIT, || async {
        let (status, run_at, attempts): (String, DateTime<Utc>, i32) = sqlx::query_as(
            "select status, run_at, attempts from notifications where id = $1::uuid",
        )
        .bind(&later)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (status == "deferred").then_some((run_at, attempts))
    })
    .await;
    assert_eq!(
        run_at,
        opening.with_second(0).unwrap().with_nanosecond(0).unwrap()
    );
    assert_eq!(attempts, 0);
    let subjects: Vec<String> = app
        .smtp
        .received()
        .iter()
        .filter_map(|m| m.parsed().subject().map(str::to_owned))
        .collect();
    assert_eq!(subjects, vec!["Urgent"]);
    app.shutdown().await;
}
