//! The accept path's caches: API keys and compiled templates are read from
//! Postgres once and trusted for a stated time. A change made through this
//! instance shows at once; one made elsewhere (here: written straight to
//! Postgres) shows once that time has passed. The caches read a clock the
//! tests move; nothing sleeps.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use api::auth::{ApiKeyCache, owner_of};
use serde_json::{Value, json};
use shared::db::{
    api_keys,
    templates::{self, TemplateCache},
};
use shared::domain::Channel;
use shared::templates::Template;
use testkit::{TestApp, db::TestDb};

const HOUR: Duration = Duration::from_secs(3600);

async fn database() -> (TestDb, sqlx::PgPool) {
    let db = TestDb::new().await;
    let pool = shared::db::connect_url(&db.url, 2, shared::db::scope::Fallback::Platform("test"))
        .await
        .unwrap();
    (db, pool)
}

/// A clock that stands still until the test moves it.
#[derive(Debug)]
struct Manual(Instant, Mutex<Duration>);

impl shared::cache::Clock for Manual {
    fn now(&self) -> Instant {
        self.0 + *self.1.lock().unwrap()
    }
}

impl Manual {
    fn new() -> Arc<Self> {
        Arc::new(Self(Instant::now(), Mutex::new(Duration::ZERO)))
    }

    fn advance(&self, by: Duration) {
        *self.1.lock().unwrap() += by;
    }
}

#[tokio::test]
async fn a_revoked_key_keeps_working_until_the_cache_bound_passes_then_stops() {
    let (db, pool) = database().await;
    let tenant = shared::db::tenants::create(&pool, "Clinic").await.unwrap();
    let key = api_keys::create(&pool, tenant.id, "k").await.unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&key.secret).to_owned();
    let clock = Manual::new();
    let cache = ApiKeyCache::with_clock(HOUR, 10, clock.clone());
    let owner = owner_of(&pool, &cache, &token).await.unwrap().unwrap();
    assert_eq!(owner.tenant_id, tenant.id);
    // Revoked by another instance (or the CLI): this one does not hear of it.
    assert!(api_keys::revoke(&pool, tenant.id, key.id).await.unwrap());
    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(
        owner_of(&pool, &cache, &token).await.unwrap(),
        Some(owner),
        "trusted while the entry is fresh"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        owner_of(&pool, &cache, &token).await.unwrap(),
        None,
        "refused once the bound has passed"
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn with_the_key_cache_off_a_revoked_key_stops_at_once_and_wrong_keys_are_never_kept() {
    let (db, pool) = database().await;
    let tenant = shared::db::tenants::create(&pool, "Clinic").await.unwrap();
    let key = api_keys::create(&pool, tenant.id, "k").await.unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&key.secret).to_owned();
    let off = ApiKeyCache::new(Duration::ZERO, 10);
    assert!(owner_of(&pool, &off, &token).await.unwrap().is_some());
    assert!(api_keys::revoke(&pool, tenant.id, key.id).await.unwrap());
    assert_eq!(owner_of(&pool, &off, &token).await.unwrap(), None);

    let on = ApiKeyCache::new(HOUR, 10);
    for i in 0..50 {
        let wrong = format!("ntf_not-a-key-{i}");
        assert_eq!(owner_of(&pool, &on, &wrong).await.unwrap(), None);
    }
    assert_eq!(owner_of(&pool, &on, &token).await.unwrap(), None);
    assert!(
        on.is_empty(),
        "no answer for a wrong or revoked key is kept"
    );
    pool.close().await;
    db.drop_now().await;
}

fn greeting(key: &str, text: &str) -> Template {
    Template::parse(json!({
        "key": key,
        "name": "Greeting",
        "default_locale": "en",
        "default_channels": ["sms"],
        "locales": {"en": {"sms": {"body": text}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_template_edited_elsewhere_is_used_until_the_cache_bound_passes() {
    let (db, pool) = database().await;
    let tenant = shared::db::tenants::create(&pool, "Clinic").await.unwrap();
    let stored = templates::create(&pool, tenant.id, &greeting("hi", "Hello {{name}}"))
        .await
        .unwrap();
    let clock = Manual::new();
    let cache = TemplateCache::with_clock(HOUR, clock.clone());
    let data = json!({"name": "Pat"});
    let body = || {
        let pool = pool.clone();
        let data = data.clone();
        let cache = &cache;
        async move {
            let prepared = cache
                .prepared(&pool, tenant.id, "hi")
                .await
                .unwrap()
                .unwrap();
            prepared
                .render(Channel::Sms, None, &data)
                .unwrap()
                .content
                .to_stored()["body"]
                .clone()
        }
    };
    assert_eq!(body().await, "Hello Pat");
    // Replaced through another instance.
    templates::update(&pool, tenant.id, stored.id, &greeting("hi", "Hi {{name}}"))
        .await
        .unwrap()
        .unwrap();
    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(
        body().await,
        "Hello Pat",
        "the compiled template is used while fresh"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(body().await, "Hi Pat", "read again once the bound passed");

    // Forgotten at once by the instance that made the change.
    templates::update(&pool, tenant.id, stored.id, &greeting("hi", "Hey {{name}}"))
        .await
        .unwrap()
        .unwrap();
    cache.forget_tenant(tenant.id);
    assert_eq!(body().await, "Hey Pat");

    // A key without a template is not remembered as missing.
    assert!(
        cache
            .prepared(&pool, tenant.id, "later")
            .await
            .unwrap()
            .is_none()
    );
    templates::create(&pool, tenant.id, &greeting("later", "Later {{name}}"))
        .await
        .unwrap();
    assert!(
        cache
            .prepared(&pool, tenant.id, "later")
            .await
            .unwrap()
            .is_some()
    );
    pool.close().await;
    db.drop_now().await;
}

async fn sms_body(app: &TestApp, answer: reqwest::Response) -> Value {
    assert_eq!(answer.status(), 202);
    let id: Value = answer.json().await.unwrap();
    let id: uuid::Uuid = id["id"].as_str().unwrap().parse().unwrap();
    let content: Value = sqlx::query_scalar("select content from notifications where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    content["body"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_replaced_or_deleted_through_the_api_applies_to_the_next_send() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("TEMPLATE_CACHE_SECS", 3600)
        .spawn()
        .await;
    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = app
            .client
            .request(method, app.url(&format!("/api/v1/admin/templates{path}")))
            .bearer_auth(&app.api_key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    let template = |text: &str| {
        json!({
            "key": "greeting",
            "name": "Greeting",
            "default_locale": "en",
            "default_channels": ["sms"],
            "locales": {"en": {"sms": {"body": text}}}
        })
    };
    let created = admin(reqwest::Method::POST, "", Some(template("Hello {{name}}")))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = json!({"template": "greeting", "to": "+15005550006", "channels": ["sms"], "template_data": {"name": "Pat"}});
    let first = app.post_send(&app.api_key, None, &send).await;
    assert_eq!(sms_body(&app, first).await, "Hello Pat");
    let replaced = admin(
        reqwest::Method::PUT,
        &format!("/{id}"),
        Some(template("Hi {{name}}")),
    )
    .await
    .unwrap();
    assert_eq!(replaced.status(), 200);
    let second = app.post_send(&app.api_key, None, &send).await;
    assert_eq!(sms_body(&app, second).await, "Hi Pat");
    let deleted = admin(reqwest::Method::DELETE, &format!("/{id}"), None)
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let third = app.post_send(&app.api_key, None, &send).await;
    assert_eq!(third.status(), 400, "the deleted template is gone at once");
    app.shutdown().await;
}
