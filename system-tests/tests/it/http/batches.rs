//! Batches: chunks streamed into a batch become notifications exactly once,
//! whatever is repeated or raced; closed batches refuse new chunks; cancel
//! stops what is not sent; counts add up; other tenants get 404.

use std::time::Duration;

use crate::support::invalid_param_names;
use serde_json::{Value, json};
use testkit::TestApp;

mod counts;
mod input;

const WAIT: Duration = Duration::from_secs(30);
const BASE: &str = "/api/v1/services/notifications";

/// An in-app and email template; `name` is required.
fn template() -> Value {
    json!({
        "key": "lab.ready",
        "name": "Lab results ready",
        "category": "results",
        "default_locale": "en",
        "default_channels": ["inapp"],
        "locales": {"en": {
            "inapp": {"title": "Results for {{name}}", "action_url": "/results"},
            "email": {"subject": "Results for {{name}}", "text": "Hello {{name}}, your {{kind}} results are in."}
        }}
    })
}

async fn app_with(worker: bool, scheduler: bool) -> TestApp {
    let mut builder = TestApp::builder();
    if !worker {
        builder = builder.without_worker();
    }
    if !scheduler {
        builder = builder.without_scheduler();
    }
    let app = builder.spawn().await;
    app.add_template(&template()).await;
    app
}

fn people(from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(
            |i| json!({"subscriber_id": format!("patient-{i}"), "data": {"name": format!("P{i}")}}),
        )
        .collect()
}

/// Recipients reached by email.
fn mailed(from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            json!({"subscriber_id": format!("patient-{i}"), "email": format!("p{i}@example.org"),
                   "data": {"name": format!("P{i}"), "kind": "blood"}})
        })
        .collect()
}

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> reqwest::Response {
    app.post_with_token(&format!("{BASE}{path}"), key, body)
        .await
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.get_with_token(&format!("{BASE}{path}"), key).await
}

/// POSTs `action` (`close` or `cancel`) to batch `id` with `key`.
async fn act(app: &TestApp, key: &str, id: &str, action: &str) -> reqwest::Response {
    post(app, key, &format!("/batches/{id}/{action}"), &json!({})).await
}

async fn create(app: &TestApp, body: &Value) -> String {
    let resp = post(app, &app.api_key, "/send-batch", body).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    body["batch_id"].as_str().unwrap().to_owned()
}

async fn chunk(app: &TestApp, batch: &str, seq: i64, recipients: Vec<Value>) -> reqwest::Response {
    post(
        app,
        &app.api_key,
        "/send-chunk",
        &json!({"batch_id": batch, "seq": seq, "recipients": recipients}),
    )
    .await
}

