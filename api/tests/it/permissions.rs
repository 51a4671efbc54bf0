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
use serde_json::Value;
use shared::{db::api_keys, permissions::Permission};
use testkit::TestApp;

use crate::org_support::answer;

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
