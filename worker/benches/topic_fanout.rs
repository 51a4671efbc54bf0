//! An in-app send to a topic of `BENCH_TOPIC_MEMBERS` members (default
//! 1,000,000) end to end, with the api and the worker as real child
//! processes (release builds), and in the same run the limit it is judged
//! against.
//!
//! The members are seeded straight into Postgres with set-based SQL
//! (subscribers, then the topic's membership rows); the send then goes
//! through the real API (`POST /api/v1/services/notifications/send-topic`),
//! which cuts the batch's chunks from the membership in its own
//! transaction; the in-process scheduler's dispatcher feeds the chunks to
//! the worker, which expands them into inbox notifications.
//!
//! Reports: how long the send took to be accepted; delivered/s from the
//! accept (the 202) to the last notification in an inbox (`max(sent_at)`);
//! p50/p99 of accepted → `sent_at` over every notification; Postgres CPU per
//! notification (`testkit::bench::PgCpu`); and the limit, raw inserts of
//! the same number of rows into a table created `like notifications
//! including all` as `worker/benches/limits.rs` does them (statements of
//! 1,000 rows, one connection per core), with the ratio. The machine's load
//! average is printed before and after: on a shared machine it says how
//! much the figures are worth.
//!
//! Build the api binary first, then run:
//! `cargo build --release -p api && cargo bench -p worker --bench topic_fanout`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use testkit::{TestApp, bench};
use uuid::Uuid;

fn main() {
    bench::run(run());
}

