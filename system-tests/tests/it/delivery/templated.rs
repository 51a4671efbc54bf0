//! Sends that name a template and a subscriber: one notification per channel
//! (per device for push), rendered in the subscriber's locale, each delivered
//! on its own; scheduled sends; idempotent replays.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};

const WAIT: Duration = Duration::from_secs(20);

fn reminder(critical: bool) -> Value {
    json!({
        "key": "reminder",
        "name": "Appointment reminder",
        "category": "appointments",
        "critical": critical,
        "default_locale": "en",
        "default_channels": ["email", "sms", "inapp"],
        "locales": {
            "en": {
                "email": {"subject": "See you {{day}}, {{name}}", "html": "<p>Hello {{name}}</p>", "text": "Hello {{name}}"},
                "sms": {"body": "Hello {{name}}, see you {{day}}."},
                "inapp": {"title": "See you {{day}}", "action_url": "/appointments/{{id}}"}
            },
            "fr": {
                "email": {"subject": "À {{day}}, {{name}}", "text": "Bonjour {{name}}"},
                "sms": {"body": "Bonjour {{name}}, à {{day}}."},
                "inapp": {"title": "À {{day}}"}
            }
        }
    })
}

async fn setup(fake: &FakeProviders, critical: bool) -> TestApp {
    let app = TestApp::builder().providers(fake).spawn().await;
    app.add_template(&reminder(critical)).await;
    app.add_provider(&twilio_config("twilio", TWILIO_SID_A, None))
        .await;
    app
}

