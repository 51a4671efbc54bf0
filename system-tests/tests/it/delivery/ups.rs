//! UPS shipment polling against the fake UPS (OAuth and Track), with the
//! poll's clock driven by the tick each test pushes.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Value, json};
use shared::jobs::{PollUpsShipments, Queues};
use testkit::{
    TestApp,
    ups::{Answer, CLIENT_ID, CLIENT_SECRET, FakeUps, Scan},
};

const WAIT: Duration = Duration::from_secs(20);

async fn spawn(ups: &FakeUps) -> TestApp {
    TestApp::builder()
        .var("UPS_BASE_URL", ups.url())
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .var("JOBS__CIRCUIT_BREAKER__FAILURES", 2)
        .var("JOBS__CIRCUIT_BREAKER__COOLDOWN_SECS", 600)
        .without_scheduler()
        .spawn()
        .await
}

async fn add_ups(app: &TestApp) {
    app.add_provider(&json!({
        "provider": "ups", "name": "UPS", "priority": 0, "settings": {},
        "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    }))
    .await;
}

/// The fake UPS and an app that polls it with the organisation's UPS
/// credentials.
async fn ups_app() -> (FakeUps, TestApp) {
    let ups = FakeUps::start().await;
    let app = spawn(&ups).await;
    add_ups(&app).await;
    (ups, app)
}

/// Scans at fixed times in November 2026, one per letter of `kinds`: a label
/// (`M`), in transit (`I`), out for delivery (`O`), delivered (`D`).
fn scans(kinds: &str) -> Vec<Scan> {
    kinds
        .chars()
        .map(|kind| match kind {
            'M' => Scan::new("M", "20261121", "090000"),
            'I' => Scan::new("I", "20261122", "031500"),
            'O' => Scan::new("O", "20261123", "080000"),
            'D' => Scan::new("D", "20261123", "143000"),
            other => panic!("no fixed scan for {other}"),
        })
        .collect()
}

async fn create(app: &TestApp, number: &str) -> String {
    let resp = app
        .post_with_key(
            "/api/v1/shipments",
            &json!({"tracking_number": number, "reference": "KIT-1", "assigned_to": "nurse-7"}),
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A 1Z number with a correct check digit, from a 7-digit package number.
fn number(n: u32) -> String {
    let body = format!("1Z999AA101{n:07}");
    let digit = shared::shipments::check_digit_1z(&format!("{body}0")).unwrap();
    format!("{body}{digit}")
}

/// A tick in the future (so the in-process clock never catches up), on a
/// whole second.
fn start() -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::minutes(5))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap()
}

fn queues(app: &TestApp) -> Queues {
    Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap()
}

async fn sweep(app: &TestApp, at: DateTime<Utc>) {
    queues(app)
        .push(PollUpsShipments {
            scheduled_for: at,
            tenant_id: None,
            shipments: vec![],
        })
        .await
        .unwrap();
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    last_polled_at: Option<DateTime<Utc>>,
    next_poll_at: Option<DateTime<Utc>>,
    poll_failures: i32,
    last_error: Option<String>,
}

async fn row(app: &TestApp, id: &str) -> Row {
    sqlx::query_as("select status, last_polled_at, next_poll_at, poll_failures, last_error from shipments where id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Sweeps at `at` and waits until `id` was polled at `at` (or failed
/// `failures` times in a row).
async fn tick_and_wait(app: &TestApp, id: &str, at: DateTime<Utc>, failures: Option<i32>) -> Row {
    sweep(app, at).await;
    testkit::eventually("the poll to be recorded", WAIT, || async {
        let r = row(app, id).await;
        let done = match failures {
            None => r.last_polled_at == Some(at),
            Some(n) => r.poll_failures == n && r.next_poll_at.is_some_and(|t| t > at),
        };
        done.then_some(r)
    })
    .await
}

async fn count(app: &TestApp, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_changes_are_recorded_once_notified_and_polling_adapts_then_stops() {
    let (ups, app) = ups_app().await;
    let receiver = testkit::webhooks::Receiver::start().await;
    let resp = app
        .post_with_key(
            "/api/v1/admin/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["shipment.updated"]}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let n = number(1);
    let id = create(&app, &n).await;
    let t0 = start();
    ups.set_scans(&n, scans("M"));
    // What every API instance relays to the organisation's WebSocket clients.
    let mut pubsub = redis::Client::open(testkit::redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(shared::events::channel(&app.redis_prefix, app.tenant_id))
        .await
        .unwrap();

    let r = tick_and_wait(&app, &id, t0, None).await;
    assert_eq!(r.status, "label_created");
    let message = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut pubsub.on_message()))
        .await
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
    assert_eq!(event["type"], "shipment.updated");
    assert_eq!(event["topic"], "org");
    assert_eq!(event["data"]["shipment_id"], id.as_str());
    assert_eq!(event["data"]["status"], "label_created");
    assert_eq!(event["data"]["previous_status"], "pending");
    assert_eq!(
        r.next_poll_at,
        Some(t0 + chrono::Duration::minutes(30)),
        "changed just now: 30 min"
    );

    let t1 = t0 + chrono::Duration::minutes(30);
    ups.set_scans(&n, scans("MIO"));
    let r = tick_and_wait(&app, &id, t1, None).await;
    assert_eq!(r.status, "out_for_delivery");
    assert_eq!(r.next_poll_at, Some(t1 + chrono::Duration::minutes(15)));
    let events = "select count(*) from shipment_events where shipment_id = $1::uuid";
    assert_eq!(
        count(&app, events, &id).await,
        3,
        "the repeated label scan is not appended again"
    );

    // Nothing new: no new events, still every 15 minutes out for delivery.
    let t2 = t1 + chrono::Duration::minutes(15);
    let r = tick_and_wait(&app, &id, t2, None).await;
    assert_eq!(count(&app, events, &id).await, 3);
    assert_eq!(r.next_poll_at, Some(t2 + chrono::Duration::minutes(15)));

    let t3 = t2 + chrono::Duration::minutes(15);
    ups.set_scans(&n, scans("MIOD"));
    let r = tick_and_wait(&app, &id, t3, None).await;
    assert_eq!(r.status, "delivered");
    assert_eq!(r.next_poll_at, None, "delivered stops polling");

    // A later tick polls nothing.
    let before = ups.track_requests().len();
    sweep(&app, t3 + chrono::Duration::hours(24)).await;
    app.wait_queues_idle(WAIT).await;
    assert_eq!(ups.track_requests().len(), before);

    // Notices to the assignee (in-app; no email address known) for out for
    // delivery and delivered; the label scan raised none.
    let notices: Vec<(String, String)> = sqlx::query_as(
        "select channel, content->>'title' from notifications
         where metadata->>'shipment_id' = $1 order by created_at",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        notices,
        [
            ("inapp".to_owned(), "Shipment out for delivery".to_owned()),
            ("inapp".to_owned(), "Shipment delivered".to_owned())
        ]
    );
    // One webhook delivery per status change, without the tracking number.
    let payloads: Vec<Value> = sqlx::query_scalar(
        "select payload from webhook_deliveries where event = 'shipment.updated' order by created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let statuses: Vec<&str> = payloads
        .iter()
        .map(|p| p["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["label_created", "out_for_delivery", "delivered"]);
    assert!(!payloads[0].to_string().contains(&n));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_tracking_number_is_noted_and_asked_again_in_an_hour() {
    let (_ups, app) = ups_app().await;
    let id = create(&app, &number(2)).await;
    let t0 = start();
    let r = tick_and_wait(&app, &id, t0, None).await;
    assert_eq!(r.status, "pending");
    assert_eq!(
        r.poll_failures, 0,
        "an unknown number is an answer, not a failure"
    );
    assert!(r.last_error.unwrap().contains("no tracking information"));
    assert_eq!(r.next_poll_at, Some(t0 + chrono::Duration::hours(1)));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_backs_off_and_5xx_answers_open_the_organisations_breaker() {
    let (ups, app) = ups_app().await;
    let limited = number(3);
    ups.set_scans(&limited, scans("I"));
    let id = create(&app, &limited).await;
    ups.script([Answer::TooManyRequests(Some(600))]);
    let t0 = start();
    let r = tick_and_wait(&app, &id, t0, Some(1)).await;
    assert!(r.last_error.unwrap().contains("slow down"));
    assert_eq!(
        r.next_poll_at,
        Some(t0 + chrono::Duration::seconds(600)),
        "Retry-After is honoured when longer than the backoff"
    );
    // UPS is paused for every worker: clear it so the next part runs now.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(format!(
            "{}:provider:{}:paused",
            app.redis_prefix,
            worker::jobs::poll_ups::UPS_BUCKET
        ))
        .query_async(&mut redis)
        .await
        .unwrap();

    // Every answer a 503: each poll tries three times, two failed polls open
    // the breaker (failures = 2 in this test), and the third shipment is not
    // asked about at all.
    ups.always(Answer::Unavailable);
    let a = create(&app, &number(4)).await;
    let b = create(&app, &number(5)).await;
    let c = create(&app, &number(6)).await;
    let before = ups.track_requests().len();
    let t1 = t0 + chrono::Duration::minutes(1);
    sweep(&app, t1).await;
    testkit::eventually("three polls recorded", WAIT, || async {
        let mut done = 0;
        for id in [&a, &b, &c] {
            if row(&app, id).await.last_error.is_some() {
                done += 1;
            }
        }
        (done == 3).then_some(())
    })
    .await;
    let rows = [
        row(&app, &a).await,
        row(&app, &b).await,
        row(&app, &c).await,
    ];
    assert_eq!(
        ups.track_requests().len() - before,
        6,
        "two polls of three tries each: {rows:?}"
    );
    let paused: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("paused"))
        })
        .collect();
    assert_eq!(paused.len(), 1, "{rows:?}");
    assert_eq!(paused[0].poll_failures, 0);
    assert_eq!(
        paused[0].next_poll_at,
        Some(t1 + chrono::Duration::seconds(600)),
        "retried after the cool-down"
    );
    let failed: Vec<&Row> = rows.iter().filter(|r| r.poll_failures == 1).collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].last_error.as_deref().unwrap().contains("503"));
    assert_eq!(
        failed[0].next_poll_at,
        Some(t1 + chrono::Duration::minutes(5))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_oversized_answers_are_recorded_as_failures() {
    let (ups, app) = ups_app().await;
    let id = create(&app, &number(7)).await;
    ups.always(Answer::Malformed);
    let t0 = start();
    let r = tick_and_wait(&app, &id, t0, Some(1)).await;
    assert!(r.last_error.unwrap().contains("unreadable"));
    ups.always(Answer::Oversized(3 * 1024 * 1024));
    let t1 = r.next_poll_at.unwrap();
    let r = tick_and_wait(&app, &id, t1, Some(2)).await;
    assert!(r.last_error.unwrap().contains("too large"));
    assert_eq!(
        r.next_poll_at,
        Some(t1 + chrono::Duration::minutes(10)),
        "backoff doubles"
    );
    assert_eq!(r.status, "pending");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_is_shared_until_it_expires_and_a_401_refreshes_it_once() {
    let (ups, app) = ups_app().await;
    let numbers = [number(8), number(9), number(10)];
    let mut ids = Vec::new();
    for n in &numbers {
        ups.set_scans(n, scans("I"));
        ids.push(create(&app, n).await);
    }
    // Lives 61 s at UPS: cached for 1 s (a minute's margin).
    ups.set_expires_in(61);
    let t0 = start();
    sweep(&app, t0).await;
    for id in &ids {
        tick_wait_polled(&app, id, t0).await;
    }
    assert_eq!(ups.token_requests(), 1, "three polls, one token");
    // The cached token is sealed, not the token itself.
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:ups:token:*", app.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let cached: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!cached.contains("ups-access-"), "{cached}");

    // The cached token's lifetime is counted by Redis's own clock (a key
    // expiry), which no injected clock reaches: wait it out.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ups.set_expires_in(14_399);
    let t1 = t0 + chrono::Duration::hours(1);
    let r = tick_and_wait(&app, &ids[0], t1, None).await;
    assert_eq!(r.status, "in_transit");
    assert_eq!(ups.token_requests(), 2, "an expired token is fetched again");

    // UPS stops accepting the token: one refresh, one retry, success.
    ups.script([Answer::Unauthorized]);
    let t2 = t1 + chrono::Duration::hours(1);
    let r = tick_and_wait(&app, &ids[0], t2, None).await;
    assert_eq!(r.poll_failures, 0);
    assert_eq!(ups.token_requests(), 3);
    app.shutdown().await;
}

async fn tick_wait_polled(app: &TestApp, id: &str, at: DateTime<Utc>) {
    testkit::eventually("the poll", WAIT, || async {
        (row(app, id).await.last_polled_at == Some(at)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tick_polls_each_shipment_once_with_two_schedulers() {
    let (ups, app) = ups_app().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let n = number(100 + i);
        ups.set_scans(&n, scans("I"));
        ids.push(create(&app, &n).await);
    }
    let entries: Vec<_> = app
        .settings
        .jobs
        .cron
        .iter()
        .filter(|e| e.name == "poll-ups-shipments")
        .cloned()
        .collect();
    assert_eq!(entries.len(), 1);
    let now = start();
    let since = now - chrono::Duration::seconds(61);
    let mut one =
        scheduler::cron::CronTicker::new(app.pool.clone(), queues(&app), entries.clone(), since);
    let mut two = scheduler::cron::CronTicker::new(app.pool.clone(), queues(&app), entries, since);
    let (a, b) = tokio::join!(one.tick(now), two.tick(now));
    let won: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(won.len(), 1, "one scheduler wins the tick");
    let at = won[0].1;
    // The same tick's sweep delivered again (a lost ack) claims nothing more.
    sweep(&app, at).await;
    for id in &ids {
        tick_wait_polled(&app, id, at).await;
    }
    app.wait_queues_idle(WAIT).await;
    let requests = ups.track_requests();
    assert_eq!(requests.len(), 20, "each shipment once");
    let mut unique = requests.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20);
    app.shutdown().await;
}

/// Creates the shipment `body` as the user with `jwt`, then sweeps.
async fn track_and_sweep(app: &TestApp, jwt: &str, body: Value) {
    let resp = app.post_with_token("/api/v1/shipments", jwt, &body).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    sweep(app, start()).await;
}

/// The string `name` of a JSON answer.
async fn field(resp: reqwest::Response, name: &str) -> String {
    let body: Value = resp.json().await.unwrap();
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// Waits for the emails with `subject` and returns their recipients, sorted.
async fn mailed(app: &TestApp, subject: &str, n: usize) -> Vec<String> {
    testkit::eventually("the shipment emails", WAIT, || async {
        let mut to: Vec<String> = app
            .smtp
            .received()
            .iter()
            .filter(|m| m.parsed().subject() == Some(subject))
            .flat_map(|m| m.to.clone())
            .collect();
        to.sort();
        (to.len() >= n).then_some(to)
    })
    .await
}

async fn subscriber_email(app: &TestApp, user_id: &str) -> Option<String> {
    sqlx::query_scalar("select email from subscribers where tenant_id = $1 and external_id = $2")
        .bind(app.tenant_id)
        .bind(user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipment_notices_are_emailed_to_users_created_by_an_admin_or_an_invitation() {
    // With the scheduler: its dispatcher pushes the invitation and the
    // notices. Its own minute sweep may poll the shipment before the tick
    // below does; either way the status changes once.
    let ups = FakeUps::start().await;
    let app = TestApp::builder()
        .var("UPS_BASE_URL", ups.url())
        .spawn()
        .await;
    add_ups(&app).await;
    let password = "Correct-Horse-42";

    // The assignee: created by an organisation admin (the API key).
    let resp = app
        .post_with_key(
            "/api/v1/admin/users",
            &json!({"email": "nurse.ada@clinic.example", "role": "medical_staff",
            "temporary_password": password}),
        )
        .await;
    let assignee = field(resp, "id").await;

    // The creator: invited, and signed up with the emailed token.
    let resp = app
        .post_with_key(
            "/api/v1/invitations",
            &json!({"email": "ops.lee@clinic.example", "invitation_type": "admin"}),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let token = testkit::eventually("the invitation email", WAIT, || async {
        let mail = app.smtp.received();
        let body = mail.first()?.parsed().body_text(0)?.into_owned();
        body.split(|c: char| c.is_whitespace() || c == '/')
            .find(|w| w.len() == 43)
            .map(str::to_owned)
    })
    .await;
    let resp = app
        .post_anonymous(
            &format!("/api/v1/invitations/accept/{token}"),
            &json!({"password": password}),
        )
        .await;
    let creator = field(resp, "id").await;
    let resp = app
        .post_anonymous(
            "/api/v1/auth/login",
            &json!({"email": "ops.lee@clinic.example", "password": password}),
        )
        .await;
    let jwt = field(resp, "access_token").await;

    // Each user's subscriber carries the sign-in address.
    assert_eq!(
        subscriber_email(&app, &assignee).await.as_deref(),
        Some("nurse.ada@clinic.example")
    );
    assert_eq!(
        subscriber_email(&app, &creator).await.as_deref(),
        Some("ops.lee@clinic.example")
    );
    // A user from before the address was stored has a subscriber without
    // one: the sign-in address is used when the notice is sent.
    sqlx::query("update subscribers set email = null where external_id = $1")
        .bind(&assignee)
        .execute(&app.pool)
        .await
        .unwrap();

    let n = number(40);
    ups.set_scans(&n, scans("MO"));
    track_and_sweep(
        &app,
        &jwt,
        json!({"tracking_number": n, "reference": "KIT-9", "assigned_to": assignee}),
    )
    .await;
    assert_eq!(
        mailed(&app, "Shipment out for delivery", 2).await,
        ["nurse.ada@clinic.example", "ops.lee@clinic.example"],
        "the assignee and the creator are emailed"
    );

    // An address the creator's subscriber stores wins over the sign-in one.
    let resp = app
        .put_with_key(
            &format!("/api/v1/services/subscribers/{creator}"),
            &json!({"email": "lee.personal@home.example"}),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let n = number(41);
    ups.set_scans(&n, scans("MD"));
    track_and_sweep(
        &app,
        &jwt,
        json!({"tracking_number": n, "assigned_to": assignee}),
    )
    .await;
    assert_eq!(
        mailed(&app, "Shipment delivered", 2).await,
        ["lee.personal@home.example", "nurse.ada@clinic.example"]
    );
    app.shutdown().await;
}
