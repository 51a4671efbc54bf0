//! `/webhooks/*`: providers' delivery callbacks. A correctly signed callback
//! moves a sent notification forward (delivered, read, bounced, failed),
//! once; a wrong, missing or stale signature changes nothing; one
//! organisation's config never reaches another's messages; statuses never
//! move back; oversized and malformed bodies get precise 4xx answers.
//!
//! Signatures are made here the way each provider documents them, with the
//! crates directly (not through the code under test).

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer},
    pkcs8::EncodePublicKey,
};
use serde_json::{Value, json};
use shared::domain::TenantId;
use testkit::{
    TestApp,
    providers::{SENDGRID_KEY, TWILIO_AUTH_TOKEN, TWILIO_SID_A, WHATSAPP_TOKEN},
};
use uuid::Uuid;

mod hostile;

const APP_SECRET: &str = "meta-app-secret-0123456789";
const VERIFY_TOKEN: &str = "verify-token-0123456789";
const PHONE_NUMBER_ID: &str = "1234567890";

async fn spawn() -> TestApp {
    TestApp::spawn_api_only().await
}

/// Adds a provider config for the tenant of `key`; returns its id.
async fn add_provider(app: &TestApp, key: &str, body: &Value) -> String {
    let resp = app
        .post_with_token("/api/v1/admin/providers", key, body)
        .await;
    let status = resp.status();
    let created: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// A fresh SendGrid webhook key pair; the public half as SendGrid shows it.
fn sendgrid_keys() -> (SigningKey, String) {
    let signing = loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(k) = SigningKey::from_slice(&bytes) {
            break k;
        }
    };
    let der = signing.verifying_key().to_public_key_der().unwrap();
    let shown = B64.encode(der.as_bytes());
    (signing, shown)
}

fn sendgrid_config(public_key: &str) -> Value {
    json!({
        "provider": "sendgrid", "name": "sendgrid",
        "settings": {"from_email": "care@clinic.example.org", "webhook_public_key": public_key},
        "credentials": {"api_key": SENDGRID_KEY},
    })
}

fn twilio_config(token: &str) -> Value {
    json!({
        "provider": "twilio", "name": "twilio",
        "settings": {"account_sid": TWILIO_SID_A, "from": "+15005550999"},
        "credentials": {"auth_token": token},
    })
}

fn whatsapp_config() -> Value {
    json!({
        "provider": "whatsapp", "name": "whatsapp",
        "settings": {"phone_number_id": PHONE_NUMBER_ID},
        "credentials": {"access_token": WHATSAPP_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN},
    })
}

/// Inserts a notification of `tenant` the worker has recorded as `status`
/// with the provider's `message_id`; returns its id.
async fn notification(
    app: &TestApp,
    tenant: TenantId,
    channel: &str,
    status: &str,
    message_id: &str,
) -> String {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, max_attempts, attempts, status,
              provider_message_id, sent_at)
         values ($1, $2, $3, '+15005550006', '{}'::jsonb, 3, 1, $4, $5, now())",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(channel)
    .bind(status)
    .bind(message_id)
    .execute(&app.pool)
    .await
    .unwrap();
    id.to_string()
}

/// A timestamp of the API's JSON as Unix seconds.
fn unix(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
        .unwrap()
        .timestamp()
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("select status from notifications where id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from provider_events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Status, JSON body and raw text of an answer.
async fn answer(resp: reqwest::Response) -> (u16, Value, String) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    if status >= 400 {
        assert_eq!(content_type, "application/problem+json", "{status}: {text}");
    }
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn sendgrid_signature(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    let sig: Signature = key.sign(&signed);
    B64.encode(sig.to_der().as_bytes())
}

async fn post_sendgrid_at(
    app: &TestApp,
    provider_id: &str,
    key: &SigningKey,
    timestamp: i64,
    body: &[u8],
) -> (u16, Value, String) {
    let ts = timestamp.to_string();
    let resp = app
        .client
        .post(app.url(&format!("/webhooks/sendgrid/{provider_id}")))
        .header("content-type", "application/json")
        .header(
            "X-Twilio-Email-Event-Webhook-Signature",
            sendgrid_signature(key, &ts, body),
        )
        .header("X-Twilio-Email-Event-Webhook-Timestamp", ts)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

async fn post_sendgrid(
    app: &TestApp,
    provider_id: &str,
    key: &SigningKey,
    events: &Value,
) -> (u16, Value, String) {
    let body = events.to_string();
    post_sendgrid_at(
        app,
        provider_id,
        key,
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .await
}

fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

async fn post_twilio(
    app: &TestApp,
    provider_id: &str,
    token: &str,
    params: &[(&str, &str)],
) -> (u16, Value, String) {
    let path = format!("/webhooks/twilio/{provider_id}");
    let url = app.url(&path);
    let resp = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", twilio_signature(token, &url, params))
        .form(params)
        .send()
        .await
        .unwrap();
    answer(resp).await
}

fn meta_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_whatsapp_raw(
    app: &TestApp,
    provider_id: &str,
    secret: &str,
    body: &[u8],
) -> (u16, Value, String) {
    let resp = app
        .client
        .post(app.url(&format!("/webhooks/whatsapp/{provider_id}")))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", meta_signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

/// A WhatsApp webhook body for the test number with these statuses and
/// inbound messages.
fn whatsapp_body(statuses: Value, messages: Value) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": statuses,
            "messages": messages,
        }
    }]}]})
    .to_string()
    .into_bytes()
}

