//! A 202 is a promise: sends accepted while Redis is unreachable, or whose
//! jobs Redis lost, are still delivered. Postgres is the source of truth and
//! the dispatcher pushes again what never reached Redis.

use std::time::Duration;

use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_accepted_while_redis_is_unreachable_all_arrive_once_it_is_back() {
    let app = TestApp::builder().redis_through_proxy().spawn().await;
    let proxy = app.proxy.as_ref().unwrap();
    proxy.cut();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(app.send_to(&format!("patient{i}@example.org")).await);
    }
    assert_eq!(
        app.count_status("queued").await,
        10,
        "committed while Redis is away"
    );
    assert!(app.smtp.received().is_empty());
    proxy.restore();
    app.smtp.wait_for(10, WAIT).await;
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 10, "each sent once");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_whose_jobs_redis_lost_are_pushed_again_and_arrive() {
    // Long enough that only the detection of the loss can explain a re-push.
    let mut app = TestApp::builder()
        .without_worker()
        .var("JOBS__DISPATCHER__REDISPATCH_AFTER_SECS", 600)
        .spawn()
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(app.send_to(&format!("patient{i}@example.org")).await);
    }
    // Redis restarts without persistence: every key of this deployment is gone.
    app.wipe_redis().await;
    app.start_worker();
    app.smtp.wait_for(10, WAIT).await;
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 10);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_restarted_while_redis_was_down_picks_up_again() {
    let app = TestApp::builder().redis_through_proxy().spawn().await;
    let first = app.send_to("before@example.org").await;
    app.wait_for_status(&first, "sent", WAIT).await;
    let proxy = app.proxy.as_ref().unwrap();
    proxy.cut();
    // The outage itself is the behaviour under test: it lasts long enough
    // for the worker's fetches and heartbeats to fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let after = app.send_to("after@example.org").await;
    app.wait_for_status(&after, "sent", WAIT).await;
    app.shutdown().await;
}
