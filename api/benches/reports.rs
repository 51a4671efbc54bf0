//! What a monthly report costs at scale: rollup rows for
//! `BENCH_NOTIFICATIONS` notifications' worth (default 10,000,000) in one
//! organisation's last 31 days and the 31 before them (the previous period
//! a report compares with), spread over 5 channels, 2 providers each, 10
//! templates and 3 categories per hour, and the same again for each of
//! `BENCH_TENANTS - 1` other organisations (default 5 in all).
//!
//! Times `BENCH_ROUNDS` (default 20) monthly reports of the organisation
//! and of the whole platform, one at a time, as `GET /api/v1/reports`
//! computes them (the statement with grouping sets and the previous
//! period's totals), plus the CSV and XLSX rendering. Prints p50 and p99.
//!
//! The rows are seeded directly (the hourly ones, then the daily rollup and
//! the hour totals added up from them, as the fold keeps them): what a
//! report reads grows with days, edge hours and distinct keys, not with the
//! notifications they count, so seeding the notifications themselves would
//! only slow the bench down. The month ends at the current time, so both
//! of its edges are partial days read from the hours.
//!
//! Run with `cargo bench -p api --bench reports` against the local
//! Postgres; `BENCH_NOTIFICATIONS=100000 BENCH_TENANTS=1 BENCH_ROUNDS=3`
//! makes a quick smoke run.

use std::time::Instant;

use chrono::Utc;
use hdrhistogram::Histogram;
use shared::{
    db::scope::{self, Reach},
    reports::{ReportRange, Template, compute, export},
};
use testkit::bench::{env_num, figure, machine, run};

const KEYS_PER_HOUR: i64 = 5 * 2 * 10 * 3;

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

