//! Sign-in timing benchmark: whether `POST /api/v1/auth/login` takes longer
//! for an address that has an account than for one that does not.
//!
//! Both refusals are measured in the same run, interleaved one by one so
//! drift (other load, a warming cache) falls on both alike, by one client at
//! a time: a known address with a wrong password, and an unknown address.
//! A successful sign-in is measured too, for reference (it answers 200, so
//! its time tells nothing the answer does not). Prints each median and p90
//! and the difference of the refusals' medians.
//!
//! Run with `cargo bench -p api --bench login` against the local Postgres
//! and Redis; `BENCH_LOGINS` (default 200) sign-ins of each kind.
//!
//! Sign-in protection reads a clock a day further on at every reading, so
//! no failure counts toward a delay or a lock: each refusal does the full
//! work (the throttle read, the lookup, the password check, the failure
//! writes) and none is answered 429 early.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Instant,
};

use hdrhistogram::Histogram;
use serde_json::json;
use shared::db::users;
use testkit::TestApp;

const PASSWORD: &str = "Bench-Password-42";

/// A clock a day further on at each reading.
#[derive(Debug, Default)]
struct Days(AtomicI64);

impl api::signin::Clock for Days {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::days(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

fn main() {
    testkit::bench::run(run());
}

async fn login(app: &TestApp, email: &str, password: &str, status: u16) -> u64 {
    let t = Instant::now();
    let resp = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let got = resp.status().as_u16();
    resp.bytes().await.unwrap();
    let micros = t.elapsed().as_micros() as u64;
    assert_eq!(got, status, "sign-in of {email}");
    micros
}

fn report(name: &str, hist: &Histogram<u64>) -> f64 {
    let median = hist.value_at_quantile(0.5) as f64 / 1000.0;
    println!(
        "  {name:<28} median {median:>7.2} ms  p90 {:>7.2} ms  ({} sign-ins)",
        hist.value_at_quantile(0.9) as f64 / 1000.0,
        hist.len()
    );
    median
}

async fn run() {
    let n = testkit::bench::env_num("BENCH_LOGINS", 200);
    println!(
        "sign-in timing benchmark on {} ({n} sign-ins of each kind, one client)",
        testkit::bench::machine()
    );
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .signin_clock(Arc::new(Days::default()))
        .spawn()
        .await;
    let hash = api::access::hash_password(PASSWORD.to_owned())
        .await
        .unwrap();
    users::insert(
        &app.pool,
        users::NewUser {
            tenant_id: app.tenant_id,
            email: "known@bench.example",
            first_name: None,
            last_name: None,
            role: "DOCTOR",
            password_hash: Some(&hash),
            must_change_password: false,
            created_by: "bench",
        },
    )
    .await
    .unwrap();
    // Warm-up: connections, the first statement of each kind.
    for _ in 0..5 {
        login(&app, "known@bench.example", "Wrong-Password-42", 401).await;
        login(&app, "nobody@bench.example", "Wrong-Password-42", 401).await;
        login(&app, "known@bench.example", PASSWORD, 200).await;
    }
    let mut known = Histogram::<u64>::new(3).unwrap();
    let mut unknown = Histogram::<u64>::new(3).unwrap();
    let mut success = Histogram::<u64>::new(3).unwrap();
    for i in 0..n {
        // Alternate which goes first, so neither always follows the other.
        let (a, b) = if i % 2 == 0 {
            let a = login(&app, "known@bench.example", "Wrong-Password-42", 401).await;
            let b = login(&app, &format!("nobody{i}@bench.example"), PASSWORD, 401).await;
            (a, b)
        } else {
            let b = login(&app, &format!("nobody{i}@bench.example"), PASSWORD, 401).await;
            let a = login(&app, "known@bench.example", "Wrong-Password-42", 401).await;
            (a, b)
        };
        known.record(a).unwrap();
        unknown.record(b).unwrap();
        success
            .record(login(&app, "known@bench.example", PASSWORD, 200).await)
            .unwrap();
    }
    let k = report("known address, wrong password", &known);
    let u = report("unknown address", &unknown);
    report("known address, right password", &success);
    println!(
        "  refusals' medians differ by {:+.2} ms ({:+.1}%)",
        k - u,
        (k - u) / u * 100.0
    );
}
