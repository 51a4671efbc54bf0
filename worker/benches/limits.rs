//! The limits the platform's figures are judged against, measured on the
//! same Postgres and Redis as the platform's own benches:
//!
//! 1. raw multi-row inserts into two tables shaped like `notifications`
//!    (`create table … (like notifications …)`), one with the primary key
//!    only and one with every index the platform keeps on it: statements of
//!    1,000 rows as `insert … select … from unnest(…)`, `BENCH_LIMIT_ROWS`
//!    rows (default `BENCH_SCALE`, 1,000,000) by `BENCH_LIMIT_WRITERS`
//!    connections (default: one per core), each statement its own
//!    transaction with the server's durability settings;
//! 2. a COPY (sqlx's `copy_in_raw`) of the batches bench's CSV, read and
//!    turned into notification rows on the fly, into a fresh indexed table
//!    of the same shape, `BENCH_CSV_ROWS` rows (default `BENCH_SCALE`);
//! 3. a raw Redis queue of empty jobs: `BENCH_REDIS_JOBS` (default
//!    `BENCH_SCALE`) small payloads pushed by pipelined `LPUSH`es of 1,000,
//!    then drained by `BENCH_REDIS_CONSUMERS` (default 4) consumers taking
//!    one job per `RPOP`, as a worker takes one job per fetch.
//!
//! The copied tables have no foreign keys (`like` copies none) and no
//! row-level security, so these are ceilings, not targets.
//!
//! Run with `cargo bench -p worker --bench limits`; `.ci/bench` runs it with
//! the rest and puts the platform's figures beside these.

use std::time::Instant;

use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use testkit::{bench, db::TestDb};
use uuid::Uuid;

fn main() {
    bench::run(run());
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .expect("Postgres must be running for the benches (see README)")
}

/// The fields of one CSV line (quotes removed, doubled quotes undone).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// A value as a CSV field for COPY, always quoted.
fn copy_field(out: &mut String, value: &str) {
    out.push('"');
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}

/// Reads `csv`, turns each row into a queued in-app notification of one
/// bulk job, and COPYs them into `table` on one connection; answers rows/s.
async fn copy(url: &str, table: &str, csv: &[u8]) -> (f64, u64) {
    let tenant = Uuid::new_v4().to_string();
    let job = Uuid::new_v4().to_string();
    let mut conn = connect(url).await;
    let started = Instant::now();
    let mut copy_in = conn
        .copy_in_raw(&format!(
            "copy {table} (id, tenant_id, channel, recipient, content, metadata, max_attempts,
                           subscriber_id, status, bulk_job_id, bulk_row)
             from stdin (format csv)"
        ))
        .await
        .expect("copy starts");
    let text = std::str::from_utf8(csv).expect("the CSV is UTF-8");
    let mut buf = String::with_capacity(2 << 20);
    for (row, line) in text.lines().skip(1).enumerate() {
        let f = csv_fields(line);
        let (patient, name, clinic) = (&f[0], &f[1], &f[2]);
        buf.push_str(&Uuid::new_v4().to_string());
        buf.push(',');
        buf.push_str(&tenant);
        buf.push_str(",inapp,");
        copy_field(&mut buf, patient);
        buf.push(',');
        copy_field(
            &mut buf,
            &json!({"title": format!("Results for {name}"), "action_url": format!("/results/{patient}")})
                .to_string(),
        );
        buf.push(',');
        copy_field(&mut buf, &json!({"clinic": clinic}).to_string());
        buf.push_str(",5,");
        buf.push_str(&Uuid::new_v4().to_string());
        buf.push_str(",queued,");
        buf.push_str(&job);
        buf.push(',');
        buf.push_str(&row.to_string());
        buf.push('\n');
        if buf.len() >= 1 << 20 {
            copy_in.send(buf.as_bytes()).await.expect("copy data");
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy_in.send(buf.as_bytes()).await.expect("copy data");
    }
    let copied = copy_in.finish().await.expect("copy ends");
    (copied as f64 / started.elapsed().as_secs_f64(), copied)
}

