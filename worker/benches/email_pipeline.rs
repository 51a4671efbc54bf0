//! Email pipeline benchmark: how fast the API accepts sends, how fast one
//! worker delivers them into a local SMTP sink, how long an idle worker
//! takes to pick a send up, and, in the same run, the sink's own ceiling:
//! as many raw SMTP connections as the worker pools, each sending one
//! prepared message over and over into a fresh sink; and what the tables'
//! row-level policies cost the accept path (rounds with them on and off).
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

/// SMTP connections the worker pools, and the ceiling's raw client opens.
const SMTP_CONNECTIONS: usize = 32;

/// Sends `n` copies of one prepared message into a fresh sink over
/// `connections` raw SMTP connections (`TCP_NODELAY`, as the worker's);
/// returns messages per second, from the first connect to the last
/// message received.
async fn sink_ceiling(n: usize, connections: usize) -> f64 {
    use lettre::transport::smtp::{client::AsyncSmtpConnection, extension::ClientId};
    let sink = testkit::smtp::SmtpServer::start().await;
    let message = lettre::Message::builder()
        .from("Care Team <care@clinic.example.org>".parse().unwrap())
        .to("pat@example.org".parse().unwrap())
        .subject("Your results are ready")
        .body("Log in to view them.".to_owned())
        .unwrap();
    let (envelope, body) = (message.envelope().clone(), message.formatted());
    let each = n.div_ceil(connections);
    let started = Instant::now();
    futures::future::join_all((0..connections).map(|_| {
        let (envelope, body, port) = (&envelope, &body, sink.port());
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("the sink accepts");
            tcp.set_nodelay(true).expect("TCP_NODELAY");
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::default())
                    .await
                    .expect("the sink greets");
            for _ in 0..each {
                conn.send(envelope, body).await.expect("the sink accepts");
            }
        }
    }))
    .await;
    sink.wait_for(each * connections, Duration::from_secs(600))
        .await;
    (each * connections) as f64 / started.elapsed().as_secs_f64()
}

/// Accept rates with and without the row-level policies.
struct RlsCost {
    with_per_s: f64,
    without_per_s: f64,
    with_p50_ms: f64,
    without_p50_ms: f64,
}

/// Turns the row-level policies of every walled table off or on.
async fn policies(app: &TestApp, tables: &[String], on: bool) {
    let mut owner = app.owner().await;
    let verb = if on { "enable" } else { "disable" };
    for t in tables {
        sqlx::query(&format!("alter table {t} {verb} row level security"))
            .execute(&mut owner)
            .await
            .unwrap();
    }
}

/// Four rounds of `n` sends each, policies on, off, on, off.
async fn rls_cost(
    app: &TestApp,
    body: &serde_json::Value,
    n: usize,
    concurrency: usize,
) -> RlsCost {
    let tables: Vec<String> = sqlx::query_scalar(
        "select quote_ident(c.relname) from pg_class c join pg_namespace s on s.oid = c.relnamespace
         where s.nspname = current_schema() and c.relkind = 'r' and c.relrowsecurity",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!tables.is_empty(), "the tables are walled");
    let mut took = [Duration::ZERO; 2];
    let mut latency = [
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    ];
    for round in 0..4 {
        let on = round % 2 == 0;
        policies(app, &tables, on).await;
        let started = Instant::now();
        let answers = app.send_many(n, concurrency, body).await;
        took[usize::from(!on)] += started.elapsed();
        assert!(
            answers.iter().all(|(s, _)| *s == 202),
            "every send is accepted"
        );
        for (_, l) in &answers {
            latency[usize::from(!on)]
                .record(l.as_micros() as u64)
                .unwrap();
        }
    }
    policies(app, &tables, true).await;
    let per_s = |t: Duration| (2 * n) as f64 / t.as_secs_f64();
    RlsCost {
        with_per_s: per_s(took[0]),
        without_per_s: per_s(took[1]),
        with_p50_ms: ms(&latency[0], 0.5),
        without_p50_ms: ms(&latency[1], 0.5),
    }
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
        .var("SMTP_POOL_MAX_SIZE", SMTP_CONNECTIONS)
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

    // The table was filled from empty: with autovacuum on (production) it
    // is analyzed within its naptime; without statistics the planner takes
    // the tenant for a sliver of the table and reads all of it per statement.
    let autovacuum: String = sqlx::query_scalar("select current_setting('autovacuum')")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    if autovacuum != "on" {
        sqlx::query("analyze notifications")
            .execute(&mut app.owner().await)
            .await
            .unwrap();
        println!("autovacuum is off on this server: notifications analyzed here, as it would have");
    }

    // 2. One worker drains them into the SMTP sink.
    // Timed from the first email at the sink to the last, so the figure is
    // the worker's delivery rate whatever the scale; its start (pools,
    // queue registrations, the first fetch) is reported on its own.
    let started = Instant::now();
    app.start_worker();
    app.smtp.wait_for(1, Duration::from_secs(60)).await;
    let boot = started.elapsed();
    let received = app.smtp.wait_for(sends, Duration::from_secs(600)).await;
    let first = received.iter().map(|m| m.at).min().expect("emails arrived");
    let last = received.iter().map(|m| m.at).max().expect("emails arrived");
    let took = last.duration_since(first);
    let emails = (sends - 1) as f64 / took.as_secs_f64();
    println!(
        "worker send:  {emails:>8.0} emails/s (one worker, {sends} emails in {:.2} s from the first to the last; {:.0} ms from its start to the first)",
        took.as_secs_f64(),
        boot.as_secs_f64() * 1000.0
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
    // 4. What row-level security costs the accept path: the same sends with
    // the tables' policies on and off (the pool's role and scope stay as
    // they are, so this is the policies' own cost), in alternating rounds so
    // the table's growth and the machine's other work fall on both alike.
    app.stop_worker().await;
    let rls = rls_cost(&app, &body, (sends / 4).max(1_000), concurrency).await;
    println!(
        "row-level security on the accept path: {:.0} sends/s with the policies, {:.0} without ({:+.1} %); p50 {:.2} / {:.2} ms",
        rls.with_per_s,
        rls.without_per_s,
        (rls.with_per_s / rls.without_per_s - 1.0) * 100.0,
        rls.with_p50_ms,
        rls.without_p50_ms,
    );

    // 5. The sink's ceiling: the worker's delivery rate is judged against it.
    let sink_limit = sink_ceiling(sends, SMTP_CONNECTIONS).await;
    println!(
        "sink limit:   {sink_limit:>8.0} emails/s ({SMTP_CONNECTIONS} raw SMTP connections, one prepared message each; the worker reached {:.2} of it)",
        emails / sink_limit
    );
    testkit::bench::figure(&[
        ("smtp_sink_limit_per_s", sink_limit),
        ("api_raw_per_s", raw),
        ("api_raw_p50_ms", ms(&accept, 0.5)),
        ("api_raw_p99_ms", ms(&accept, 0.99)),
        ("email_worker_per_s", emails),
        ("email_worker_start_ms", boot.as_secs_f64() * 1000.0),
        ("pickup_p50_ms", ms(&pickup, 0.5)),
        ("pickup_p99_ms", ms(&pickup, 0.99)),
        ("api_raw_rls_per_s", rls.with_per_s),
        ("api_raw_no_rls_per_s", rls.without_per_s),
        ("api_raw_rls_p50_ms", rls.with_p50_ms),
        ("api_raw_no_rls_p50_ms", rls.without_p50_ms),
    ]);
    app.shutdown().await;
}