async fn subscriber(app: &TestApp, id: &str, body: Value) {
    let resp = app
        .put_with_key(&format!("/api/v1/services/subscribers/{id}"), &body)
        .await;
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

async fn send(app: &TestApp, key: Option<&str>, body: &Value) -> (u16, Value) {
    let resp = app.post_send(&app.api_key, key, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn ids(answer: &Value) -> Vec<(String, String)> {
    answer["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["channel"].as_str().unwrap().to_owned(),
                n["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_send_becomes_one_rendered_notification_per_channel() {
    let fake = FakeProviders::start().await;
    let app = setup(&fake, false).await;
    subscriber(
        &app,
        "pat",
        json!({"email": "pat@example.org", "phone": "+15005550006", "locale": "fr-CA"}),
    )
    .await;
    let body = json!({
        "template": "reminder", "subscriber_id": "pat",
        "template_data": {"name": "<b>Pat</b>", "day": "lundi", "id": 7},
        "metadata": {"visit": "v-7"},
    });
    let (status, answer) = send(&app, Some("visit-7"), &body).await;
    assert_eq!(status, 202, "{answer}");
    let created = ids(&answer);
    let channels: Vec<&str> = created.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(channels, ["email", "sms", "inapp"]);
    assert_eq!(answer["id"], created[0].1.as_str());
    for (_, id) in &created {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    // French (fr-CA falls back to fr), with the name escaped in HTML only.
    let mail = &app.smtp.received()[0];
    assert_eq!(mail.parsed().subject(), Some("À lundi, <b>Pat</b>"));
    let sms = &fake.requests(Kind::Twilio)[0];
    assert_eq!(sms.body["Body"], "Bonjour <b>Pat</b>, à lundi.");
    assert_eq!(sms.body["To"], "+15005550006");
    let n = app.notification(&created[0].1).await;
    assert_eq!(n["metadata"], json!({"visit": "v-7"}));

    // The same request again is the same send.
    let (status, again) = send(&app, Some("visit-7"), &body).await;
    assert_eq!(status, 202);
    assert_eq!(ids(&again), created);
    let total: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_the_subscriber_cannot_be_reached_on_are_skipped_with_the_reason() {
    let fake = FakeProviders::start().await;
    let app = setup(&fake, false).await;
    subscriber(&app, "sam", json!({"email": "sam@example.org"})).await;
    let (status, answer) = send(
        &app,
        None,
        &json!({"template": "reminder", "subscriber_id": "sam", "channels": ["email", "sms"],
                "template_data": {"name": "Sam", "day": "Monday", "id": 1}}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(ids(&answer).len(), 1);
    assert_eq!(
        answer["skipped"],
        json!([{"channel": "sms", "reason": "the subscriber has no phone number"}])
    );

    let (status, problem) = send(
        &app,
        None,
        &json!({"template": "reminder", "subscriber_id": "sam", "channels": ["sms"],
                "template_data": {"name": "Sam", "day": "Monday", "id": 1}}),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["invalid_params"][0]["name"], "subscriber_id");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_template_sends_are_refused_and_store_nothing() {
    let fake = FakeProviders::start().await;
    let app = setup(&fake, false).await;
    subscriber(&app, "pat", json!({"email": "pat@example.org"})).await;
    let (other, other_key) = app.other_tenant().await;
    let _ = other;
    let cases = [
        // A variable the template needs is missing (strict mode).
        (
            json!({"template": "reminder", "subscriber_id": "pat", "channels": ["email"], "template_data": {"name": "Pat"}}),
            "template_data",
        ),
        (
            json!({"template": "nope", "subscriber_id": "pat"}),
            "template",
        ),
        (
            json!({"template": "reminder", "subscriber_id": "pat", "subject": "raw too"}),
            "subject",
        ),
        (
            json!({"template": "reminder", "subscriber_id": "pat", "channels": ["fax"]}),
            "channels[0]",
        ),
        (
            json!({"template": "reminder", "to": "pat@example.org", "template_data": {}}),
            "to",
        ),
        (
            json!({"template": "reminder", "subscriber_id": "pat", "template_data": [1]}),
            "template_data",
        ),
        (
            json!({"to": "pat@example.org", "subject": "s", "text": "t", "channels": ["email"]}),
            "channels",
        ),
        (
            json!({"to": "pat@example.org", "subject": "s", "text": "t", "send_at": "2999-01-01T00:00:00Z"}),
            "send_at",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = send(&app, None, &body).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(
            problem["invalid_params"][0]["name"], field,
            "{body}: {problem}"
        );
    }
    // Another organisation's templates do not exist for this one.
    let resp = app
        .post_send(
            &other_key,
            None,
            &json!({"template": "reminder", "subscriber_id": "pat", "template_data": {"name": "x", "day": "y", "id": 1}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let total: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_send_waits_in_postgres_until_it_is_due() {
    let fake = FakeProviders::start().await;
    let app = setup(&fake, false).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (status, answer) = send(
        &app,
        None,
        &json!({"template": "reminder", "to": "+15005550006", "channels": ["sms"],
                "template_data": {"name": "Pat", "day": "Friday", "id": 3},
                "send_at": at.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert_eq!(app.notification(id).await["status"], "queued");
    app.wait_for_status(id, "sent", WAIT).await;
    let late: bool =
        sqlx::query_scalar("select sent_at >= $1 from notifications where id = $2::uuid")
            .bind(at)
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(late, "not sent before send_at");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_template_category_drives_preferences_and_critical_templates_override_them() {
    for critical in [false, true] {
        let fake = FakeProviders::start().await;
        let app = setup(&fake, critical).await;
        subscriber(&app, "pat", json!({"email": "pat@example.org"})).await;
        let resp = app
            .put_with_key(
                "/api/v1/services/subscribers/pat/preferences",
                &json!({"categories": {"appointments": {"enabled": false}}}),
            )
            .await;
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let (status, answer) = send(
            &app,
            None,
            &json!({"template": "reminder", "subscriber_id": "pat", "channels": ["email"],
                    "template_data": {"name": "Pat", "day": "Monday", "id": 1}}),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let expected = if critical { "sent" } else { "suppressed" };
        app.wait_for_status(answer["id"].as_str().unwrap(), expected, WAIT)
            .await;
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_send_can_be_cancelled_until_it_goes_out() {
    let fake = FakeProviders::start().await;
    let app = setup(&fake, false).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let body = |to: &str| {
        json!({"template": "reminder", "to": to, "channels": ["sms"],
               "template_data": {"name": "Pat", "day": "Friday", "id": 3},
               "send_at": at.to_rfc3339()})
    };
    let (_, later) = send(&app, None, &body("+15005550006")).await;
    let (_, kept) = send(&app, None, &body("+15005550007")).await;
    let later = later["id"].as_str().unwrap().to_owned();
    let kept = kept["id"].as_str().unwrap().to_owned();
    let cancel = |key: String, id: String| {
        let app = &app;
        async move {
            let resp = app
                .post_empty_with_token(&format!("/api/v1/services/notifications/{id}/cancel"), key)
                .await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (_, other_key) = app.other_tenant().await;
    assert_eq!(
        cancel(other_key, later.clone()).await.0,
        404,
        "another tenant's"
    );
    assert_eq!(cancel(app.api_key.clone(), "nope".into()).await.0, 404);
    let (status, answer) = cancel(app.api_key.clone(), later.clone()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("cancelled"))
    );
    app.wait_for_status(&kept, "sent", WAIT).await;
    app.wait_settled(WAIT).await;
    assert_eq!(app.notification(&later).await["status"], "cancelled");
    assert_eq!(
        fake.requests(Kind::Twilio).len(),
        1,
        "only the kept one went out"
    );
    let (status, problem) = cancel(app.api_key.clone(), kept).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("sent"));
    app.shutdown().await;
}