/// Seeds `n` subscribers of the app's organisation and makes them members
/// of topic `key` (created through the API), with set-based SQL.
async fn seed_topic(app: &TestApp, base: &str, key: &str, n: usize) {
    let resp = app
        .client
        .post(format!("{base}/api/v1/services/topics"))
        .bearer_auth(&app.api_key)
        .json(&json!({"key": key, "name": "Every patient of the practice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let topic: Uuid = sqlx::query_scalar("select id from topics where tenant_id = $1 and key = $2")
        .bind(app.tenant_id)
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    bench::seed_members(&app.pool, app.tenant_id, n).await;
    sqlx::query(
        "insert into topic_members (topic_id, subscriber_id, tenant_id)
         select $2, s.id, s.tenant_id from subscribers s
         where s.tenant_id = $1 and s.external_id like 'member-%'",
    )
    .bind(app.tenant_id)
    .bind(topic)
    .execute(&app.pool)
    .await
    .expect("the membership");
    sqlx::query("analyze subscribers, topic_members")
        .execute(&mut app.owner().await)
        .await
        .expect("analyze");
}

async fn get_json(app: &TestApp, url: &str) -> Value {
    app.client
        .get(url)
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn run() {
    let n = bench::env_num("BENCH_TOPIC_MEMBERS", 1_000_000);
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let writers = bench::env_num("BENCH_LIMIT_WRITERS", cores).max(1);
    println!(
        "topic fan-out benchmark on {}: an in-app send to a topic of {n} members; load average {}",
        bench::machine(),
        bench::load_average()
    );
    let app = TestApp::builder()
        .without_worker()
        .var("JOBS__DISPATCHER__GROUP_SIZE", 500)
        .var("DATABASE_MAX_CONNECTIONS", 30)
        .spawn()
        .await;
    app.add_template(&json!({
        "key": "clinic.news", "name": "Practice news", "category": "news",
        "default_locale": "en", "default_channels": ["inapp"],
        "locales": {"en": {"inapp": {"title": "{{headline}}", "action_url": "/news/{{id}}"}}}
    }))
    .await;
    bench::print_postgres_settings(&app.pool, " (tables are analyzed here after seeding)").await;
    let mut kids = bench::spawn(&app, Path::new(env!("CARGO_BIN_EXE_worker")), "topic-");
    let base = kids.base.clone();
    bench::wait_ready(&app.client, &base).await;
    let worker_pid = kids.worker.id().unwrap();
    let database: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let seeding = Instant::now();
    seed_topic(&app, &base, "everyone", n).await;
    println!(
        "seeded {n} subscribers and their membership in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    // The send, through the API.
    let pg = bench::PgCpu::start(&database).await;
    if pg.is_none() {
        println!(
            "WARNING: Postgres's processes cannot be read from /proc here; no CPU time per notification"
        );
    }
    let started = Instant::now();
    let resp = app
        .client
        .post(format!("{base}/api/v1/services/notifications/send-topic"))
        .bearer_auth(&app.api_key)
        .timeout(Duration::from_secs(3_600))
        .json(&json!({
            "topic": "everyone", "template": "clinic.news", "channels": ["inapp"],
            "defaults": {"headline": "The practice is closed on Friday", "id": 7}
        }))
        .send()
        .await
        .unwrap();
    let accept_took = started.elapsed();
    let accepted_at: DateTime<Utc> = Utc::now();
    let accepted = Instant::now();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["recipients"], n as i64, "{body}");
    let id = body["batch_id"].as_str().unwrap().to_owned();
    println!(
        "send-topic accepted in {:.2} s ({:.0} members/s cut into chunks in the request)",
        accept_took.as_secs_f64(),
        n as f64 / accept_took.as_secs_f64()
    );

    let url = format!("{base}/api/v1/services/notifications/batches/{id}");
    let deadline = Instant::now() + Duration::from_secs(3 * 3_600);
    let done = loop {
        let v = get_json(&app, &url).await;
        if v["status"] == "completed" {
            break v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {v}");
        // A status read counts the batch's notifications per status; polled
        // faster, the bench would take a core from the work it measures.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let polled = accepted.elapsed();
    let cost = match pg {
        Some(pg) => Some(pg.finish().await),
        None => None,
    };
    assert_eq!(done["counts"]["sent"], n as i64, "{done}");
    let (inboxes, last, p50, p99): (i64, f64, f64, f64) = sqlx::query_as(
        "select count(*),
                extract(epoch from max(sent_at) - $2)::float8,
                percentile_cont(0.5) within group (order by extract(epoch from sent_at - $2))::float8,
                percentile_cont(0.99) within group (order by extract(epoch from sent_at - $2))::float8
         from notifications where batch_id = $1 and channel = 'inapp' and status = 'sent'",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(accepted_at)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(inboxes, n as i64, "one in-app notification per member");
    let per_s = n as f64 / last;
    println!(
        "topic in-app end to end: {per_s:>9.0} delivered/s (accepted → last in an inbox {last:.1} s; \
         `completed` seen after {:.1} s)   accepted → sent p50 {p50:.1} s, p99 {p99:.1} s",
        polled.as_secs_f64()
    );
    let mut figures = vec![
        ("topic_inapp_per_s", per_s),
        ("topic_accept_s", accept_took.as_secs_f64()),
        ("topic_inapp_p50_s", p50),
        ("topic_inapp_p99_s", p99),
    ];
    if let Some(cost) = cost {
        cost.print_per_inapp(n);
        figures.push(("topic_pg_us_per_inapp", cost.cpu_us / n as f64));
    }
    println!(
        "worker peak RSS {:.0} MiB; load average {}",
        bench::peak_rss_mib(worker_pid),
        bench::load_average()
    );
    let _ = kids.worker.kill().await;
    let _ = kids.api.kill().await;

    // The limit, on the same Postgres, at the same N, once the platform is idle.
    let url = app
        .vars
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("the app's database URL");
    sqlx::query("create table limit_topic (like notifications including all)")
        .execute(&mut app.owner().await)
        .await
        .expect("the limit table");
    let limit = bench::insert_limit(&url, "limit_topic", n, writers).await;
    sqlx::query("drop table limit_topic")
        .execute(&mut app.owner().await)
        .await
        .expect("the limit table is dropped");
    println!(
        "limit: pg insert into `like notifications including all`: {limit:>9.0} rows/s \
         ({n} rows, 1,000 per statement, {writers} connections)"
    );
    println!(
        "ratio: topic delivered/s to the indexed insert limit: {:.3}; load average {}",
        per_s / limit,
        bench::load_average()
    );
    figures.extend([
        ("topic_insert_limit_rows_per_s", limit),
        ("topic_inapp_ratio_to_insert", per_s / limit),
    ]);
    bench::figure(&figures);
    app.shutdown().await;
}
