//! End-user identity: bearer JWTs signed with a tenant's HS256 secret or by an
//! OIDC provider (RS256/ES256 from its JWKS), and every way a token is
//! refused.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use testkit::{
    TestApp,
    jwks::{JwksServer, fixture},
};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(app: &TestApp) -> Value {
    json!({
        "sub": "user-42",
        "tenant_id": app.tenant_id.to_string(),
        "roles": ["DOCTOR", "ADMIN"],
        "exp": now() + 300,
        "iat": now(),
    })
}

fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: &str, key_file: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture(key_file)).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture(key_file)).unwrap(),
        other => panic!("no fixture for {other:?}"),
    };
    encode(&header, claims, &key).unwrap()
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_with_token("/api/v1/users/me", token).await
}

async fn assert_401(app: &TestApp, token: &str, why: &str) {
    let resp = me(app, token).await;
    assert_eq!(resp.status(), 401, "{why}");
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_signed_hs256_token_identifies_the_user_and_bad_ones_are_refused() {
    let app = TestApp::spawn_api_only().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let resp = me(&app, &hs256(&secret, &claims(&app))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"subject": "user-42", "tenant_id": app.tenant_id.to_string(), "roles": ["DOCTOR", "ADMIN"]})
    );

    // Roles as one space-separated string, as some providers send them.
    let mut c = claims(&app);
    c["roles"] = json!("SUPPORT MARKETER");
    let body: Value = me(&app, &hs256(&secret, &c)).await.json().await.unwrap();
    assert_eq!(body["roles"], json!(["SUPPORT", "MARKETER"]));

    // Within the allowed clock skew an expired token still passes; past it, not.
    let mut c = claims(&app);
    c["exp"] = json!(now() - 10);
    assert_eq!(
        me(&app, &hs256(&secret, &c)).await.status(),
        200,
        "10 s past exp is within the skew"
    );
    c["exp"] = json!(now() - 120);
    assert_401(&app, &hs256(&secret, &c), "expired").await;
    let mut c = claims(&app);
    c["nbf"] = json!(now() + 600);
    assert_401(&app, &hs256(&secret, &c), "not yet valid").await;
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("exp");
    assert_401(&app, &hs256(&secret, &c), "no exp").await;
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("sub");
    assert_401(&app, &hs256(&secret, &c), "no subject").await;
    let mut c = claims(&app);
    c["tenant_id"] = json!("not-a-uuid");
    assert_401(&app, &hs256(&secret, &c), "bad tenant claim").await;
    let mut c = claims(&app);
    c["roles"] = json!([1, 2]);
    assert_401(&app, &hs256(&secret, &c), "roles of the wrong type").await;

    assert_401(
        &app,
        &hs256("some-other-secret", &claims(&app)),
        "wrong secret",
    )
    .await;
    // A token naming this tenant but signed with another tenant's secret.
    let (other, _) = app.other_tenant().await;
    let other_secret = app.issue_jwt_secret(other).await;
    assert_401(
        &app,
        &hs256(&other_secret, &claims(&app)),
        "another tenant's secret",
    )
    .await;
    // A tenant without a secret.
    let (bare, _) = app.other_tenant().await;
    let mut c = claims(&app);
    c["tenant_id"] = json!(bare.to_string());
    assert_401(&app, &hs256(&secret, &c), "a tenant without a secret").await;

    // alg: none, with or without a signature.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(&app))
    );
    assert_401(&app, &none, "alg none").await;
    let none_sig = format!("{none}c2lnbmF0dXJl");
    assert_401(&app, &none_sig, "alg none with a signature").await;
    for junk in ["", "a.b", "not a token", "a.b.c.d", &"x".repeat(10_000)] {
        assert_401(&app, junk, "junk").await;
    }
    let missing = app.get_anonymous("/api/v1/users/me").await;
    assert_eq!(missing.status(), 401);
    // An API key is not a user token.
    assert_401(&app, &app.api_key, "an API key").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_from_an_oidc_provider_are_checked_against_its_jwks() {
    let jwks = JwksServer::start(&["rsa-a", "ec-a"]).await;
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JWT_JWKS_URL", jwks.url())
        .var("JWT_ISSUER", "https://login.example.org/realms/clinic")
        .var("JWT_AUDIENCE", "notify-api")
        .spawn()
        .await;
    let mut c = claims(&app);
    c["iss"] = json!("https://login.example.org/realms/clinic");
    c["aud"] = json!("notify-api");
    let rs = signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &c);
    assert_eq!(me(&app, &rs).await.status(), 200);
    let es = signed(Algorithm::ES256, "ec-a", "ec-a.pem", &c);
    assert_eq!(me(&app, &es).await.status(), 200);
    assert_eq!(jwks.hits(), 1, "the key set is cached");

    let mut wrong = c.clone();
    wrong["aud"] = json!("someone-else");
    assert_401(
        &app,
        &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &wrong),
        "wrong audience",
    )
    .await;
    let mut wrong = c.clone();
    wrong["iss"] = json!("https://evil.example.org");
    assert_401(
        &app,
        &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &wrong),
        "wrong issuer",
    )
    .await;
    let mut wrong = c.clone();
    wrong.as_object_mut().unwrap().remove("aud");
    assert_401(
        &app,
        &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &wrong),
        "no audience",
    )
    .await;
    // Signed by a key the provider does not publish, under a published kid.
    assert_401(
        &app,
        &signed(Algorithm::RS256, "rsa-a", "rsa-b.pem", &c),
        "bad signature",
    )
    .await;
    // An EC token that claims an RSA key's kid.
    assert_401(
        &app,
        &signed(Algorithm::ES256, "rsa-a", "ec-a.pem", &c),
        "family mismatch",
    )
    .await;

    // Key confusion: HS256 "signed" with the provider's public key as secret.
    let public = fixture("rsa-a.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-a".into());
    let confused = encode(&header, &c, &EncodingKey::from_secret(&public)).unwrap();
    assert_401(&app, &confused, "key confusion").await;

    // Unknown kids are refused; right after a fetch they do not fetch again,
    // so a flood of made-up kids cannot hammer the provider.
    let before = jwks.hits();
    for _ in 0..5 {
        assert_401(
            &app,
            &signed(Algorithm::RS256, "rsa-b", "rsa-b.pem", &c),
            "unknown kid",
        )
        .await;
    }
    assert_eq!(jwks.hits(), before, "no fetch storm");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_providers_key_rotation_is_picked_up_without_a_restart() {
    let jwks = JwksServer::start(&["rsa-a"]).await;
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JWT_JWKS_URL", jwks.url())
        .spawn()
        .await;
    let c = claims(&app);
    assert_eq!(
        me(&app, &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &c))
            .await
            .status(),
        200
    );
    // The provider rotates: rsa-b is published, rsa-a retired.
    jwks.set_kids(&["rsa-b"]);
    // Wait out the refetch guard so the new kid triggers a fetch: the guard
    // is the api's own wall-clock time, which no injected clock reaches.
    tokio::time::sleep(api::identity::JWKS_REFETCH).await;
    assert_eq!(
        me(&app, &signed(Algorithm::RS256, "rsa-b", "rsa-b.pem", &c))
            .await
            .status(),
        200
    );
    assert_401(
        &app,
        &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &c),
        "a retired key",
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allowed_algorithms_are_accepted() {
    let jwks = JwksServer::start(&["rsa-a"]).await;
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JWT_JWKS_URL", jwks.url())
        .var("JWT_ALGORITHMS", "RS256")
        .spawn()
        .await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    assert_401(
        &app,
        &hs256(&secret, &claims(&app)),
        "HS256 not allowed here",
    )
    .await;
    assert_eq!(
        me(
            &app,
            &signed(Algorithm::RS256, "rsa-a", "rsa-a.pem", &claims(&app))
        )
        .await
        .status(),
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_tenants_tokens_stop_working() {
    let app = TestApp::spawn_api_only().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let token = hs256(&secret, &claims(&app));
    assert_eq!(me(&app, &token).await.status(), 200);
    sqlx::query("update tenants set status = 'suspended' where id = $1")
        .bind(app.tenant_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_401(&app, &token, "suspended tenant").await;
    app.shutdown().await;
}
