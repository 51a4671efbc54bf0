//! SMS, push, WhatsApp and SendGrid deliveries through organisations' own
//! provider configs, against local stand-ins that check each request:
//! failover, the circuit breaker, 429s with `Retry-After`, timeouts, and a
//! rate limit shared by worker processes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{
    TestApp, TestAppBuilder,
    providers::{
        Answer, FakeProviders, INVALID_NUMBER, Kind, SENDGRID_KEY, TWILIO_AUTH_TOKEN, TWILIO_SID_A,
        TWILIO_SID_B, UNREGISTERED_TOKEN_PREFIX, WHATSAPP_TOKEN, WINDOW_CLOSED_NUMBER,
        fcm_service_account, twilio_config,
    },
};

const WAIT: Duration = Duration::from_secs(20);
const PATIENT: &str = "+15005550006";

fn builder(fake: &FakeProviders) -> TestAppBuilder {
    let mut b = TestApp::builder().providers(fake);
    for q in ["SMS", "PUSH", "WHATSAPP", "EMAIL"] {
        b = b
            .var(&format!("JOBS__QUEUES__{q}__TIMEOUT_SECS"), 2)
            .var(&format!("JOBS__QUEUES__{q}__BACKOFF__INITIAL_MS"), 100)
            .var(&format!("JOBS__QUEUES__{q}__BACKOFF__MAX_MS"), 500);
    }
    b
}

fn twilio(name: &str, sid: &str, priority: i32) -> Value {
    twilio_config(name, sid, Some(priority))
}

