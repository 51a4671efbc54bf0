//! What every request meets before its handler: NUL characters refused
//! wherever they are, slow and truncated requests cut off, a cap on one
//! address's connections, and quick 503s while Postgres is away.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::TestApp;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::http::org_support::{expect, platform_admin, request};

/// The longest a test waits for an answer the server must give by itself.
const GUARD: Duration = Duration::from_secs(15);

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    expect(resp, status).await
}

fn invalid_name(body: &Value) -> &str {
    body["invalid_params"][0]["name"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_character_anywhere_is_refused_with_where_it_was() {
    let app = TestApp::spawn_api_only().await;
    let send = |body: Value| {
        app.client
            .post(app.url("/api/v1/services/notifications/send"))
            .bearer_auth(&app.api_key)
            .json(&body)
            .send()
    };
    let cases = [
        (
            json!({"to": "a@example.org", "subject": "s", "text": "x\u{0}y"}),
            "text",
        ),
        (
            json!({"to": "a@example.org", "subject": "s", "text": "t", "metadata": {"k\u{0}": "v"}}),
            "metadata (a key)",
        ),
        (
            json!({"to": "a@example.org", "subject": "s", "text": "t", "metadata": {"k": "v\u{0}"}}),
            "metadata.k",
        ),
    ];
    for (body, field) in cases {
        let resp = send(body).await.unwrap();
        let p = problem(resp, 400).await;
        assert_eq!(invalid_name(&p), field, "{p}");
        assert!(
            p["invalid_params"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("NUL")
        );
    }
    let resp = app
        .put_with_key(
            "/api/v1/services/subscribers/pat-1",
            &json!({"email": "pat@example.org", "data": {"clinic": "North\u{0}"}}),
        )
        .await;
    assert_eq!(invalid_name(&problem(resp, 400).await), "data.clinic");
    let resp = app
        .get_with_key("/api/v1/services/subscribers/pat%00-1")
        .await;
    assert_eq!(invalid_name(&problem(resp, 400).await), "path");
    let admin = platform_admin(&app).await;
    let resp = request(
        &app,
        reqwest::Method::GET,
        "/api/v1/invitations?email=%00x",
        &admin.token,
    )
    .await;
    assert_eq!(invalid_name(&problem(resp, 400).await), "query.email");
    // Nothing reached Postgres.
    let stored: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let subscribers: i64 = sqlx::query_scalar("select count(*) from subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(subscribers, 0);
    // A literal backslash-u is text like any other.
    let resp = send(json!({"to": "a@example.org", "subject": "s", "text": "a \\u0000 b"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    app.shutdown().await;
}

/// Writes `raw` to the API and reads until the server closes or answers;
/// the guard only keeps a broken server from hanging the test.
async fn raw_exchange(app: &TestApp, raw: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(GUARD, socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_or_truncated_requests_are_cut_off_by_their_timeouts() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("HTTP_BODY_TIMEOUT_MS", 400)
        .var("HTTP_HEADER_TIMEOUT_MS", 400)
        .spawn()
        .await;
    // A body shorter than its Content-Length: 408, not a hang.
    let head = format!(
        "POST /api/v1/services/notifications/send HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"to\": \"a",
        app.api_key
    );
    let (answer, _) = raw_exchange(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Headers that never finish: the connection is closed.
    let (answer, took) =
        raw_exchange(&app, b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    // The server still serves.
    let live = app.get_anonymous("/health/live").await;
    assert_eq!(live.status(), 200);
    let stored: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_csv_upload_is_answered_408_and_keeps_nothing() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("HTTP_UPLOAD_STALL_TIMEOUT_MS", 400)
        .spawn()
        .await;
    // The start of an upload that announces far more than it sends.
    let half_sent = |fields: &[(&str, &str)]| {
        let boundary = "XBOUNDARY";
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\ncontent-type: text/csv\r\n\r\nEmail\r\na@example.org\r\n"
        ));
        format!(
            "POST /api/v1/services/notifications/bulk/csv HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\ncontent-length: 100000\r\n\r\n{body}",
            app.api_key
        )
    };
    let head = half_sent(&[("template", "t")]);
    let (answer, _) = raw_exchange(&app, head.as_bytes()).await;
    // The form is checked first: the template does not exist.
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    app.add_template(&json!({
        "key": "t",
        "name": "T",
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {"email": {"subject": "Hi", "text": "Hello"}}}
    }))
    .await;
    let head = half_sent(&[("template", "t"), ("mapping", r#"{"email":"Email"}"#)]);
    let (answer, _) = raw_exchange(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let jobs: i64 = sqlx::query_scalar("select count(*) from bulk_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "the half-sent upload was discarded");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_holds_at_most_its_connection_cap() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("HTTP_MAX_CONNECTIONS_PER_IP", 3)
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        // A whole request, so each connection is surely accepted and served.
        s.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let (answer, _) = raw_exchange(&app, b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    drop(held);
    testkit::eventually("a slot is free again", GUARD, || async {
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_postgres_is_away_requests_get_a_quick_503_and_recover_by_themselves() {
    let app = TestApp::builder()
        .postgres_through_proxy()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let send = |n: usize| {
        app.client
            .post(app.url("/api/v1/services/notifications/send"))
            .bearer_auth(&app.api_key)
            .json(&json!({"to": format!("p{n}@example.org"), "subject": "s", "text": "t"}))
            .send()
    };
    assert_eq!(send(0).await.unwrap().status(), 202);
    let proxy = app.postgres_proxy.as_ref().unwrap();
    proxy.cut();
    // Requests in flight and new ones alike: 503 with Retry-After, well
    // before the pool's 5 s acquire timeout.
    let answers = futures::future::join_all((1..=12).map(|n| async move {
        let started = Instant::now();
        let resp = send(n).await.unwrap();
        (resp, started.elapsed())
    }))
    .await;
    for (resp, took) in answers {
        let status = resp.status();
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some("1"),
            "{status} {:?}",
            resp.text().await
        );
        let p = problem(resp, 503).await;
        assert_eq!(p["type"], "/problems/unavailable");
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
    }
    let started = Instant::now();
    let resp = app.get_with_key("/api/v1/services/subscribers/pat-1").await;
    assert_eq!(resp.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    // What needs no Postgres still answers.
    let live = app.get_anonymous("/health/live").await;
    assert_eq!(live.status(), 200);
    proxy.restore();
    testkit::eventually("sends accepted again", GUARD, || async {
        (send(100).await.ok()?.status() == 202).then_some(())
    })
    .await;
    // Nothing refused was stored; what was accepted is there.
    let stored: Vec<String> = sqlx::query_scalar("select recipient from notifications")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(stored.contains(&"p0@example.org".to_owned()));
    assert!(stored.contains(&"p100@example.org".to_owned()));
    assert!(
        stored
            .iter()
            .all(|r| r == "p0@example.org" || r == "p100@example.org")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_method_a_route_does_not_serve_is_answered_405_with_the_methods_it_does() {
    let app = TestApp::spawn_api_only().await;
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/health/live", "GET"),
        (
            reqwest::Method::PATCH,
            "/api/v1/services/subscribers/pat-1",
            "DELETE, GET, PUT",
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/services/notifications/send",
            "POST",
        ),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let p = problem(resp, 405).await;
        assert_eq!(p["type"], "/problems/method-not-allowed");
    }
    app.shutdown().await;
}
