//! Cancel wins over a worker holding a send: a batch or a single send
//! cancelled while its rows wait out a provider's 429 is never sent, and no
//! row moves again (to `deferred`, back to `queued`, to `sent`) after the
//! cancel committed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{add_flu_shot_template, lab_results_sms, send_flu_shot_batch};
use testkit::{
    TestApp,
    providers::{Answer, FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};

const WAIT: Duration = Duration::from_secs(30);
const BASE: &str = "/api/v1/services/notifications";

async fn app_with_rate_limited_twilio(fake: &FakeProviders) -> TestApp {
    let app = TestApp::builder()
        .providers(fake)
        .var("JOBS__QUEUES__SMS__BACKOFF__INITIAL_MS", 100)
        .var("JOBS__QUEUES__SMS__BACKOFF__MAX_MS", 500)
        .spawn()
        .await;
    add_flu_shot_template(&app).await;
    app.add_provider(&twilio_config("only", TWILIO_SID_A, None))
        .await;
    // Twilio answers every message with 429 and `Retry-After: 2` until healed.
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::TooManyRequests(Some(2)));
    log_status_moves(&app).await;
    app
}

/// Records every status change of a notification with the time it was
/// made, so a test can see moves that a later one overwrote.
async fn log_status_moves(app: &TestApp) {
    let mut owner = app.owner().await;
    for statement in [
        "create table test_status_moves (
             notification_id uuid not null, old_status text not null, new_status text not null,
             at timestamptz not null default clock_timestamp())",
        "create function test_log_status_move() returns trigger language plpgsql as $$
         begin
             insert into test_status_moves (notification_id, old_status, new_status)
             values (new.id, old.status, new.status);
             return new;
         end $$",
        "create trigger test_log_status_move after update of status on notifications
         for each row when (old.status is distinct from new.status)
         execute function test_log_status_move()",
    ] {
        sqlx::query(statement).execute(&mut owner).await.unwrap();
    }
}

/// The database's clock now.
async fn db_now(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Status moves made after `since`, as `(id, from, to)`.
async fn moves_since(
    app: &TestApp,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select notification_id::text, old_status, new_status from test_status_moves
         where at > $1 order by at",
    )
    .bind(since)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Waits until none of this test's notifications is waiting or in a
/// worker's hands.
async fn drain(app: &TestApp) {
    testkit::eventually("every notification to be final", WAIT, || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from notifications where status in ('queued', 'deferred', 'sending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
    app.wait_queue_empty(shared::jobs::QueueName::Sms, WAIT)
        .await;
}

/// Twilio requests the fake accepted (201), by recipient.
fn accepted(fake: &FakeProviders) -> Vec<String> {
    fake.requests(Kind::Twilio)
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.body["To"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.post_with_key(&format!("{BASE}{path}"), body).await
}

async fn batch(app: &TestApp, id: &str) -> Value {
    app.get_ok_json(&format!("{BASE}/batches/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_cancelled_while_its_sends_wait_out_a_429_sends_none_of_them() {
    let fake = FakeProviders::start().await;
    let mut app = app_with_rate_limited_twilio(&fake).await;
    let id = send_flu_shot_batch(&app, 1000, 20).await;

    // Twilio has answered 429, every request made so far has been dealt
    // with (none is in flight), and a worker holds rows of the batch while it
    // waits for the pause to end.
    testkit::eventually("rows held after a 429", WAIT, || async {
        let asked = fake.requests(Kind::Twilio).len() as i64;
        let (sending, answered): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'sending'),
                    count(*) filter (where status = 'deferred' or (status = 'queued' and attempts > 0))
             from notifications",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (asked > 0 && answered == asked && sending > 0).then_some(())
    })
    .await;

    let resp = post(&app, &format!("/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(resp.status(), 200);
    let cancelled: Value = resp.json().await.unwrap();
    let after_cancel = db_now(&app).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        (
            cancelled["counts"]["cancelled"].as_i64(),
            cancelled["counts"]["sending"].as_i64()
        ),
        (Some(20), Some(0)),
        "every row not yet sent is cancelled, the held ones too: {}",
        cancelled["counts"]
    );

    // The provider recovers while the worker still holds the rows; the
    // worker lets go of them, and everything left is worked off.
    fake.heal(Kind::Twilio, TWILIO_SID_A);
    app.stop_worker().await;
    app.start_worker();
    drain(&app).await;

    let moves = moves_since(&app, after_cancel).await;
    assert!(
        moves.is_empty(),
        "no row moved (to deferred, queued or sent) after the cancel: {moves:?}"
    );
    assert!(accepted(&fake).is_empty(), "sent: {:?}", accepted(&fake));
    let done = batch(&app, &id).await;
    assert_eq!(done["counts"]["cancelled"], 20, "{}", done["counts"]);
    assert_eq!(app.count_status("sent").await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_cancelled_while_a_worker_holds_it_for_a_429_is_not_sent() {
    let fake = FakeProviders::start().await;
    let mut app = app_with_rate_limited_twilio(&fake).await;
    let send = |to: &'static str| lab_results_sms(&app, to);
    // The first send gets the 429, which pauses Twilio for 2 s.
    let first = send("+15005550006").await;
    testkit::eventually("the first send to get its 429", WAIT, || async {
        let n = app.notification(&first).await;
        let waits =
            n["status"] == "deferred" || (n["status"] == "queued" && n["attempt_count"] != 0);
        waits.then_some(())
    })
    .await;
    // The second finds Twilio paused and is held by a worker meanwhile.
    let held = send("+15005550007").await;
    app.wait_for_status(&held, "sending", WAIT).await;

    let resp = post(&app, &format!("/{held}/cancel"), &json!({})).await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    let after_cancel = db_now(&app).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("cancelled")),
        "{answer}"
    );

    // The provider recovers while the worker still holds the cancelled send.
    fake.heal(Kind::Twilio, TWILIO_SID_A);
    app.stop_worker().await;
    app.start_worker();
    drain(&app).await;

    assert_eq!(app.notification(&held).await["status"], "cancelled");
    assert_eq!(app.notification(&first).await["status"], "sent");
    assert_eq!(accepted(&fake), ["+15005550006"], "only the first went out");
    let moved: Vec<_> = moves_since(&app, after_cancel)
        .await
        .into_iter()
        .filter(|(id, ..)| *id == held)
        .collect();
    assert!(
        moved.is_empty(),
        "the cancelled send moved again: {moved:?}"
    );
    app.shutdown().await;
}
