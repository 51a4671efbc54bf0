//! What the organisation, user, invitation and audit tests share: a platform
//! admin, users of any role signed in through the real login, and the
//! token read from the invitation email that arrived over SMTP.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};
use shared::{
    db::{organizations, users},
    domain::TenantId,
};
use testkit::TestApp;

/// A password that passes the policy.
pub const PASSWORD: &str = "Correct-Horse-42";
/// How long to wait for asynchronous work.
pub const WAIT: Duration = Duration::from_secs(20);

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Its id.
    pub id: String,
    /// A fresh token.
    pub token: String,
}

/// Signs in; returns the answer.
pub async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.post_anonymous(
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
    .await
}

/// A user of `role` in `tenant` with a permanent password, signed in.
pub async fn user(app: &TestApp, tenant: TenantId, role: &str, email: &str) -> Signed {
    let hash = api::access::hash_password(PASSWORD.to_owned())
        .await
        .unwrap();
    let u = users::insert(
        &app.pool,
        users::NewUser {
            tenant_id: tenant,
            email,
            first_name: None,
            last_name: None,
            role,
            password_hash: Some(&hash),
            must_change_password: false,
            created_by: "test",
        },
    )
    .await
    .unwrap();
    let resp = login(app, email, PASSWORD).await;
    assert_eq!(resp.status(), 200, "login of {email}");
    let body: Value = resp.json().await.unwrap();
    Signed {
        id: u.id.to_string(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

/// The platform organisation and one of its admins.
pub async fn platform_admin(app: &TestApp) -> Signed {
    let platform = platform_org(app).await;
    user(app, platform, "ADMIN", "root@platform.example").await
}

/// Creates the platform organisation; returns its id.
pub async fn platform_org(app: &TestApp) -> TenantId {
    let mut conn = app.pool.acquire().await.unwrap();
    let platform = organizations::create(
        &mut conn,
        organizations::NewOrganization {
            name: "Platform",
            kind: "platform",
            contact: json!({}),
            address: json!({}),
            settings: json!({}),
        },
    )
    .await
    .unwrap();
    drop(conn);
    platform.id
}

/// A request with a bearer token.
pub fn with(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(token)
}

/// The JSON of a response that must have `status`.
pub async fn expect(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Sends a request with a bearer token; returns the answer.
pub async fn request(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> Response {
    with(app, method, path, token).send().await.unwrap()
}

/// Sends a request with a bearer token and a JSON `body`; returns the answer.
pub async fn request_json<T: serde::Serialize + ?Sized>(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &T,
) -> Response {
    with(app, method, path, token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The JSON answer to a request with a bearer token, which must have `status`.
pub async fn answer(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    status: u16,
) -> Value {
    expect(request(app, method, path, token).await, status).await
}

/// The JSON answer to a request with a bearer token and a JSON `body`, which
/// must have `status`.
pub async fn answer_json<T: serde::Serialize + ?Sized>(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &T,
    status: u16,
) -> Value {
    expect(request_json(app, method, path, token, body).await, status).await
}

/// The token in the invitation email sent to `to`, once it arrived (the
/// `n`-th email to that address, counting from 1).
pub async fn token_for(app: &TestApp, to: &str, n: usize) -> String {
    testkit::eventually("the invitation email", WAIT, || async {
        let mails: Vec<String> = app
            .smtp
            .received()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .map(|m| m.parsed().body_text(0).unwrap_or_default().into_owned())
            .collect();
        let body = mails.get(n - 1)?;
        body.lines()
            .map(str::trim)
            .find(|l| {
                l.len() == 43
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .map(str::to_owned)
    })
    .await
}
