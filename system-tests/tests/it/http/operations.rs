//! What operators see: health probes, metrics and the API's documentation.

use std::time::Duration;

use serde_json::Value;
use testkit::{TestApp, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_postgres_and_redis() {
    let app = TestApp::builder()
        .redis_through_proxy()
        .postgres_through_proxy()
        .without_scheduler()
        .spawn()
        .await;
    let ready = || async { app.get_anonymous("/health/ready").await };
    let resp = ready().await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");

    app.proxy.as_ref().unwrap().cut();
    let resp = ready().await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("redis down"),
        "{body}"
    );
    let live = app.get_anonymous("/health/live").await;
    assert_eq!(live.status(), 200, "liveness does not depend on Redis");
    app.proxy.as_ref().unwrap().restore();
    testkit::eventually(
        "ready again after Redis is back",
        Duration::from_secs(10),
        || async { (ready().await.status() == 200).then_some(()) },
    )
    .await;

    app.postgres_proxy.as_ref().unwrap().cut();
    let resp = ready().await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("postgres down"),
        "{body}"
    );
    app.postgres_proxy.as_ref().unwrap().restore();
    testkit::eventually(
        "ready again after Postgres is back",
        Duration::from_secs(10),
        || async { (ready().await.status() == 200).then_some(()) },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_by_route_and_status_and_sends_by_outcome() {
    let app = spawn_app().await;
    let id = app.send_to("pat@example.org").await;
    app.wait_for_status(&id, "sent", Duration::from_secs(15))
        .await;
    let _ = app
        .get_anonymous("/api/v1/services/notifications/nope")
        .await;
    let text = app.metrics_page().await;
    for expected in [
        r#"http_requests_total{method="POST",route="notifications.send",status="202"}"#,
        r#"http_requests_total{method="GET",route="notifications.get",status="401"}"#,
        "http_request_duration_seconds_bucket",
        r#"notifications_accepted_total{channel="email"}"#,
        r#"notifications_sent_total{channel="email",outcome="sent"}"#,
        r#"jobs_started_total{queue="email"}"#,
        r#"jobs_succeeded_total{queue="email"}"#,
        "job_duration_seconds_bucket",
        r#"queue_depth{queue="email"}"#,
    ] {
        assert!(text.contains(expected), "metrics lack {expected}:\n{text}");
    }
    assert!(!text.contains("pat@example.org"), "no recipient in metrics");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let spec: Value = app.openapi_document().await;
    assert!(spec["paths"]["/api/v1/services/notifications/send"]["post"].is_object());
    assert!(spec["paths"]["/api/v1/services/notifications/{id}"]["get"].is_object());
    assert!(spec["paths"]["/health/ready"]["get"].is_object());
    let send = &spec["paths"]["/api/v1/services/notifications/send"]["post"]["responses"];
    assert!(send["202"].is_object() && send["400"].is_object() && send["422"].is_object());
    let docs = app.get_anonymous("/docs").await;
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"));
    // Swagger UI shows the very document /openapi.json serves.
    assert!(
        html.contains(&serde_json::to_string(&spec).unwrap()),
        "/docs embeds another document than /openapi.json"
    );
    app.shutdown().await;
}
