//! What one evaluation of the alert rules costs: the pass the scheduler runs
//! every `ALERTS_EVALUATE_SECS` ([`Evaluator::evaluate`]), in-process, with
//! `BENCH_ALERT_RULES` rules (default 1,000) enabled.
//!
//! The rules cover every metric the platform has. Eight are platform-wide
//! (one per metric, thresholds no seeded organisation reaches); the rest
//! are spread over `BENCH_ALERT_RULES / 10` organisations, ten each, cycling
//! through the metrics, half of them narrowed to a channel or queue. Every
//! organisation has an admin (with an email address, so an opened alert
//! queues an in-app and an email notice), three provider configs, a BAA,
//! `BENCH_ALERT_MINUTES` (default 180) of per-minute rollups on six queues
//! (`queue_minutes`), `BENCH_ALERT_SENT` (default 500) sent notifications,
//! a few failed ones, a few due and some scheduled for tomorrow. Two
//! workers serving every queue beat in Redis.
//!
//! Every tenth organisation is in trouble: half its SMS sends fail, its push
//! p99 latency is a minute, 400 emails have waited an hour, 50 sends failed
//! for good, its SMS provider's circuit is open, its BAA expires in 10 days,
//! and it wants three live SMS workers. Each of its rules therefore breaks
//! on exactly one subject, and no other rule breaks: the bench asserts that
//! the first pass opens exactly that many alerts, that the passes after it
//! open and resolve none, and that a pass after the trouble clears resolves
//! every one of them.
//!
//! The clock is injected: pass `k` evaluates at the start plus `k` seconds
//! with a 1-second period, so every pass claims every rule again, as the
//! scheduler's next period does.
//!
//! Prints the opening pass, p50 and p99 of `BENCH_ALERT_PASSES` (default
//! 30) steady passes, their cost per rule, and, when `pg_stat_statements`
//! is loaded, the statements each pass ran and their execution time (deltas
//! of the bench database's rows, read from the `postgres` database).
//!
//! Run with `cargo bench -p scheduler --bench alerts` against the local
//! Postgres and Redis.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use secrecy::SecretString;
use shared::{
    alerts::{Evaluator, Metric, Report},
    config::JobsConfig,
    fleet::{self, WorkerBeat},
    jobs::Queues,
};
use sqlx::{Connection, PgConnection};
use testkit::bench::{env_num, figure, load_average, machine, run};
use uuid::Uuid;

#[path = "alerts/seed.rs"]
mod seed;

use seed::{RULES_PER_ORG, TROUBLED_EVERY, insert_rules, rules, seed};

/// Statements run and their execution time (ms) in database `db` so far,
/// from `pg_stat_statements`; `None` when it is not loaded.
async fn statements(conn: &mut PgConnection, db: &str) -> Option<(i64, f64)> {
    sqlx::query_as(
        "select coalesce(sum(calls), 0)::int8, coalesce(sum(total_exec_time), 0)::float8
         from pg_stat_statements where dbid = (select oid from pg_database where datname = $1)",
    )
    .bind(db)
    .fetch_one(conn)
    .await
    .ok()
}

/// One timed pass: wall time, what it did, statements and their time.
struct Pass {
    wall: Duration,
    report: Report,
    statements: Option<(i64, f64)>,
}

async fn pass(
    evaluator: &Evaluator,
    stats: &mut PgConnection,
    db: &str,
    now: DateTime<Utc>,
) -> Pass {
    let before = statements(stats, db).await;
    let started = Instant::now();
    let report = evaluator.evaluate(now).await.expect("an evaluation pass");
    let wall = started.elapsed();
    let after = statements(stats, db).await;
    Pass {
        wall,
        report,
        statements: before
            .zip(after)
            .map(|((c0, t0), (c1, t1))| (c1 - c0, t1 - t0)),
    }
}

