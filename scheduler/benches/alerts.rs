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
use serde_json::{Map, Value};
use shared::{
    alerts::{ChannelSpec, Evaluator, Level, Metric, Report},
    config::JobsConfig,
    fleet::{self, WorkerBeat},
    jobs::Queues,
    throughput::BUCKETS,
};
use sqlx::{Connection, PgConnection, PgPool};
use testkit::bench::{env_num, figure, machine, run};
use uuid::Uuid;

/// Rules per organisation.
const RULES_PER_ORG: usize = 10;
/// Every this many organisations, one is in trouble.
const TROUBLED_EVERY: usize = 10;
/// Due emails of a troubled organisation (an hour old) and of a healthy one.
const DUE: (i64, i64) = (400, 5);
/// Sends that failed for good within the hour: troubled, healthy.
const FAILED: (i64, i64) = (50, 2);

/// One rule to store.
struct NewRule {
    id: Uuid,
    tenant: Option<Uuid>,
    name: String,
    metric: Metric,
    scope: Value,
    threshold: f64,
    window_secs: i32,
    severity: &'static str,
    escalation: Value,
}

fn scope(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// Scope, threshold and window of an organisation's rule. `narrow`: to the
/// channel or queue a troubled organisation's trouble is on.
fn org_rule(metric: Metric, narrow: bool, troubled: bool) -> (Value, f64, i32) {
    let on = |key: &'static str, value: &str| -> Vec<(&'static str, Value)> {
        if narrow {
            vec![(key, Value::from(value))]
        } else {
            Vec::new()
        }
    };
    match metric {
        Metric::FailureRate => {
            let mut s = on("channel", "sms");
            s.push(("min_events", Value::from(20)));
            (scope(&s), 25.0, 900)
        }
        Metric::QueueOldestDueAge => (scope(&on("queue", "email")), 900.0, 300),
        Metric::QueueDepth => (scope(&on("queue", "email")), 200.0, 300),
        Metric::LatencyP99 => (
            scope(&on("channel", "push")),
            10_000.0,
            if narrow { 3_600 } else { 900 },
        ),
        Metric::CircuitOpen => (scope(&on("channel", "sms")), 1.0, 60),
        // The fleet is the same for everyone: a troubled organisation wants
        // three SMS workers where two run; the others want one.
        Metric::NoWorkerAlive if troubled => (scope(&[("queue", Value::from("sms"))]), 3.0, 60),
        Metric::NoWorkerAlive => (scope(&on("queue", "email")), 1.0, 60),
        Metric::BaaExpiring => (scope(&[]), 30.0, 86_400),
        Metric::FailedWork => (scope(&[]), 20.0, 3_600),
    }
}

/// Thresholds of the platform-wide rules: above anything seeded.
fn platform_rule(metric: Metric) -> (f64, i32) {
    match metric {
        Metric::FailureRate => (90.0, 900),
        Metric::QueueOldestDueAge => (86_400.0, 300),
        Metric::QueueDepth | Metric::FailedWork => (1e9, 3_600),
        Metric::LatencyP99 => (3_600_000.0, 900),
        Metric::CircuitOpen => (1_000.0, 60),
        Metric::NoWorkerAlive => (1.0, 60),
        Metric::BaaExpiring => (0.0, 86_400),
    }
}

/// Admins in-app and by email at once; every third rule also posts to
/// Slack and pages after 15 minutes unacknowledged.
fn escalation(i: usize) -> Value {
    let mut levels = vec![Level {
        after_minutes: 0,
        channels: vec![ChannelSpec::InApp, ChannelSpec::Email],
    }];
    if i.is_multiple_of(3) {
        levels[0].channels.push(ChannelSpec::Slack {
            url: format!("https://hooks.slack.example.com/services/T0/B{i}/x"),
        });
        levels.push(Level {
            after_minutes: 15,
            channels: vec![ChannelSpec::Pagerduty {
                routing_key: "R0UT1NGKEY0123456789abcdefABCDEF".to_owned(),
            }],
        });
    }
    serde_json::to_value(levels).expect("levels serialise")
}

