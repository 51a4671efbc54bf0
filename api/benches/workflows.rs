//! The workflow runner at `BENCH_WORKFLOW_RUNS` concurrent runs (default
//! 10,000) of one workflow:
//!
//! `first` send (in-app) → `pause` delay 1 h → `second` send (in-app) →
//! `wait-read` wait for `second` to be read, timeout 1 h → `read` branch
//! (met: end) → `reminder` send (in-app).
//!
//! The members are seeded straight into Postgres (subscribers and topics of
//! at most 10,000 members, with set-based SQL) and the runs are started
//! through the real API, one trigger per topic. No scheduler runs: the
//! bench drives [`Runner::advance`] in-process with an injected `now`,
//! calling it until it moves nothing, in three rounds: at the trigger
//! (`first`, and `pause` parks), past the delay (`pause` ends, `second`,
//! `wait-read` parks), then half of the `second` notifications are marked
//! read and `now` moves past the wait's deadline (the read half ends at the
//! branch, the other half times out and sends `reminder`). Nothing is
//! delivered: no worker runs, so this is the runner's own cost.
//!
//! Reports steps executed per second of `advance` (steps are the rows of
//! `workflow_run_steps`), wall time per step, Postgres statement time per
//! step from `pg_stat_statements` deltas of the bench's database (with the
//! costliest statements) when the extension can be loaded, and p50/p99 of
//! one `advance` call that moved runs (each moves at most 500).
//!
//! Run with `cargo bench -p api --bench workflows` against the local
//! Postgres.

use std::{collections::HashMap, time::Instant};

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use scheduler::workflows::Runner;
use serde_json::{Value, json};
use testkit::{
    TestApp,
    bench::{env_num, figure, load_average, machine, run, seed_members},
};

/// Most members a trigger to a topic starts runs for.
const TOPIC_RUNS: usize = 10_000;

