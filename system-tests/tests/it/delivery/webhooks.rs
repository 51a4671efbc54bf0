//! Outgoing webhooks end to end: a sent email reaches the organisation's
//! endpoint as a signed event the receiver verifies, failures are retried
//! with backoff and end `failed` (disabling an endpoint that keeps failing),
//! only subscribed events go out, redirects are not followed, and a
//! duplicate job sends nothing.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    domain::TenantId,
    jobs::{DeliverWebhooks, Queues},
    webhooks::verify,
};
use testkit::{TestApp, TestAppBuilder, eventually, webhooks::Receiver};

const WAIT: Duration = Duration::from_secs(20);
const PATH: &str = "/api/v1/admin/webhooks";

/// An app whose webhooks may go to loopback, with retries in milliseconds.
fn builder() -> TestAppBuilder {
    TestApp::builder()
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .var("JOBS__QUEUES__WEBHOOK__BACKOFF__INITIAL_MS", 100)
        .var("JOBS__QUEUES__WEBHOOK__BACKOFF__MAX_MS", 400)
        .var("JOBS__QUEUES__WEBHOOK__BACKOFF__MULTIPLIER", 2.0)
        .var("JOBS__QUEUES__WEBHOOK__BACKOFF__JITTER", 0.0)
        .var("JOBS__QUEUES__WEBHOOK__TIMEOUT_SECS", 5)
}

/// Registers an endpoint; returns its id and secret.
async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let resp = app
        .post_with_key(PATH, &json!({"url": url, "events": events}))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn get(app: &TestApp, path: &str) -> Value {
    app.get_ok_json(path).await
}