fn wa_status(id: &str, status: &str, ts: i64) -> Value {
    json!({"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": "15005550006"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_sendgrid_events_move_notifications_once() {
    let app = spawn().await;
    let (key, public) = sendgrid_keys();
    let provider = add_provider(&app, &app.api_key, &sendgrid_config(&public)).await;
    let delivered = notification(&app, app.tenant_id, "email", "sent", "sgmsgA").await;
    let opened = notification(&app, app.tenant_id, "email", "sent", "sgmsgB").await;
    let bounced = notification(&app, app.tenant_id, "email", "sent", "sgmsgC").await;
    let events = json!([
        {"email": "pat@example.org", "timestamp": 1700000000, "event": "processed", "sg_event_id": "ev0", "sg_message_id": "sgmsgA.filter0001.16648.5515E0B88.0"},
        {"email": "pat@example.org", "timestamp": 1700000010, "event": "delivered", "sg_event_id": "ev1", "sg_message_id": "sgmsgA.filter0001.16648.5515E0B88.0"},
        {"email": "pat@example.org", "timestamp": 1700000020, "event": "open", "sg_event_id": "ev2", "sg_message_id": "sgmsgB.filter0002.1.2.0"},
        {"email": "pat@example.org", "timestamp": 1700000030, "event": "bounce", "sg_event_id": "ev3", "status": "5.1.1",
         "reason": "550 5.1.1 <pat@example.org> unknown", "notification_id": bounced, "tenant_id": app.tenant_id.to_string()},
        {"email": "pat@example.org", "timestamp": 1700000040, "event": "deferred", "sg_event_id": "ev4", "sg_message_id": "sgmsgA.filter0001"},
    ]);
    let (status, summary, text) = post_sendgrid(&app, &provider, &key, &events).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(summary["received"], 3);
    assert_eq!(summary["applied"], 3);

    let n = app.notification(&delivered).await;
    assert_eq!(n["status"], "delivered");
    assert_eq!(unix(&n["delivered_at"]), 1_700_000_010);
    assert!(n["read_at"].is_null());
    let n = app.notification(&opened).await;
    assert_eq!(n["status"], "read");
    assert_eq!(unix(&n["read_at"]), 1_700_000_020);
    let n = app.notification(&bounced).await;
    assert_eq!(n["status"], "bounced");
    let error = n["last_error"].as_str().unwrap();
    assert!(
        error.contains("5.1.1") && !error.contains("pat@"),
        "{error}"
    );
    assert_eq!(event_count(&app).await, 3);

    // SendGrid retrying the same batch (newly signed) changes nothing.
    let (status, summary, _) = post_sendgrid(&app, &provider, &key, &events).await;
    assert_eq!(status, 200);
    assert_eq!(summary["repeated"], 3);
    assert_eq!(summary["applied"], 0);
    assert_eq!(event_count(&app).await, 3);

    // A later open moves the delivered one on; a late delivered report for
    // the read one changes nothing.
    let later = json!([
        {"timestamp": 1700000100, "event": "open", "sg_event_id": "ev5", "sg_message_id": "sgmsgA.filter0001"},
        {"timestamp": 1700000100, "event": "delivered", "sg_event_id": "ev6", "sg_message_id": "sgmsgB.filter0002"},
    ]);
    let (status, summary, _) = post_sendgrid(&app, &provider, &key, &later).await;
    assert_eq!(status, 200);
    assert_eq!(
        (summary["applied"].as_u64(), summary["unchanged"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(status_of(&app, &delivered).await, "read");
    let n = app.notification(&opened).await;
    assert_eq!(n["status"], "read");
    assert!(n["delivered_at"].is_string());
    let recorded: Vec<(String, Option<String>)> = sqlx::query_as(
        "select event, status from provider_events where notification_id = $1::uuid order by id",
    )
    .bind(&opened)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            ("open".to_owned(), Some("read".to_owned())),
            ("delivered".to_owned(), None)
        ]
    );
    let stored: String =
        sqlx::query_scalar("select string_agg(row_to_json(e)::text, ' ') from provider_events e")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!stored.contains("pat@example.org"), "{stored}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sendgrid_callbacks_with_bad_missing_or_stale_signatures_change_nothing() {
    let app = spawn().await;
    let (key, public) = sendgrid_keys();
    let (other_key, _) = sendgrid_keys();
    let provider = add_provider(&app, &app.api_key, &sendgrid_config(&public)).await;
    let id = notification(&app, app.tenant_id, "email", "sent", "sgmsgA").await;
    let body = json!([{"timestamp": 1700000010, "event": "delivered", "sg_event_id": "ev1", "sg_message_id": "sgmsgA.filter1"}])
        .to_string();
    let now = chrono::Utc::now().timestamp();

    // Signed with another key.
    let (status, problem, text) =
        post_sendgrid_at(&app, &provider, &other_key, now, body.as_bytes()).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(problem["type"], "/problems/bad-signature");
    // Signed eleven minutes ago.
    let (status, problem, _) =
        post_sendgrid_at(&app, &provider, &key, now - 660, body.as_bytes()).await;
    assert_eq!(status, 401);
    assert!(problem["detail"].as_str().unwrap().contains("too old"));
    // A signature over another body.
    let ts = now.to_string();
    let resp = app
        .client
        .post(app.url(&format!("/webhooks/sendgrid/{provider}")))
        .header("content-type", "application/json")
        .header(
            "X-Twilio-Email-Event-Webhook-Signature",
            sendgrid_signature(&key, &ts, b"[]"),
        )
        .header("X-Twilio-Email-Event-Webhook-Timestamp", &ts)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(resp).await.0, 401);
    // No signature at all, and garbage in the header.
    for signature in [None, Some("bm90IGEgc2lnbmF0dXJl")] {
        let mut req = app
            .client
            .post(app.url(&format!("/webhooks/sendgrid/{provider}")))
            .header("content-type", "application/json")
            .header("X-Twilio-Email-Event-Webhook-Timestamp", &ts)
            .body(body.clone());
        if let Some(s) = signature {
            req = req.header("X-Twilio-Email-Event-Webhook-Signature", s);
        }
        assert_eq!(answer(req.send().await.unwrap()).await.0, 401);
    }
    assert_eq!(status_of(&app, &id).await, "sent");
    assert_eq!(event_count(&app).await, 0);

    // A config without a webhook key refuses every callback.
    let mut bare = sendgrid_config(&public);
    bare["name"] = json!("sendgrid-no-webhook");
    bare["settings"]
        .as_object_mut()
        .unwrap()
        .remove("webhook_public_key");
    let bare = add_provider(&app, &app.api_key, &bare).await;
    let (status, _, _) = post_sendgrid_at(&app, &bare, &key, now, body.as_bytes()).await;
    assert_eq!(status, 401);

    // The correctly signed one goes through.
    let (status, _, _) = post_sendgrid_at(&app, &provider, &key, now, body.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &id).await, "delivered");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_twilio_status_callbacks_move_sms_notifications() {
    let app = spawn().await;
    let provider = add_provider(&app, &app.api_key, &twilio_config(TWILIO_AUTH_TOKEN)).await;
    let sid_a = "SM00000000000000000000000000000001";
    let sid_b = "SM00000000000000000000000000000002";
    let a = notification(&app, app.tenant_id, "sms", "sent", sid_a).await;
    let b = notification(&app, app.tenant_id, "sms", "sent", sid_b).await;
    let params = |sid: &'static str, status: &'static str| {
        vec![
            ("AccountSid", TWILIO_SID_A),
            ("ApiVersion", "2010-04-01"),
            ("From", "+15005550999"),
            ("MessageSid", sid),
            ("MessageStatus", status),
            ("SmsSid", sid),
            ("SmsStatus", status),
            ("To", "+15005550006"),
        ]
    };

    // A wrong token's signature, and none at all, change nothing.
    let (status, problem, _) = post_twilio(
        &app,
        &provider,
        "another-auth-token-0000",
        &params(sid_a, "delivered"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "/problems/bad-signature");
    let resp = app
        .client
        .post(app.url(&format!("/webhooks/twilio/{provider}")))
        .form(&params(sid_a, "delivered"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(resp).await.0, 401);
    assert_eq!(status_of(&app, &a).await, "sent");

    let (status, summary, text) = post_twilio(
        &app,
        &provider,
        TWILIO_AUTH_TOKEN,
        &params(sid_a, "delivered"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(summary["applied"], 1);
    let n = app.notification(&a).await;
    assert_eq!(n["status"], "delivered");
    assert!(n["delivered_at"].is_string());

    // Twilio retrying the same callback is a no-op.
    let (_, summary, _) = post_twilio(
        &app,
        &provider,
        TWILIO_AUTH_TOKEN,
        &params(sid_a, "delivered"),
    )
    .await;
    assert_eq!(summary["repeated"], 1);

    let (_, summary, _) =
        post_twilio(&app, &provider, TWILIO_AUTH_TOKEN, &params(sid_a, "read")).await;
    assert_eq!(summary["applied"], 1);
    assert_eq!(status_of(&app, &a).await, "read");

    let mut failed = params(sid_b, "undelivered");
    failed.push(("ErrorCode", "30003"));
    let (_, summary, _) = post_twilio(&app, &provider, TWILIO_AUTH_TOKEN, &failed).await;
    assert_eq!(summary["applied"], 1);
    let n = app.notification(&b).await;
    assert_eq!(n["status"], "failed");
    assert_eq!(
        n["last_error"],
        "Twilio reported the message undelivered (error 30003)"
    );
    // Statuses that report no outcome are accepted and ignored.
    let (status, summary, _) =
        post_twilio(&app, &provider, TWILIO_AUTH_TOKEN, &params(sid_b, "sent")).await;
    assert_eq!((status, summary["received"].as_u64()), (200, Some(0)));
    assert_eq!(event_count(&app).await, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_whatsapp_callbacks_move_statuses_and_record_inbound_messages() {
    let app = spawn().await;
    let provider = add_provider(&app, &app.api_key, &whatsapp_config()).await;
    let read = notification(&app, app.tenant_id, "whatsapp", "sent", "wamid.READ").await;
    let failed = notification(&app, app.tenant_id, "whatsapp", "sent", "wamid.FAIL").await;
    let subscriber = Uuid::now_v7();
    sqlx::query(
        "insert into subscribers (id, tenant_id, external_id, whatsapp) values ($1, $2, 'patient-1', '+15551234567')",
    )
    .bind(subscriber)
    .bind(app.tenant_id.0)
    .execute(&app.pool)
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let body = whatsapp_body(
        json!([
            wa_status("wamid.READ", "sent", now - 30),
            wa_status("wamid.READ", "delivered", now - 20),
            wa_status("wamid.READ", "read", now - 10),
            {"id": "wamid.FAIL", "status": "failed", "timestamp": now.to_string(), "recipient_id": "15005550006",
             "errors": [{"code": 131047, "title": "Re-engagement message"}]},
        ]),
        json!([{"from": "15551234567", "id": "wamid.IN", "timestamp": (now - 5).to_string(), "type": "text", "text": {"body": "Can I move my appointment?"}}]),
    );

    // The wrong secret changes nothing.
    let (status, _, _) = post_whatsapp_raw(&app, &provider, "not-the-app-secret", &body).await;
    assert_eq!(status, 401);
    assert_eq!(status_of(&app, &read).await, "sent");

    let (status, summary, text) = post_whatsapp_raw(&app, &provider, APP_SECRET, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(summary["received"], 3);
    assert_eq!(summary["applied"], 3);
    assert_eq!(summary["inbound"], 1);
    let n = app.notification(&read).await;
    assert_eq!(n["status"], "read");
    assert!(n["delivered_at"].is_string() && n["read_at"].is_string());
    let n = app.notification(&failed).await;
    assert_eq!(n["status"], "failed");
    assert_eq!(
        n["last_error"],
        "WhatsApp reported the message failed (error 131047)"
    );
    let inbound: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select whatsapp_last_inbound_at from subscribers where id = $1")
            .bind(subscriber)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(inbound.map(|t| t.timestamp()), Some(now - 5));

    // Meta delivering the same webhook again changes nothing.
    let (_, summary, _) = post_whatsapp_raw(&app, &provider, APP_SECRET, &body).await;
    assert_eq!(
        (summary["repeated"].as_u64(), summary["applied"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(event_count(&app).await, 3);

    // Changes for another business number are not this config's.
    let mut other: Value = serde_json::from_slice(&whatsapp_body(
        json!([wa_status("wamid.FAIL", "read", now)]),
        json!([]),
    ))
    .unwrap();
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999");
    let other = other.to_string().into_bytes();
    let (status, summary, _) = post_whatsapp_raw(&app, &provider, APP_SECRET, &other).await;
    assert_eq!((status, summary["received"].as_u64()), (200, Some(0)));
    app.shutdown().await;
}