async fn post(app: &TestApp, path: &str, method: reqwest::Method, body: Value) -> Value {
    let resp = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Per statement of the bench's database: its id → (text, calls, total execution ms).
type Statements = HashMap<i64, (String, i64, f64)>;

async fn statements(app: &TestApp) -> Option<Statements> {
    let rows: Vec<(i64, String, i64, f64)> = sqlx::query_as(
        "select queryid, query, calls, total_exec_time from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())
           and queryid is not null",
    )
    .fetch_all(&app.pool)
    .await
    .ok()?;
    Some(
        rows.into_iter()
            .map(|(id, q, c, t)| (id, (q, c, t)))
            .collect(),
    )
}

/// What ran between two snapshots: (query, calls, ms), costliest first.
fn delta(before: &Statements, after: &Statements) -> Vec<(String, i64, f64)> {
    let mut d: Vec<(String, i64, f64)> = after
        .iter()
        .map(|(id, (q, c, t))| {
            let (c0, t0) = before.get(id).map_or((0, 0.0), |(_, c, t)| (*c, *t));
            (q.clone(), c - c0, t - t0)
        })
        .filter(|(_, c, _)| *c > 0)
        .collect();
    d.sort_by(|a, b| b.2.total_cmp(&a.2));
    d
}

async fn step_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from workflow_run_steps")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Calls `advance(now)` until it moves nothing; answers (runs moved,
/// wall seconds), recording each call that moved runs in `calls`.
async fn drain(runner: &Runner, now: DateTime<Utc>, calls: &mut Histogram<u64>) -> (usize, f64) {
    let started = Instant::now();
    let mut moved = 0;
    loop {
        let t = Instant::now();
        let n = runner.advance(now).await.expect("advance");
        if n == 0 {
            break;
        }
        calls.record(t.elapsed().as_micros() as u64).unwrap();
        moved += n;
    }
    (moved, started.elapsed().as_secs_f64())
}

fn main() {
    run(async {
        let runs = env_num("BENCH_WORKFLOW_RUNS", 10_000);
        println!(
            "workflows benchmark on {}: {runs} concurrent runs of send → delay 1h → send → \
             wait_for read 1h → branch → send; load average {}",
            machine(),
            load_average()
        );
        let app = TestApp::builder()
            .without_worker()
            .without_scheduler()
            .spawn()
            .await;
        let settings: Vec<(String, String)> = sqlx::query_as(
            "select name, setting from pg_settings
             where name in ('autovacuum', 'shared_buffers', 'synchronous_commit', 'fsync',
                            'max_wal_size', 'server_version')
             order by name",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let line: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("postgres: {}", line.join(" "));

        post(
            &app,
            "/api/v1/admin/templates",
            reqwest::Method::POST,
            json!({
                "key": "care.note", "name": "Care note", "category": "care",
                "default_locale": "en", "default_channels": ["inapp"],
                "locales": {"en": {"inapp": {"title": "A note about {{topic}}", "action_url": "/care"}}}
            }),
        )
        .await;
        post(
            &app,
            "/api/v1/services/workflows/follow-up",
            reqwest::Method::PUT,
            json!({"name": "Follow-up", "steps": [
                {"key": "first", "type": "send", "template": "care.note", "channels": ["inapp"]},
                {"key": "pause", "type": "delay", "duration_secs": 3600},
                {"key": "second", "type": "send", "template": "care.note", "channels": ["inapp"]},
                {"key": "wait-read", "type": "wait_for", "step": "second", "status": "read", "timeout_secs": 3600},
                {"key": "read", "type": "branch", "if": {"step": "wait-read", "outcome": "met"}, "then": "end"},
                {"key": "reminder", "type": "send", "template": "care.note", "channels": ["inapp"]}
            ]}),
        )
        .await;

        // The members: topics of at most 10,000, seeded with set-based SQL.
        let seeding = Instant::now();
        seed_members(&app.pool, app.tenant_id, runs).await;
        let topics = runs.div_ceil(TOPIC_RUNS);
        for t in 0..topics {
            let key = format!("cohort-{t}");
            post(
                &app,
                "/api/v1/services/topics",
                reqwest::Method::POST,
                json!({"key": key, "name": format!("Cohort {t}")}),
            )
            .await;
            sqlx::query(
                "insert into topic_members (topic_id, subscriber_id, tenant_id)
                 select t.id, s.id, s.tenant_id
                 from topics t, subscribers s
                 where t.tenant_id = $1 and t.key = $2 and s.tenant_id = $1
                   and s.external_id in (select 'member-' || i from generate_series($3, $4) as i)",
            )
            .bind(app.tenant_id)
            .bind(&key)
            .bind((t * TOPIC_RUNS + 1) as i64)
            .bind(((t + 1) * TOPIC_RUNS).min(runs) as i64)
            .execute(&app.pool)
            .await
            .expect("the membership");
        }
        sqlx::query("analyze subscribers, topic_members")
            .execute(&mut app.owner().await)
            .await
            .unwrap();
        let seeded = seeding.elapsed().as_secs_f64();

        let triggering = Instant::now();
        let mut started = 0;
        for t in 0..topics {
            let answer = post(
                &app,
                "/api/v1/services/workflows/follow-up/trigger",
                reqwest::Method::POST,
                json!({"topic": format!("cohort-{t}"), "payload": {"topic": "your visit"}}),
            )
            .await;
            started += answer["run_ids"].as_array().map_or(0, Vec::len);
        }
        let triggered = triggering.elapsed().as_secs_f64();
        assert_eq!(started, runs, "one run per member");
        println!(
            "seeded {runs} subscribers in {topics} topic(s) in {seeded:.1} s; triggered {runs} runs \
             through the API in {triggered:.2} s ({:.0} runs/s)",
            runs as f64 / triggered
        );
        sqlx::query("analyze workflow_runs")
            .execute(&mut app.owner().await)
            .await
            .unwrap();

        let pgss = sqlx::query("create extension if not exists pg_stat_statements")
            .execute(&mut app.owner().await)
            .await
            .is_ok()
            && statements(&app).await.is_some();
        if !pgss {
            println!(
                "pg_stat_statements is not loaded on this server (shared_preload_libraries): \
                 no Postgres statement time per step"
            );
        }
        let before = if pgss { statements(&app).await } else { None };

        let runner = Runner::new(app.pool.clone(), app.settings.jobs.clone());
        let mut calls = Histogram::<u64>::new(3).unwrap();
        let t0 = Utc::now();
        let rounds = [
            ("at the trigger: first, pause parks", t0),
            (
                "past the delay: pause ends, second, wait-read parks",
                t0 + TimeDelta::seconds(3_601),
            ),
            (
                "past the wait: half read end at the branch, half time out and send reminder",
                t0 + TimeDelta::seconds(7_203),
            ),
        ];
        let (mut wall, mut steps, mut moved_all) = (0.0, 0i64, 0usize);
        for (i, (what, now)) in rounds.iter().enumerate() {
            if i == 2 {
                // Half of the runs' `second` notifications read, before the deadline.
                let read = sqlx::query(
                    "update notifications set read_at = $1
                     where id in (select unnest(wait_notifications) from
                                    (select wait_notifications from workflow_runs
                                     where status = 'waiting' and wait_notifications is not null
                                     order by id limit $2) r)",
                )
                .bind(t0 + TimeDelta::seconds(3_700))
                .bind((runs / 2) as i64)
                .execute(&app.pool)
                .await
                .unwrap()
                .rows_affected();
                println!("  marked {read} `second` notifications read");
            }
            let rows = step_rows(&app).await;
            let (moved, took) = drain(&runner, *now, &mut calls).await;
            let executed = step_rows(&app).await - rows;
            println!(
                "  round {} ({what}): {moved} runs moved, {executed} steps in {took:.2} s \
                 ({:.0} steps/s)",
                i + 1,
                executed as f64 / took
            );
            wall += took;
            steps += executed;
            moved_all += moved;
        }
        let after = if pgss { statements(&app).await } else { None };

        let finished: Vec<(String, i64)> = sqlx::query_as(
            "select status, count(*) from workflow_runs group by status order by status",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let notifications: i64 = sqlx::query_scalar("select count(*) from notifications")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        println!("runs: {finished:?}; notifications created: {notifications}");
        assert_eq!(
            finished,
            vec![("completed".to_owned(), runs as i64)],
            "every run completed"
        );
        let outcomes: Vec<(String, String, i64)> = sqlx::query_as(
            "select step_key, outcome, count(*) from workflow_run_steps
             where step_key in ('wait-read', 'read') group by 1, 2 order by 1, 2",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        println!("outcomes: {outcomes:?}");

        let per_s = steps as f64 / wall;
        let wall_us = wall * 1e6 / steps as f64;
        let ms = |q: f64| calls.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "runner: {per_s:>8.0} steps/s ({steps} steps, {moved_all} runs moved, {wall:.1} s of advance)   \
             wall per step {wall_us:.0} µs   one advance call (up to 500 runs) p50 {:.1} ms, p99 {:.1} ms \
             over {} calls",
            ms(0.5),
            ms(0.99),
            calls.len()
        );
        let mut figures = vec![
            ("workflow_steps_per_s", per_s),
            ("workflow_wall_us_per_step", wall_us),
            ("workflow_advance_p50_ms", ms(0.5)),
            ("workflow_advance_p99_ms", ms(0.99)),
        ];
        if let (Some(before), Some(after)) = (before, after) {
            let d = delta(&before, &after);
            let pg_ms: f64 = d.iter().map(|(_, _, t)| t).sum();
            let pg_calls: i64 = d.iter().map(|(_, c, _)| c).sum();
            println!(
                "postgres statement time per step: {:.0} µs ({:.1} s over {pg_calls} statements, \
                 {:.1} statements per step; pg_stat_statements, this database)",
                pg_ms * 1e3 / steps as f64,
                pg_ms / 1e3,
                pg_calls as f64 / steps as f64
            );
            for (q, c, t) in d.iter().take(6) {
                let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
                println!(
                    "  {:>8.1} ms {c:>7} calls {:>6.0} µs/call  {}",
                    t,
                    t * 1e3 / *c as f64,
                    q.chars().take(110).collect::<String>()
                );
            }
            figures.push(("workflow_pg_us_per_step", pg_ms * 1e3 / steps as f64));
        }
        println!("load average {}", load_average());
        figure(&figures);
        app.shutdown().await;
    });
}
