//! The rate limiter's overhead: how long one limit check (one `EVALSHA` of
//! the GCRA script against Redis) adds to a request, measured one check at a
//! time and with 32 in flight, as the edge runs them. Prints p50, p99 and
//! max of each, and checks per second with 32 in flight.
//!
//! Run with `cargo bench -p api --bench rate_limit` against the local
//! Redis; `BENCH_CHECKS` (default 20,000) checks of each kind.

use std::{sync::Arc, time::Instant};

use api::limits::{Caller, Class, Limiter};
use futures::StreamExt;
use hdrhistogram::Histogram;
use secrecy::SecretString;
use shared::config::{ClassLimit, RateLimitsConfig};
use testkit::bench::{env_num, figure, machine, run};

fn main() {
    run(async {
        let n = env_num("BENCH_CHECKS", 20_000);
        let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let queues = shared::jobs::Queues::new(&SecretString::from(testkit::redis_url()), &prefix)
            .expect("redis");
        // The checks never touch Postgres; the pool is never connected.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/unused")
            .expect("a lazy pool");
        let limiter = Arc::new(Limiter::new(
            queues.connection(),
            &prefix,
            RateLimitsConfig::default(),
            pool,
            Arc::new(api::auth::ApiKeyCache::new(std::time::Duration::ZERO, 1)),
            "tenant_id",
        ));
        // Huge, so every check is allowed and writes its key.
        let limit = ClassLimit {
            per_sec: 1_000_000.0,
            burst: 1_000_000,
        };
        let caller = |i: usize| Caller::Credential {
            hash: format!("{:032x}", i % 1_000),
            tenant: None,
        };
        // Loads the script into Redis's cache, as a replica's first request does.
        limiter
            .check(Class::Send, &caller(0), limit)
            .await
            .expect("redis answers");

        let mut serial = Histogram::<u64>::new(3).expect("histogram");
        for i in 0..n {
            let started = Instant::now();
            limiter
                .check(Class::Send, &caller(i), limit)
                .await
                .expect("redis answers");
            serial
                .record(started.elapsed().as_micros() as u64)
                .expect("recorded");
        }

        let started = Instant::now();
        let concurrent: Vec<u64> = futures::stream::iter(0..n)
            .map(|i| {
                let limiter = limiter.clone();
                async move {
                    let at = Instant::now();
                    limiter
                        .check(Class::Read, &caller(i), limit)
                        .await
                        .expect("redis answers");
                    at.elapsed().as_micros() as u64
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let mut loaded = Histogram::<u64>::new(3).expect("histogram");
        for us in concurrent {
            loaded.record(us).expect("recorded");
        }

        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        println!("rate limit check, {n} of each, {}", machine());
        println!(
            "  one at a time: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            ms(&serial, 0.5),
            ms(&serial, 0.99),
            serial.max() as f64 / 1_000.0
        );
        println!(
            "  32 in flight:  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  {:.0} checks/s",
            ms(&loaded, 0.5),
            ms(&loaded, 0.99),
            loaded.max() as f64 / 1_000.0,
            n as f64 / wall
        );
        figure(&[
            ("rate_limit_check_p50_ms", ms(&serial, 0.5)),
            ("rate_limit_check_p99_ms", ms(&serial, 0.99)),
            ("rate_limit_check_loaded_p50_ms", ms(&loaded, 0.5)),
            ("rate_limit_checks_per_sec", n as f64 / wall),
        ]);

        let mut conn = queues.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        for chunk in keys.chunks(1_000) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .expect("del");
        }
    });
}
