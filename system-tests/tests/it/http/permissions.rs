//! Permission sets, grants, delegation and API key scopes: the role
//! mapping changes nothing, custom sets inherit, delegations end when
//! revoked, when their window closes or when their delegator loses the
//! permission, every route enforces its declared permission, and every
//! change is audited.

mod cache;
mod delegations;
mod enforced;
mod scopes;
mod sets;
mod windows;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::{db::api_keys, permissions::Permission};
use testkit::TestApp;

use crate::http::org_support::{answer, answer_json};

/// Assigns permission set `set` to user `user`, as `token`; it must succeed.
pub async fn assign_set(app: &TestApp, token: &str, user: &str, set: &str) {
    let path = format!("/api/v1/users/{user}/permission-set");
    let body = json!({"set_id": set});
    answer_json(app, Method::PUT, &path, token, &body, 200).await;
}

/// Grants `permission` to user `user`, as `token`; it must succeed.
pub async fn grant(app: &TestApp, token: &str, user: &str, permission: &str) {
    let path = format!("/api/v1/users/{user}/permissions");
    let body = json!({"permission": permission});
    answer_json(app, Method::POST, &path, token, &body, 200).await;
}

/// The organisation's permission statistics, as `token` reads them.
pub async fn statistics(app: &TestApp, token: &str) -> Value {
    answer(
        app,
        Method::GET,
        "/api/v1/permissions/statistics",
        token,
        200,
    )
    .await
}

/// Creates a custom permission set in another organisation, with that
/// organisation's key `other_key`; its id.
pub async fn foreign_set(app: &TestApp, other_key: &str) -> String {
    let body = json!({"key": "theirs", "name": "Theirs"});
    let path = "/api/v1/permissions/sets";
    let theirs = answer_json(app, Method::POST, path, other_key, &body, 201).await;
    theirs["id"].as_str().unwrap().to_owned()
}

/// An app without worker and scheduler.
pub async fn app() -> TestApp {
    TestApp::spawn_api_only().await
}

/// The effective permissions of `user` as `token` reads them: name →
/// source kinds.
pub async fn held(app: &TestApp, token: &str, user: &str) -> Vec<(String, Vec<String>)> {
    let body = answer(
        app,
        Method::GET,
        &format!("/api/v1/users/{user}/permissions"),
        token,
        200,
    )
    .await;
    body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["permission"].as_str().unwrap().to_owned(),
                p["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["kind"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// The names in [`held`].
pub async fn names(app: &TestApp, token: &str, user: &str) -> Vec<String> {
    held(app, token, user)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// A new key of the test tenant that may only send; returns its secret.
pub async fn sender_key(app: &TestApp) -> String {
    let key = api_keys::create_scoped(
        &app.pool,
        app.tenant_id,
        "sender",
        &[],
        Some(&[Permission::NotificationsSend]),
    )
    .await
    .unwrap();
    key.secret.expose_secret().to_owned()
}

/// The status and problem detail of `resp`.
pub async fn status_detail(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Audit rows of `action` with `result`.
pub async fn audit_rows(app: &TestApp, action: &str, result: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log where action = $1 and result = $2")
        .bind(action)
        .bind(result)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `permission.changed` security events.
pub async fn changed_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from security_events where kind = 'permission.changed'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
