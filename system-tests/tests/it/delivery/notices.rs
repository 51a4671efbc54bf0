//! Notices the platform sends on its own behalf, through the ordinary
//! delivery path.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    domain::{Channel, EmailAddress},
    notices::{self, Notice},
    templates::Template,
};
use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(20);

fn wording(subject: &str) -> Value {
    json!({
        "key": "platform.welcome",
        "name": "Welcome",
        "default_locale": "en",
        "default_channels": ["email", "inapp"],
        "locales": {"en": {
            "email": {"subject": subject, "text": "Hello {{name}}"},
            "inapp": {"title": "Welcome, {{name}}"}
        }}
    })
}

async fn queue(app: &TestApp, default: &Template, key: Option<&str>) -> notices::Queued {
    let email = EmailAddress::parse("dr.lee@clinic.example").unwrap();
    let data = json!({"name": "Dr Lee"});
    let mut tx = app.pool.begin().await.unwrap();
    let queued = notices::queue(
        &mut tx,
        &app.settings.jobs,
        app.tenant_id,
        Notice {
            key: "platform.welcome",
            default,
            data: &data,
            channels: &[Channel::Email, Channel::InApp],
            subscriber: Some("user-7"),
            email: Some(&email),
            phone: None,
            locale: None,
            metadata: json!({"kind": "welcome"}),
            idempotency_key: key,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    queued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notice_is_delivered_by_email_and_in_app_once_per_key() {
    let app = TestApp::builder().spawn().await;
    let default = notices::builtin(wording("Welcome to the platform, {{name}}"));
    let first = queue(&app, &default, Some("welcome:user-7")).await;
    assert!(!first.replayed);
    assert_eq!(first.notifications.len(), 2);
    let again = queue(&app, &default, Some("welcome:user-7")).await;
    assert!(again.replayed);
    assert_eq!(again.notifications, first.notifications);

    for (_, id) in &first.notifications {
        app.wait_for_status(&id.to_string(), "sent", WAIT).await;
    }
    let mail = app.smtp.wait_for(1, WAIT).await;
    assert_eq!(mail[0].to, vec!["dr.lee@clinic.example".to_owned()]);
    assert_eq!(
        mail[0].parsed().subject(),
        Some("Welcome to the platform, Dr Lee")
    );
    let inbox: (String,) = sqlx::query_as(
        "select n.content->>'title' from notifications n
         join subscribers s on s.id = n.subscriber_id
         where s.external_id = 'user-7' and n.channel = 'inapp'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(inbox.0, "Welcome, Dr Lee");
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 1, "the repeat sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organisation_template_with_the_key_replaces_the_platform_wording() {
    let app = TestApp::builder().spawn().await;
    app.add_template(&wording("{{name}}, welcome to Northside Clinic"))
        .await;
    let default = notices::builtin(wording("Welcome to the platform, {{name}}"));
    queue(&app, &default, None).await;
    let mail = app.smtp.wait_for(1, WAIT).await;
    assert_eq!(
        mail[0].parsed().subject(),
        Some("Dr Lee, welcome to Northside Clinic")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notice_whose_data_does_not_fit_its_template_queues_nothing() {
    let app = TestApp::builder().without_worker().spawn().await;
    let default = notices::builtin(wording("Welcome, {{missing}}"));
    let email = EmailAddress::parse("dr.lee@clinic.example").unwrap();
    let data = json!({"name": "Dr Lee"});
    let mut tx = app.pool.begin().await.unwrap();
    let err = notices::queue(
        &mut tx,
        &app.settings.jobs,
        app.tenant_id,
        Notice {
            key: "platform.welcome",
            default: &default,
            data: &data,
            channels: &[],
            subscriber: None,
            email: Some(&email),
            phone: None,
            locale: None,
            metadata: json!({}),
            idempotency_key: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    drop(tx);
    let (n,): (i64,) = sqlx::query_as("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
