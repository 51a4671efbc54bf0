//! What the operators' queue overview costs Postgres at scale: a database
//! holding `BENCH_NOTIFICATIONS` notifications (default 1,000,000; 5% of
//! them still waiting: due, deferred, scheduled or in flight) and 7 days of
//! per-minute throughput for 5 organisations on the 6 delivery queues.
//!
//! Times each query the overview and its charts make, one at a time,
//! `BENCH_ROUNDS` times (default 50): the work waiting per queue (every
//! organisation, and one), the last hour's counts and histograms, a 7-day
//! chart, and the whole overview (what `GET /api/v1/ops/queues` computes at
//! most once a second per API instance). Prints p50 and p99 of each.
//!
//! Run with `cargo bench -p api --bench ops_overview` against the local
//! Postgres.

use std::time::Instant;

use chrono::{TimeDelta, Utc};
use hdrhistogram::Histogram;
use shared::{
    db::{
        queue_ops,
        scope::{self, Reach},
    },
    jobs::QueueName,
};
use testkit::bench::{env_num, figure, machine, run};

async fn time<F, Fut, T>(rounds: usize, mut f: F) -> Histogram<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..rounds {
        let started = Instant::now();
        f().await;
        h.record(started.elapsed().as_micros() as u64)
            .expect("recorded");
    }
    h
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

fn main() {
    run(async {
        let total = env_num("BENCH_NOTIFICATIONS", 1_000_000) as i64;
        let rounds = env_num("BENCH_ROUNDS", 50);
        let db = testkit::db::TestDb::new().await;
        let pool =
            shared::db::connect_url(&db.url, 4, shared::db::scope::Fallback::Platform("bench"))
                .await
                .expect("postgres");
        let mut tenants = Vec::new();
        for i in 0..5 {
            tenants.push(
                shared::db::tenants::create(&pool, &format!("Clinic {i}"))
                    .await
                    .expect("tenant")
                    .id,
            );
        }
        let seeding = Instant::now();
        // 95% finished, the rest waiting in the four ways the overview counts.
        sqlx::query(
            "insert into notifications
                 (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
                  run_at, dispatched_at, sent_at, created_at)
             select gen_random_uuid(), ($2::uuid[])[1 + i % 5],
                    (array['email', 'sms', 'push', 'whatsapp'])[1 + i % 4],
                    'someone@example.com', '{}'::jsonb,
                    case when i % 100 < 95 then 'sent'
                         when i % 100 = 95 then 'queued'
                         when i % 100 = 96 then 'deferred'
                         when i % 100 = 97 then 'sending'
                         else 'queued' end,
                    case when i % 100 = 96 then 1 else 0 end, 5,
                    case when i % 100 in (96, 98, 99) then now() + interval '1 hour'
                         else now() - interval '1 minute' end,
                    null,
                    case when i % 100 < 95 then now() - interval '1 minute' end,
                    now() - make_interval(secs => (i % 604800))
             from generate_series(1, $1) as i",
        )
        .bind(total)
        .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
        .execute(&pool)
        .await
        .expect("notifications");
        let histogram = format!("{{{}}}", vec!["3"; shared::throughput::BUCKETS].join(","));
        sqlx::query(&format!(
            "insert into queue_minutes (queue, minute, tenant_id, sent, failed, retried, duration_ms, latency_ms)
             select q, date_trunc('minute', now()) - make_interval(mins => m), t, 50, 1, 2,
                    '{histogram}'::int8[], '{histogram}'::int8[]
             from unnest(array['email', 'sms', 'push', 'whatsapp', 'inapp', 'webhook']) as q,
                  generate_series(0, 7 * 1440 - 1) as m,
                  unnest($1::uuid[]) as t"
        ))
        .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
        .execute(&pool)
        .await
        .expect("rollup");
        sqlx::query("analyze")
            .execute(&mut db.owner().await)
            .await
            .expect("analyze");
        let rollup: i64 = sqlx::query_scalar("select count(*) from queue_minutes")
            .fetch_one(&pool)
            .await
            .expect("count");
        let settings: Vec<(String, String)> = sqlx::query_as(
            "select name, setting from pg_settings where name in ('shared_buffers', 'autovacuum', 'server_version')",
        )
        .fetch_all(&pool)
        .await
        .expect("settings");

        let one = Reach::Tenant(tenants[0]);
        let all = Reach::Platform(scope::platform_wide().expect("a bench runs in platform scope"));
        let waiting_all = time(rounds, || queue_ops::waiting(&pool, all)).await;
        let waiting_one = time(rounds, || queue_ops::waiting(&pool, one)).await;
        let recent_all = time(rounds, || queue_ops::recent(&pool, all)).await;
        let week = time(rounds, || {
            queue_ops::history(
                &pool,
                all,
                QueueName::Email,
                Utc::now() - TimeDelta::days(7),
                3_600,
            )
        })
        .await;
        let whole = time(rounds, || async {
            queue_ops::pauses(&pool).await.expect("pauses");
            queue_ops::waiting(&pool, all).await.expect("waiting");
            queue_ops::recent(&pool, all).await.expect("recent");
        })
        .await;

        println!(
            "operators' overview, {total} notifications ({} waiting), {rollup} rollup rows, {rounds} rounds, {}; seeded in {:.0} s; {settings:?}",
            total / 20,
            machine(),
            seeding.elapsed().as_secs_f64()
        );
        for (what, h) in [
            ("work waiting, every organisation", &waiting_all),
            ("work waiting, one organisation", &waiting_one),
            ("last hour's counts and histograms", &recent_all),
            ("7-day chart of one queue", &week),
            ("whole overview", &whole),
        ] {
            println!(
                "  {what:<36} p50 {:>8.2} ms  p99 {:>8.2} ms",
                ms(h, 0.5),
                ms(h, 0.99)
            );
        }
        figure(&[
            ("ops_overview_p50_ms", ms(&whole, 0.5)),
            ("ops_overview_p99_ms", ms(&whole, 0.99)),
            ("ops_waiting_p50_ms", ms(&waiting_all, 0.5)),
            ("ops_recent_p50_ms", ms(&recent_all, 0.5)),
            ("ops_week_chart_p50_ms", ms(&week, 0.5)),
        ]);
        pool.close().await;
        db.drop_now().await;
    });
}
