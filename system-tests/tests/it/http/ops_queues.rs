//! What operators see of the queues and how they pause them: the overview,
//! its history, scope for organisation admins, pausing and resuming (sends
//! wait in Postgres, jobs already in Redis are handed back), the live
//! stream and the command line.

use std::{process::Command, time::Duration};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use shared::jobs::QueueName;
use testkit::{TestApp, spawn_app};

use crate::http::org_support::{
    WAIT, answer, answer_json, platform_admin, request, request_json, user, with,
};

/// The queue named `name` in an overview.
fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

async fn overview(app: &TestApp, token: &str) -> Value {
    answer(app, Method::GET, "/api/v1/ops/queues", token, 200).await
}

/// Waits until the email queue's overview satisfies `check`.
async fn email_until(
    app: &TestApp,
    token: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    testkit::eventually(what, WAIT, || async {
        let list = overview(app, token).await;
        let email = queue(&list, "email").clone();
        check(&email).then_some(email)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overview_counts_finished_work_per_organisation() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;
    let own_admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let (other, _) = app.other_tenant().await;
    let other_admin = user(&app, other, "ADMIN", "admin@other.example").await;

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.send_to(&format!("p{i}@example.com")).await);
    }
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }

    let list = overview(&app, &root.token).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        QueueName::ALL.len()
    );
    // Counts reach the rollup within about a second of the work.
    let email = email_until(&app, &root.token, "3 sent emails counted", |q| {
        q["last_1h"]["sent"] == 3
    })
    .await;
    assert_eq!(email["kind"], "delivery");
    assert_eq!(email["pausable"], true);
    assert_eq!(email["paused"], false);
    assert_eq!(email["last_15m"]["sent"], 3);
    assert_eq!(email["last_1h"]["failed"], 0);
    assert!(email["backlog"].is_i64(), "{email}");
    assert!(
        email["duration_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{email}"
    );
    assert!(
        email["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{email}"
    );
    let maintenance = queue(&list, "maintenance");
    assert_eq!(maintenance["kind"], "job");
    assert_eq!(maintenance["pausable"], false);

    // An organisation's admin sees its own organisation's work only, and
    // no Redis backlog (it is shared by every organisation).
    let own = overview(&app, &own_admin.token).await;
    assert_eq!(queue(&own, "email")["last_1h"]["sent"], 3);
    assert!(queue(&own, "email")["backlog"].is_null());
    let theirs = overview(&app, &other_admin.token).await;
    assert_eq!(queue(&theirs, "email")["last_1h"]["sent"], 0);

    // The hour's chart has every minute, and its points add up.
    let history = answer(
        &app,
        Method::GET,
        "/api/v1/ops/queues/email/history?range=1h",
        &root.token,
        200,
    )
    .await;
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    assert_eq!(history["step_secs"], 60);
    let sent: i64 = points.iter().map(|p| p["sent"].as_i64().unwrap()).sum();
    assert_eq!(sent, 3);
    for (range, count, step) in [("24h", 96, 900), ("7d", 168, 3600)] {
        let h = answer(
            &app,
            Method::GET,
            &format!("/api/v1/ops/queues/email/history?range={range}"),
            &root.token,
            200,
        )
        .await;
        assert_eq!(h["points"].as_array().unwrap().len(), count, "{range}");
        assert_eq!(h["step_secs"], step);
        let sent: i64 = h["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sent"].as_i64().unwrap())
            .sum();
        assert_eq!(sent, 3, "{range}");
    }
    let theirs = answer(
        &app,
        Method::GET,
        "/api/v1/ops/queues/email/history",
        &other_admin.token,
        200,
    )
    .await;
    assert!(
        theirs["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["sent"] == 0)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_queue_holds_sends_in_postgres_until_resumed() {
    let app = spawn_app().await;
    let root = platform_admin(&app).await;

    let paused = answer_json(
        &app,
        Method::POST,
        "/api/v1/ops/queues/email/pause",
        &root.token,
        &json!({"reason": "SendGrid incident"}),
        200,
    )
    .await;
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["pause_reason"], "SendGrid incident");
    assert!(paused["paused_by"].as_str().unwrap().starts_with("user:"));

    // Accepted (202) and left in Postgres: due, not in Redis.
    let id = app.send_to("waiting@example.com").await;
    email_until(&app, &root.token, "the send waiting in Postgres", |q| {
        q["due"] == 1 && q["backlog"] == 0
    })
    .await;
    assert_eq!(app.notification(&id).await["status"], "queued");
    assert!(app.smtp.received().is_empty());

    // Pausing again keeps the first pause.
    let again = answer_json(
        &app,
        Method::POST,
        "/api/v1/ops/queues/email/pause",
        &root.token,
        &json!({"reason": "another"}),
        200,
    )
    .await;
    assert_eq!(again["pause_reason"], "SendGrid incident");

    let resumed = answer(
        &app,
        Method::POST,
        "/api/v1/ops/queues/email/resume",
        &root.token,
        200,
    )
    .await;
    assert_eq!(resumed["paused"], false);
    app.wait_for_status(&id, "sent", WAIT).await;

    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where resource_type = 'queue' and result = 'success' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actions, ["queue.pause", "queue.pause", "queue.resume"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_fetched_from_a_paused_queue_are_handed_back() {
    let mut app = spawn_app().await;
    let root = platform_admin(&app).await;
    // With no worker the send's job waits in Redis.
    app.stop_worker().await;
    let id = app.send_to("held@example.com").await;
    email_until(&app, &root.token, "the job in Redis", |q| q["backlog"] == 1).await;

    answer_json(
        &app,
        Method::POST,
        "/api/v1/ops/queues/email/pause",
        &root.token,
        &json!({}),
        200,
    )
    .await;
    // A worker that starts now fetches the job and hands it back: the row
    // is due in Postgres again and nothing is sent.
    app.start_worker();
    email_until(&app, &root.token, "the job handed back", |q| {
        q["backlog"] == 0 && q["due"] == 1
    })
    .await;
    assert_eq!(app.notification(&id).await["status"], "queued");
    assert!(app.smtp.received().is_empty());

    answer(
        &app,
        Method::POST,
        "/api/v1/ops/queues/email/resume",
        &root.token,
        200,
    )
    .await;
    app.wait_for_status(&id, "sent", WAIT).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_platform_admins_pause_and_bad_requests_are_refused() {
    let app = TestApp::builder().without_worker().spawn().await;
    let root = platform_admin(&app).await;
    let own_admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doctor@clinic.example").await;

    let post = |path: &str, token: &str| with(&app, Method::POST, path, token).json(&json!({}));
    // An organisation's admin reads its queues but cannot pause for everyone.
    let resp = post("/api/v1/ops/queues/email/pause", &own_admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    // Other roles and API keys that are not admins' see nothing.
    let resp = request(&app, Method::GET, "/api/v1/ops/queues", &doctor.token).await;
    assert_eq!(resp.status(), 403);
    let resp = app.get_anonymous("/api/v1/ops/queues").await;
    assert_eq!(resp.status(), 401);

    for path in [
        "/api/v1/ops/queues/nope",
        "/api/v1/ops/queues/EMAIL",
        "/api/v1/ops/queues/email%00/history",
        "/api/v1/ops/queues/nope/history",
    ] {
        let resp = request(&app, Method::GET, path, &root.token).await;
        assert!(
            [400, 404].contains(&resp.status().as_u16()),
            "{path}: {}",
            resp.status()
        );
    }
    let resp = post("/api/v1/ops/queues/nope/pause", &root.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Housekeeping is driven by cron ticks, not rows: it cannot pause.
    let resp = post("/api/v1/ops/queues/maintenance/pause", &root.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    for (query, status) in [("range=2h", 400), ("range=", 400), ("range=7d", 200)] {
        let resp = request(
            &app,
            Method::GET,
            &format!("/api/v1/ops/queues/sms/history?{query}"),
            &root.token,
        )
        .await;
        assert_eq!(resp.status(), status, "{query}");
    }
    for body in [
        json!({"reason": "x".repeat(501)}),
        json!({"reason": ["x"]}),
        json!([]),
    ] {
        let resp = request_json(
            &app,
            Method::POST,
            "/api/v1/ops/queues/sms/pause",
            &root.token,
            &body,
        )
        .await;
        assert_eq!(resp.status(), 400, "{body}");
    }
    let resp = with(
        &app,
        Method::POST,
        "/api/v1/ops/queues/sms/pause",
        &root.token,
    )
    .header("content-type", "application/json")
    .body("{not json")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    // Nothing was paused by any of it; the refusals were audited.
    let sms = answer(
        &app,
        Method::GET,
        "/api/v1/ops/queues/sms",
        &root.token,
        200,
    )
    .await;
    assert_eq!(sms["paused"], false);
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'queue.pause' and result = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stream_sends_the_overview_as_server_sent_events() {
    let app = TestApp::builder().without_worker().spawn().await;
    let root = platform_admin(&app).await;
    let resp = request(&app, Method::GET, "/api/v1/ops/stream", &root.token).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(end) = text.find("\n\n") {
                return text[..end].to_owned();
            }
        }
        panic!("the stream ended before an event: {text}");
    })
    .await
    .expect("an event within 20 s");
    assert!(event.lines().any(|l| l == "event: queues"), "{event}");
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let list: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        QueueName::ALL.len()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_line_lists_pauses_and_resumes_queues() {
    let app = TestApp::builder().without_worker().spawn().await;
    let root = platform_admin(&app).await;
    let api = |args: &[&str]| {
        let out = Command::new(testkit::process::binary("api"))
            .envs(app.vars.iter().cloned())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = api(&["pause", "sms", "--reason", "carrier outage"]);
    assert!(ok, "{err}");
    assert!(out.contains("sms paused"), "{out}");
    // The API instance sees it within a second.
    testkit::eventually("the pause seen by the API", WAIT, || async {
        let sms = answer(
            &app,
            Method::GET,
            "/api/v1/ops/queues/sms",
            &root.token,
            200,
        )
        .await;
        (sms["paused"] == true && sms["paused_by"] == "cli").then_some(())
    })
    .await;
    let (ok, out, err) = api(&["queues"]);
    assert!(ok, "{err}");
    let sms = out.lines().find(|l| l.starts_with("sms ")).unwrap();
    assert!(sms.contains("paused"), "{out}");
    assert!(out.contains("carrier outage"), "{out}");
    let (ok, _, err) = api(&["pause", "maintenance"]);
    assert!(!ok && err.contains("cannot be paused"), "{err}");
    let (ok, _, err) = api(&["pause", "nope"]);
    assert!(!ok && err.contains("unknown queue"), "{err}");
    let (ok, out, err) = api(&["resume", "sms"]);
    assert!(ok, "{err}");
    assert!(out.contains("sms resumed"), "{out}");
    let (ok, out, _) = api(&["resume", "sms"]);
    assert!(ok && out.contains("was not paused"), "{out}");
    app.shutdown().await;
}