fn main() {
    run(async {
        let total = env_num("BENCH_NOTIFICATIONS", 10_000_000) as i64;
        let tenants_n = env_num("BENCH_TENANTS", 5).max(1);
        let rounds = env_num("BENCH_ROUNDS", 20);
        let db = testkit::db::TestDb::new().await;
        let pool =
            shared::db::connect_url(&db.url, 4, shared::db::scope::Fallback::Platform("bench"))
                .await
                .expect("postgres");
        let mut tenants = Vec::new();
        for i in 0..tenants_n {
            tenants.push(
                shared::db::tenants::create(&pool, &format!("Clinic {i}"))
                    .await
                    .expect("tenant")
                    .id,
            );
        }
        let hours = 31 * 24;
        let per_row = (total / (hours * KEYS_PER_HOUR)).max(1);
        let seeding = Instant::now();
        // Every hour of 62 days, every key: `per_row` accepted, 98% sent,
        // 90% delivered, 2% failed, 30% read, latencies in three buckets.
        sqlx::query(
            "insert into delivery_hours (tenant_id, hour, channel, provider, template, category,
                                         accepted, sent, delivered, failed, bounced, read, latency_ms)
             select t, date_trunc('hour', now()) - make_interval(hours => h), c,
                    c || '-provider-' || p, 'template_' || tp, 'category_' || ca,
                    $2, $2 * 98 / 100, $2 * 90 / 100, $2 * 2 / 100, $2 / 100, $2 * 30 / 100,
                    array[0, 0, 0, 0, 0, 0, $2 / 2, $2 / 3, $2 - $2 / 2 - $2 / 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[]
             from unnest($1::uuid[]) as t,
                  generate_series(0, 2 * $3 - 1) as h,
                  unnest(array['email', 'sms', 'push', 'whatsapp', 'inapp']) as c,
                  generate_series(1, 2) as p, generate_series(1, 10) as tp, generate_series(1, 3) as ca",
        )
        .bind(tenants.iter().map(|t| t.0).collect::<Vec<_>>())
        .bind(per_row)
        .bind(hours as i32)
        .execute(&pool)
        .await
        .expect("rollups");
        // The daily rollup and the hour totals the fold keeps beside them.
        sqlx::query(
            "insert into delivery_days (tenant_id, day, channel, provider, template, category,
                                        accepted, sent, delivered, failed, bounced, read, latency_ms)
             select tenant_id, date_trunc('day', hour, 'UTC'), channel, provider, template, category,
                    sum(accepted), sum(sent), sum(delivered), sum(failed), sum(bounced), sum(read),
                    array[sum(latency_ms[1]), sum(latency_ms[2]), sum(latency_ms[3]), sum(latency_ms[4]), sum(latency_ms[5]), sum(latency_ms[6]), sum(latency_ms[7]), sum(latency_ms[8]), sum(latency_ms[9]), sum(latency_ms[10]), sum(latency_ms[11]), sum(latency_ms[12]), sum(latency_ms[13]), sum(latency_ms[14]), sum(latency_ms[15]), sum(latency_ms[16]), sum(latency_ms[17]), sum(latency_ms[18]), sum(latency_ms[19])]::bigint[]
             from delivery_hours group by 1, 2, 3, 4, 5, 6",
        )
        .execute(&pool)
        .await
        .expect("daily rollups");
        sqlx::query(
            "insert into delivery_hour_totals (tenant_id, hour, accepted, sent, delivered, failed, bounced, read)
             select tenant_id, hour, sum(accepted), sum(sent), sum(delivered), sum(failed), sum(bounced), sum(read)
             from delivery_hours group by 1, 2",
        )
        .execute(&pool)
        .await
        .expect("hour totals");
        for table in ["delivery_hours", "delivery_days", "delivery_hour_totals"] {
            sqlx::query(&format!("analyze {table}"))
                .execute(&mut db.owner().await)
                .await
                .expect("analyze");
        }
        let rows: i64 = sqlx::query_scalar("select count(*) from delivery_hours")
            .fetch_one(&pool)
            .await
            .expect("count");
        let settings: Vec<(String, String)> = sqlx::query_as(
            "select name, setting from pg_settings where name in ('shared_buffers', 'autovacuum', 'server_version', 'work_mem')",
        )
        .fetch_all(&pool)
        .await
        .expect("settings");
        let range = ReportRange::new(
            Template::MonthlyComprehensive,
            None,
            Some(Utc::now()),
            Utc::now(),
        )
        .expect("range");

        let mut one = Histogram::<u64>::new(3).expect("histogram");
        let mut all = Histogram::<u64>::new(3).expect("histogram");
        let mut files = Histogram::<u64>::new(3).expect("histogram");
        let mut counted = 0;
        let every =
            Reach::Platform(scope::platform_wide().expect("a bench runs in platform scope"));
        for _ in 0..rounds {
            let started = Instant::now();
            let r = compute::report(&pool, Reach::Tenant(tenants[0]), &range)
                .await
                .expect("report");
            one.record(started.elapsed().as_micros() as u64)
                .expect("recorded");
            counted = r.totals.accepted;
            let started = Instant::now();
            let csv = export::csv(&r).expect("csv");
            assert!(!csv.is_empty());
            files
                .record(started.elapsed().as_micros().max(1) as u64)
                .expect("recorded");
            let started = Instant::now();
            compute::report(&pool, every, &range).await.expect("report");
            all.record(started.elapsed().as_micros() as u64)
                .expect("recorded");
        }
        println!(
            "monthly report, {counted} notifications counted for one organisation ({} worth per organisation asked), {tenants_n} organisations, {rows} rollup rows, {rounds} rounds, {}; seeded in {:.0} s; {settings:?}",
            total,
            machine(),
            seeding.elapsed().as_secs_f64()
        );
        for (what, h) in [
            ("one organisation's month", &one),
            ("the platform's month", &all),
            ("CSV of one month", &files),
        ] {
            println!(
                "  {what:<28} p50 {:>8.2} ms  p99 {:>8.2} ms",
                ms(h, 0.5),
                ms(h, 0.99)
            );
        }
        figure(&[
            ("report_month_p50_ms", ms(&one, 0.5)),
            ("report_month_p99_ms", ms(&one, 0.99)),
            ("report_month_platform_p50_ms", ms(&all, 0.5)),
            ("report_month_platform_p99_ms", ms(&all, 0.99)),
        ]);
        pool.close().await;
        db.drop_now().await;
    });
}
