//! The daily rollup beside the hourly one: reports of ranges with whole
//! days (read from the days, the partial edges from the hours) count what
//! the notifications count directly and what the hours alone give, and
//! rollups past retention are pruned (the clock is an argument).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;
use shared::{
    db::scope::Reach,
    reports::{ReportRange, Template, compute, rollup},
};

use super::{admin, app, direct_counts, report, report_counts, send_and_drain, urlencode};

fn custom(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "template=custom&from={}&to={}",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    )
}

#[tokio::test]
async fn reports_over_whole_days_read_the_days_and_count_what_the_notifications_count() {
    let app = app().await;
    let admin = admin(&app, "admin@days.example").await;
    send_and_drain(&app, 4, "results").await;
    sqlx::query(
        "update notifications set status = 'delivered', delivered_at = now()
         where id = (select id from notifications order by id limit 1)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    rollup::fold(&app.pool).await.unwrap();
    let direct = direct_counts(&app, app.tenant_id).await;
    assert_eq!(direct[0], 4);
    let now = Utc::now();
    // Today as a whole day of the daily rollup; today as part of an edge
    // read from the hours; and the hours alone (no whole day).
    let through_days = report(
        &app,
        &admin.token,
        &custom(now - TimeDelta::days(2), now + TimeDelta::days(2)),
    )
    .await;
    let through_edges = report(
        &app,
        &admin.token,
        &custom(now - TimeDelta::hours(1), now + TimeDelta::days(2)),
    )
    .await;
    let hours_only = report(
        &app,
        &admin.token,
        &custom(now - TimeDelta::hours(2), now + TimeDelta::hours(2)),
    )
    .await;
    for r in [&through_days, &through_edges, &hours_only] {
        assert_eq!(report_counts(&r["totals"]), direct, "{r:#}");
        let days: i64 = r["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["totals"]["accepted"].as_i64().unwrap())
            .sum();
        assert_eq!(days, 4);
        assert_eq!(r["busiest_hours"][0]["totals"]["accepted"], Value::from(4));
        assert_eq!(r["by_provider"], hours_only["by_provider"]);
        assert_eq!(
            r["totals"]["latency_p99_ms"],
            hours_only["totals"]["latency_p99_ms"]
        );
    }
    // The daily rows add up to the hourly ones, key by key.
    let mismatched: i64 = sqlx::query_scalar(
        "select count(*) from (
             select date_trunc('day', hour, 'UTC') as day, channel, provider, template, category,
                    sum(accepted) as a, sum(sent) as s, sum(delivered) as d
             from delivery_hours group by 1, 2, 3, 4, 5) h
         full join delivery_days d using (day, channel, provider, template, category)
         where h.a is distinct from d.accepted or h.s is distinct from d.sent
            or h.d is distinct from d.delivered",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    // Next month's report compares with a previous period holding today.
    let next = ReportRange::new(
        Template::Custom,
        Some(now + TimeDelta::days(2)),
        Some(now + TimeDelta::days(6)),
        now,
    )
    .unwrap();
    let later = compute::report(&app.pool, Reach::Tenant(app.tenant_id), &next)
        .await
        .unwrap();
    assert_eq!(later.totals.accepted, 0);
    assert_eq!(later.previous.totals.accepted, 4);
    app.shutdown().await;
}

#[tokio::test]
async fn rollups_past_retention_are_pruned_and_the_rest_kept() {
    let app = app().await;
    let now = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let hour = |days: i64| now - TimeDelta::days(days);
    for (at, accepted) in [
        (hour(91), 1_i64),
        (hour(89), 2),
        (hour(801), 4),
        (hour(799), 8),
    ] {
        sqlx::query(
            "insert into delivery_hours (tenant_id, hour, channel, provider, template, category,
                                         accepted, latency_ms)
             values ($1, $2, 'sms', '', '', '', $3, array_fill(0::bigint, array[19]))",
        )
        .bind(app.tenant_id)
        .bind(at)
        .bind(accepted)
        .execute(&app.pool)
        .await
        .unwrap();
        for sql in [
            "insert into delivery_days (tenant_id, day, channel, provider, template, category,
                                        accepted, latency_ms)
             values ($1, date_trunc('day', $2::timestamptz, 'UTC'), 'sms', '', '', '', $3,
                     array_fill(0::bigint, array[19]))",
            "insert into delivery_hour_totals (tenant_id, hour, accepted) values ($1, $2, $3)",
        ] {
            sqlx::query(sql)
                .bind(app.tenant_id)
                .bind(at)
                .bind(accepted)
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }
    let kept = |table: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("select sum(accepted)::int8 from {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // A year from now everything would go; today only what is past
    // retention does.
    let pruned = rollup::prune(&app.pool, now).await.unwrap();
    assert_eq!((pruned.hours, pruned.hour_totals, pruned.days), (3, 3, 1));
    assert_eq!(kept("delivery_hours").await, 2, "hours: 90 days");
    assert_eq!(kept("delivery_hour_totals").await, 2);
    assert_eq!(kept("delivery_days").await, 1 + 2 + 8, "days: 800 days");
    // Moving the clock on prunes the rest in turn; nothing is pruned twice.
    let pruned = rollup::prune(&app.pool, now + TimeDelta::days(2))
        .await
        .unwrap();
    assert_eq!((pruned.hours, pruned.days), (1, 1));
    assert_eq!(
        rollup::prune(&app.pool, now + TimeDelta::days(2))
            .await
            .unwrap(),
        rollup::Pruned::default()
    );
    app.shutdown().await;
}
