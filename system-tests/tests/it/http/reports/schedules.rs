//! Report schedules: CRUD, bad cron expressions, time zones and
//! recipients, other organisations' schedules out of reach, and a
//! scheduled report arriving at the SMTP server once per firing while two
//! schedulers run the same firing at once.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shared::reports::{deliver, rollup};

use super::{WAIT, admin, app, send_and_drain};
use crate::http::org_support::{answer, answer_json, expect, request, request_json, user};

const PATH: &str = "/api/v1/reports/schedules";

fn body(recipient: &str) -> Value {
    json!({"name": "Morning summary", "template": "daily_summary", "cron": "0 7 * * *",
           "timezone": "America/New_York", "recipients": [recipient]})
}

#[tokio::test]
async fn schedules_are_created_read_replaced_and_deleted_by_their_organisation_only() {
    let app = app().await;
    let admin = admin(&app, "admin@sched.example").await;
    let created = answer_json(
        &app,
        Method::POST,
        PATH,
        &admin.token,
        &body(&admin.id),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["format"], json!("csv"));
    assert_eq!(created["timezone"], json!("America/New_York"));
    // 07:00 in New York is 12:00 or 11:00 UTC.
    let next: DateTime<Utc> = created["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() && next - Utc::now() <= TimeDelta::days(1));
    assert!(
        matches!(next.format("%H:%M").to_string().as_str(), "12:00" | "11:00"),
        "{next}"
    );

    let list = answer(&app, Method::GET, PATH, &admin.token, 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let mut replaced = body(&admin.id);
    replaced["template"] = json!("weekly_performance");
    replaced["cron"] = json!("30 6 * * MON");
    replaced["format"] = json!("json");
    let updated = answer_json(
        &app,
        Method::PUT,
        &format!("{PATH}/{id}"),
        &admin.token,
        &replaced,
        200,
    )
    .await;
    assert_eq!(
        (updated["template"].as_str(), updated["cron"].as_str()),
        (Some("weekly_performance"), Some("30 6 * * MON"))
    );

    // Another organisation's admin finds nothing.
    let (other, _) = app.other_tenant().await;
    let theirs = user(&app, other, "ADMIN", "admin@elsewhere.example").await;
    for method in [Method::GET, Method::DELETE] {
        answer(&app, method, &format!("{PATH}/{id}"), &theirs.token, 404).await;
    }
    answer_json(
        &app,
        Method::PUT,
        &format!("{PATH}/{id}"),
        &theirs.token,
        &body(&theirs.id),
        404,
    )
    .await;
    let theirs_list = answer(&app, Method::GET, PATH, &theirs.token, 200).await;
    assert_eq!(theirs_list["items"], json!([]));
    // Nor may they send it to someone of ours.
    let resp = request_json(&app, Method::POST, PATH, &theirs.token, &body(&admin.id)).await;
    let refused = expect(resp, 422).await;
    assert_eq!(refused["invalid_params"][0]["name"], json!("recipients"));

    answer(
        &app,
        Method::GET,
        &format!("{PATH}/not-an-id"),
        &admin.token,
        404,
    )
    .await;
    let resp = request(&app, Method::DELETE, &format!("{PATH}/{id}"), &admin.token).await;
    assert_eq!(resp.status(), 204);
    answer(
        &app,
        Method::GET,
        &format!("{PATH}/{id}"),
        &admin.token,
        404,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field() {
    let app = app().await;
    let admin = admin(&app, "admin@badsched.example").await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"cron": "*/15 * * * *"}), 422, "cron"),
        (json!({"cron": "0,30 9 * * *"}), 422, "cron"),
        (json!({"cron": "0 7 * *"}), 400, "cron"),
        (json!({"cron": "0 25 * * *"}), 400, "cron"),
        (json!({"timezone": "Mars/Olympus_Mons"}), 400, "timezone"),
        (json!({"template": "custom"}), 400, "template"),
        (json!({"template": "Yearly!"}), 400, "template"),
        // The form of an own template's key, but the organisation has none.
        (json!({"template": "yearly"}), 422, "template"),
        (json!({"format": "xlsx"}), 400, "format"),
        (json!({"format": "pdf"}), 400, "format"),
        (json!({"recipients": []}), 400, "recipients"),
        (
            json!({"recipients": [uuid::Uuid::new_v4()]}),
            422,
            "recipients",
        ),
        (json!({"recipients": ["not-a-uuid"]}), 400, "recipients[0]"),
        (json!({"name": ""}), 400, "name"),
        (json!({"surprise": true}), 400, "surprise"),
    ];
    for (change, status, field) in cases {
        let mut b = body(&admin.id);
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let resp = request_json(&app, Method::POST, PATH, &admin.token, &b).await;
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{change}"
        );
        let got = expect(resp, status).await;
        let names: Vec<&str> = got["invalid_params"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            names.iter().any(|n| n.starts_with(field)) || got.to_string().contains(field),
            "{change}: {got}"
        );
    }
    let list = answer(&app, Method::GET, PATH, &admin.token, 200).await;
    assert_eq!(list["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_report_arrives_once_per_firing_with_two_schedulers_running() {
    let app = app().await;
    let admin = admin(&app, "admin@daily.example").await;
    send_and_drain(&app, 2, "results").await;
    rollup::fold(&app.pool).await.unwrap();
    let mut b = body(&admin.id);
    b["timezone"] = json!("UTC");
    let created = answer_json(&app, Method::POST, PATH, &admin.token, &b, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first: DateTime<Utc> = created["next_run_at"].as_str().unwrap().parse().unwrap();
    let jobs = app.settings.jobs.clone();

    // Before the firing nothing is sent.
    assert!(
        deliver::run_due(&app.pool, &jobs, first - TimeDelta::seconds(1))
            .await
            .unwrap()
            .is_empty()
    );
    // Two schedulers reach the firing at once: one sends it.
    let (a, b2) = tokio::join!(
        deliver::run_due(&app.pool, &jobs, first + TimeDelta::seconds(1)),
        deliver::run_due(&app.pool, &jobs, first + TimeDelta::seconds(1)),
    );
    assert_eq!(a.unwrap().len() + b2.unwrap().len(), 1);
    assert!(
        deliver::run_due(&app.pool, &jobs, first + TimeDelta::seconds(2))
            .await
            .unwrap()
            .is_empty()
    );
    let s = answer(
        &app,
        Method::GET,
        &format!("{PATH}/{id}"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(
        s["last_run_for"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(first)
    );
    assert_eq!(
        s["next_run_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(first + TimeDelta::days(1))
    );
    let emails = s["last_notification_ids"].as_array().unwrap().clone();
    assert_eq!(emails.len(), 1);
    app.wait_for_status(emails[0].as_str().unwrap(), "sent", WAIT)
        .await;

    // The next day's firing, again raced by two schedulers.
    let second = first + TimeDelta::days(1);
    let (a, b2) = tokio::join!(
        deliver::run_due(&app.pool, &jobs, second + TimeDelta::seconds(1)),
        deliver::run_due(&app.pool, &jobs, second + TimeDelta::seconds(1)),
    );
    assert_eq!(a.unwrap().len() + b2.unwrap().len(), 1);
    let s = answer(
        &app,
        Method::GET,
        &format!("{PATH}/{id}"),
        &admin.token,
        200,
    )
    .await;
    let again = s["last_notification_ids"][0].as_str().unwrap().to_owned();
    app.wait_for_status(&again, "sent", WAIT).await;

    let received: Vec<_> = app
        .smtp
        .received()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == "admin@daily.example"))
        .collect();
    assert_eq!(received.len(), 2, "one email per firing");
    let text = received[0].parsed().body_text(0).unwrap().into_owned();
    assert!(
        received[0]
            .header("Subject")
            .unwrap()
            .starts_with("Morning summary: daily_summary")
    );
    assert!(text.contains("section,key,accepted"), "{text}");
    assert!(text.contains("category,results,2"), "{text}");
    app.shutdown().await;
}
