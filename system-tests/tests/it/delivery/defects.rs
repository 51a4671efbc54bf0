//! The apalis-redis 1.0.0 defects the platform must survive (see
//! ARCHITECTURE.md), each shown against the real Redis and SMTP.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{TestApp, smtp::Behaviour, smtp::SmtpServer};

/// Every push lands in the backend's `scheduled` set, and its fetch script
/// promotes all due ids with one `unpack`. This shows the failure is real
/// (so the window below is not guarding against nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raw_backend_cannot_fetch_once_more_than_8000_jobs_are_due() {
    use apalis::prelude::*;
    let prefix = format!("raw{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let queues = shared::jobs::Queues::new(&testkit::redis_url().into(), &prefix).unwrap();
    let mut storage = apalis_redis::RedisStorage::<u32>::new(queues.connection())
        .with_config(queues.backend_config(shared::jobs::QueueName::Email, 10));
    storage.push_bulk((0..9_000).collect()).await.unwrap();
    let worker = WorkerBuilder::new(format!("{prefix}-w"))
        .backend(storage)
        .build(|_: u32| async {});
    let result = tokio::time::timeout(Duration::from_secs(20), worker.run())
        .await
        .expect("the worker stops by itself");
    let err = result
        .expect_err("the worker dies on the burst")
        .to_string();
    assert!(
        err.contains("too many results to unpack") || err.contains("unpack"),
        "{err}"
    );
    let mut conn = queues.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// With the dispatcher's window, sends accepted while no worker runs wait in
/// Postgres and reach Redis a window at a time. The window is shrunk to 20
/// jobs so a couple of thousand sends cross it many times over (the 20,000-
/// and 1,000,000-send runs are the benchmarks' job, not this test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_accepted_while_no_worker_runs_reach_redis_a_window_at_a_time_and_are_all_sent() {
    const N: usize = 2_000;
    let mut app = TestApp::builder()
        .without_worker()
        .var("JOBS__DISPATCHER__HIGH_WATER_MARK", 20)
        .var("JOBS__QUEUES__EMAIL__CONCURRENCY", 64)
        .var("SMTP_POOL_MAX_SIZE", 32)
        .var("DATABASE_MAX_CONNECTIONS", 40)
        .spawn()
        .await;
    let body = json!({"to": "pat@example.org", "subject": "Flu shots are available", "text": "Book online."});
    let answers = app.send_many(N, 64, &body).await;
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 202).count(),
        N
    );
    let hwm = app.settings.jobs.dispatcher.high_water_mark;
    let mut redis = app.redis().await;
    let scheduled = format!("{}:email:scheduled", app.redis_prefix);
    let active = format!("{}:email:active", app.redis_prefix);
    let backlog = |redis: &mut redis::aio::MultiplexedConnection| {
        let (s, a) = (scheduled.clone(), active.clone());
        let mut redis = redis.clone();
        async move {
            let (s, a): (usize, usize) = redis::pipe()
                .zcard(s)
                .llen(a)
                .query_async(&mut redis)
                .await
                .unwrap();
            s + a
        }
    };
    let before = backlog(&mut redis).await;
    assert!(
        before <= hwm + 64,
        "the Redis backlog stays near the window: {before}"
    );
    app.start_worker();
    let started = Instant::now();
    let mut peak = before;
    loop {
        let sent = app.count_status("sent").await as usize;
        peak = peak.max(backlog(&mut redis).await);
        if sent == N {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {sent} of {N} sent"
        );
        // Polls, taking the backlog's peak on the way; ends on a condition.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        peak <= hwm + 64,
        "the backlog stays near the window while the worker drains: {peak}"
    );
    assert_eq!(app.count_status("sent").await as usize, N);
    assert!(app.smtp.received().len() >= N);
    let attempts: i64 =
        sqlx::query_scalar("select count(*) from delivery_attempts where outcome <> 'sent'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        attempts, 0,
        "no attempt failed, so no queue worker died mid-run"
    );
    app.shutdown().await;
}