/// A worker process serving every queue.
fn worker(n: u32, queues: &[String]) -> WorkerBeat {
    WorkerBeat {
        name: format!("worker-{n}"),
        host: "bench".to_owned(),
        pid: 1_000 + n,
        queues: queues.to_vec(),
        concurrency: queues.iter().map(|q| (q.clone(), 8)).collect(),
        in_flight: 0,
        started_at: Utc::now(),
        last_heartbeat: Utc::now(),
        version: "bench".to_owned(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn describe(p: &Pass) -> String {
    match p.statements {
        Some((calls, exec)) => format!("{calls} statements, {exec:.1} ms executing in Postgres"),
        None => "pg_stat_statements not loaded".to_owned(),
    }
}

fn main() {
    run(async {
        let total = env_num("BENCH_ALERT_RULES", 1_000).max(Metric::ALL.len());
        let passes = env_num("BENCH_ALERT_PASSES", 30).max(1);
        let minutes = env_num("BENCH_ALERT_MINUTES", 180).max(60) as i64;
        let sent = env_num("BENCH_ALERT_SENT", 500) as i64;
        let load_before = load_average();

        let db = testkit::db::TestDb::new().await;
        let pool =
            shared::db::connect_url(&db.url, 4, shared::db::scope::Fallback::Platform("bench"))
                .await
                .expect("postgres");
        let prefix = format!("bench{}", &Uuid::new_v4().simple().to_string()[..12]);
        let queues =
            Queues::new(&SecretString::from(testkit::redis_url()), &prefix).expect("redis");
        let jobs = JobsConfig::load(
            &testkit::repo_root().join("jobs.toml"),
            Vec::<(String, String)>::new(),
        )
        .expect("jobs.toml");

        let org_count = (total / RULES_PER_ORG).max(1);
        let orgs: Vec<Uuid> = (0..org_count).map(|_| Uuid::now_v7()).collect();
        let troubled: Vec<Uuid> = orgs.iter().step_by(TROUBLED_EVERY).copied().collect();
        let seeding = Instant::now();
        let (rollup, notifications) = seed(&pool, &orgs, &troubled, minutes, sent).await;
        let (rules, breached) = rules(total, &orgs);
        insert_rules(&pool, &rules).await;
        let platform = rules.iter().filter(|r| r.tenant.is_none()).count();

        // Two workers serve every queue (a third joins when the trouble
        // clears); the troubled organisations' SMS providers have their
        // circuits open.
        let mut redis = queues.connection();
        let queue_names: Vec<String> = jobs.queues.keys().cloned().collect();
        let hour = Duration::from_secs(3_600);
        for n in 0..2 {
            fleet::beat(&mut redis, &prefix, &worker(n, &queue_names), hour)
                .await
                .expect("heartbeat");
        }
        let open: Vec<Uuid> = sqlx::query_scalar(
            "select id from provider_configs where channel = 'sms' and tenant_id = any($1)",
        )
        .bind(&troubled)
        .fetch_all(&pool)
        .await
        .expect("sms configs");
        for id in &open {
            let _: () = redis::cmd("SET")
                .arg(fleet::provider_key(&prefix, *id, "open"))
                .arg("1")
                .arg("EX")
                .arg(3_600)
                .query_async(&mut redis)
                .await
                .expect("open circuit");
        }
        sqlx::query("analyze")
            .execute(&mut db.owner().await)
            .await
            .expect("analyze");
        let seeded_in = seeding.elapsed();
        let settings: Vec<(String, String)> = sqlx::query_as(
            "select name, setting from pg_settings
             where name in ('shared_buffers', 'autovacuum', 'server_version', 'shared_preload_libraries')
             order by name",
        )
        .fetch_all(&pool)
        .await
        .expect("settings");
        let mut stats =
            PgConnection::connect(&format!("{}/postgres", testkit::postgres_server_url()))
                .await
                .expect("postgres database");

        let evaluator = Evaluator::new(pool.clone(), queues.clone(), jobs, Duration::from_secs(1));
        let start = Utc::now();
        let at = |k: usize| start + TimeDelta::seconds(k as i64);

        // The first pass opens an alert for every rule in trouble.
        let opening = pass(&evaluator, &mut stats, &db.name, at(0)).await;
        assert_eq!(opening.report.rules, total, "every rule is evaluated");
        assert_eq!(
            (opening.report.opened, opening.report.resolved),
            (breached, 0),
            "the first pass opens one alert per rule seeded to break"
        );
        let open_now: i64 = sqlx::query_scalar("select count(*) from alerts where status = 'open'")
            .fetch_one(&pool)
            .await
            .expect("alerts");
        assert_eq!(open_now as usize, breached, "that many alerts are open");

        // Steady passes: the same alerts stay open.
        let mut wall = Histogram::<u64>::new(3).expect("histogram");
        let mut pg_calls = Histogram::<u64>::new(3).expect("histogram");
        let mut pg_exec = Histogram::<u64>::new(3).expect("histogram");
        let mut pg_loaded = true;
        for k in 1..=passes {
            let p = pass(&evaluator, &mut stats, &db.name, at(k)).await;
            assert_eq!(p.report.rules, total, "every rule is evaluated each period");
            assert_eq!(
                (p.report.opened, p.report.resolved),
                (0, 0),
                "nothing changes while the trouble lasts"
            );
            wall.record(p.wall.as_micros() as u64).expect("recorded");
            match p.statements {
                Some((calls, exec)) => {
                    pg_calls.record(calls.max(0) as u64).expect("recorded");
                    pg_exec
                        .record((exec.max(0.0) * 1_000.0) as u64)
                        .expect("recorded");
                }
                None => pg_loaded = false,
            }
        }

        // The trouble clears: sends succeed and are fast again, the queue
        // drains, an operator discards the failures, the circuits close,
        // the BAA is renewed and a third worker joins.
        for sql in [
            "update queue_minutes set failed = 0, latency_ms = duration_ms where tenant_id = any($1)",
            "update notifications set status = 'sent', sent_at = now()
             where tenant_id = any($1) and status = 'queued' and run_at <= now()",
            "update notifications set discarded_at = now()
             where tenant_id = any($1) and status = 'failed'",
            "update baa_agreements set expires_on = current_date + 365 where tenant_id = any($1)",
        ] {
            sqlx::query(sql)
                .bind(&troubled)
                .execute(&pool)
                .await
                .expect("the trouble clears");
        }
        for id in &open {
            let _: () = redis::cmd("DEL")
                .arg(fleet::provider_key(&prefix, *id, "open"))
                .query_async(&mut redis)
                .await
                .expect("close circuit");
        }
        fleet::beat(&mut redis, &prefix, &worker(2, &queue_names), hour)
            .await
            .expect("heartbeat");
        let resolving = pass(&evaluator, &mut stats, &db.name, at(passes + 1)).await;
        assert_eq!(
            (resolving.report.opened, resolving.report.resolved),
            (0, breached),
            "every alert resolves by itself once its trouble clears"
        );

        let p = |q: f64| wall.value_at_quantile(q) as f64 / 1_000.0;
        let per_rule_us = p(0.5) * 1_000.0 / total as f64;
        let (calls, exec_ms) = if pg_loaded {
            (
                pg_calls.value_at_quantile(0.5) as f64,
                pg_exec.value_at_quantile(0.5) as f64 / 1_000.0,
            )
        } else {
            (f64::NAN, f64::NAN)
        };
        println!(
            "alert evaluation, {total} rules ({platform} platform-wide, {} over {org_count} organisations, \
             every metric), {breached} seeded to break; {passes} steady passes; {}; \
             load average {load_before} before, {} after",
            total - platform,
            machine(),
            load_average()
        );
        println!(
            "  seeded in {:.0} s: {rollup} rollup rows, {notifications} notifications, {} open circuits; {settings:?}",
            seeded_in.as_secs_f64(),
            open.len()
        );
        println!(
            "  opening pass ({} opened)        {:>9.1} ms  {}",
            opening.report.opened,
            ms(opening.wall),
            describe(&opening)
        );
        println!(
            "  steady pass                      p50 {:>9.1} ms  p99 {:>9.1} ms  ({per_rule_us:.0} µs per rule)",
            p(0.5),
            p(0.99)
        );
        if pg_loaded {
            println!(
                "    per steady pass in Postgres: p50 {calls:.0} statements ({:.1} per rule), \
                 p50 {exec_ms:.1} ms executing",
                calls / total as f64
            );
        } else {
            println!("    pg_stat_statements is not loaded: no statement counts");
        }
        println!(
            "  resolving pass ({} resolved)    {:>9.1} ms  {}",
            resolving.report.resolved,
            ms(resolving.wall),
            describe(&resolving)
        );
        figure(&[
            ("alerts_rules", total as f64),
            ("alerts_pass_p50_ms", p(0.5)),
            ("alerts_pass_p99_ms", p(0.99)),
            ("alerts_us_per_rule", per_rule_us),
            ("alerts_pg_statements_per_pass", calls),
            ("alerts_pg_exec_ms_per_pass", exec_ms),
            ("alerts_open_pass_ms", ms(opening.wall)),
            ("alerts_resolve_pass_ms", ms(resolving.wall)),
            ("alerts_opened", opening.report.opened as f64),
            ("alerts_resolved", resolving.report.resolved as f64),
        ]);

        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut redis)
            .await
            .expect("keys");
        for chunk in keys.chunks(1_000) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut redis)
                .await
                .expect("del");
        }
        pool.close().await;
        db.drop_now().await;
    });
}
