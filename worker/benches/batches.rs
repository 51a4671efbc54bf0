//! Batches and CSV bulk jobs end to end, with the api and the worker as
//! real child processes (release builds) so their peak RSS can be read:
//!
//! 1. an in-app batch of `BENCH_BATCH` recipients (default 1,000,000) sent
//!    in chunks of 1,000 by `BENCH_CONCURRENCY` callers (default 8): chunks
//!    accepted per second, then first chunk → `completed`;
//! 2. an in-app CSV of `BENCH_CSV_ROWS` rows (default 1,000,000): upload,
//!    rows ingested per second, then delivered per second;
//! 3. an SMS batch of `BENCH_HTTP` recipients (default 100,000) through the
//!    local Twilio stand-in;
//! 4. a `BENCH_BIG_CSV_MB` MiB CSV (default 1,024) streamed to the api, whose
//!    peak RSS is read while it streams; the job is then cancelled.
//!
//! End-to-end latency percentiles are read from Postgres: for a batch, from
//! the commit of a recipient's chunk to its notification's `sent_at`; for a
//! CSV, from the upload's start to `sent_at`. Over stage 1 it also reads
//! what Postgres spent per in-app notification: CPU time of its processes
//! (`testkit::bench::PgCpu`) and WAL bytes. The headline figures end on one
//! `BENCH_FIGURE` line, which `.ci/bench` collects.
//!
//! Build the api binary first, then run:
//! `cargo build --release -p api && cargo bench -p worker --bench batches`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{FakeProviders, TWILIO_SID_A, twilio_config},
};

/// How to turn autovacuum on, for the warning when it is off.
const TURN_AUTOVACUUM_ON: &str =
    ". Turn it on with `ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();`";

const BOUNDARY: &str = "----bench-boundary-4f1c";

fn main() {
    testkit::bench::run(run());
}

