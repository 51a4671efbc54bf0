//! Email pipeline benchmark: how fast the API accepts sends, how fast one
//! worker delivers them into a local SMTP sink, and how long an idle worker
//! takes to pick a send up.
//!
//! Run with `cargo bench -p worker --bench email_pipeline` (release build)
//! against the local Postgres and Redis. `BENCH_SENDS` sets the batch size
//! (default 20,000) and `BENCH_CONCURRENCY` the number of concurrent API
//! callers (default 64).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::json;
use testkit::TestApp;

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    testkit::bench::run(run());
}

async fn run() {
    let sends = testkit::bench::env_num("BENCH_SENDS", 20_000);
    let concurrency = testkit::bench::env_num("BENCH_CONCURRENCY", 64);
    println!(
        "email pipeline benchmark on {} ({sends} sends, {concurrency} concurrent callers)",
        testkit::bench::machine()
    );

    let mut app = TestApp::builder()
        .without_worker()
        .var("JOBS__QUEUES__EMAIL__CONCURRENCY", 64)
        .var("SMTP_POOL_MAX_SIZE", 32)
        .var("DATABASE_MAX_CONNECTIONS", 40)
        .var("WORKER_POLL_INTERVAL_MS", 100)
        .var("JOBS__DISPATCHER__INTERVAL_MS", 250)
        .spawn()
        .await;

    // 1. Sends accepted by the API (committed to Postgres, pushed to Redis).
    let body = json!({"to": "pat@example.org", "subject": "Your results are ready", "text": "Log in to view them."});
    let mut accept = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let answers = app.send_many(sends, concurrency, &body).await;
    let took = started.elapsed();
    let ok = answers.iter().filter(|(s, _)| *s == 202).count();
    for (_, latency) in &answers {
        accept.record(latency.as_micros() as u64).unwrap();
    }
    let raw = ok as f64 / took.as_secs_f64();
    println!(
        "api accept:   {raw:>8.0} sends/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({ok}/{sends} accepted in {:.2} s)",
        ms(&accept, 0.5),
        ms(&accept, 0.99),
        took.as_secs_f64()
    );
    assert_eq!(ok, sends, "every send is accepted");

    // 2. One worker drains them into the SMTP sink.
    app.start_worker();
    let started = Instant::now();
    app.smtp.wait_for(sends, Duration::from_secs(600)).await;
    let took = started.elapsed();
    let emails = sends as f64 / took.as_secs_f64();
    println!(
        "worker send:  {emails:>8.0} emails/s (one worker, {sends} emails in {:.2} s)",
        took.as_secs_f64()
    );

    // 3. Pickup latency: from the API call to the message at the SMTP server,
    // one send at a time to an idle worker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = testkit::bench::env_num("BENCH_PICKUP_SAMPLES", 200);
    let before = app.smtp.received().len();
    let mut sent_at = HashMap::new();
    let mut pickup = Histogram::<u64>::new(3).unwrap();
    for i in 0..probes {
        let to = format!("probe{i}@example.org");
        sent_at.insert(to.clone(), Instant::now());
        let resp = app
            .send_email(&json!({"to": to, "subject": "Probe", "text": "Pickup latency probe."}))
            .await;
        assert_eq!(resp.status(), 202);
        app.smtp
            .wait_for(before + i + 1, Duration::from_secs(10))
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for m in app.smtp.received().into_iter().skip(before) {
        if let Some(t) = m.to.first().and_then(|to| sent_at.get(to)) {
            pickup
                .record(m.at.duration_since(*t).as_micros() as u64)
                .unwrap();
        }
    }
    println!(
        "pickup:       p50 {:>6.2} ms   p99 {:>6.2} ms   ({} samples, API call to SMTP DATA end, idle worker polling every 100 ms)",
        ms(&pickup, 0.5),
        ms(&pickup, 0.99),
        pickup.len()
    );
    testkit::bench::figure(&[
        ("api_raw_per_s", raw),
        ("api_raw_p50_ms", ms(&accept, 0.5)),
        ("api_raw_p99_ms", ms(&accept, 0.99)),
        ("email_worker_per_s", emails),
        ("pickup_p50_ms", ms(&pickup, 0.5)),
        ("pickup_p99_ms", ms(&pickup, 0.99)),
    ]);
    app.shutdown().await;
}
