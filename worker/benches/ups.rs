//! UPS polling: one full sweep of `BENCH_SHIPMENTS` (default 10,000) active
//! shipments against the local fake UPS (OAuth and Track), with one
//! in-process worker. Reports polls per second, the sweep's duration, and
//! how long after the tick each shipment's poll was recorded (p50/p99).
//!
//! Run with `cargo bench -p worker --bench ups` against the local Postgres
//! and Redis. The UPS rate limit is lifted for the run
//! (`JOBS__QUEUES__UPS_POLL__RATE_LIMIT__PER_SEC`), so the number is the
//! platform's own ceiling; production runs under `queues.ups_poll.rate_limit`.

use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use hdrhistogram::Histogram;
use serde_json::json;
use shared::jobs::{PollUpsShipments, Queues};
use testkit::{
    TestApp,
    ups::{CLIENT_ID, CLIENT_SECRET, FakeUps, Scan},
};

fn main() {
    testkit::bench::run(run());
}

async fn run() {
    let n = testkit::bench::env_num("BENCH_SHIPMENTS", 10_000);
    let ups = FakeUps::start().await;
    let app = TestApp::builder()
        .var("UPS_BASE_URL", ups.url())
        .var("JOBS__QUEUES__UPS_POLL__RATE_LIMIT__PER_SEC", 1_000_000)
        .var("JOBS__QUEUES__UPS_POLL__RATE_LIMIT__BURST", 1_000_000)
        .var("DATABASE_MAX_CONNECTIONS", 20)
        .without_scheduler()
        .spawn()
        .await;
    app.add_provider(&json!({
        "provider": "ups", "name": "UPS", "priority": 0, "settings": {},
        "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    }))
    .await;
    for i in 0..n {
        ups.set_scans(
            &format!("T{i:010}"),
            vec![
                Scan::new("M", "20261121", "090000"),
                Scan::new("I", "20261122", "031500"),
            ],
        );
    }
    sqlx::query(
        "insert into shipments (id, tenant_id, tracking_number, created_by, next_poll_at)
         select gen_random_uuid(), $1, 'T' || lpad(i::text, 10, '0'), 'bench', now()
         from generate_series(0, $2 - 1) i",
    )
    .bind(app.tenant_id)
    .bind(n as i64)
    .execute(&app.pool)
    .await
    .unwrap();
    let tick = (Utc::now() + chrono::Duration::minutes(1))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let started = Instant::now();
    let wall_start = Utc::now();
    queues
        .push(PollUpsShipments {
            scheduled_for: tick,
            tenant_id: None,
            shipments: vec![],
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1_800);
    loop {
        let done: i64 =
            sqlx::query_scalar("select count(*) from shipments where last_polled_at = $1")
                .bind(tick)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if done as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sweep did not finish: {done}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sweep = started.elapsed();
    // When each poll was recorded (updated_at, Postgres's clock), from the
    // moment the tick was pushed.
    let offsets: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from (updated_at - $1))::float8 * 1e6 from shipments",
    )
    .bind(wall_start)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for us in offsets {
        h.record(us.max(1.0) as u64).unwrap();
    }
    let events: i64 = sqlx::query_scalar("select count(*) from shipment_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    println!("machine: {}", testkit::bench::machine());
    println!(
        "ups sweep: {n} shipments in {:.2} s = {:.0} polls/s ({} Track calls, {} token requests, {events} events)",
        sweep.as_secs_f64(),
        n as f64 / sweep.as_secs_f64(),
        ups.track_requests().len(),
        ups.token_requests(),
    );
    println!(
        "time from tick to a shipment's poll recorded: p50 {:.1} ms, p99 {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    );
    app.shutdown().await;
}
