//! Cron ticks fire once across schedulers, ticks whose job missed Redis are
//! pushed later, and the dispatcher keeps each queue's Redis backlog bounded.

use std::time::Duration;

use chrono::Utc;
use scheduler::{cron::CronTicker, dispatcher::Dispatcher};
use shared::jobs::{QueueName, Queues};
use testkit::TestApp;

fn every_second_jobs_file() -> std::path::PathBuf {
    let real = std::fs::read_to_string(testkit::repo_root().join("jobs.toml")).unwrap();
    let text = real.replace("schedule = \"0 */5 * * * *\"", "schedule = \"* * * * * *\"");
    assert_ne!(real, text);
    let path = std::env::temp_dir().join(format!("jobs-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

async fn pending_ticks(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from cron_ticks where enqueued_at is null")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scheduler_processes_enqueue_each_tick_exactly_once() {
    let jobs = every_second_jobs_file();
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JOBS_FILE", jobs.display())
        .spawn()
        .await;
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_scheduler"))
            .envs(app.vars.iter().cloned())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    // Two real scheduler processes ticking for a few seconds of wall time
    // is the behaviour under test (their cron runs on the real clock).
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    for child in [&mut a, &mut b] {
        let (status, _) = testkit::process::terminate(child, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "a clean exit on SIGTERM");
    }
    let ticks: Vec<(chrono::DateTime<Utc>, i64)> = sqlx::query_as(
        "select scheduled_for, count(*) from cron_ticks where name = 'vacuum-queues' group by 1 order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(ticks.len() >= 3, "ticks fired: {ticks:?}");
    assert!(ticks.iter().all(|(_, n)| *n == 1));
    assert_eq!(pending_ticks(&app).await, 0);
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    // Cron jobs go to the maintenance queue, except the UPS sweep, which
    // fires each minute on its own queue (when the run crosses a minute).
    let jobs_in_redis = queues.backlog(QueueName::Maintenance).await.unwrap()
        + queues.backlog(QueueName::UpsPoll).await.unwrap();
    let all_ticks: i64 = sqlx::query_scalar("select count(*) from cron_ticks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        jobs_in_redis as i64, all_ticks,
        "one job per tick, not one per scheduler"
    );
    std::fs::remove_file(jobs).unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_whose_job_missed_redis_is_pushed_when_redis_is_back() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .redis_through_proxy()
        .spawn()
        .await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let now = Utc::now();
    let mut ticker = CronTicker::new(
        app.pool.clone(),
        queues.clone(),
        app.settings.jobs.cron.clone(),
        now - chrono::Duration::minutes(6),
    );
    app.proxy.as_ref().unwrap().cut();
    let won = ticker.tick(now).await.unwrap();
    assert!(
        won.iter().any(|(name, _)| name == "vacuum-queues"),
        "{won:?}"
    );
    assert_eq!(
        pending_ticks(&app).await,
        won.len() as i64,
        "recorded, but not in Redis"
    );
    // Another scheduler evaluating the same window wins nothing.
    let mut rival = CronTicker::new(
        app.pool.clone(),
        queues.clone(),
        app.settings.jobs.cron.clone(),
        now - chrono::Duration::minutes(6),
    );
    assert!(rival.tick(now).await.unwrap().is_empty());
    app.proxy.as_ref().unwrap().restore();
    let dispatcher = Dispatcher::new(app.pool.clone(), queues.clone(), app.settings.jobs.clone());
    testkit::eventually("a sweep to succeed", Duration::from_secs(10), || async {
        dispatcher.sweep().await.ok()
    })
    .await;
    assert_eq!(pending_ticks(&app).await, 0);
    // Every queue a cron entry feeds: the window is the real clock's last
    // six minutes, so it may hold the daily BAA reminder as well as the
    // housekeeping and UPS sweeps.
    let mut waiting = 0;
    for &queue in QueueName::ALL {
        waiting += queues.backlog(queue).await.unwrap();
    }
    assert_eq!(
        waiting,
        won.len(),
        "every won tick's job, housekeeping, UPS sweeps and reminders"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dispatcher_keeps_the_redis_backlog_under_the_high_water_mark_and_groups_by_tenant() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JOBS__DISPATCHER__HIGH_WATER_MARK", 20)
        .var("JOBS__DISPATCHER__GROUP_SIZE", 10)
        .spawn()
        .await;
    let (other, _) = app.other_tenant().await;
    for tenant in [app.tenant_id, other] {
        sqlx::query(
            "insert into notifications (id, tenant_id, channel, recipient, content, max_attempts)
             select gen_random_uuid(), $1, 'email', 'p' || i || '@example.org',
                    '{\"subject\": \"s\", \"text\": \"t\"}'::jsonb, 5
             from generate_series(1, 150) i",
        )
        .bind(tenant)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let dispatcher = Dispatcher::new(app.pool.clone(), queues.clone(), app.settings.jobs.clone());
    let report = dispatcher.sweep().await.unwrap();
    assert_eq!(report.jobs, 20, "{report:?}");
    assert_eq!(report.dispatched, 200);
    assert_eq!(queues.backlog(QueueName::Email).await.unwrap(), 20);
    let again = dispatcher.sweep().await.unwrap();
    assert_eq!(again.jobs, 0, "a full window takes nothing more");
    let dispatched: i64 =
        sqlx::query_scalar("select count(*) from notifications where dispatched_at is not null")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        dispatched, 200,
        "the rest wait in Postgres, not marked as pushed"
    );
    let mut conn = app.redis().await;
    let payloads: Vec<String> = redis::cmd("HVALS")
        .arg(format!("{}:email:data", app.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(payloads.len(), 20);
    for p in payloads {
        let job: shared::jobs::SendNotifications = serde_json::from_str(&p).unwrap();
        assert!(job.notification_ids.len() <= 10);
        let tenants: Vec<uuid::Uuid> =
            sqlx::query_scalar("select distinct tenant_id from notifications where id = any($1)")
                .bind(&job.notification_ids)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(tenants, vec![job.tenant_id.0], "one tenant per job");
    }
    app.shutdown().await;
}
