//! API key scopes, and the declaration of every operation's permission.

use reqwest::Method;
use serde_json::{Value, json};
use shared::permissions::Permission;

use super::{app, sender_key, status_detail};
use crate::http::org_support::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_scoped_to_sending_sends_and_is_refused_everything_else() {
    let app = app().await;
    let key = sender_key(&app).await;
    let sent = app
        .post_send(
            &key,
            None,
            &json!({"to": "pat@example.org", "subject": "Hi", "text": "Hello"}),
        )
        .await;
    assert_eq!(sent.status(), 202);
    let body: Value = sent.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();

    for (method, path, permission) in [
        (
            Method::GET,
            format!("/api/v1/services/notifications/{id}"),
            "notifications:read",
        ),
        (
            Method::GET,
            "/api/v1/admin/templates".to_owned(),
            "templates:read",
        ),
        (Method::GET, "/api/v1/admin/audit".to_owned(), "audit:read"),
        (
            Method::GET,
            "/api/v1/permissions/sets".to_owned(),
            "permissions:read",
        ),
    ] {
        let (status, detail) = status_detail(request(&app, method, &path, &key).await).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(
            detail,
            Permission::parse(permission).unwrap().required(),
            "{path}"
        );
    }
    // The unscoped key reads the same notification.
    let read = request(
        &app,
        Method::GET,
        &format!("/api/v1/services/notifications/{id}"),
        &app.api_key,
    )
    .await;
    assert_eq!(read.status(), 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_operation_declares_its_permission() {
    let app = app().await;
    let doc: Value = app.openapi_document().await;
    let mut missing = Vec::new();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            seen += 1;
            if api::permissions::access_of(method, path).is_none() {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(seen > 150, "{seen} operations read");
    assert!(
        missing.is_empty(),
        "operations declaring no permission: {missing:#?}"
    );
    // And the table names no operation that does not exist.
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), p.trim_end_matches('/').to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    let stale: Vec<_> = api::permissions::routes::ROUTES
        .iter()
        .filter(|(m, p, _)| !documented.iter().any(|(dm, dp)| dm == m && dp == p))
        .filter(|(m, p, _)| !api::permissions::routes::HIDDEN.contains(&(*m, *p)))
        .collect();
    assert!(stale.is_empty(), "declared but not documented: {stale:#?}");
    app.shutdown().await;
}
