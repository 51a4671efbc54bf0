//! Status waits woken from the notification's side: a status change queues
//! a wake for the one run waiting on that notification (and only when the
//! status it waits for is reached); notifications no run waits on carry no
//! watch; a status reached before the wait begins meets it at once; a wait
//! that ended stops watching.
//!
//! No scheduler or worker runs here: statuses are set in SQL as workers and
//! provider receipts set them, and the runner is driven with the test's
//! clock, so every wake is seen before anything consumes it.

use chrono::{TimeDelta, Utc};
use serde_json::json;
use testkit::TestApp;
use uuid::Uuid;

use super::{driven_clinic, patient, run, run_for, runner, save, step};

async fn notification_of(app: &TestApp, run_id: &str, key: &str) -> Uuid {
    let r = run(app, run_id).await;
    step(&r, key)["notification_ids"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn watcher(app: &TestApp, id: Uuid) -> Option<Uuid> {
    sqlx::query_scalar("select waited_by_run from notifications where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn wakes(app: &TestApp) -> Vec<Uuid> {
    sqlx::query_scalar("select run_id from workflow_wakes order by run_id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn set_status(app: &TestApp, id: Uuid, status: &str) {
    sqlx::query(
        "update notifications set status = $2,
             sent_at = case when $2 = 'sent' then now() else sent_at end,
             delivered_at = case when $2 = 'delivered' then now() else delivered_at end
         where id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_wakes_only_the_run_waiting_on_it_and_unwatched_notifications_queue_nothing() {
    let app = driven_clinic().await;
    patient(&app, "sam").await;
    save(&app, "delivery", json!({"name": "Delivery", "steps": [
        {"key": "msg", "type": "send", "template": "care.alert", "channels": ["inapp"]},
        {"key": "wait", "type": "wait_for", "step": "msg", "status": "delivered", "timeout_secs": 3600}
    ]}))
    .await;
    save(
        &app,
        "plain",
        json!({"name": "Plain", "steps": [
            {"key": "msg", "type": "send", "template": "care.alert", "channels": ["inapp"]}
        ]}),
    )
    .await;
    let pat = run_for(&app, "delivery", "pat", "t").await;
    let sam = run_for(&app, "delivery", "sam", "t").await;
    let plain = run_for(&app, "plain", "pat", "t").await;
    let start = Utc::now();
    assert_eq!(runner(&app).advance(start).await.unwrap(), 3);
    let (pat_msg, sam_msg, plain_msg) = (
        notification_of(&app, &pat, "msg").await,
        notification_of(&app, &sam, "msg").await,
        notification_of(&app, &plain, "msg").await,
    );
    assert_eq!(watcher(&app, pat_msg).await, Some(pat.parse().unwrap()));
    assert_eq!(watcher(&app, sam_msg).await, Some(sam.parse().unwrap()));
    assert_eq!(watcher(&app, plain_msg).await, None, "no run waits on it");
    let deadline = step(&run(&app, &sam).await, "wait")["due_at"].clone();

    // Sent is not delivered: no wake, and the watch stays.
    set_status(&app, pat_msg, "sent").await;
    assert_eq!(wakes(&app).await, Vec::<Uuid>::new());
    assert_eq!(watcher(&app, pat_msg).await, Some(pat.parse().unwrap()));
    // Delivered: one wake, for pat's run only, and the watch ends.
    set_status(&app, pat_msg, "delivered").await;
    assert_eq!(wakes(&app).await, vec![pat.parse::<Uuid>().unwrap()]);
    assert_eq!(watcher(&app, pat_msg).await, None);
    // A notification no run waits on queues nothing.
    set_status(&app, plain_msg, "delivered").await;
    assert_eq!(wakes(&app).await, vec![pat.parse::<Uuid>().unwrap()]);

    // Ten minutes in, well before the deadline: pat's run alone moves on.
    let later = start + TimeDelta::minutes(10);
    assert_eq!(runner(&app).advance(later).await.unwrap(), 1);
    assert_eq!(wakes(&app).await, Vec::<Uuid>::new());
    let r = run(&app, &pat).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(step(&r, "wait")["outcome"], "met");
    let r = run(&app, &sam).await;
    assert_eq!(r["status"], "waiting");
    assert_eq!(step(&r, "wait")["due_at"], deadline);

    // Sam's wait times out; a delivery afterwards wakes nothing and the
    // stale watch is dropped.
    let after = start + TimeDelta::hours(2);
    assert_eq!(runner(&app).advance(after).await.unwrap(), 1);
    assert_eq!(step(&run(&app, &sam).await, "wait")["outcome"], "timed_out");
    set_status(&app, sam_msg, "delivered").await;
    assert_eq!(wakes(&app).await, Vec::<Uuid>::new());
    assert_eq!(watcher(&app, sam_msg).await, None);
    assert_eq!(runner(&app).advance(after).await.unwrap(), 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_reached_before_the_wait_begins_meets_it_at_once() {
    let app = driven_clinic().await;
    save(&app, "later", json!({"name": "Later", "steps": [
        {"key": "msg", "type": "send", "template": "care.alert", "channels": ["inapp"]},
        {"key": "pause", "type": "delay", "duration_secs": 600},
        {"key": "wait", "type": "wait_for", "step": "msg", "status": "read", "timeout_secs": 3600},
        {"key": "unread", "type": "branch", "if": {"step": "wait", "outcome": "timed_out"}, "then": "end"}
    ]}))
    .await;
    let id = run_for(&app, "later", "pat", "t").await;
    let start = Utc::now();
    assert_eq!(runner(&app).advance(start).await.unwrap(), 1);
    let r = run(&app, &id).await;
    assert_eq!(r["current_step"], "pause", "{r}");
    let msg = notification_of(&app, &id, "msg").await;
    // Read during the delay: the run is not waiting on it yet, so nothing
    // is queued and the watch is dropped.
    sqlx::query("update notifications set status = 'read', read_at = now() where id = $1")
        .bind(msg)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(wakes(&app).await, Vec::<Uuid>::new());
    assert_eq!(watcher(&app, msg).await, None);
    // Past the delay the wait finds the message read and is met at once,
    // in the same pass.
    let after = start + TimeDelta::minutes(11);
    assert_eq!(runner(&app).advance(after).await.unwrap(), 1);
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(step(&r, "wait")["outcome"], "met");
    assert_eq!(step(&r, "unread")["outcome"], "not_taken");
    app.shutdown().await;
}
