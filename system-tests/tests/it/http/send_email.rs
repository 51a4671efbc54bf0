//! Sending an email through the API, end to end: the message that arrives at
//! a real SMTP server, the status the caller reads back, idempotency and
//! tenant isolation.

use std::time::Duration;

use crate::support::invalid_param_names;
use serde_json::{Value, json};
use testkit::{TestApp, spawn_app};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sent_email_arrives_with_its_headers_and_is_marked_sent() {
    let app = spawn_app().await;
    let resp = app
        .send_email(&json!({
            "to": "pat.doe@example.org",
            "subject": "Your appointment is confirmed",
            "text": "See you on Tuesday at 10:00.",
            "metadata": {"appointment": "A-1042"},
        }))
        .await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "queued");
    assert_eq!(
        body["status_url"],
        format!("/api/v1/services/notifications/{id}")
    );
    assert_eq!(location, body["status_url"].as_str().unwrap());

    let mail = app.smtp.wait_for(1, WAIT).await.remove(0);
    assert_eq!(mail.to, vec!["pat.doe@example.org"]);
    assert_eq!(mail.from, "care@clinic.example.org");
    let parsed = mail.parsed();
    assert_eq!(parsed.subject(), Some("Your appointment is confirmed"));
    assert_eq!(
        parsed.body_text(0).unwrap().trim(),
        "See you on Tuesday at 10:00."
    );
    assert_eq!(
        parsed.from().unwrap().first().unwrap().address(),
        Some("care@clinic.example.org")
    );

    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(
        n["provider_message_id"].as_str(),
        mail.message_id().as_deref()
    );
    assert_eq!(n["attempt_count"], 1);
    assert_eq!(n["to"], "pat.doe@example.org");
    assert_eq!(n["metadata"], json!({"appointment": "A-1042"}));
    let attempts = n["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "sent");
    assert_eq!(attempts[0]["provider"], "smtp");
    assert!(
        attempts[0]["provider_response"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{n}"
    );
    assert!(n["sent_at"].is_string());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_and_html_arrive_as_alternatives_and_html_only_is_accepted() {
    let app = spawn_app().await;
    app.send_email(&json!({"to": "a@example.org", "subject": "Both", "text": "plain words", "html": "<p>rich <b>words</b></p>"}))
        .await;
    app.send_email(&json!({"to": "b@example.org", "subject": "Html", "html": "<p>only html</p>"}))
        .await;
    let mails = app.smtp.wait_for(2, WAIT).await;
    let both = mails.iter().find(|m| m.to == ["a@example.org"]).unwrap();
    let parsed = both.parsed();
    assert_eq!(parsed.body_text(0).unwrap().trim(), "plain words");
    assert!(parsed.body_html(0).unwrap().contains("<b>words</b>"));
    let html = mails.iter().find(|m| m.to == ["b@example.org"]).unwrap();
    assert!(html.parsed().body_html(0).unwrap().contains("only html"));
    app.shutdown().await;
}

async fn assert_problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    let request_id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    assert_eq!(
        body["request_id"].as_str(),
        request_id.as_deref(),
        "the problem carries the request id"
    );
    body
}

async fn assert_nothing_stored_or_queued(app: &TestApp) {
    let rows: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing stored");
    let mut redis = app.redis().await;
    let active: usize = redis::cmd("LLEN")
        .arg(format!("{}:email:active", app.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let scheduled: usize = redis::cmd("ZCARD")
        .arg(format!("{}:email:scheduled", app.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(active + scheduled, 0, "nothing queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_sends_get_a_precise_problem_and_nothing_is_stored_or_queued() {
    let app = TestApp::builder().var("MAX_BODY_BYTES", 4096).spawn().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "an invalid address",
            json!({"to": "not-an-address", "subject": "s", "text": "t"}),
            "to",
        ),
        (
            "two addresses",
            json!({"to": "a@example.org, b@example.org", "subject": "s", "text": "t"}),
            "to",
        ),
        (
            "a display name",
            json!({"to": "Pat <pat@example.org>", "subject": "s", "text": "t"}),
            "to",
        ),
        (
            "an address with CRLF",
            json!({"to": "pat@example.org\r\nBcc: x@evil.example", "subject": "s", "text": "t"}),
            "to",
        ),
        (
            "an overlong address",
            json!({"to": format!("{}@example.org", "a".repeat(300)), "subject": "s", "text": "t"}),
            "to",
        ),
        ("a missing to", json!({"subject": "s", "text": "t"}), "to"),
        (
            "a missing subject",
            json!({"to": "pat@example.org", "text": "t"}),
            "subject",
        ),
        (
            "a CR LF in the subject",
            json!({"to": "pat@example.org", "subject": "Hi\r\nBcc: x@evil.example", "text": "t"}),
            "subject",
        ),
        (
            "a LF in the subject",
            json!({"to": "pat@example.org", "subject": "Hi\nthere", "text": "t"}),
            "subject",
        ),
        (
            "an empty subject",
            json!({"to": "pat@example.org", "subject": " ", "text": "t"}),
            "subject",
        ),
        (
            "an overlong subject",
            json!({"to": "pat@example.org", "subject": "x".repeat(999), "text": "t"}),
            "subject",
        ),
        (
            "no body",
            json!({"to": "pat@example.org", "subject": "s"}),
            "text",
        ),
        (
            "empty bodies",
            json!({"to": "pat@example.org", "subject": "s", "text": "", "html": "  "}),
            "text",
        ),
        (
            "metadata that is not an object",
            json!({"to": "pat@example.org", "subject": "s", "text": "t", "metadata": [1, 2]}),
            "metadata",
        ),
    ];
    for (what, body, field) in cases {
        let problem = assert_problem(app.send_email(&body).await, 400).await;
        let fields = invalid_param_names(&problem);
        assert!(
            fields.iter().any(|f| f == field),
            "{what}: expected `{field}` to be named, got {problem}"
        );
    }
    // Malformed JSON, wrong types and unknown fields.
    for raw in [
        "{\"to\": \"pat@example.org\", ",
        "{\"to\": 42, \"subject\": \"s\", \"text\": \"t\"}",
        "{\"to\": \"pat@example.org\", \"subject\": \"s\", \"text\": \"t\", \"bcc\": \"x@evil.example\"}",
        "[]",
    ] {
        let resp = app
            .client
            .post(app.url("/api/v1/services/notifications/send"))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400).await;
    }
    // A body over the limit.
    let big = json!({"to": "pat@example.org", "subject": "s", "text": "x".repeat(5000)});
    let problem = assert_problem(app.send_email(&big).await, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("4096"));
    // No Content-Length (a chunked body, here streaming far past the limit):
    // refused before it is read.
    let mut chunked = Vec::new();
    for _ in 0..200 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(0x400)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_request(
        &app,
        "POST",
        "/api/v1/services/notifications/send",
        &[("transfer-encoding", "chunked")],
        &chunked,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 411"), "{resp}");
    assert!(resp.contains("application/problem+json"), "{resp}");
    // No body at all (neither Content-Length nor Transfer-Encoding) is an
    // empty body: a bad request, not a length problem.
    let resp = raw_request(
        &app,
        "POST",
        "/api/v1/services/notifications/send",
        &[],
        b"",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // A declared length over the limit is refused before the body is read.
    let resp = raw_request(
        &app,
        "POST",
        "/api/v1/services/notifications/send",
        &[("content-length", "999999")],
        b"{",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("application/problem+json"), "{resp}");
    // A bad Idempotency-Key.
    let body = json!({"to": "pat@example.org", "subject": "s", "text": "t"});
    for key in ["k".repeat(300), "has space".into(), "tab\tkey".into()] {
        let resp = app.post_send(&app.api_key, Some(key.as_str()), &body).await;
        assert_problem(resp, 400).await;
    }
    // The wrong content type.
    let resp = app
        .client
        .post(app.url("/api/v1/services/notifications/send"))
        .bearer_auth(&app.api_key)
        .header("content-type", "text/plain")
        .body("to=pat@example.org")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_nothing_stored_or_queued(&app).await;
    app.shutdown().await;
}

/// Sends a hand-written HTTP/1.1 request and returns the raw response head and body.
async fn raw_request(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\nconnection: close\r\n",
        app.addr, app.api_key
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is written.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_valid_key_get_401() {
    // With the key cache off a revoked key is refused at once (the cache's
    // bound is tested in `caches`).
    let app = TestApp::builder()
        .var("API_KEY_CACHE_SECS", 0)
        .spawn()
        .await;
    let body = json!({"to": "pat@example.org", "subject": "s", "text": "t"});
    let url = app.url("/api/v1/services/notifications/send");
    let missing = app.client.post(&url).json(&body).send().await.unwrap();
    assert_problem(missing, 401).await;
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("ntf_this-is-not-a-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 401).await;
    let not_bearer = app
        .client
        .post(&url)
        .header("authorization", "Basic cGF0OnNlY3JldA==")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(not_bearer, 401).await;
    let huge = app
        .client
        .post(&url)
        .bearer_auth(format!("ntf_{}", "a".repeat(5000)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(huge, 401).await;

    let (tenant, key) = app.other_tenant().await;
    let key_id: uuid::Uuid = sqlx::query_scalar("select id from api_keys where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let ok = app
        .client
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    assert!(
        shared::db::api_keys::revoke(&app.pool, tenant, shared::domain::ApiKeyId(key_id))
            .await
            .unwrap()
    );
    let revoked = app
        .client
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(revoked, 401).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the authorised send was stored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_and_body_sends_once_and_returns_the_first_answer() {
    let app = spawn_app().await;
    let body =
        json!({"to": "pat@example.org", "subject": "Reminder", "text": "Take your medication."});
    let send = |key: &'static str, body: Value| {
        let app = &app;
        async move { app.post_send(&app.api_key, Some(key), &body).await }
    };
    let first = send("order-7", body.clone()).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send("order-7", body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let mut again: Value = again.json().await.unwrap();
    // The same notifications; a woken worker may already have moved them on.
    let now = again["status"].as_str().unwrap().to_owned();
    assert!(
        ["queued", "sending", "sent"].contains(&now.as_str()),
        "{now}"
    );
    assert_eq!(again["notifications"][0]["status"], now.as_str());
    again["status"] = json!("queued");
    again["notifications"][0]["status"] = json!("queued");
    assert_eq!(first, again, "the first answer, replayed");

    let mut changed = body.clone();
    changed["text"] = json!("Take two.");
    let problem = assert_problem(send("order-7", changed).await, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );

    app.wait_for_status(first["id"].as_str().unwrap(), "sent", WAIT)
        .await;
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 1, "one email");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_idempotency_key_send_once() {
    let app = spawn_app().await;
    let body = json!({"to": "pat@example.org", "subject": "Once", "text": "Only once."});
    let requests = (0..20).map(|_| app.post_send(&app.api_key, Some("race-1"), &body));
    let answers = futures::future::join_all(requests).await;
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        assert_eq!(a.status(), 202);
        let v: Value = a.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every answer names the same notification");
    let id = ids.into_iter().next().unwrap();
    app.wait_for_status(&id, "sent", WAIT).await;
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 1);
    assert_eq!(app.count_status("sent").await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_notification_is_not_found() {
    let app = spawn_app().await;
    let id = app.send_to("pat@example.org").await;
    let (_, other_key) = app.other_tenant().await;
    let resp = app.get_notification_with(&id, &other_key).await;
    let problem = assert_problem(resp, 404).await;
    assert!(!problem.to_string().contains("pat@example.org"));
    // The same idempotency key in another tenant is another notification.
    let body = json!({"to": "pat@example.org", "subject": "s", "text": "t"});
    for key in [&app.api_key, &other_key] {
        let r = app.post_send(key, Some("shared-key"), &body).await;
        assert_eq!(r.status(), 202);
        assert!(r.headers().get("idempotent-replayed").is_none());
    }
    for bad in [
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "%27%20or%201%3D1",
    ] {
        assert_problem(app.get_notification_with(bad, &app.api_key).await, 404).await;
    }
    assert_eq!(app.notification(&id).await["to"], "pat@example.org");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_request_id_is_echoed_and_a_hostile_one_replaced() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc.123");
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "x".repeat(100))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "replaced by a fresh id: {id}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_of_two_organisations_share_commits_and_stay_their_own() {
    let app = spawn_app().await;
    let (_, other_key) = app.other_tenant().await;
    let sends = futures::future::join_all((0..40).map(|i| {
        let (key, to) = if i % 2 == 0 {
            (app.api_key.clone(), format!("ours{i}@example.org"))
        } else {
            (other_key.clone(), format!("theirs{i}@example.org"))
        };
        let app = &app;
        async move {
            let resp = app
                .post_send(
                    &key,
                    None,
                    &json!({"to": to, "subject": "Your results", "text": format!("Message {i}")}),
                )
                .await;
            assert_eq!(resp.status(), 202);
            let body: Value = resp.json().await.unwrap();
            (key, to, body["id"].as_str().unwrap().to_owned())
        }
    }))
    .await;
    let mail = app.smtp.wait_for(40, WAIT).await;
    for (key, to, id) in &sends {
        assert_eq!(
            mail.iter().filter(|m| m.to == vec![to.clone()]).count(),
            1,
            "{to} gets its message once"
        );
        let own = app.get_notification_with(id, key).await;
        assert_eq!(own.status(), 200);
        let n: Value = own.json().await.unwrap();
        assert_eq!(&n["to"], to);
        let stranger = if *key == app.api_key {
            &other_key
        } else {
            &app.api_key
        };
        assert_eq!(app.get_notification_with(id, stranger).await.status(), 404);
    }
    testkit::eventually("every send to be marked sent", WAIT, || async {
        (app.count_status("sent").await == 40).then_some(())
    })
    .await;
    app.wait_queue_empty(shared::jobs::QueueName::Email, WAIT)
        .await;
    assert_eq!(app.smtp.received().len(), 40, "nothing is sent twice");
    app.shutdown().await;
}
