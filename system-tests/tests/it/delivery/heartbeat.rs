//! The worker's heartbeat in Redis: what a running process reports (its
//! queues, their concurrency, the jobs it runs now), that it lives three
//! heartbeats, that a graceful stop removes it, and that a record nobody
//! renews drops off.

use std::time::Duration;

use shared::{
    fleet::{self, WorkerBeat},
    jobs::{QueueName, Queues},
};
use testkit::{
    TestApp,
    providers::{Answer, FakeProviders, Gate, Kind, TWILIO_SID_A, twilio_config},
};

const WAIT: Duration = Duration::from_secs(20);

fn queues(app: &TestApp) -> Queues {
    Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap()
}

async fn live(app: &TestApp) -> Vec<WorkerBeat> {
    let q = queues(app);
    fleet::live_workers(&mut q.connection(), q.prefix())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_reports_its_queues_and_jobs_in_flight_and_leaves_when_stopped() {
    let fake = FakeProviders::start().await;
    let gate = Gate::new();
    fake.script(Kind::Twilio, TWILIO_SID_A, [Answer::Held(gate.clone())]);
    let mut app = TestApp::builder()
        .providers(&fake)
        .var("WORKER_QUEUES", "sms,email")
        .var("WORKER_HEARTBEAT_SECS", 1)
        .spawn()
        .await;
    app.add_provider(&twilio_config("twilio-main", TWILIO_SID_A, Some(1)))
        .await;
    let id = crate::support::lab_results_sms(&app, "+15005550006").await;
    tokio::time::timeout(WAIT, gate.arrived(1))
        .await
        .expect("Twilio has the message");

    let busy = testkit::eventually("a heartbeat with the send in flight", WAIT, || async {
        live(&app).await.into_iter().find(|w| w.in_flight == 1)
    })
    .await;
    assert_eq!(busy.queues, ["sms", "email"]);
    let concurrency = |q: QueueName| app.settings.jobs.queue(q).concurrency as u32;
    assert_eq!(
        busy.concurrency,
        [
            ("email".to_owned(), concurrency(QueueName::Email)),
            ("sms".to_owned(), concurrency(QueueName::Sms)),
        ]
        .into()
    );
    assert_eq!(busy.pid, std::process::id());
    assert_eq!(busy.version, env!("CARGO_PKG_VERSION"));
    let mut conn = app.redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:fleet:worker:{}", app.redis_prefix, busy.name))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 3_000,
        "lives three heartbeats of 1 s: {ttl} ms"
    );

    gate.open();
    app.wait_for_status(&id, "sent", WAIT).await;
    let idle = testkit::eventually("a heartbeat with nothing in flight", WAIT, || async {
        live(&app).await.into_iter().find(|w| w.in_flight == 0)
    })
    .await;
    assert_eq!(idle.name, busy.name);
    assert_eq!(idle.started_at, busy.started_at);
    assert!(idle.last_heartbeat > busy.last_heartbeat);

    app.stop_worker().await;
    assert!(
        live(&app).await.is_empty(),
        "a stopped worker is gone at once"
    );
    let listed: i64 = redis::cmd("ZCARD")
        .arg(format!("{}:fleet:workers", app.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_nobody_renews_drops_off_when_it_expires() {
    let app = TestApp::spawn_api_only().await;
    let q = queues(&app);
    let mut conn = q.connection();
    let now = chrono::Utc::now();
    let beat = WorkerBeat {
        name: "gone-host-1-abcdef01".into(),
        host: "gone-host".into(),
        pid: 1,
        queues: vec!["email".into()],
        concurrency: [("email".to_owned(), 4)].into(),
        in_flight: 2,
        started_at: now,
        last_heartbeat: now,
        version: "0.0.0".into(),
    };
    fleet::beat(&mut conn, q.prefix(), &beat, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(live(&app).await, [beat]);
    // A process that died writes no more; its record runs out.
    testkit::eventually("the record to expire", WAIT, || async {
        live(&app).await.is_empty().then_some(())
    })
    .await;
    let mut raw = app.redis().await;
    let listed: i64 = redis::cmd("ZCARD")
        .arg(format!("{}:fleet:workers", app.redis_prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(listed, 0, "the index forgets it too");
    app.shutdown().await;
}
