//! A stand-in for an OIDC provider's JWKS endpoint, user tokens, and the test key
//! material in `fixtures/` (test-only keys, never used elsewhere).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use poem::{EndpointExt, Route, get, handler, web::Data};
use serde_json::{Value, json};

/// A fixture file's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The public JWK of a fixture key (`rsa-a`, `rsa-b`, `ec-a`).
pub fn jwk(kid: &str) -> Value {
    let all: Value = serde_json::from_slice(&fixture("jwks.json")).expect("jwks.json");
    all[kid].clone()
}

#[derive(Default)]
struct State {
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
}

/// Serves `GET /jwks.json` with the keys it is given.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("addr", &self.addr)
            .finish()
    }
}

#[handler]
fn keys(state: Data<&Arc<State>>) -> poem::web::Json<Value> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    poem::web::Json(json!({"keys": *state.keys.lock().unwrap()}))
}

impl JwksServer {
    /// Starts serving the JWKs of these fixture kids.
    pub async fn start(kids: &[&str]) -> Self {
        let state = Arc::new(State::default());
        *state.keys.lock().unwrap() = kids.iter().map(|k| jwk(k)).collect();
        let app = Route::new().at("/jwks.json", get(keys)).data(state.clone());
        let (addr, task) = crate::serve_locally(app, "jwks").await;
        Self { addr, state, task }
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Replaces the served keys (a provider's key rotation).
    pub fn set_kids(&self, kids: &[&str]) {
        *self.state.keys.lock().unwrap() = kids.iter().map(|k| jwk(k)).collect();
    }

    /// How often the set was fetched.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HS256 user token for `subject` in `tenant`, signed with the tenant's
/// secret (see [`crate::TestApp::issue_jwt_secret`]), valid for ten minutes.
pub fn user_token(
    secret: &str,
    tenant: shared::domain::TenantId,
    subject: &str,
    roles: &[&str],
) -> String {
    let claims = json!({
        "sub": subject,
        "tenant_id": tenant.to_string(),
        "roles": roles,
        "exp": chrono::Utc::now().timestamp() + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token encodes")
}
