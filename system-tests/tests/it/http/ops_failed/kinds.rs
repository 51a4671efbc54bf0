//! Failed bulk jobs and failing shipment polls beside notifications: each
//! kind is grouped with its own classes, a bulk job is not retried (its file
//! is uploaded again), a shipment is polled again, and discarding hides
//! either.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use super::{DISCARD, FAILED, GROUPS, RETRY, get, post};
use crate::http::org_support::{expect, platform_admin, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_jobs_and_shipments_are_grouped_and_retried_or_discarded_by_kind() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let bulk: String = sqlx::query_scalar(
        "insert into bulk_jobs (id, tenant_id, template_key, channels, mapping, status, failure, failed_at)
         values (gen_random_uuid(), $1, 'lab-ready', '{email}', '{}', 'failed',
                 'row 3: pat.patient@example.org is not an address', now())
         returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let shipment: String = sqlx::query_scalar(
        "insert into shipments (id, tenant_id, tracking_number, created_by, poll_failures, last_error,
                                next_poll_at)
         values (gen_random_uuid(), $1, '1Z999AA10123456784', 'test', 3,
                 'UPS answered 503', now() + interval '1 hour')
         returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();

    let resp = request(&app, Method::GET, GROUPS, &root.token).await;
    let text = resp.text().await.unwrap();
    assert!(!text.contains("pat.patient"), "{text}");
    let groups: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(groups["total"], 2, "{groups}");
    let classes: Vec<(String, String, Value)> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_owned(),
                g["error_class"].as_str().unwrap().to_owned(),
                g["provider"].clone(),
            )
        })
        .collect();
    assert!(
        classes.contains(&("bulk_job".into(), "file_refused".into(), Value::Null)),
        "{classes:?}"
    );
    assert!(
        classes.contains(&("shipment".into(), "ups_error".into(), json!("ups"))),
        "{classes:?}"
    );
    let items = get(&app, &root.token, &format!("{FAILED}?kind=bulk_job")).await;
    assert_eq!(items["items"][0]["id"], bulk.as_str());
    assert!(!items.to_string().contains("pat.patient"), "{items}");
    let items = get(&app, &root.token, &format!("{FAILED}?kind=shipment")).await;
    assert_eq!(items["items"][0]["attempts"], 3);

    let body =
        json!({"ids": [{"kind": "bulk_job", "id": bulk}, {"kind": "shipment", "id": shipment}]});
    let done = post(&app, &root.token, RETRY, &body, 200).await;
    assert_eq!(done, json!({"retried": 1, "skipped": 1, "not_found": 0}));
    let due: bool =
        sqlx::query_scalar("select next_poll_at <= now() from shipments where id = $1::uuid")
            .bind(&shipment)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(due, "the shipment is polled again at once");

    let done = post(&app, &root.token, DISCARD, &body, 200).await;
    assert_eq!(done, json!({"discarded": 2, "skipped": 0, "not_found": 0}));
    let left = get(&app, &root.token, GROUPS).await;
    assert_eq!(left["total"], 0, "{left}");
    // A later failed poll shows the shipment again.
    sqlx::query("update shipments set poll_failures = 4, last_error = 'UPS asked to slow down (429)' where id = $1::uuid")
        .bind(&shipment)
        .execute(&app.pool)
        .await
        .unwrap();
    let again = get(&app, &root.token, &format!("{FAILED}?kind=shipment")).await;
    assert_eq!(again["items"][0]["error_class"], "rate_limited", "{again}");
    let resp = request(
        &app,
        Method::GET,
        &format!("{FAILED}?kind=shipment&provider=ups&channel=sms"),
        &root.token,
    )
    .await;
    assert_eq!(expect(resp, 200).await["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_whose_content_retention_erased_is_skipped_and_its_timeline_shows_callbacks()
{
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let id: String = sqlx::query_scalar(
        "insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, status,
                                    attempts, last_error, sent_at, provider_message_id,
                                    content_redacted_at)
         values (gen_random_uuid(), $1, 'email', 'pat.patient@example.org', '{}', 5, 'bounced', 1,
                 'the receiving mail server bounced the message (5.1.1)', now(), 'sg-1', now())
         returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into provider_events (tenant_id, notification_id, provider, event_key, event, status,
                                      provider_message_id, error_code, occurred_at)
         values ($1, $2::uuid, 'sendgrid', repeat('a', 64), 'bounce', 'bounced', 'sg-1', '5.1.1', now())",
    )
    .bind(app.tenant_id)
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let listed = get(&app, &root.token, FAILED).await;
    assert_eq!(listed["items"][0]["error_class"], "bounced", "{listed}");

    let body = json!({"ids": [{"kind": "notification", "id": id}]});
    let done = post(&app, &root.token, RETRY, &body, 200).await;
    assert_eq!(done, json!({"retried": 0, "skipped": 1, "not_found": 0}));
    let t = get(
        &app,
        &root.token,
        &format!("/api/v1/ops/notifications/{id}/timeline"),
    )
    .await;
    assert!(!t.to_string().contains("pat.patient"), "{t}");
    assert_eq!(t["notification"]["status"], "bounced");
    let callback = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "provider_event")
        .expect("the bounce callback");
    assert_eq!(callback["detail"]["event"], "bounce");
    assert_eq!(callback["detail"]["error_code"], "5.1.1");
    app.shutdown().await;
}