async fn send(app: &TestApp, body: Value) -> String {
    let resp = app.post_send(&app.api_key, None, &body).await;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn sms(app: &TestApp, to: &str) -> String {
    crate::support::lab_results_sms(app, to).await
}

/// Sends `body` and waits for the notification to reach `status`.
async fn send_until(app: &TestApp, body: Value, status: &str) -> Value {
    let id = send(app, body).await;
    app.wait_for_status(&id, status, WAIT).await
}

/// Sends the lab-results SMS to `to` and waits for it to reach `status`.
async fn sms_until(app: &TestApp, to: &str, status: &str) -> Value {
    let id = sms(app, to).await;
    app.wait_for_status(&id, status, WAIT).await
}

/// Adds the WhatsApp Cloud API provider for phone number 106540352242922.
async fn add_whatsapp(app: &TestApp, credentials: Value) {
    app.add_provider(&json!({
        "provider": "whatsapp", "name": "cloud-api",
        "settings": {"phone_number_id": "106540352242922"},
        "credentials": credentials,
    }))
    .await;
}

/// A WhatsApp text message to `to`.
fn whatsapp_text(to: &str, text: &str) -> Value {
    json!({"channel": "whatsapp", "to": to, "text": text})
}

/// The provider's id for a sent notification.
fn provider_id(n: &Value) -> &str {
    n["provider_message_id"].as_str().unwrap()
}

fn outcomes(n: &Value) -> Vec<(String, String, Option<i64>)> {
    n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().to_owned(),
                a["provider"].as_str().unwrap().to_owned(),
                a["response_code"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_goes_out_through_twilio_with_the_documented_request() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake)
        .var("PUBLIC_BASE_URL", "https://notify.example.org")
        .spawn()
        .await;
    let provider = app
        .add_provider(&twilio("twilio-main", TWILIO_SID_A, 10))
        .await;
    let n = sms_until(&app, PATIENT, "sent").await;
    let sid = provider_id(&n);
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(
        outcomes(&n),
        [("sent".into(), "twilio-main".into(), Some(201))]
    );
    let reqs = fake.requests(Kind::Twilio);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID_A}/Messages.json")
    );
    assert_eq!(r.body["To"], PATIENT);
    assert_eq!(r.body["From"], "+15005550999");
    assert_eq!(r.body["Body"], "Your lab results are ready.");
    assert_eq!(
        r.body["StatusCallback"],
        format!("https://notify.example.org/webhooks/twilio/{provider}")
    );
    assert!(r.authorization.as_deref().unwrap().starts_with("Basic "));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_without_a_provider_fails_with_that_reason() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    let n = sms_until(&app, PATIENT, "failed").await;
    assert_eq!(
        n["last_error"],
        "no sms provider is configured for this organisation"
    );
    assert!(fake.requests(Kind::Twilio).is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_failure_fails_over_and_a_permanent_one_does_not() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    app.add_provider(&twilio("primary", TWILIO_SID_A, 1)).await;
    app.add_provider(&twilio("backup", TWILIO_SID_B, 2)).await;
    fake.script(Kind::Twilio, TWILIO_SID_A, [Answer::Unavailable]);
    let n = sms_until(&app, PATIENT, "sent").await;
    assert_eq!(
        outcomes(&n),
        [
            ("failover".into(), "primary".into(), Some(503)),
            ("sent".into(), "backup".into(), Some(201)),
        ]
    );
    assert_eq!(n["attempt_count"], 1, "failover happens within one attempt");

    // An invalid number is the message's fault: no failover, no retry.
    let n = sms_until(&app, INVALID_NUMBER, "failed").await;
    assert_eq!(
        outcomes(&n),
        [("failed".into(), "primary".into(), Some(400))]
    );
    assert!(n["last_error"].as_str().unwrap().contains("21211"), "{n}");
    let to_backup = fake
        .requests(Kind::Twilio)
        .iter()
        .filter(|r| r.path.contains(TWILIO_SID_B) && r.body["To"] == INVALID_NUMBER)
        .count();
    assert_eq!(to_backup, 0);
    // Each provider's answers are counted per minute for alert rules on
    // one provider: primary failed twice (the failover and the invalid
    // number), backup took one send.
    let counted = testkit::eventually("the providers' answers to be counted", WAIT, || async {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "select channel, provider, sum(sent)::int8, sum(failed)::int8
             from provider_minutes where tenant_id = $1 group by 1, 2 order by 2",
        )
        .bind(app.tenant_id.0)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        (rows.iter().map(|r| r.2 + r.3).sum::<i64>() == 3).then_some(rows)
    })
    .await;
    assert_eq!(
        counted,
        [
            ("sms".into(), "backup".into(), 1, 0),
            ("sms".into(), "primary".into(), 0, 2)
        ]
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_defers_its_send_until_the_retry_after_without_spending_an_attempt() {
    let fake = FakeProviders::start().await;
    // The queue's own backoff (15 s and more, from jobs.toml) is longer than
    // the Retry-After, so a send retried on the backoff would show.
    let app = TestApp::builder().providers(&fake).spawn().await;
    app.add_provider(&twilio("only", TWILIO_SID_A, 1)).await;
    fake.script(
        Kind::Twilio,
        TWILIO_SID_A,
        [Answer::TooManyRequests(Some(4))],
    );
    // Maps the fake's request instants onto the wall clock.
    let (origin, origin_utc) = (Instant::now(), chrono::Utc::now());
    let id = sms(&app, PATIENT).await;
    let held = testkit::eventually("the 429 to be dealt with", WAIT, || async {
        let n = app.notification(&id).await;
        (n["status"] == "deferred" || !n["attempts"].as_array().unwrap().is_empty()).then_some(n)
    })
    .await;
    assert_eq!(held["status"], "deferred", "{held}");
    assert_eq!(held["attempt_count"], 0, "the 429 spent no attempt: {held}");
    assert!(outcomes(&held).is_empty(), "nothing recorded as an attempt");
    let reqs = fake.requests(Kind::Twilio);
    assert_eq!((reqs.len(), reqs[0].status), (1, 429));
    let answered_429 = origin_utc + chrono::Duration::from_std(reqs[0].at - origin).unwrap();
    let (run_at, attempts): (chrono::DateTime<chrono::Utc>, i32) =
        sqlx::query_as("select run_at, attempts from notifications where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 0);
    let wait = run_at - answered_429;
    assert!(
        wait >= chrono::Duration::milliseconds(3_950) && wait <= chrono::Duration::seconds(5),
        "held for Retry-After (4 s) after the 429, not the queue's backoff: {wait:?}"
    );
    let shown: chrono::DateTime<chrono::Utc> =
        held["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (shown - run_at).abs() < chrono::Duration::milliseconds(1),
        "next_attempt_at says when: {shown} vs {run_at}"
    );

    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(outcomes(&n), [("sent".into(), "only".into(), Some(201))]);
    assert_eq!(n["attempt_count"], 1);
    let reqs = fake.requests(Kind::Twilio);
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1].at - reqs[0].at >= Duration::from_millis(3_950),
        "sent again only once Retry-After passed: {:?}",
        reqs[1].at - reqs[0].at
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_that_hangs_times_out_and_the_send_fails_over() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    app.add_provider(&twilio("slow", TWILIO_SID_A, 1)).await;
    app.add_provider(&twilio("quick", TWILIO_SID_B, 2)).await;
    fake.script(
        Kind::Twilio,
        TWILIO_SID_A,
        [Answer::Hang(Duration::from_secs(10))],
    );
    let n = sms_until(&app, PATIENT, "sent").await;
    let attempts = n["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "failover");
    assert_eq!(attempts[0]["provider"], "slow");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("in time")
            || attempts[0]["error"].as_str().unwrap().contains("within"),
        "{n}"
    );
    assert_eq!(attempts[1]["provider"], "quick");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_a_good_probe() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake)
        .var("JOBS__CIRCUIT_BREAKER__FAILURES", 2)
        .var("JOBS__CIRCUIT_BREAKER__COOLDOWN_SECS", 2)
        .spawn()
        .await;
    app.add_provider(&twilio("flaky", TWILIO_SID_A, 1)).await;
    app.add_provider(&twilio("steady", TWILIO_SID_B, 2)).await;
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::Unavailable);
    for _ in 0..2 {
        sms_until(&app, PATIENT, "sent").await;
    }
    let tried = |fake: &FakeProviders| {
        fake.requests(Kind::Twilio)
            .iter()
            .filter(|r| r.path.contains(TWILIO_SID_A))
            .count()
    };
    assert_eq!(tried(&fake), 2, "both sends tried the flaky provider first");

    // Open: the flaky provider is skipped, not called.
    let n = sms_until(&app, PATIENT, "sent").await;
    assert_eq!(tried(&fake), 2);
    assert!(
        n["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{n}"
    );

    // After the cool-down one send probes it; its success closes the circuit.
    fake.heal(Kind::Twilio, TWILIO_SID_A);
    // The breaker's cool-down is the worker's own wall-clock time in
    // another process; waiting it out is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for _ in 0..2 {
        let n = sms_until(&app, PATIENT, "sent").await;
        assert_eq!(outcomes(&n), [("sent".into(), "flaky".into(), Some(201))]);
    }
    assert_eq!(tried(&fake), 4);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_holds_across_two_worker_processes() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).without_worker().spawn().await;
    let mut body = twilio("limited", TWILIO_SID_A, 1);
    body["settings"]["rate_per_sec"] = json!(5);
    app.add_provider(&body).await;
    let ids = futures::future::join_all((0..40).map(|_| sms(&app, PATIENT))).await;
    // Few sends at a time per process, so the first process up cannot hold
    // every job while it waits for the shared limit and the second has a
    // share to send whenever it starts.
    let spawn = || {
        tokio::process::Command::new(testkit::process::binary("worker"))
            .envs(app.vars.iter().cloned())
            .env("JOBS__QUEUES__SMS__CONCURRENCY", "4")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker binary starts")
    };
    let (mut a, mut b) = (spawn(), spawn());
    for id in &ids {
        app.wait_for_status(id, "sent", Duration::from_secs(40))
            .await;
    }
    a.kill().await.unwrap();
    b.kill().await.unwrap();
    let reqs = fake.requests(Kind::Twilio);
    assert_eq!(reqs.len(), 40);
    // 5 a second with a burst of 10: 40 sends need at least (40 - 10) / 5 s.
    let span = reqs[39].at - reqs[0].at;
    assert!(span >= Duration::from_millis(5_500), "{span:?}");
    // And no second ever held more than the burst plus one second's rate.
    for (i, r) in reqs.iter().enumerate() {
        let in_window = reqs[i..]
            .iter()
            .take_while(|o| o.at - r.at < Duration::from_secs(1))
            .count();
        assert!(in_window <= 15, "{in_window} sends within a second");
    }
    let workers: i64 = sqlx::query_scalar(
        "select count(distinct worker) from delivery_attempts where outcome = 'sent'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(workers, 2, "both processes sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_goes_out_through_sendgrid_and_falls_back_to_the_platform_relay() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    app.add_provider(&json!({
        "provider": "sendgrid", "name": "sendgrid", "priority": 1,
        "settings": {"from_email": "care@clinic.example.org", "from_name": "Care Team"},
        "credentials": {"api_key": SENDGRID_KEY},
    }))
    .await;
    app.add_provider(&json!({"provider": "smtp", "name": "relay", "priority": 2}))
        .await;
    let email = json!({"to": "pat@example.org", "subject": "Results", "text": "Ready.", "html": "<p>Ready.</p>"});
    let id = send(&app, email.clone()).await;
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert!(provider_id(&n).starts_with("sg-"), "{n}");
    let r = &fake.requests(Kind::SendGrid)[0];
    assert_eq!(
        r.body["personalizations"][0]["to"][0]["email"],
        "pat@example.org"
    );
    assert_eq!(r.body["content"][0]["type"], "text/plain");
    assert_eq!(r.body["content"][1]["type"], "text/html");
    assert_eq!(r.body["custom_args"]["notification_id"], id.as_str());
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {SENDGRID_KEY}").as_str())
    );
    assert!(app.smtp.received().is_empty());

    fake.always(Kind::SendGrid, SENDGRID_KEY, Answer::Unavailable);
    let n = send_until(&app, email, "sent").await;
    assert_eq!(
        outcomes(&n),
        [
            ("failover".into(), "sendgrid".into(), Some(503)),
            ("sent".into(), "relay".into(), Some(250)),
        ]
    );
    assert_eq!(app.smtp.received().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_through_fcm_reuses_its_access_token_and_drops_gone_devices() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    app.add_provider(&json!({
        "provider": "fcm", "name": "firebase",
        "settings": {"project_id": "test-project"},
        "credentials": fcm_service_account(),
    }))
    .await;
    let visit = json!({"channel": "push", "to": "device-token-1", "title": "Your visit", "body": "Starts at 3 PM", "data": {"visit": "42"}});
    for _ in 0..2 {
        let n = send_until(&app, visit.clone(), "sent").await;
        assert!(
            provider_id(&n).starts_with("projects/test-project/messages/"),
            "{n}"
        );
    }
    assert_eq!(
        fake.requests(Kind::GoogleToken).len(),
        1,
        "the token is cached"
    );
    let sent = fake.requests(Kind::Fcm);
    assert_eq!(sent[0].body["message"]["token"], "device-token-1");
    assert_eq!(sent[0].body["message"]["data"]["visit"], "42");
    assert!(
        sent[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Bearer ya29.")
    );

    let n = send_until(
        &app,
        json!({"channel": "push", "to": format!("{UNREGISTERED_TOKEN_PREFIX}1"), "title": "Hello"}),
        "failed",
    )
    .await;
    assert!(
        n["last_error"].as_str().unwrap().contains("UNREGISTERED"),
        "{n}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_sends_text_and_templates_and_refuses_text_outside_the_window() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    add_whatsapp(
        &app,
        json!({"access_token": WHATSAPP_TOKEN, "app_secret": "0123456789abcdef"}),
    )
    .await;
    let n = send_until(&app, whatsapp_text(PATIENT, "See you soon"), "sent").await;
    assert!(provider_id(&n).starts_with("wamid."), "{n}");
    let reminder = json!({"channel": "whatsapp", "to": WINDOW_CLOSED_NUMBER,
               "whatsapp_template": {"name": "appointment_reminder", "language": "en_US", "parameters": ["Pat", "3 PM"]}});
    send_until(&app, reminder, "sent").await;
    let reqs = fake.requests(Kind::WhatsApp);
    assert_eq!(reqs[0].path, "/v21.0/106540352242922/messages");
    assert_eq!(reqs[0].body["to"], PATIENT.trim_start_matches('+'));
    assert_eq!(reqs[0].body["text"]["body"], "See you soon");
    assert_eq!(reqs[1].body["template"]["name"], "appointment_reminder");
    assert_eq!(reqs[1].body["template"]["language"]["code"], "en_US");
    assert_eq!(
        reqs[1].body["template"]["components"][0]["parameters"][1]["text"],
        "3 PM"
    );

    let n = send_until(&app, whatsapp_text(WINDOW_CLOSED_NUMBER, "Hi"), "failed").await;
    let error = n["last_error"].as_str().unwrap();
    assert!(
        error.contains("131047") && error.contains("template"),
        "{error}"
    );
    assert_eq!(n["attempt_count"], 1, "not retried");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_sealed_and_a_tampered_ciphertext_is_not_used() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    let id = app.add_provider(&twilio("main", TWILIO_SID_A, 1)).await;
    let (key_id, ciphertext): (String, Vec<u8>) =
        sqlx::query_as("select key_id, ciphertext from provider_configs where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(key_id, "test");
    assert!(
        !ciphertext
            .windows(TWILIO_AUTH_TOKEN.len())
            .any(|w| w == TWILIO_AUTH_TOKEN.as_bytes()),
        "the token is not stored in the clear"
    );
    sqlx::query(
        "update provider_configs set ciphertext = set_byte(ciphertext, 20, get_byte(ciphertext, 20) # 1) where id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let nid = sms(&app, PATIENT).await;
    app.wait_for_status(&nid, "failed", WAIT).await;
    assert!(
        fake.requests(Kind::Twilio).is_empty(),
        "nothing sent with altered credentials"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_text_is_refused_when_callbacks_show_the_window_closed() {
    let fake = FakeProviders::start().await;
    let app = builder(&fake).spawn().await;
    add_whatsapp(&app, json!({"access_token": WHATSAPP_TOKEN})).await;
    for (who, number, hours_ago) in [("pat", "+15005550006", 50), ("sam", "+15005550007", 2)] {
        let resp = app
            .put_with_key(
                &format!("/api/v1/services/subscribers/{who}"),
                &json!({"whatsapp": number}),
            )
            .await;
        assert!(resp.status().is_success());
        // What WhatsApp's inbound-message callbacks record.
        sqlx::query(
            "update subscribers set whatsapp_last_inbound_at = now() - make_interval(hours => $1) where external_id = $2",
        )
        .bind(hours_ago)
        .bind(who)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let n = send_until(&app, whatsapp_text("+15005550006", "Hi"), "failed").await;
    assert!(
        n["last_error"].as_str().unwrap().contains("24 hours"),
        "{n}"
    );
    send_until(&app, whatsapp_text("+15005550007", "Hi"), "sent").await;
    let template = json!({"channel": "whatsapp", "to": "+15005550006",
                          "whatsapp_template": {"name": "appointment_reminder", "language": "en_US"}});
    send_until(&app, template, "sent").await;
    let to_closed = fake
        .requests(Kind::WhatsApp)
        .iter()
        .filter(|r| r.body["to"] == "15005550006" && r.body["type"] == "text")
        .count();
    assert_eq!(to_closed, 0, "text outside the window never reaches Meta");
    app.shutdown().await;
}
