//! Invitation acceptance benchmark: accepts per second and their latency
//! through the real API (argon2id hashing of the new password, the
//! single-use conditional update, the user, its subscriber and the audit row
//! in one transaction).
//!
//! Run with `cargo bench -p api --bench invitations` against the local
//! Postgres and Redis. `BENCH_INVITES` (default 400) invitations are accepted
//! by `BENCH_CONCURRENCY` (default 16) concurrent clients.

use std::{sync::Arc, time::Instant};

use base64::Engine as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use sha2::{Digest, Sha256};
use testkit::TestApp;

fn main() {
    testkit::bench::run(run());
}

async fn run() {
    let n = testkit::bench::env_num("BENCH_INVITES", 400);
    let concurrency = testkit::bench::env_num("BENCH_CONCURRENCY", 16);
    println!(
        "invitation accept benchmark on {} ({n} invitations, {concurrency} clients)",
        testkit::bench::machine()
    );
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    // Invitations as the invitation job leaves them: sent, with a token hash.
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let raw: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        sqlx::query(
            "insert into invitations (id, tenant_id, email, invitation_type, token_hash, status,
                expires_at, invited_by, sent_at)
             values ($1, $2, $3, 'doctor', $4, 'sent', now() + interval '1 day', 'bench', now())",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(app.tenant_id)
        .bind(format!("doctor{i}@bench.example"))
        .bind(Sha256::digest(token.as_bytes()).to_vec())
        .execute(&app.pool)
        .await
        .unwrap();
        tokens.push(token);
    }
    let app = Arc::new(app);
    let started = Instant::now();
    let latencies: Vec<u64> = futures::stream::iter(tokens)
        .map(|token| {
            let app = app.clone();
            async move {
                let t = Instant::now();
                let resp = app
                    .client
                    .post(app.url(&format!("/api/v1/invitations/accept/{token}")))
                    .json(&json!({"password": "Bench-Password-42"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201);
                t.elapsed().as_micros() as u64
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for l in &latencies {
        hist.record(*l).unwrap();
    }
    println!(
        "accepted {n} in {:.2} s: {:.1} accepts/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users as usize, n);
}