/// Pushes `jobs` empty jobs to a fresh Redis list with pipelined LPUSHes,
/// then drains it with `consumers` connections popping one job at a time;
/// answers (pushed/s, drained/s).
async fn redis_queue(jobs: usize, consumers: usize) -> (f64, f64) {
    let client = redis::Client::open(testkit::redis_url()).expect("a Redis URL");
    let key = format!("bench-limits-{}:queue", Uuid::new_v4().simple());
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be running for the benches (see README)");
    let started = Instant::now();
    for start in (0..jobs).step_by(1_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1_000).min(jobs) {
            pipe.cmd("LPUSH")
                .arg(&key)
                .arg(format!(r#"{{"job":{i}}}"#))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("LPUSH");
    }
    let pushed = jobs as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let drained: usize = futures::stream::iter(0..consumers)
        .map(|_| {
            let (client, key) = (client.clone(), key.clone());
            async move {
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("Redis");
                let mut n = 0usize;
                while redis::cmd("RPOP")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .expect("RPOP")
                    .is_some()
                {
                    n += 1;
                }
                n
            }
        })
        .buffer_unordered(consumers)
        .fold(0, |a, b| async move { a + b })
        .await;
    let rate = drained as f64 / started.elapsed().as_secs_f64();
    assert_eq!(drained, jobs, "every pushed job is popped once");
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    (pushed, rate)
}

async fn run() {
    let scale = bench::env_num("BENCH_SCALE", 1_000_000);
    let rows = bench::env_num("BENCH_LIMIT_ROWS", scale);
    let csv_rows = bench::env_num("BENCH_CSV_ROWS", scale);
    let jobs = bench::env_num("BENCH_REDIS_JOBS", scale);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let writers = bench::env_num("BENCH_LIMIT_WRITERS", cores).max(1);
    let consumers = bench::env_num("BENCH_REDIS_CONSUMERS", 4).max(1);
    println!(
        "limits benchmark on {}: {rows} rows inserted by {writers} connections, \
         {csv_rows} CSV rows copied, {jobs} Redis jobs drained by {consumers} consumers",
        bench::machine()
    );
    let db = TestDb::new().await;
    let mut admin = connect(&db.url).await;
    admin
        .execute(
            "create table limit_plain (like notifications including defaults including constraints including generated);
             alter table limit_plain add primary key (id);
             create table limit_indexed (like notifications including all);
             create table limit_copy (like notifications including all);",
        )
        .await
        .expect("the limit tables");
    let indexes: i64 = sqlx::query_scalar(
        "select count(*) from pg_indexes where schemaname = 'public' and tablename = 'notifications'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();

    let plain = testkit::bench::insert_limit(&db.url, "limit_plain", rows, writers).await;
    println!(
        "pg insert, primary key only:        {plain:>10.0} rows/s ({rows} rows, 1,000 per statement)"
    );
    let indexed = testkit::bench::insert_limit(&db.url, "limit_indexed", rows, writers).await;
    println!(
        "pg insert, the platform's {indexes} indexes: {indexed:>10.0} rows/s ({rows} rows, 1,000 per statement)"
    );

    let csv = bench::csv(csv_rows);
    let (copied, n) = copy(&db.url, "limit_copy", &csv).await;
    assert_eq!(n, csv_rows as u64, "every CSV row is copied");
    println!(
        "pg copy of the CSV, indexed table:  {copied:>10.0} rows/s ({csv_rows} rows, {:.0} MiB of CSV)",
        csv.len() as f64 / 1_048_576.0
    );
    drop(csv);
    admin.close().await.ok();
    db.drop_now().await;

    let (pushed, drained) = redis_queue(jobs, consumers).await;
    println!(
        "redis empty jobs:                   {drained:>10.0} jobs/s drained ({consumers} consumers, one RPOP per job); pushed {pushed:.0}/s (pipelined LPUSH)"
    );
    bench::figure(&[
        ("pg_insert_plain_rows_per_s", plain),
        ("pg_insert_limit_rows_per_s", indexed),
        ("pg_copy_limit_rows_per_s", copied),
        ("redis_drain_limit_per_s", drained),
        ("redis_push_limit_per_s", pushed),
    ]);
}