/// The rules, and how many of them are seeded to break.
fn rules(total: usize, orgs: &[Uuid]) -> (Vec<NewRule>, usize) {
    let platform = if total >= 8 * Metric::ALL.len() {
        Metric::ALL.len()
    } else {
        0
    };
    let mut out = Vec::with_capacity(total);
    let mut breached = 0;
    for (i, metric) in Metric::ALL.into_iter().enumerate().take(platform) {
        let (threshold, window_secs) = platform_rule(metric);
        out.push(NewRule {
            id: Uuid::now_v7(),
            tenant: None,
            name: format!("Platform {}", metric.as_str()),
            metric,
            scope: scope(&[]),
            threshold,
            window_secs,
            severity: "critical",
            escalation: escalation(i),
        });
    }
    for j in 0..total - platform {
        let org = j % orgs.len();
        let slot = j / orgs.len();
        let troubled = org.is_multiple_of(TROUBLED_EVERY);
        let metric = Metric::ALL[slot % Metric::ALL.len()];
        let (scope, threshold, window_secs) = org_rule(metric, slot % 2 == 1, troubled);
        breached += usize::from(troubled);
        out.push(NewRule {
            id: Uuid::now_v7(),
            tenant: Some(orgs[org]),
            name: format!("{} {slot}", metric.as_str()),
            metric,
            scope,
            threshold,
            window_secs,
            severity: ["info", "warning", "critical"][j % 3],
            escalation: escalation(j),
        });
    }
    (out, breached)
}

async fn exec(pool: &PgPool, what: &str, sql: &str, orgs: &[Uuid], troubled: &[Uuid]) -> u64 {
    sqlx::query(sql)
        .bind(orgs)
        .bind(troubled)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .rows_affected()
}

/// Every organisation, with whether it is in trouble (`$1`, `$2`).
const ORGS: &str = "(select t, t = any($2::uuid[]) as troubled from unnest($1::uuid[]) as t) o";

