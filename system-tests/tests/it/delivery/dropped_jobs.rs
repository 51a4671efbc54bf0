//! A queue worker whose Redis fetch or heartbeat fails is dropped by apalis
//! with every job it runs, and started again. The delivery jobs it held run
//! on to the end: the rows they claimed are sent and every provider's answer
//! is recorded at once, not when the claims' leases run out, and nothing is
//! sent twice.

use std::time::Duration;

use testkit::{
    TestApp,
    providers::{Answer, FakeProviders, Gate, Kind, TWILIO_SID_A},
};

use crate::support::{statuses, twelve_sms_held};

/// How long a test waits for one step. The claim's lease of a twelve-row
/// SMS job is three queue timeouts (45 s): rows stranded until their lease
/// runs out are not `sent` within the steps below.
const WAIT: Duration = Duration::from_secs(12);

/// The value of a counter of this process (0 when never counted).
fn counter(series: &str) -> u64 {
    shared::telemetry::metrics_handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

const SMS_RESTARTS: &str = r#"queue_worker_restarts_total{queue="sms"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_of_a_job_its_queue_worker_dropped_are_sent_and_recorded_at_once() {
    // The worker's counters are read from this process's recorder, which
    // must be installed before the worker counts anything.
    let _ = shared::telemetry::metrics_handle();
    let fake = FakeProviders::start().await;
    let gate = Gate::new();
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::Held(gate.clone()));
    let app = TestApp::builder()
        .providers(&fake)
        .redis_through_proxy()
        .spawn()
        .await;
    // One job holds the twelve rows: eight at Twilio, four waiting their turn.
    twelve_sms_held(&app, &gate, 2000, WAIT).await;
    let by_status = || statuses(&app.pool);

    // Redis goes away: the SMS queue worker's next fetch fails, and apalis
    // drops it, with the job, and starts it again.
    let restarts = counter(SMS_RESTARTS);
    let proxy = app.proxy.as_ref().unwrap();
    proxy.cut();
    testkit::eventually(
        "the SMS queue worker to be dropped and started again",
        WAIT,
        || async { (counter(SMS_RESTARTS) > restarts).then_some(()) },
    )
    .await;
    proxy.restore();
    gate.open();

    testkit::eventually("all twelve to be sent", WAIT, || async {
        (by_status().await == [("sent".to_owned(), 1, 12)]).then_some(())
    })
    .await;
    let attempts: Vec<(i32, String, i64)> = sqlx::query_as(
        "select attempt, outcome, count(*) from delivery_attempts group by 1, 2 order by 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [(1, "sent".to_owned(), 12)],
        "one attempt each, recorded by the job"
    );
    assert_eq!(fake.requests(Kind::Twilio).len(), 12, "each sent once");
    app.shutdown().await;
}
