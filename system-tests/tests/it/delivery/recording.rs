//! Once a provider has answered, its answer reaches Postgres. A send whose
//! outcome cannot be written at once (Postgres unreachable, or no free
//! connection in the pool) is held and written as soon as Postgres answers:
//! it is never sent again, and never left `sending` until its claim's lease
//! runs out. Nor are the rows of a group a stopping worker never got to:
//! they are given back at once.

use std::time::Duration;

use testkit::{
    TestApp, TestAppBuilder,
    providers::{Answer, FakeProviders, Gate, Kind, TWILIO_SID_A, twilio_config},
};

use crate::support::{lab_results_sms, statuses, twelve_sms_held};

/// How long a test waits for one step. The claim's lease of a one-row SMS
/// job is two queue timeouts (30 s): a row stranded until its lease runs
/// out does not reach `sent` within this.
const WAIT: Duration = Duration::from_secs(12);

fn builder(fake: &FakeProviders) -> TestAppBuilder {
    // The worker's counters are read from this process's recorder, which
    // must be installed before the worker counts anything.
    let _ = shared::telemetry::metrics_handle();
    TestApp::builder().providers(fake)
}

async fn with_twilio(app: &TestApp) {
    app.add_provider(&twilio_config("twilio-main", TWILIO_SID_A, Some(10)))
        .await;
}

/// The value of a counter of this process (0 when never counted).
fn counter(series: &str) -> u64 {
    shared::telemetry::metrics_handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Waits until the worker, holding a provider's answer, has found it could
/// not write it: it either holds the answer to try again, or gives up on it.
async fn until_the_write_has_failed_once() {
    testkit::eventually(
        "the worker to find it cannot record the answer",
        WAIT,
        || async {
            let held = counter(r#"db_write_retries_total{what="outcome"}"#);
            let given_up = counter(r#"jobs_succeeded_total{queue="sms"}"#);
            (held + given_up > 0).then_some(())
        },
    )
    .await;
}

/// Waits until the notification is `sent`, read from Postgres itself (the
/// API may still be finding its way back after an outage), and returns its
/// attempts: (attempt, outcome, provider).
async fn sent(app: &TestApp, id: &str) -> Vec<(i32, String, String)> {
    testkit::eventually(&format!("notification {id} to be sent"), WAIT, || async {
        let status: String =
            sqlx::query_scalar("select status from notifications where id::text = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (status == "sent").then_some(())
    })
    .await;
    sqlx::query_as(
        "select attempt, outcome, provider from delivery_attempts
         where notification_id::text = $1 order by id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn once_through_twilio() -> Vec<(i32, String, String)> {
    vec![(1, "sent".to_owned(), "twilio-main".to_owned())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sms_twilio_accepted_while_postgres_was_down_is_recorded_sent_once_it_is_back() {
    let fake = FakeProviders::start().await;
    let gate = Gate::new();
    fake.script(Kind::Twilio, TWILIO_SID_A, [Answer::Held(gate.clone())]);
    let app = builder(&fake).postgres_through_proxy().spawn().await;
    with_twilio(&app).await;
    let id = lab_results_sms(&app, "+15005550006").await;
    tokio::time::timeout(WAIT, gate.arrived(1))
        .await
        .expect("Twilio has the message");

    let proxy = app.postgres_proxy.as_ref().unwrap();
    proxy.cut();
    gate.open();
    until_the_write_has_failed_once().await;
    proxy.restore();

    assert_eq!(sent(&app, &id).await, once_through_twilio());
    assert_eq!(fake.requests(Kind::Twilio).len(), 1, "sent once");
    app.shutdown().await;
}

/// Answers held at once in the pool-exhaustion test: more than one
/// statement writes (64), so they take two statements at least.
const HELD_ANSWERS: usize = 65;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_answers_that_find_the_pool_exhausted_are_recorded_once_a_connection_frees() {
    let fake = FakeProviders::start().await;
    let gate = Gate::new();
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::Held(gate.clone()));
    let app = builder(&fake)
        .var("DATABASE_MAX_CONNECTIONS", 1)
        .var("JOBS__QUEUES__SMS__CONCURRENCY", HELD_ANSWERS)
        .spawn()
        .await;
    with_twilio(&app).await;
    let mut ids = Vec::new();
    for i in 0..HELD_ANSWERS {
        ids.push(lab_results_sms(&app, &format!("+15005551{i:03}")).await);
    }
    tokio::time::timeout(WAIT, gate.arrived(HELD_ANSWERS))
        .await
        .expect("Twilio has every message");

    // The answers are written together, but by two statements at least:
    // the first takes the worker's only connection and waits on this lock;
    // the next finds no free connection within the pool's acquire timeout.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("lock table delivery_attempts in exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    gate.open();
    until_the_write_has_failed_once().await;
    lock.rollback().await.unwrap();

    for id in &ids {
        assert_eq!(sent(&app, id).await, once_through_twilio());
    }
    assert_eq!(
        fake.requests(Kind::Twilio).len(),
        HELD_ANSWERS,
        "each sent once"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_of_a_group_a_stopping_worker_never_got_to_are_given_back_at_once() {
    let fake = FakeProviders::start().await;
    let gate = Gate::new();
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::Held(gate.clone()));
    let mut app = builder(&fake).spawn().await;
    // One job holds the twelve rows: eight at Twilio, four waiting their turn.
    twelve_sms_held(&app, &gate, 1000, WAIT).await;
    let pool = app.pool.clone();
    let by_status = || statuses(&pool);

    // The worker is told to stop while the eight are in flight.
    let given_back = async {
        testkit::eventually("the four waiting rows to be given back", WAIT, || async {
            let now = by_status().await;
            now.contains(&("queued".to_owned(), 0, 4)).then_some(now)
        })
        .await
    };
    let (_, at_stop) = tokio::join!(app.stop_worker(), async {
        let now = given_back.await;
        gate.open();
        now
    });
    assert_eq!(
        at_stop,
        [("queued".to_owned(), 0, 4), ("sending".to_owned(), 1, 8)],
        "given back before the eight in flight were answered"
    );
    assert_eq!(
        by_status().await,
        [("queued".to_owned(), 0, 4), ("sent".to_owned(), 1, 8)],
        "the eight answered while stopping are recorded"
    );
    let unattempted: i64 = sqlx::query_scalar(
        "select count(*) from notifications n where status = 'queued'
         and not exists (select 1 from delivery_attempts a where a.notification_id = n.id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unattempted, 4, "no attempt is spent on a row given back");

    app.start_worker();
    testkit::eventually("all twelve to be sent", WAIT, || async {
        (by_status().await == [("sent".to_owned(), 1, 12)]).then_some(())
    })
    .await;
    assert_eq!(fake.requests(Kind::Twilio).len(), 12, "each sent once");
    app.shutdown().await;
}
