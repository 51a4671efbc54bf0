//! Search by every key, within the caller's organisation, without PHI.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use super::{PATIENT_EMAIL, get};
use crate::http::org_support::{expect, platform_admin, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_notifications_batches_bulk_jobs_and_subscribers_by_each_key() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let resp = app
        .post_send(
            &app.api_key,
            Some("visit-42-reminder"),
            &json!({"to": PATIENT_EMAIL, "subject": "Reminder", "text": "See you tomorrow"}),
        )
        .await;
    let notification = expect(resp, 202).await["id"].as_str().unwrap().to_owned();
    let batch: String = sqlx::query_scalar(
        "insert into batches (id, tenant_id, template_key, channels, idempotency_key)
         values (gen_random_uuid(), $1, 'lab-ready', '{email}', 'batch-key-7') returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let bulk: String = sqlx::query_scalar(
        "insert into bulk_jobs (id, tenant_id, template_key, channels, mapping, idempotency_key)
         values (gen_random_uuid(), $1, 'lab-ready', '{email}', '{}', 'bulk-key-9') returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let subscriber: String = sqlx::query_scalar(
        "insert into subscribers (id, tenant_id, external_id, email)
         values (gen_random_uuid(), $1, 'MRN-0012345', $2) returning id::text",
    )
    .bind(app.tenant_id)
    .bind(PATIENT_EMAIL)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let cases = [
        (notification.clone(), "notification", notification.clone()),
        (
            "visit-42-reminder".to_owned(),
            "notification",
            notification.clone(),
        ),
        (batch.clone(), "batch", batch.clone()),
        ("batch-key-7".to_owned(), "batch", batch.clone()),
        (bulk.clone(), "bulk_job", bulk.clone()),
        ("bulk-key-9".to_owned(), "bulk_job", bulk.clone()),
        ("MRN-0012345".to_owned(), "subscriber", subscriber.clone()),
    ];
    for token in [root.token.as_str(), app.api_key.as_str()] {
        for (q, kind, id) in &cases {
            let resp = request(
                &app,
                Method::GET,
                &format!("/api/v1/ops/search?q={q}"),
                token,
            )
            .await;
            let text = resp.text().await.unwrap();
            assert!(
                !text.contains("pat.patient") && !text.contains("See you"),
                "{text}"
            );
            let found: Value = serde_json::from_str(&text).unwrap();
            let matches = found["matches"].as_array().unwrap();
            assert_eq!(matches.len(), 1, "{q}: {found}");
            assert_eq!(matches[0]["kind"], *kind, "{q}");
            assert_eq!(matches[0]["id"], id.as_str(), "{q}");
            assert_eq!(matches[0]["organization_id"], app.tenant_id.to_string());
        }
    }
    let (_, other_key) = app.other_tenant().await;
    for (q, _, _) in &cases {
        let found = get(&app, &other_key, &format!("/api/v1/ops/search?q={q}")).await;
        assert_eq!(found["matches"], json!([]), "{q}");
    }
    let none = get(&app, &root.token, "/api/v1/ops/search?q=nothing-like-it").await;
    assert_eq!(none["matches"], json!([]));
    app.shutdown().await;
}
