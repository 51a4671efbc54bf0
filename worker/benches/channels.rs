//! Templated sends and HTTP providers: how fast the API accepts sends that
//! render a template for a subscriber, how fast one worker puts them into
//! inboxes, and how fast one worker delivers SMS through an HTTP provider
//! (the local Twilio stand-in), with end-to-end latency from acceptance to
//! the provider's answer.
//!
//! Run with `cargo bench -p worker --bench channels` against the local
//! Postgres and Redis. `BENCH_SENDS` (default 10,000) and `BENCH_CONCURRENCY`
//! (default 64) size each run; the in-app sends go to `BENCH_SUBSCRIBERS`
//! (default 1,000) people in turn. One person's inbox takes its changes one at
//! a time (that is what keeps their unread count exact), so sends to a single
//! subscriber go no faster than one transaction after another.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use testkit::{
    TestApp,
    providers::{FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    testkit::bench::run(run());
}

/// Latency from acceptance (`created_at`) to the provider's answer
/// (`sent_at`), per channel, as recorded by Postgres.
async fn delivery_latency(app: &TestApp, channel: &str) -> Histogram<u64> {
    let rows: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from (sent_at - created_at))::float8 * 1e6
         from notifications where channel = $1 and status = 'sent'",
    )
    .bind(channel)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for us in rows {
        h.record(us.max(1.0) as u64).unwrap();
    }
    h
}

async fn wait_sent(app: &TestApp, channel: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let sent: i64 = sqlx::query_scalar(
            "select count(*) from notifications where channel = $1 and status = 'sent'",
        )
        .bind(channel)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if sent >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{sent}/{n} {channel} sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run() {
    let sends = testkit::bench::env_num("BENCH_SENDS", 10_000);
    let concurrency = testkit::bench::env_num("BENCH_CONCURRENCY", 64);
    println!(
        "channels benchmark on {} ({sends} sends per run, {concurrency} concurrent callers)",
        testkit::bench::machine()
    );
    let fake = FakeProviders::start().await;
    let mut app = TestApp::builder()
        .providers(&fake)
        .without_worker()
        .var("JOBS__QUEUES__INAPP__CONCURRENCY", 64)
        .var("JOBS__QUEUES__SMS__CONCURRENCY", 64)
        .var("DATABASE_MAX_CONNECTIONS", 40)
        .var("JOBS__DISPATCHER__INTERVAL_MS", 250)
        .spawn()
        .await;
    app.add_template(&json!({
        "key": "results", "name": "Results ready", "category": "results",
        "default_locale": "en", "default_channels": ["inapp"],
        "locales": {"en": {
            "inapp": {"title": "Results for {{patient.first_name}}", "body": "{{#each tests}}{{name}}: {{status}}\n{{/each}}", "action_url": "/results/{{id}}"},
            "sms": {"body": "Hi {{patient.first_name}}, {{count}} results are ready."}
        }}
    }))
    .await;
    let mut twilio = twilio_config("twilio", TWILIO_SID_A, None);
    twilio["settings"]["rate_per_sec"] = json!(10000);
    app.add_provider(&twilio).await;
    let data = json!({
        "patient": {"first_name": "Pat"}, "id": 42, "count": 3,
        "tests": [{"name": "CBC", "status": "normal"}, {"name": "A1C", "status": "review"}, {"name": "Lipids", "status": "normal"}],
    });

    // 1. Templated in-app sends accepted by the API (template rendered,
    // subscriber upserted, committed, pushed).
    let subscribers = testkit::bench::env_num("BENCH_SUBSCRIBERS", 1_000);
    let mut accept = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let answers: Vec<(u16, Duration)> = futures::stream::iter(0..sends)
        .map(|i| {
            let app = &app;
            let body = json!({"template": "results", "subscriber_id": format!("patient-{}", i % subscribers), "template_data": data});
            async move {
                let started = Instant::now();
                let status = app.send_email(&body).await.status().as_u16();
                (status, started.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let accept_took = started.elapsed();
    let took = accept_took;
    let ok = answers.iter().filter(|(s, _)| *s == 202).count();
    for (_, latency) in &answers {
        accept.record(latency.as_micros() as u64).unwrap();
    }
    assert_eq!(ok, sends, "every templated send is accepted");
    let templated = ok as f64 / took.as_secs_f64();
    println!(
        "templated api accept: {templated:>8.0} sends/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({subscribers} subscribers)",
        ms(&accept, 0.5),
        ms(&accept, 0.99),
    );

    // 2. One worker puts them into the inbox. The in-app figure counts
    // from the first send to the last one in an inbox (acceptance plus
    // delivery), so it stays the same measure whether the worker or the
    // accepting transaction places them.
    let placed_at_accept: i64 = sqlx::query_scalar(
        "select count(*) from notifications where channel = 'inapp' and status = 'sent'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    app.start_worker();
    let started = Instant::now();
    wait_sent(&app, "inapp", sends as i64).await;
    let took = started.elapsed();
    let inapp = sends as f64 / (accept_took + took).as_secs_f64();
    println!(
        "in-app delivery:      {:>8.0} notifications/s (one worker, {sends} in {:.2} s after acceptance; \
         {placed_at_accept} already in inboxes when it started)",
        sends as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    println!(
        "in-app single sends:  {inapp:>8.0} notifications/s (first send → last in an inbox, {:.2} s)",
        (accept_took + took).as_secs_f64()
    );
    app.stop_worker().await;

    // 3. Templated SMS through the HTTP provider, accepted with no worker
    // running, then delivered by one worker.
    let body = json!({"template": "results", "to": "+15005550006", "channels": ["sms"], "template_data": data});
    let answers = app.send_many(sends, concurrency, &body).await;
    assert!(answers.iter().all(|(s, _)| *s == 202));
    app.start_worker();
    let started = Instant::now();
    wait_sent(&app, "sms", sends as i64).await;
    let took = started.elapsed();
    assert_eq!(fake.requests(Kind::Twilio).len(), sends);
    let sms = sends as f64 / took.as_secs_f64();
    println!(
        "sms via http provider:{sms:>8.0} sends/s (one worker, {sends} in {:.2} s)",
        took.as_secs_f64()
    );

    // 4. End-to-end latency at a steady rate an idle worker can keep up
    // with: accepted to the provider's answer.
    sqlx::query("delete from delivery_attempts")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("delete from notifications where channel = 'sms'")
        .execute(&app.pool)
        .await
        .unwrap();
    let probes = testkit::bench::env_num("BENCH_LATENCY_SAMPLES", 500);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..probes {
        tick.tick().await;
        let resp = app.send_email(&body).await;
        assert_eq!(resp.status(), 202);
    }
    wait_sent(&app, "sms", probes as i64).await;
    let e2e = delivery_latency(&app, "sms").await;
    println!(
        "sms end to end:       p50 {:>6.2} ms   p99 {:>6.2} ms   ({} sends at 100/s, accepted to provider answer, worker polling every 100 ms)",
        ms(&e2e, 0.5),
        ms(&e2e, 0.99),
        e2e.len()
    );
    testkit::bench::figure(&[
        ("api_templated_per_s", templated),
        ("api_templated_p50_ms", ms(&accept, 0.5)),
        ("api_templated_p99_ms", ms(&accept, 0.99)),
        ("inapp_single_per_s", inapp),
        ("sms_single_per_s", sms),
        ("sms_e2e_p99_ms", ms(&e2e, 0.99)),
    ]);
    app.shutdown().await;
}