async fn batch(app: &TestApp, id: &str) -> Value {
    let resp = get(app, &app.api_key, &format!("/batches/{id}")).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn wait_batch(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    testkit::eventually(what, WAIT, || async {
        let b = batch(app, id).await;
        done(&b).then_some(b)
    })
    .await
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

async fn invalid(resp: reqwest::Response) -> Vec<String> {
    invalid_param_names(&problem(resp, 400).await)
}

/// The sum of every per-status count.
fn sum_counts(b: &Value) -> i64 {
    b["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum()
}

async fn rows_in_db(app: &TestApp, batch: &str) -> i64 {
    sqlx::query_scalar("select count(*) from notifications where batch_id = $1::uuid")
        .bind(batch)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_batch_completes_with_counts_that_add_up() {
    let app = app_with(true, true).await;
    let id = create(
        &app,
        &json!({"template": "lab.ready", "channels": ["inapp", "email"],
                "defaults": {"kind": "blood"},
                "recipients": [
                    {"subscriber_id": "patient-1", "email": "one@example.org", "data": {"name": "One"}},
                    {"subscriber_id": "patient-2", "email": "two@example.org", "data": {"name": "Two", "kind": "urine"}},
                    // No `name`: the template cannot render; counted as failed.
                    {"subscriber_id": "patient-3", "email": "three@example.org"}
                ]}),
    )
    .await;
    let resp = chunk(
        &app,
        &id,
        1,
        vec![json!({"subscriber_id": "patient-4", "email": "four@example.org", "data": {"name": "Four"}})],
    )
    .await;
    assert_eq!(resp.status(), 202);
    let resp = act(&app, &app.api_key, &id, "close").await;
    assert_eq!(resp.status(), 200);
    let closed: Value = resp.json().await.unwrap();
    assert!(closed["closed_at"].is_string());
    assert_eq!(closed["recipients"], 4);
    assert_eq!(closed["expected"], 8);

    let done = wait_batch(&app, &id, "the batch to complete", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["notifications"], 8);
    assert_eq!(done["finished"], 8);
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["counts"]["sent"], 6, "{done}");
    assert_eq!(done["counts"]["failed"], 2, "{done}");
    assert_eq!(sum_counts(&done), 8);
    assert!(done["completed_at"].is_string());
    assert_eq!(rows_in_db(&app, &id).await, 8);

    // The rendered content went into patient-2's email with their own data
    // over the defaults.
    let email = app.smtp.wait_for(3, WAIT).await;
    let to_two = email
        .iter()
        .find(|m| m.to.iter().any(|t| t == "two@example.org"))
        .expect("patient-2's email arrived");
    let text = to_two.parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("Two") && text.contains("urine"), "{text}");

    // Paginated by cursor, every notification once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/batches/{id}/notifications?limit=3&cursor={c}"),
            None => format!("/batches/{id}/notifications?limit=3"),
        };
        let page: Value = get(&app, &app.api_key, &path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);
    let failed: Value = get(
        &app,
        &app.api_key,
        &format!("/batches/{id}/notifications?status=failed"),
    )
    .await
    .json()
    .await
    .unwrap();
    let failed = failed["items"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| f["seq"] == 0 && f["index"] == 2));
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("template")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_and_concurrent_chunks_create_each_notification_once() {
    let app = app_with(true, false).await;
    let id = create(&app, &json!({"template": "lab.ready"})).await;
    let recipients = people(0, 50);
    let answers =
        futures::future::join_all((0..8).map(|_| chunk(&app, &id, 7, recipients.clone()))).await;
    let mut firsts = 0;
    let mut accepted_at = Vec::new();
    for resp in answers {
        assert_eq!(resp.status(), 202);
        if resp.headers().get("idempotent-replayed").is_none() {
            firsts += 1;
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["recipients"], 50);
        accepted_at.push(body["accepted_at"].clone());
    }
    assert_eq!(firsts, 1, "exactly one request stored the chunk");
    accepted_at.dedup();
    assert_eq!(accepted_at.len(), 1, "every answer is the first answer");

    // Later repeats, too, and the job run again by hand.
    let again = chunk(&app, &id, 7, recipients.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    wait_batch(&app, &id, "the chunk to expand", |b| {
        b["chunks_pending"] == 0
    })
    .await;
    let queues = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let batch_id: shared::domain::BatchId = id.parse().unwrap();
    for _ in 0..3 {
        queues
            .push(shared::jobs::ExpandBatchChunk {
                tenant_id: app.tenant_id,
                batch_id,
                seq: 7,
            })
            .await
            .unwrap();
    }
    app.wait_settled(WAIT).await;
    assert_eq!(rows_in_db(&app, &id).await, 50);
    let b = batch(&app, &id).await;
    assert_eq!(b["chunks"], 1);
    assert_eq!(b["recipients"], 50);
    assert_eq!(b["notifications"], 50);

    // The same number with other recipients is refused, and stores nothing.
    let resp = chunk(&app, &id, 7, people(100, 2)).await;
    let body = problem(resp, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("different recipients")
    );
    assert_eq!(rows_in_db(&app, &id).await, 50);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_batch_refuses_new_chunks_but_replays_accepted_ones() {
    let app = app_with(true, true).await;
    let id = create(
        &app,
        &json!({"template": "lab.ready", "recipients": people(0, 2)}),
    )
    .await;
    assert_eq!(chunk(&app, &id, 1, people(2, 2)).await.status(), 202);
    let resp = act(&app, &app.api_key, &id, "close").await;
    assert_eq!(resp.status(), 200);
    // Closing again is a no-op.
    let resp = act(&app, &app.api_key, &id, "close").await;
    assert_eq!(resp.status(), 200);

    let body = problem(chunk(&app, &id, 2, people(4, 1)).await, 409).await;
    // In-app rows are sent as their chunk expands, so the batch may have
    // completed by now.
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("closed") || detail.contains("completed"),
        "{detail}"
    );
    let replay = chunk(&app, &id, 1, people(2, 2)).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");

    let done = wait_batch(&app, &id, "the batch to complete", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["counts"]["sent"], 4);
    assert_eq!(rows_in_db(&app, &id).await, 4);
    // A completed batch can be neither cancelled nor given chunks.
    problem(act(&app, &app.api_key, &id, "cancel").await, 409).await;
    problem(chunk(&app, &id, 3, people(9, 1)).await, 409).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_part_way_stops_everything_not_yet_sent() {
    // Without a dispatcher, expanded notifications wait in Postgres. (Email:
    // in-app messages go into the inboxes as their chunk expands.)
    let mut app = app_with(true, false).await;
    let id = create(
        &app,
        &json!({"template": "lab.ready", "channels": ["email"], "recipients": mailed(0, 3)}),
    )
    .await;
    wait_batch(&app, &id, "chunk 0 to expand", |b| b["chunks_pending"] == 0).await;
    app.start_scheduler();
    wait_batch(&app, &id, "chunk 0 to be sent", |b| {
        b["counts"]["sent"] == 3
    })
    .await;
    app.stop_scheduler().await;

    // Chunk 1 expands but is not sent; chunk 2 is not even expanded.
    assert_eq!(chunk(&app, &id, 1, mailed(3, 4)).await.status(), 202);
    wait_batch(&app, &id, "chunk 1 to expand", |b| {
        b["counts"]["queued"] == 4
    })
    .await;
    app.stop_worker().await;
    assert_eq!(chunk(&app, &id, 2, mailed(7, 2)).await.status(), 202);

    let resp = act(&app, &app.api_key, &id, "cancel").await;
    assert_eq!(resp.status(), 200);
    let cancelled: Value = resp.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["counts"]["sent"], 3);
    assert_eq!(cancelled["counts"]["cancelled"], 4);
    assert_eq!(cancelled["counts"]["queued"], 0);
    assert_eq!(cancelled["chunks_pending"], 1);
    assert!(cancelled["cancelled_at"].is_string());
    problem(chunk(&app, &id, 3, mailed(20, 1)).await, 409).await;

    // The pending chunk expands into cancelled notifications; nothing more
    // is sent.
    app.start_worker();
    app.start_scheduler();
    let done = wait_batch(&app, &id, "the last chunk to expand", |b| {
        b["chunks_pending"] == 0
    })
    .await;
    app.wait_settled(WAIT).await;
    let done2 = batch(&app, &id).await;
    assert_eq!(done2["counts"], done["counts"]);
    assert_eq!(done2["counts"]["sent"], 3);
    assert_eq!(done2["counts"]["cancelled"], 6);
    assert_eq!(done2["notifications"], 9);
    assert_eq!(done2["expected"], 9);
    assert_eq!(sum_counts(&done2), 9);
    assert_eq!(done2["status"], "cancelled");
    assert_eq!(app.count_status("sent").await, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_batch_answers_404() {
    let app = app_with(false, false).await;
    let id = create(
        &app,
        &json!({"template": "lab.ready", "recipients": people(0, 1)}),
    )
    .await;
    let (_, other) = app.other_tenant().await;
    problem(get(&app, &other, &format!("/batches/{id}")).await, 404).await;
    problem(
        get(&app, &other, &format!("/batches/{id}/notifications")).await,
        404,
    )
    .await;
    problem(act(&app, &other, &id, "close").await, 404).await;
    problem(act(&app, &other, &id, "cancel").await, 404).await;
    let resp = post(
        &app,
        &other,
        "/send-chunk",
        &json!({"batch_id": id, "seq": 1, "recipients": people(1, 1)}),
    )
    .await;
    problem(resp, 404).await;
    // Nothing changed for the owner.
    let b = batch(&app, &id).await;
    assert_eq!(b["status"], "open");
    assert_eq!(b["chunks"], 1);
    // Ids that are not ids, and unknown ones, answer the same.
    problem(get(&app, &app.api_key, "/batches/not-a-uuid").await, 404).await;
    problem(
        get(
            &app,
            &app.api_key,
            &format!("/batches/{}", uuid::Uuid::now_v7()),
        )
        .await,
        404,
    )
    .await;
    app.shutdown().await;
}