/// Seeds everything but the rules; returns the rollup rows and notifications.
async fn seed(
    pool: &PgPool,
    orgs: &[Uuid],
    troubled: &[Uuid],
    minutes: i64,
    sent: i64,
) -> (u64, u64) {
    exec(
        pool,
        "organisations",
        &format!(
            "insert into tenants (id, name, type)
             select t, 'Clinic ' || left(t::text, 8), 'clinic' from {ORGS}"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "agreements",
        &format!(
            "with b as (
                 insert into baa_agreements (id, tenant_id, signed_on, expires_on, document_url, signed_by)
                 select gen_random_uuid(), t, current_date - 355,
                        current_date + case when troubled then 10 else 300 end,
                        'https://documents.example.com/baa/' || t, 'Compliance officer'
                 from {ORGS}
                 returning id, tenant_id)
             update tenants set current_baa_id = b.id from b where tenants.id = b.tenant_id"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "admins",
        &format!(
            "with u as (
                 insert into users (id, tenant_id, email, first_name, last_name, role, created_by)
                 select gen_random_uuid(), t, 'admin-' || t || '@clinic.example.com', 'Clinic',
                        'Admin', 'ADMIN', 'bench'
                 from {ORGS}
                 returning id, tenant_id, email)
             insert into subscribers (id, tenant_id, external_id, email)
             select gen_random_uuid(), tenant_id, id::text, email from u"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "staff",
        &format!(
            "insert into users (id, tenant_id, email, role, created_by)
             select gen_random_uuid(), t, 'staff-' || i || '-' || t || '@clinic.example.com',
                    (array['DOCTOR', 'MEDICAL_STAFF', 'OFFICE_ADMIN'])[i], 'bench'
             from {ORGS}, generate_series(1, 3) as i"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "provider configs",
        &format!(
            "insert into provider_configs (id, tenant_id, channel, provider, name, priority)
             select gen_random_uuid(), t, c, p, c || ' provider', 0
             from {ORGS}, (values ('email', 'smtp'), ('sms', 'twilio'), ('push', 'fcm')) as v(c, p)"
        ),
        orgs,
        troubled,
    )
    .await;
    // Latencies of a healthy minute (p99 about 200 ms) and of a slow one
    // (every send between 30 s and a minute).
    let mut healthy = vec![0_i64; BUCKETS];
    healthy[5] = 10;
    healthy[6] = 20;
    healthy[7] = 10;
    let mut slow = vec![0_i64; BUCKETS];
    slow[14] = 40;
    let rollup = sqlx::query(&format!(
        "insert into queue_minutes (queue, minute, tenant_id, sent, failed, retried, duration_ms, latency_ms)
         select q, date_trunc('minute', now()) - make_interval(mins => m), t,
                case when q = 'sms' and troubled then 20 else 40 end,
                case when q = 'sms' and troubled then 20 when m % 10 = 0 then 1 else 0 end,
                case when m % 7 = 0 then 1 else 0 end,
                $3::int8[], case when q = 'push' and troubled then $4::int8[] else $3::int8[] end
         from {ORGS},
              unnest(array['email', 'sms', 'push', 'whatsapp', 'inapp', 'webhook']) as q,
              generate_series(0, $5 - 1) as m"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(&healthy)
    .bind(&slow)
    .bind(minutes)
    .execute(pool)
    .await
    .expect("rollups")
    .rows_affected();
    let mut notifications = sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, dispatched_at, sent_at, created_at)
         select gen_random_uuid(), t, (array['email', 'sms', 'push', 'whatsapp'])[1 + i % 4],
                'patient-' || i || '@example.com', '{{\"subject\": \"Your appointment\"}}'::jsonb,
                'sent', 1, 5, at, at, at + interval '2 seconds', at
         from {ORGS}, generate_series(1, $3) as i,
              lateral (select now() - make_interval(secs => (i * 10800.0 / $3)::float8)) as a(at)"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(sent)
    .execute(pool)
    .await
    .expect("sent notifications")
    .rows_affected();
    // Failed for good: the insert trigger stamps `failed_at` (now) and the
    // error class.
    notifications += sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, last_error, created_at)
         select gen_random_uuid(), t, 'email', 'patient-' || i || '@example.com', '{{}}'::jsonb,
                'failed', 5, 5, now() - interval '10 minutes',
                'the receiving mail server bounced the message', now() - interval '20 minutes'
         from {ORGS}, generate_series(1, case when troubled then $3 else $4 end) as i"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(FAILED.0)
    .bind(FAILED.1)
    .execute(pool)
    .await
    .expect("failed notifications")
    .rows_affected();
    // Due (an hour old in trouble, a minute otherwise) and scheduled for
    // tomorrow.
    notifications += sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, created_at)
         select gen_random_uuid(), t, 'email', 'patient-' || i || '@example.com', '{{}}'::jsonb,
                'queued', 0, 5, at, now() - interval '1 hour'
         from {ORGS}, generate_series(1, case when troubled then $3 else $4 end + 20) as i,
              lateral (select case when i > case when troubled then $3 else $4 end
                                   then now() + interval '1 day'
                                   when troubled then now() - interval '1 hour'
                                   else now() - interval '1 minute' end) as a(at)"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(DUE.0)
    .bind(DUE.1)
    .execute(pool)
    .await
    .expect("due notifications")
    .rows_affected();
    // Every organisation's default rules were made (the seeded ones stand
    // in for them), so the evaluator adds none.
    exec(
        pool,
        "defaults",
        &format!("insert into alert_rule_defaults (tenant_id) select t from {ORGS}"),
        orgs,
        troubled,
    )
    .await;
    (rollup, notifications)
}

async fn insert_rules(pool: &PgPool, rules: &[NewRule]) {
    for chunk in rules.chunks(5_000) {
        sqlx::query(
            "insert into alert_rules (id, tenant_id, name, metric, scope, threshold, window_secs,
                 severity, cooldown_secs, escalation, created_by)
             select id, tenant_id, name, metric, scope::jsonb, threshold, window_secs, severity,
                    900, escalation::jsonb, 'bench'
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::float8[], $7::int4[], $8::text[], $9::text[])
                  as r(id, tenant_id, name, metric, scope, threshold, window_secs, severity,
                       escalation)",
        )
        .bind(chunk.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.tenant).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|r| r.scope.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|r| r.threshold).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.window_secs).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.severity).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|r| r.escalation.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await
        .expect("rules");
    }
}

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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
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
        let pool = shared::db::connect_url(&db.url, 4).await.expect("postgres");
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
            .execute(&pool)
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
