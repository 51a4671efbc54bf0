//! WebSocket benchmark: how many connections one API process holds, its
//! memory per connection, and event delivery latency at that load.
//!
//! Run with `cargo bench -p api --bench realtime` against the local Postgres
//! and Redis. The API runs as its own process (so its memory is measured
//! alone); this process holds the clients. `BENCH_WS_CONNECTIONS` (default
//! 10,000) and `BENCH_WS_SAMPLES` (default 1,000) size it.
//!
//! Latency is measured through the real pipeline: in-app notifications are
//! sent through the API, a worker delivers them into the users' inboxes, and
//! each `notification.created` event is timed from the worker's transaction
//! that recorded it (the event's `at`) to its receipt by the client.

use std::{
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use testkit::TestApp;
use tokio_tungstenite::{connect_async, tungstenite::client::IntoClientRequest};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn main() {
    testkit::bench::run(run());
}

async fn run() {
    let connections = testkit::bench::env_num("BENCH_WS_CONNECTIONS", 10_000);
    let samples = testkit::bench::env_num("BENCH_WS_SAMPLES", 1_000);
    println!(
        "websocket benchmark on {} ({connections} connections, {samples} notifications)",
        testkit::bench::machine()
    );

    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .envs(app.vars.iter().cloned())
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .env("DATABASE_MAX_CONNECTIONS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the api binary starts");
    let pid = api.id().unwrap();
    testkit::eventually("the api to listen", Duration::from_secs(30), || async {
        app.client
            .get(format!("http://127.0.0.1:{port}/health/live"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);

    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let started = Instant::now();
    let opened: Vec<bool> = futures::stream::iter(0..connections)
        .map(|i| {
            let claims = json!({"sub": format!("user-{i}"), "tenant_id": app.tenant_id.to_string(), "exp": chrono::Utc::now().timestamp() + 3600});
            let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
            let lat_tx = lat_tx.clone();
            async move {
                let mut req = format!("ws://127.0.0.1:{port}/api/v1/ws").into_client_request().unwrap();
                req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
                let Ok((mut ws, _)) = connect_async(req).await else { return false };
                // Wait for `ready`, then keep reading in the background.
                let ready = matches!(ws.next().await, Some(Ok(_)));
                tokio::spawn(async move {
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Ok(text) = msg.to_text()
                            && let Ok(v) = serde_json::from_str::<Value>(text)
                            && v["type"] == "notification.created"
                            && let Some(at) = v["at"]
                                .as_str()
                                .and_then(|a| a.parse::<chrono::DateTime<chrono::Utc>>().ok())
                        {
                            let t = at.timestamp_micros().max(0) as u64;
                            let _ = lat_tx.send(now_micros().saturating_sub(t));
                        }
                    }
                });
                ready
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let held = opened.iter().filter(|ok| **ok).count();
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    println!(
        "connections:  {held}/{connections} held by one api process (opened in {:.1} s)",
        connect_time.as_secs_f64()
    );
    println!(
        "memory:       api RSS {:.1} MiB idle, {:.1} MiB with {held} connections: {:.1} KiB per connection",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / held.max(1) as f64
    );

    // In-app notifications to random connected users, through the API and
    // a worker, a few hundred per second.
    let started = Instant::now();
    for n in 0..samples {
        let user = (n * 7919) % connections;
        let body = json!({"channel": "inapp", "subscriber_id": format!("user-{user}"), "title": "Benchmark"});
        let resp = app.send_email(&body).await;
        assert_eq!(resp.status(), 202);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latency.len() < samples as u64 {
        match tokio::time::timeout_at(deadline, lat_rx.recv()).await {
            Ok(Some(us)) => latency.record(us.max(1)).unwrap(),
            _ => break,
        }
    }
    let took = started.elapsed();
    println!(
        "delivery:     p50 {:.2} ms   p99 {:.2} ms   ({} of {samples} notifications received, {:.0}/s sent, worker commit to client receipt)",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.len(),
        samples as f64 / took.as_secs_f64()
    );
    let _ = api.kill().await;
    app.shutdown().await;
}