/// Without an interval an idle worker only looks for jobs on its 30 s
/// heartbeat; the platform polls every `WORKER_POLL_INTERVAL_MS`, so a send
/// to an idle worker goes out long before the heartbeat would fetch it. How
/// fast it goes out is `.ci/bench`'s pickup figure, not this test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_to_an_idle_worker_starts_before_its_heartbeat() {
    let app = TestApp::builder()
        .var("WORKER_POLL_INTERVAL_MS", 100)
        .spawn()
        .await;
    // An idle worker is the behaviour under test: let it go idle first, and
    // again between the sends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let started = Instant::now();
        app.send_to(&format!("pat{i}@example.org")).await;
        app.smtp.wait_for(i + 1, Duration::from_secs(20)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "pickup waited for the heartbeat: {took:?}"
        );
        // Idle again before the next send (see above).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    app.shutdown().await;
}

/// A push wakes the idle workers of its queue (defect 3 without polling
/// hard): with both the poll interval and the heartbeat an hour, each send
/// to an idle worker still goes out, because the push woke it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_wakes_an_idle_worker_that_would_not_look_for_an_hour() {
    let app = TestApp::builder()
        .without_scheduler()
        .var("WORKER_POLL_INTERVAL_MS", 3_600_000)
        .var("WORKER_HEARTBEAT_SECS", 3_600)
        .spawn()
        .await;
    for i in 0..3 {
        let id = app.send_to(&format!("pat{i}@example.org")).await;
        app.wait_for_status(&id, "sent", Duration::from_secs(60))
            .await;
    }
    assert_eq!(app.smtp.received().len(), 3);
    app.shutdown().await;
}

/// A worker killed mid-send leaves a claimed row and a job in its in-flight
/// set. The row's lease runs out, the dispatcher puts it back, and a new
/// worker (under a new name) sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_send_loses_nothing_once_a_new_worker_starts() {
    let smtp = SmtpServer::start_with(Behaviour::HoldData(Duration::from_secs(30))).await;
    let app = TestApp::builder()
        .smtp(smtp)
        .without_worker()
        .var("JOBS__QUEUES__EMAIL__TIMEOUT_SECS", 2)
        .spawn()
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.send_to(&format!("pat{i}@example.org")).await);
    }
    let mut first = spawn_worker(&app);
    app.smtp.wait_for_data_start(Duration::from_secs(15)).await;
    first.kill().await.unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed with SIGKILL");
    let sending: i64 =
        sqlx::query_scalar("select count(*) from notifications where status = 'sending'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(sending >= 1, "the kill happened mid-send");
    app.smtp.set_behaviour(Behaviour::Accept);
    let mut second = spawn_worker(&app);
    for id in &ids {
        let n = app
            .wait_for_status(id, "sent", Duration::from_secs(40))
            .await;
        assert_eq!(
            n["attempts"].as_array().unwrap().last().unwrap()["outcome"],
            "sent"
        );
    }
    assert_eq!(app.count_status("sent").await, 5);
    let recipients: std::collections::BTreeSet<String> = app
        .smtp
        .received()
        .iter()
        .flat_map(|m| m.to.clone())
        .collect();
    assert_eq!(recipients.len(), 5, "every recipient got the email");
    assert!(
        app.smtp.received().len() <= 5 + sending as usize,
        "at most the interrupted sends repeat"
    );
    second.kill().await.unwrap();
    app.shutdown().await;
}

fn spawn_worker(app: &TestApp) -> tokio::process::Child {
    tokio::process::Command::new(testkit::process::binary("worker"))
        .envs(app.vars.iter().cloned())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker binary starts")
}

/// SIGTERM: no new jobs, in-flight ones finish, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_an_in_flight_send_finish_and_exits_zero() {
    let smtp = SmtpServer::start_with(Behaviour::HoldData(Duration::from_secs(2))).await;
    let app = TestApp::builder().smtp(smtp).without_worker().spawn().await;
    let id = app.send_to("pat@example.org").await;
    let mut child = spawn_worker(&app);
    app.smtp.wait_for_data_start(Duration::from_secs(15)).await;
    let sent_at = Instant::now();
    let (status, _) = testkit::process::terminate(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "a clean exit");
    assert!(
        sent_at.elapsed() >= Duration::from_millis(1000),
        "it waited for the send"
    );
    let n = app.notification(&id).await;
    assert_eq!(n["status"], "sent", "the in-flight send finished: {n}");
    // A second send after the worker left stays queued: it fetched nothing new.
    let later = app.send_to("later@example.org").await;
    let queues = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    testkit::eventually(
        "the second send's job to wait in Redis",
        Duration::from_secs(20),
        || async {
            (queues
                .backlog(shared::jobs::QueueName::Email)
                .await
                .unwrap()
                == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(app.notification(&later).await["status"], "queued");
    app.shutdown().await;
}