/// Waits until the endpoint's newest delivery has `status`.
async fn wait_for_delivery(app: &TestApp, endpoint: &str, status: &str) -> Value {
    eventually(&format!("a {status} delivery"), WAIT, || async {
        let list = get(app, &format!("{PATH}/{endpoint}/deliveries")).await;
        let first = list["items"][0].clone();
        (first["status"] == status).then_some(first)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sent_email_produces_a_signed_delivery_the_receiver_verifies() {
    let receiver = Receiver::start().await;
    let app = builder().spawn().await;
    let (endpoint, secret) = register(&app, &receiver.url("/hook"), &["notification.sent"]).await;
    let id = app
        .send_email(&json!({
            "to": "pat@example.org",
            "subject": "Your lab results are ready",
            "text": "Please log in to view them.",
            "metadata": {"order": "A-17"},
        }))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = receiver.wait_for(1, WAIT).await;
    let hook = &got[0];
    assert_eq!(hook.path, "/hook");
    assert_eq!(hook.content_type, "application/json");
    assert_eq!(
        verify(
            &secret,
            &hook.id,
            &hook.timestamp,
            &hook.body,
            &hook.signature,
            chrono::Utc::now()
        ),
        Ok(())
    );
    // Another secret does not verify it.
    assert!(
        verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            &hook.id,
            &hook.timestamp,
            &hook.body,
            &hook.signature,
            chrono::Utc::now()
        )
        .is_err()
    );
    let body = hook.json();
    assert_eq!(body["id"], hook.id.as_str());
    assert_eq!(body["type"], "notification.sent");
    assert!(
        body["created_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    let data = &body["data"];
    assert_eq!(data["notification_id"], id.as_str());
    assert_eq!(data["channel"], "email");
    assert_eq!(data["status"], "sent");
    assert_eq!(data["provider"], "smtp");
    assert!(data["provider_message_id"].is_string(), "{body}");
    assert_eq!(data["metadata"], json!({"order": "A-17"}));
    // Ids and statuses only: no recipient, no content.
    let text = String::from_utf8_lossy(&hook.body);
    for leak in ["pat@example.org", "lab results", "log in"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let delivery = wait_for_delivery(&app, &endpoint, "delivered").await;
    assert_eq!(delivery["id"], hook.id.as_str());
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status_code"], 200);

    // A duplicate job for the delivered row claims nothing and calls nobody.
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(DeliverWebhooks {
            tenant_id: app.tenant_id,
            delivery_ids: vec![hook.id.parse().unwrap()],
        })
        .await
        .unwrap();
    app.wait_settled(WAIT).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_answering_500_then_200_gets_a_retry() {
    let receiver = Receiver::start().await;
    receiver.answer_next(&[500]);
    let app = builder().spawn().await;
    let (endpoint, secret) = register(&app, &receiver.url("/hook"), &["notification.sent"]).await;
    app.send_to("pat@example.org").await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].id, got[1].id, "the same event, tried again");
    assert_eq!(got[0].body, got[1].body);
    for hook in &got {
        assert_eq!(
            verify(
                &secret,
                &hook.id,
                &hook.timestamp,
                &hook.body,
                &hook.signature,
                chrono::Utc::now()
            ),
            Ok(())
        );
    }
    let delivery = wait_for_delivery(&app, &endpoint, "delivered").await;
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status_code"], 200);
    let view = get(&app, &format!("{PATH}/{endpoint}")).await;
    assert_eq!(view["consecutive_failures"], 0);
    assert_eq!(view["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_that_keeps_failing_ends_failed_and_disabled_until_re_enabled() {
    let receiver = Receiver::start().await;
    receiver.always(503);
    let app = builder()
        .var("JOBS__QUEUES__WEBHOOK__MAX_ATTEMPTS", 3)
        .var("WEBHOOKS_DISABLE_AFTER_FAILURES", 2)
        .spawn()
        .await;
    let (endpoint, _) = register(&app, &receiver.url("/hook"), &["notification.sent"]).await;

    app.send_to("pat@example.org").await;
    let failed = wait_for_delivery(&app, &endpoint, "failed").await;
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["max_attempts"], 3);
    assert_eq!(failed["last_status_code"], 503);
    assert!(
        failed["last_error"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    let view = get(&app, &format!("{PATH}/{endpoint}")).await;
    assert_eq!(view["consecutive_failures"], 1);
    assert_eq!(
        view["enabled"], true,
        "one failed delivery does not disable it"
    );

    app.send_to("sam@example.org").await;
    let view = eventually("the endpoint to be disabled", WAIT, || async {
        let v = get(&app, &format!("{PATH}/{endpoint}")).await;
        (v["enabled"] == false).then_some(v)
    })
    .await;
    assert_eq!(view["consecutive_failures"], 2);
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("2 deliveries in a row failed"),
        "{view}"
    );
    // Exactly max attempts per delivery reached the receiver, and no more come.
    app.wait_settled(WAIT).await;
    assert_eq!(receiver.received().len(), 6);

    // A disabled endpoint hears nothing.
    app.send_to("kim@example.org").await;
    app.wait_settled(WAIT).await;
    assert_eq!(receiver.received().len(), 6);

    // Re-enabled with PUT, it hears about the next event.
    receiver.always(204);
    let resp = app.put_with_key(&format!("{PATH}/{endpoint}"), &json!({"url": receiver.url("/hook"), "events": ["notification.sent"], "enabled": true})).await;
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["enabled"], true);
    assert_eq!(view["consecutive_failures"], 0);
    assert_eq!(view["disabled_reason"], Value::Null);
    app.send_to("lee@example.org").await;
    receiver.wait_for(7, WAIT).await;
    wait_for_delivery(&app, &endpoint, "delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_subscribed_events_are_delivered() {
    let receiver = Receiver::start().await;
    let app = builder().spawn().await;
    let (failed_only, _) = register(
        &app,
        &receiver.url("/failed-only"),
        &["notification.failed"],
    )
    .await;
    let (sent_only, _) = register(&app, &receiver.url("/sent-only"), &["notification.sent"]).await;
    // Another organisation's endpoint hears nothing of this one's sends.
    let (other_tenant, _) = app.other_tenant().await;
    insert_foreign_endpoint(&app, other_tenant, &receiver.url("/other-tenant")).await;

    app.send_to("pat@example.org").await;
    receiver.wait_for(1, WAIT).await;
    wait_for_delivery(&app, &sent_only, "delivered").await;
    app.wait_settled(WAIT).await;
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/sent-only"]);
    let list = get(&app, &format!("{PATH}/{failed_only}/deliveries")).await;
    assert_eq!(list["items"], json!([]));
}

/// Registers an endpoint for `tenant` directly, sealed as the API does.
async fn insert_foreign_endpoint(app: &TestApp, tenant: TenantId, url: &str) {
    let id = shared::domain::WebhookEndpointId::new();
    let keyring = app.settings.encryption.as_ref().unwrap();
    let sealed = keyring.seal(
        shared::webhooks::generate_secret().as_bytes(),
        &shared::webhooks::aad(tenant, id),
    );
    shared::db::webhooks::create(
        &app.pool,
        tenant,
        id,
        shared::db::webhooks::EndpointWrite {
            url,
            description: "",
            events: vec!["notification.sent".into()],
            enabled: true,
        },
        &sealed,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
    let receiver = Receiver::start().await;
    receiver.always(302);
    let app = builder()
        .var("JOBS__QUEUES__WEBHOOK__MAX_ATTEMPTS", 2)
        .spawn()
        .await;
    let (endpoint, _) = register(&app, &receiver.url("/hook"), &["notification.sent"]).await;
    app.send_to("pat@example.org").await;
    let failed = wait_for_delivery(&app, &endpoint, "failed").await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_status_code"], 302);
    assert!(
        failed["last_error"].as_str().unwrap().contains("redirect"),
        "{failed}"
    );
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec!["/hook", "/hook"],
        "the redirect target is never called"
    );
}

/// A provider's signed delivery report moves the notification on, and the
/// organisation's endpoint hears `notification.delivered`, then
/// `notification.read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_reports_reach_the_organisations_endpoint() {
    use hmac::{Hmac, Mac};
    use testkit::providers::{FakeProviders, WHATSAPP_TOKEN};
    let fake = FakeProviders::start().await;
    let receiver = Receiver::start().await;
    let app = builder().providers(&fake).spawn().await;
    let app_secret = "whatsapp-app-secret-0123456789";
    let provider = app
        .add_provider(&json!({
            "provider": "whatsapp", "name": "cloud-api",
            "settings": {"phone_number_id": "106540352242922"},
            "credentials": {"access_token": WHATSAPP_TOKEN, "app_secret": app_secret},
        }))
        .await;
    let (_, secret) = register(
        &app,
        &receiver.url("/hook"),
        &["notification.delivered", "notification.read"],
    )
    .await;
    let id = app
        .post_send(
            &app.api_key,
            None,
            &json!({"channel": "whatsapp", "to": "+15005550006", "text": "See you soon"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    let wamid = n["provider_message_id"].as_str().unwrap().to_owned();
    for (status, event) in [
        ("delivered", "notification.delivered"),
        ("read", "notification.read"),
    ] {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": "106540352242922"},
            "statuses": [{"id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": "15005550006"}]
        }}]}]})
        .to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let resp = app
            .client
            .post(app.url(&format!("/webhooks/whatsapp/{provider}")))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        app.wait_for_status(&id, status, WAIT).await;
        let got = receiver
            .wait_for(if status == "read" { 2 } else { 1 }, WAIT)
            .await;
        let hook = got.last().unwrap();
        assert_eq!(
            verify(
                &secret,
                &hook.id,
                &hook.timestamp,
                &hook.body,
                &hook.signature,
                chrono::Utc::now()
            ),
            Ok(())
        );
        assert_eq!(hook.json()["type"], event);
        assert_eq!(hook.json()["data"]["notification_id"], id.as_str());
    }
    app.shutdown().await;
}

/// Providers' error answers can quote the request back: Twilio's 400s echo
/// the form (`To=%2B1555…&Body=…`), SendGrid and FCM cite the payload. None
/// of it reaches the organisation's `notification.failed` webhook or the
/// notification's status: only the platform's reason, the provider's code
/// and the status code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_errors_that_echo_the_request_reach_no_webhook_or_status() {
    use testkit::providers::{
        Answer, FakeProviders, Kind, SENDGRID_KEY, TWILIO_SID_A, fcm_service_account, twilio_config,
    };
    let fake = FakeProviders::start().await;
    let receiver = Receiver::start().await;
    let app = builder().providers(&fake).spawn().await;
    for config in [
        twilio_config("sms-main", TWILIO_SID_A, None),
        json!({"provider": "sendgrid", "name": "mail-main",
               "settings": {"from_email": "care@clinic.example.org"},
               "credentials": {"api_key": SENDGRID_KEY}}),
        json!({"provider": "fcm", "name": "push-main",
               "settings": {"project_id": "test-project"},
               "credentials": fcm_service_account()}),
    ] {
        app.add_provider(&config).await;
    }
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::RejectEchoing);
    fake.always(Kind::SendGrid, SENDGRID_KEY, Answer::RejectEchoing);
    fake.always(Kind::Fcm, "test-project", Answer::RejectEchoing);
    register(&app, &receiver.url("/hook"), &["notification.failed"]).await;

    // (request, what must never leak, what the error must name)
    let cases = [
        (
            json!({"channel": "sms", "to": "+15005550006", "text": "Your HIV test result is ready"}),
            vec!["5005550006", "%2B", "HIV test", "Request:"],
            "twilio error 21211, HTTP 400",
        ),
        (
            json!({"to": "pat.patient@example.org", "subject": "Biopsy results",
                   "text": "Dr Lee found a benign mass"}),
            vec!["pat.patient", "Biopsy", "benign mass", "Does not contain"],
            "HTTP 400",
        ),
        (
            json!({"channel": "push", "to": "device-token-0123456789", "title": "Chemo reminder",
                   "body": "Take two capecitabine tablets"}),
            vec!["device-token", "Chemo", "capecitabine", "Invalid JSON"],
            "fcm error INVALID_ARGUMENT, HTTP 400",
        ),
    ];
    let mut ids = Vec::new();
    for (request, _, _) in &cases {
        let resp = app.post_send(&app.api_key, None, request).await;
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, "failed", WAIT).await;
    }
    // The providers did quote the request back.
    let answered = [Kind::Twilio, Kind::SendGrid, Kind::Fcm]
        .map(|k| fake.requests(k).iter().filter(|r| r.status == 400).count());
    assert_eq!(answered, [1, 1, 1]);

    let hooks = receiver.wait_for(cases.len(), WAIT).await;
    assert_eq!(hooks.len(), cases.len());
    for ((_, leaks, names), id) in cases.iter().zip(&ids) {
        let hook = hooks
            .iter()
            .find(|h| h.json()["data"]["notification_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no webhook for {id}"));
        let body = hook.json();
        assert_eq!(body["type"], "notification.failed");
        let error = body["data"]["error"].as_str().unwrap();
        assert!(error.contains(names), "{error}");
        let text = String::from_utf8_lossy(&hook.body);
        for leak in leaks {
            assert!(!text.contains(leak), "{leak} in the webhook: {text}");
        }

        let mut n = app.notification(id).await;
        assert_eq!(n["status"], "failed");
        assert!(n["last_error"].as_str().unwrap().contains(names), "{n}");
        assert!(
            n["attempts"][0]["error"].as_str().unwrap().contains(names),
            "{n}"
        );
        // The caller's own recipient is shown as `to`; nothing else names it.
        n.as_object_mut().unwrap().remove("to");
        let text = n.to_string();
        for leak in leaks {
            assert!(!text.contains(leak), "{leak} in the status: {text}");
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_email_of_a_batch_is_recorded_once_with_its_own_event_whatever_its_outcome() {
    let receiver = Receiver::start().await;
    let app = builder().spawn().await;
    register(
        &app,
        &receiver.url("/hook"),
        &["notification.sent", "notification.suppressed"],
    )
    .await;
    app.add_template(&json!({
        "key": "results", "name": "Results ready", "category": "results",
        "default_locale": "en", "default_channels": ["email"],
        "locales": {"en": {"email": {"subject": "Results for {{name}}", "text": "Hello {{name}}"}}}
    }))
    .await;
    // Three of the twenty-four turned these emails off.
    let opted_out = [3, 11, 19];
    for i in opted_out {
        let resp = app
            .put_with_key(
                &format!("/api/v1/services/subscribers/p{i}"),
                &json!({"email": format!("p{i}@example.org")}),
            )
            .await;
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let resp = app
            .put_with_key(
                &format!("/api/v1/services/subscribers/p{i}/preferences"),
                &json!({"categories": {"results": {"enabled": false}}}),
            )
            .await;
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let recipients: Vec<Value> = (0..24)
        .map(|i| {
            json!({"subscriber_id": format!("p{i}"), "email": format!("p{i}@example.org"),
                   "data": {"name": format!("P{i}")}})
        })
        .collect();
    let resp = app
        .post_with_key(
            "/api/v1/services/notifications/send-batch",
            &json!({"template": "results", "channels": ["email"], "recipients": recipients}),
        )
        .await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());

    let hooks = receiver.wait_for(24, WAIT).await;
    app.smtp.wait_for(21, WAIT).await;
    let pool = app.pool.clone();
    let rows: Vec<(String, String, i32, String, String, Option<i32>)> = sqlx::query_as(
        "select n.recipient, n.status, a.attempt, a.outcome, a.provider, a.response_code
         from notifications n join delivery_attempts a on a.notification_id = n.id
         order by n.recipient",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 24, "one attempt each: {rows:?}");
    for (recipient, status, attempt, outcome, provider, code) in rows {
        let i: usize = recipient
            .trim_start_matches('p')
            .trim_end_matches("@example.org")
            .parse()
            .unwrap();
        let expected = if opted_out.contains(&i) {
            ("suppressed", "preferences", None)
        } else {
            ("sent", "smtp", Some(250))
        };
        assert_eq!(
            (
                status.as_str(),
                attempt,
                outcome.as_str(),
                provider.as_str(),
                code
            ),
            (expected.0, 1, expected.0, expected.1, expected.2),
            "{recipient}"
        );
    }
    let events: std::collections::BTreeSet<(String, String)> = hooks
        .iter()
        .map(|h| {
            let body = h.json();
            (
                body["data"]["notification_id"].as_str().unwrap().to_owned(),
                body["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let notified: std::collections::BTreeSet<&String> = events.iter().map(|e| &e.0).collect();
    assert_eq!(
        (hooks.len(), events.len(), notified.len()),
        (24, 24, 24),
        "one event per notification"
    );
    let suppressed = events
        .iter()
        .filter(|(_, t)| t == "notification.suppressed")
        .count();
    assert_eq!(suppressed, 3);
    // Every row is final: nothing is left to send again.
    assert_eq!(app.smtp.received().len(), 21, "each email sent once");
    app.shutdown().await;
}
