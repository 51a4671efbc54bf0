//! Housekeeping jobs started by cron ticks.

use std::time::Duration;

use chrono::Utc;
use shared::{
    config::CronJob,
    jobs::{QueueName, Queues, RunMaintenance},
};
use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_of_finished_notifications_past_retention_is_erased() {
    let app = TestApp::builder().without_scheduler().spawn().await;
    let old = app.send_to("old@example.org").await;
    let recent = app.send_to("recent@example.org").await;
    let inbox = app
        .send_email(&serde_json::json!({"channel": "inapp", "subscriber_id": "pat", "title": "Kept in the inbox"}))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in [&old, &recent, &inbox] {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    let mut owner = app.owner().await;
    sqlx::query("alter table notifications disable trigger notifications_updated_at")
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query(
        "update notifications set created_at = now() - interval '31 days', updated_at = now() - interval '31 days' where id = any($1::uuid[])",
    )
    .bind(vec![old.clone(), inbox.clone()])
    .execute(&mut owner)
    .await
    .unwrap();
    sqlx::query("alter table notifications enable trigger notifications_updated_at")
        .execute(&mut owner)
        .await
        .unwrap();
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(RunMaintenance {
            task: CronJob::RedactExpiredContent,
            scheduled_for: Utc::now(),
        })
        .await
        .unwrap();
    let content: serde_json::Value =
        testkit::eventually("the old content to be erased", WAIT, || async {
            let (c, redacted): (serde_json::Value, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
                "select content, content_redacted_at from notifications where id = $1::uuid",
            )
            .bind(&old)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            redacted.map(|_| c)
        })
        .await;
    assert_eq!(content, serde_json::json!({}));
    let n = app.notification(&old).await;
    assert_eq!(n["status"], "sent", "status and attempts stay");
    assert_eq!(n["attempts"].as_array().unwrap().len(), 1);
    let (kept,): (serde_json::Value,) =
        sqlx::query_as("select content from notifications where id = $1::uuid")
            .bind(&recent)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(kept["subject"], "Your lab results are ready");
    let (in_inbox,): (serde_json::Value,) =
        sqlx::query_as("select content from notifications where id = $1::uuid")
            .bind(&inbox)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        in_inbox["title"], "Kept in the inbox",
        "an inbox message stays the user's"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vacuum_drops_the_redis_bookkeeping_of_finished_jobs() {
    let app = TestApp::builder()
        .without_scheduler()
        .var("JOBS__RETENTION__FINISHED_JOBS_SECS", 1)
        .spawn()
        .await;
    for i in 0..5 {
        let id = app.send_to(&format!("p{i}@example.org")).await;
        app.wait_for_status(&id, "sent", WAIT).await;
    }
    let mut redis = app.redis().await;
    let data = format!("{}:email:data", app.redis_prefix);
    let done = format!("{}:email:done", app.redis_prefix);
    let count = |key: String, cmd: &'static str| {
        let mut redis = redis.clone();
        async move {
            redis::cmd(cmd)
                .arg(key)
                .query_async::<usize>(&mut redis)
                .await
                .unwrap()
        }
    };
    testkit::eventually("the finished jobs to be acknowledged", WAIT, || async {
        (count(done.clone(), "SCARD").await == 5).then_some(())
    })
    .await;
    assert_eq!(count(data.clone(), "HLEN").await, 5);
    // apalis-redis ages finished jobs by the time they were acknowledged,
    // against the wall clock; no injected clock reaches it. Waiting past
    // the 1 s retention is the behaviour under test.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(RunMaintenance {
            task: CronJob::VacuumQueues,
            scheduled_for: Utc::now(),
        })
        .await
        .unwrap();
    testkit::eventually("the bookkeeping to be gone", WAIT, || async {
        (count(data.clone(), "HLEN").await == 0 && count(done.clone(), "SCARD").await == 0)
            .then_some(())
    })
    .await;
    let meta: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:email:meta:*", app.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(meta.is_empty(), "{meta:?}");
    assert_eq!(queues.backlog(QueueName::Email).await.unwrap(), 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realtime_events_past_retention_are_pruned() {
    let app = TestApp::builder().without_scheduler().spawn().await;
    let subscriber = shared::db::subscribers::upsert(
        &mut app.pool.acquire().await.unwrap(),
        app.tenant_id,
        "pat",
    )
    .await
    .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    for _ in 0..2 {
        shared::db::events::append(
            &mut tx,
            app.tenant_id,
            subscriber,
            "system.alert",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query(
        "update subscriber_events set created_at = now() - interval '73 hours' where seq = 1",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(RunMaintenance {
            task: CronJob::PruneEvents,
            scheduled_for: Utc::now(),
        })
        .await
        .unwrap();
    let left: Vec<i64> = testkit::eventually("the old event to go", WAIT, || async {
        let seqs: Vec<i64> = sqlx::query_scalar("select seq from subscriber_events order by seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        (seqs.len() == 1).then_some(seqs)
    })
    .await;
    assert_eq!(left, vec![2], "the recent event stays");
    app.shutdown().await;
}

/// Adds a security event created at `at`; returns its id.
async fn security_event_at(app: &TestApp, tenant: bool, at: chrono::DateTime<Utc>) -> i64 {
    sqlx::query_scalar(
        "insert into security_events (tenant_id, kind, ip, created_at)
         values ($1, 'login.failed', '198.51.100.7', $2) returning id",
    )
    .bind(tenant.then_some(app.tenant_id))
    .bind(at)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn security_event_ids(app: &TestApp) -> Vec<i64> {
    sqlx::query_scalar("select id from security_events order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_events_are_pruned_in_batches_before_a_given_time() {
    let app = TestApp::spawn_api_only().await;
    let cutoff = Utc::now() - chrono::Duration::days(400);
    let second = chrono::Duration::seconds(1);
    let mut old = Vec::new();
    for tenant in [true, false, true] {
        old.push(security_event_at(&app, tenant, cutoff - second).await);
    }
    let kept = security_event_at(&app, true, cutoff + second).await;
    let prune = || shared::db::security_events::prune(&app.pool, cutoff, 2);
    assert_eq!(prune().await.unwrap(), 2, "one batch at most");
    assert_eq!(prune().await.unwrap(), 1);
    assert_eq!(prune().await.unwrap(), 0);
    assert_eq!(security_event_ids(&app).await, vec![kept]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_prune_events_tick_drops_security_events_past_retention() {
    let app = TestApp::builder().without_scheduler().spawn().await;
    assert_eq!(app.settings.jobs.retention.security_events_days, 400);
    // A tick 30 days from now: retention counts from the tick's time.
    let tick = Utc::now() + chrono::Duration::days(30);
    let gone = security_event_at(&app, true, tick - chrono::Duration::days(401)).await;
    let unowned = security_event_at(&app, false, tick - chrono::Duration::days(401)).await;
    let kept = security_event_at(&app, true, tick - chrono::Duration::days(399)).await;
    assert_eq!(security_event_ids(&app).await, vec![gone, unowned, kept]);
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(RunMaintenance {
            task: CronJob::PruneEvents,
            scheduled_for: tick,
        })
        .await
        .unwrap();
    let left = testkit::eventually("the old security events to go", WAIT, || async {
        let ids = security_event_ids(&app).await;
        (ids.len() == 1).then_some(ids)
    })
    .await;
    assert_eq!(left, vec![kept], "the event inside retention stays");
    app.shutdown().await;
}