/// p50 and p99, in seconds, of the time from `since` to `sent_at` over the
/// sent notifications that `scope` (an SQL condition) selects.
async fn sent_latency(app: &TestApp, since: &str, scope: &str) -> (f64, f64) {
    sqlx::query_as(&format!(
        "select percentile_cont(0.5) within group (order by extract(epoch from sent_at - {since}))::float8,
                percentile_cont(0.99) within group (order by extract(epoch from sent_at - {since}))::float8
         from notifications n where n.status = 'sent' and {scope}"
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
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

/// Polls `url` until `done`; returns the last answer.
async fn poll(app: &TestApp, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let v = get_json(app, url).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {v}");
        // A status read counts a batch's notifications per status, about
        // 0.6 s of Postgres time at a million rows: polled faster, the
        // bench would take a core from the work it measures.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Sends a whole batch in chunks of 1,000; returns (chunks/s, latencies).
async fn send_batch(
    app: &TestApp,
    base: &str,
    body: Value,
    n: usize,
    concurrency: usize,
    recipient: impl Fn(usize) -> Value,
) -> (String, f64, Histogram<u64>, Instant) {
    let resp = app
        .client
        .post(format!("{base}/api/v1/services/notifications/send-batch"))
        .bearer_auth(&app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chunks: Vec<Value> = (0..n.div_ceil(1_000))
        .map(|seq| {
            let recipients: Vec<Value> = (seq * 1_000..((seq + 1) * 1_000).min(n))
                .map(&recipient)
                .collect();
            json!({"batch_id": id, "seq": seq, "recipients": recipients})
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let first = Instant::now();
    let answers: Vec<(u16, Duration)> = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let started = Instant::now();
            let status = app
                .client
                .post(format!("{base}/api/v1/services/notifications/send-chunk"))
                .bearer_auth(&app.api_key)
                .json(&chunk)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (status, started.elapsed())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = first.elapsed();
    assert!(
        answers.iter().all(|(s, _)| *s == 202),
        "every chunk accepted"
    );
    for (_, l) in &answers {
        latency.record(l.as_micros() as u64).unwrap();
    }
    let resp = app
        .client
        .post(format!(
            "{base}/api/v1/services/notifications/batches/{id}/close"
        ))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    (
        id,
        answers.len() as f64 / took.as_secs_f64(),
        latency,
        first,
    )
}

fn multipart_head(mapping: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [
        ("template", "results"),
        ("channels", "inapp"),
        ("mapping", mapping),
    ] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.csv\"\r\n\r\n")
            .as_bytes(),
    );
    body
}

async fn upload(app: &TestApp, base: &str, body: reqwest::Body) -> (String, Duration) {
    let started = Instant::now();
    let url = format!("{base}/api/v1/services/notifications/bulk/csv");
    let resp = app
        .multipart_post(&url, &app.api_key, BOUNDARY, body)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{v}");
    (v["job_id"].as_str().unwrap().to_owned(), took)
}

async fn run() {
    let n = testkit::bench::env_num("BENCH_BATCH", 1_000_000);
    let rows = testkit::bench::env_num("BENCH_CSV_ROWS", 1_000_000);
    let http = testkit::bench::env_num("BENCH_HTTP", 100_000);
    let big_mb = testkit::bench::env_num("BENCH_BIG_CSV_MB", 1_024);
    let concurrency = testkit::bench::env_num("BENCH_CONCURRENCY", 8);
    println!(
        "batches benchmark on {}: batch {n}, csv {rows} rows, http {http}, big csv {big_mb} MiB",
        testkit::bench::machine()
    );
    let fake = FakeProviders::start().await;
    let app = TestApp::builder()
        .providers(&fake)
        .without_worker()
        .var("JOBS__QUEUES__SMS__CONCURRENCY", 64)
        .var("JOBS__DISPATCHER__GROUP_SIZE", 500)
        .var("DATABASE_MAX_CONNECTIONS", 30)
        .var("MAX_CSV_BYTES", 2u64 << 30)
        .spawn()
        .await;
    app.add_template(&json!({
        "key": "results", "name": "Results ready", "category": "results",
        "default_locale": "en", "default_channels": ["inapp"],
        "locales": {"en": {
            "inapp": {"title": "Results for {{name}}", "action_url": "/results/{{id}}"},
            "sms": {"body": "Hi {{name}}, your results are ready."}
        }}
    }))
    .await;
    let mut twilio = twilio_config("twilio", TWILIO_SID_A, None);
    twilio["settings"]["rate_per_sec"] = json!(10000);
    app.add_provider(&twilio).await;
    testkit::bench::print_postgres_settings(&app.pool, TURN_AUTOVACUUM_ON).await;
    let mut kids = testkit::bench::spawn(&app, Path::new(env!("CARGO_BIN_EXE_worker")), "");
    let base = kids.base.clone();
    testkit::bench::wait_ready(&app.client, &base).await;
    let api_pid = kids.api.id().unwrap();
    let worker_pid = kids.worker.id().unwrap();

    let database: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut figures: Vec<(&str, f64)> = Vec::new();

    // 1. In-app batch.
    if n > 0 {
        let pg = testkit::bench::PgCpu::start(&database).await;
        if pg.is_none() {
            println!(
                "WARNING: Postgres's processes cannot be read from /proc here; no CPU time per notification"
            );
        }
        let (id, chunks_per_sec, latency, first) = send_batch(
            &app,
            &base,
            json!({"template": "results", "channels": ["inapp"], "defaults": {"id": 7}}),
            n,
            concurrency,
            |i| json!({"subscriber_id": format!("patient-{i}"), "data": {"name": format!("P{i}")}}),
        )
        .await;
        println!(
            "batch chunks accepted: {chunks_per_sec:>8.0} chunks/s ({:.0} recipients/s)   p50 {:.2} ms   p99 {:.2} ms",
            chunks_per_sec * 1_000.0,
            ms(&latency, 0.5),
            ms(&latency, 0.99)
        );
        let url = format!("{base}/api/v1/services/notifications/batches/{id}");
        let done = poll(&app, &url, |b| b["status"] == "completed").await;
        let took = first.elapsed();
        let cost = match pg {
            Some(pg) => Some(pg.finish().await),
            None => None,
        };
        assert_eq!(done["counts"]["sent"], n as i64, "{done}");
        let (p50, p99) = sent_latency(
            &app,
            "(select c.created_at from batch_chunks c where c.batch_id = n.batch_id and c.seq = n.batch_seq)",
            &format!("n.batch_id = '{id}'"),
        )
        .await;
        let per_s = n as f64 / took.as_secs_f64();
        println!(
            "batch in-app end to end: {per_s:>8.0} delivered/s   first chunk → completed {:.1} s   chunk accepted → sent p50 {p50:.1} s, p99 {p99:.1} s",
            took.as_secs_f64()
        );
        figures.extend([
            ("batch_chunks_per_s", chunks_per_sec),
            ("inapp_batch_per_s", per_s),
            ("inapp_batch_p99_s", p99),
        ]);
        if let Some(cost) = cost {
            cost.print_per_inapp(n);
            if cost.others_cpu_us > 0.05 * cost.cpu_us {
                println!(
                    "WARNING: other work ran on this Postgres during the stage; the WAL figure counts it too"
                );
            }
            figures.extend([
                ("pg_us_per_inapp", cost.cpu_us / n as f64),
                ("pg_wal_bytes_per_inapp", cost.wal_bytes / n as f64),
            ]);
        }
    }

    // 2. In-app CSV.
    if rows > 0 {
        let mut body = multipart_head(
            r#"{"subscriber_id": "Patient ID", "data": {"name": "Name", "id": "Patient ID"}}"#,
        );
        body.extend_from_slice(&testkit::bench::csv(rows));
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let mib = body.len() as f64 / 1_048_576.0;
        let started = Instant::now();
        let (id, upload_took) = upload(&app, &base, reqwest::Body::from(body)).await;
        let url = format!("{base}/api/v1/services/notifications/bulk/{id}");
        let parsed = poll(&app, &url, |j| {
            j["status"] != "queued" && j["status"] != "parsing"
        })
        .await;
        let parse_took = started.elapsed();
        let started_at =
            chrono::Utc::now() - chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        assert_eq!(parsed["rows_valid"], rows as i64, "{parsed}");
        let stamp = |k: &str| {
            parsed[k]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        if let (Some(created), Some(checked)) = (stamp("created_at"), stamp("checked_at")) {
            let secs = (checked - created).as_seconds_f64();
            println!(
                "csv file check:        {:>8.0} rows/s ({:.0} MiB/s; upload stored → whole file checked, pickup included, {secs:.1} s)",
                rows as f64 / secs,
                mib / secs
            );
            figures.push(("csv_check_rows_per_s", rows as f64 / secs));
        }
        println!(
            "csv upload:            {:>8.1} MiB/s ({mib:.0} MiB in {:.2} s)",
            mib / upload_took.as_secs_f64(),
            upload_took.as_secs_f64()
        );
        println!(
            "csv ingest:            {:>8.0} rows/s (upload start → every row checked, parsed and committed, with sending running beside it, {:.1} s)",
            rows as f64 / parse_took.as_secs_f64(),
            parse_took.as_secs_f64()
        );
        figures.push((
            "csv_ingest_rows_per_s",
            rows as f64 / parse_took.as_secs_f64(),
        ));
        let done = poll(&app, &url, |j| j["status"] == "completed").await;
        let took = started.elapsed();
        assert_eq!(done["counts"]["sent"], rows as i64);
        let (p50, p99) = sent_latency(
            &app,
            &format!("'{}'::timestamptz", started_at.to_rfc3339()),
            &format!("n.bulk_job_id = '{id}'"),
        )
        .await;
        println!(
            "csv in-app end to end: {:>8.0} delivered/s ({:.1} s upload start → completed)   upload start → sent p50 {p50:.1} s, p99 {p99:.1} s",
            rows as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        );
        figures.push(("csv_inapp_per_s", rows as f64 / took.as_secs_f64()));
    }

    // 3. SMS through the HTTP provider.
    if http > 0 {
        let (id, _, _, first) = send_batch(
            &app,
            &base,
            json!({"template": "results", "channels": ["sms"]}),
            http,
            concurrency,
            |i| json!({"phone": format!("+1415555{:04}", i % 10_000), "data": {"name": format!("P{i}")}}),
        )
        .await;
        let url = format!("{base}/api/v1/services/notifications/batches/{id}");
        let done = poll(&app, &url, |b| b["status"] == "completed").await;
        let took = first.elapsed();
        assert_eq!(done["counts"]["sent"], http as i64, "{done}");
        let (p50, p99) = sent_latency(
            &app,
            "(select c.created_at from batch_chunks c where c.batch_id = n.batch_id and c.seq = n.batch_seq)",
            &format!("n.batch_id = '{id}'"),
        )
        .await;
        println!(
            "batch sms via http provider: {:>8.0} delivered/s ({http} in {:.1} s)   chunk accepted → sent p50 {p50:.1} s, p99 {p99:.1} s",
            http as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        );
        figures.push(("sms_batch_per_s", http as f64 / took.as_secs_f64()));
    }
    let api_before_big = testkit::bench::peak_rss_mib(api_pid);

    // 4. A big CSV streamed to the api.
    if big_mb > 0 {
        let target = big_mb as u64 * 1_048_576;
        let head = multipart_head(
            r#"{"subscriber_id": "Patient ID", "data": {"name": "Name", "id": "Patient ID"}}"#,
        );
        let line =
            "big-patient-0000000000,Some Name,\"Northside Family Practice and Clinic, suite 12\"\n";
        let block: String = std::iter::once("Patient ID,Name,Clinic\n".to_owned())
            .chain((0..10_000).map(|_| line.to_owned()))
            .collect();
        let blocks = target / block.len() as u64;
        let stream = futures::stream::iter(
            std::iter::once(head)
                .chain((0..blocks).map(move |i| {
                    // The header only once.
                    let b = if i == 0 {
                        block.clone()
                    } else {
                        block.replacen("Patient ID,Name,Clinic\n", "", 1)
                    };
                    b.into_bytes()
                }))
                .chain(std::iter::once(
                    format!("\r\n--{BOUNDARY}--\r\n").into_bytes(),
                )),
        )
        .map(Ok::<_, std::io::Error>);
        // The api's resident set, sampled while the file streams in.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let mut peak = testkit::bench::rss_mib(api_pid);
            loop {
                tokio::select! {
                    _ = &mut stopped => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        peak = peak.max(testkit::bench::rss_mib(api_pid));
                    }
                }
            }
        });
        let (id, took) = upload(&app, &base, reqwest::Body::wrap_stream(stream)).await;
        let _ = stop.send(());
        let streaming_peak = sampler.await.unwrap_or(f64::NAN);
        println!(
            "big csv upload:        {:>8.1} MiB/s ({big_mb} MiB in {:.1} s)   api RSS while it streamed: peak {streaming_peak:.0} MiB; api peak RSS over the run {:.0} MiB (before {:.0} MiB)",
            big_mb as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
            testkit::bench::peak_rss_mib(api_pid),
            api_before_big
        );
        figures.push(("api_rss_mb_csv", streaming_peak));
        let resp = app
            .client
            .post(format!(
                "{base}/api/v1/services/notifications/bulk/{id}/cancel"
            ))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    println!(
        "peak RSS: api {:.0} MiB, worker {:.0} MiB",
        testkit::bench::peak_rss_mib(api_pid),
        testkit::bench::peak_rss_mib(worker_pid)
    );
    figures.push(("worker_rss_mb", testkit::bench::peak_rss_mib(worker_pid)));
    testkit::bench::figure(&figures);
    let _ = kids.worker.kill().await;
    let _ = kids.api.kill().await;
    app.shutdown().await;
}
