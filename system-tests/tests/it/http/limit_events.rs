//! What organisations and admins hear about limits: the `quota.warning`
//! and `quota.exceeded` webhook events (once per quota and period, across
//! API replicas), and rate-limit refusals as sampled `rate_limit.refused`
//! security events, each visible to its own organisation only.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use testkit::{TestApp, eventually, webhooks::Receiver};

use crate::http::org_support::{answer, answer_json, platform_admin, request_json};

const WAIT: Duration = Duration::from_secs(20);

/// Sends one email with `key` through the API at `base`.
async fn email(app: &TestApp, base: &str, key: &str) -> Response {
    app.client
        .post(format!("{base}/api/v1/services/notifications/send"))
        .bearer_auth(key)
        .json(
            &json!({"to": "pat@example.org", "subject": "Your results", "text": "They are ready."}),
        )
        .send()
        .await
        .unwrap()
}

/// The organisation's quota webhook deliveries queued so far, by event.
async fn quota_deliveries(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "select event from webhook_deliveries where tenant_id = $1 and event like 'quota.%' order by created_at, event",
    )
    .bind(app.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_warning_and_exceeded_webhooks_arrive_once_per_period_across_replicas() {
    let app = TestApp::builder()
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .spawn()
        .await;
    // A second API process on the same Postgres and Redis prefix.
    let second = api::Application::build(&app.settings).await.unwrap();
    let second_base = format!("http://{}", second.addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(second.run_until(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));

    let hook = Receiver::start().await;
    let created = answer_json(
        &app,
        Method::POST,
        "/api/v1/admin/webhooks",
        &app.api_key,
        &json!({"url": hook.url("/quota"), "events": ["quota.warning", "quota.exceeded"]}),
        201,
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    // Another endpoint, not subscribed to quota events, hears nothing.
    let deaf = Receiver::start().await;
    answer_json(
        &app,
        Method::POST,
        "/api/v1/admin/webhooks",
        &app.api_key,
        &json!({"url": deaf.url("/sent"), "events": ["notification.bounced"]}),
        201,
    )
    .await;
    let root = platform_admin(&app).await;
    answer_json(
        &app,
        Method::PUT,
        &format!("/api/v1/admin/organizations/{}/quotas", app.tenant_id),
        &root.token,
        &json!({"quotas": [{"channel": "email", "period": "day", "quota": 10}]}),
        200,
    )
    .await;

    // Eight sends at once, half through each replica: the eighth unit
    // crosses 80%, and one warning is queued whichever replica counted it.
    let sends = (0..8).map(|i| {
        let base = if i % 2 == 0 {
            app.base.clone()
        } else {
            second_base.clone()
        };
        let app = &app;
        async move { email(app, &base, &app.api_key).await.status() }
    });
    for status in futures::future::join_all(sends).await {
        assert_eq!(status, 202);
    }
    assert_eq!(quota_deliveries(&app).await, ["quota.warning"]);
    let got = hook.wait_for(1, WAIT).await;
    let warning = got[0].json();
    assert_eq!(warning["type"], "quota.warning", "{warning}");
    assert_eq!(
        warning["data"],
        json!({
            "quota": "quota:email:day",
            "channel": "email",
            "period": "day",
            "limit": 10,
            "used": 8,
            "resets_at": warning["data"]["resets_at"],
        })
    );
    let resets: chrono::DateTime<chrono::Utc> = warning["data"]["resets_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        resets,
        chrono::Utc::now()
            .date_naive()
            .succ_opt()
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    );
    shared::webhooks::verify(
        &secret,
        &got[0].id,
        &got[0].timestamp,
        &got[0].body,
        &got[0].signature,
        chrono::Utc::now(),
    )
    .expect("signed with the endpoint's secret");
    let body = String::from_utf8(got[0].body.clone()).unwrap();
    assert!(!body.contains("pat@example.org") && !body.contains("results"));

    // Two more fill the quota without another warning, even once Redis has
    // forgotten that it warned: the notice row in Postgres holds.
    let mut redis = redis::Client::open(testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let flags: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}:quota:{}:*:warned",
            app.redis_prefix, app.tenant_id
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(flags.len(), 1, "{flags:?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&flags)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(email(&app, &app.base, &app.api_key).await.status(), 202);
    assert_eq!(email(&app, &second_base, &app.api_key).await.status(), 202);
    assert_eq!(quota_deliveries(&app).await, ["quota.warning"]);

    // The first refusal raises `quota.exceeded`; later ones, on either
    // replica, do not.
    for base in [&app.base, &second_base, &app.base] {
        let refused = email(&app, base, &app.api_key).await;
        assert_eq!(refused.status(), 429);
    }
    assert_eq!(
        quota_deliveries(&app).await,
        ["quota.warning", "quota.exceeded"]
    );
    let got = hook.wait_for(2, WAIT).await;
    let exceeded = got[1].json();
    assert_eq!(exceeded["type"], "quota.exceeded", "{exceeded}");
    assert_eq!(exceeded["data"]["quota"], "quota:email:day");
    assert_eq!(exceeded["data"]["limit"], 10);
    assert_eq!(exceeded["data"]["used"], 10);
    assert_eq!(exceeded["data"]["resets_at"], warning["data"]["resets_at"]);

    // Every delivery finished: exactly two arrived, none at the other
    // endpoint; one audit row each.
    eventually("the quota deliveries finish", WAIT, || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from webhook_deliveries where tenant_id = $1 and status <> 'delivered' and event like 'quota.%'",
        )
        .bind(app.tenant_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
    assert_eq!(hook.received().len(), 2);
    assert!(deaf.received().is_empty());
    let audited: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where tenant_id = $1 and action like 'quota.%' order by id",
    )
    .bind(app.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["quota.warning", "quota.exceeded"]);

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    app.shutdown().await;
}

/// The organisation's `rate_limit.refused` events as `key` reads them.
async fn refusal_events(app: &TestApp, key: &str) -> Vec<Value> {
    let page = answer(
        app,
        Method::GET,
        "/api/v1/security/events?type=rate_limit.refused",
        key,
        200,
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

/// The `rate_limit.refused` count of the statistics `key` reads.
async fn refusal_count(app: &TestApp, key: &str) -> i64 {
    let stats = answer(app, Method::GET, "/api/v1/security/statistics", key, 200).await;
    stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "rate_limit.refused")
        .unwrap()["count"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_rate_limit_refusals_is_one_security_event_seen_by_its_organisation_only() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JOBS__RATE_LIMITS__SEND__PER_SEC", 0.001)
        .var("JOBS__RATE_LIMITS__SEND__BURST", 2)
        .spawn()
        .await;
    let (_, other) = app.other_tenant().await;
    for _ in 0..2 {
        assert_eq!(email(&app, &app.base, &app.api_key).await.status(), 202);
    }
    for _ in 0..6 {
        let resp = email(&app, &app.base, &app.api_key).await;
        assert_eq!(resp.status(), 429);
    }
    let events = eventually("the refusal is recorded", WAIT, || async {
        let events = refusal_events(&app, &app.api_key).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["organization_id"], app.tenant_id.to_string());
    assert_eq!(event["details"]["class"], "send");
    assert_eq!(
        event["details"]["route"],
        "/api/v1/services/notifications/send"
    );
    assert_eq!(event["details"]["method"], "POST");
    let key_ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from api_keys where tenant_id = $1")
            .bind(app.tenant_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let named: uuid::Uuid = event["details"]["api_key_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(key_ids.contains(&named), "{event}");
    assert!(event["ip"].as_str().is_some(), "{event}");
    assert!(
        !event.to_string().contains(&app.api_key[..12]),
        "no credential"
    );
    assert_eq!(refusal_count(&app, &app.api_key).await, 1);

    // Another organisation sees none of it, and its own refusals are its
    // own single event.
    assert!(refusal_events(&app, &other).await.is_empty());
    assert_eq!(refusal_count(&app, &other).await, 0);
    for _ in 0..2 {
        assert_eq!(email(&app, &app.base, &other).await.status(), 202);
    }
    for _ in 0..3 {
        assert_eq!(email(&app, &app.base, &other).await.status(), 429);
    }
    eventually("the other refusal is recorded", WAIT, || async {
        (refusal_count(&app, &other).await == 1).then_some(())
    })
    .await;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from security_events where kind = 'rate_limit.refused' and tenant_id is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(total, 2, "one event per organisation's burst");
    assert_eq!(refusal_events(&app, &app.api_key).await.len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_of_anonymous_callers_and_forged_tokens_belong_to_no_organisation() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JOBS__RATE_LIMITS__AUTH__PER_SEC", 0.001)
        .var("JOBS__RATE_LIMITS__AUTH__BURST", 1)
        .var("JOBS__RATE_LIMITS__WRITE__PER_SEC", 0.001)
        .var("JOBS__RATE_LIMITS__WRITE__BURST", 1)
        .spawn()
        .await;
    let root = platform_admin(&app).await;

    // Sign-ins are counted per address (the platform admin's sign-in took
    // the only one): three refusals, one event.
    for expected in [429, 429, 429] {
        let resp =
            crate::http::org_support::login(&app, "nobody@example.org", "Wrong-Password-1").await;
        assert_eq!(resp.status(), expected);
    }
    // A token forged with the organisation's id in its tenant claim: its
    // refusal is not put in that organisation's stream.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({
            app.settings.jwt.tenant_claim.clone(): app.tenant_id.to_string(),
            "sub": uuid::Uuid::new_v4().to_string(),
            "roles": ["ADMIN"],
            "exp": chrono::Utc::now().timestamp() + 600,
        }),
        &jsonwebtoken::EncodingKey::from_secret(b"not the organisation's secret"),
    )
    .unwrap();
    for expected in [401, 429, 429] {
        let resp = request_json(
            &app,
            Method::POST,
            "/api/v1/admin/webhooks",
            &forged,
            &json!({"url": "https://hooks.example.com/x", "events": ["quota.warning"]}),
        )
        .await;
        assert_eq!(resp.status(), expected);
    }

    let platform = eventually("both refusals are recorded", WAIT, || async {
        let page = answer(
            &app,
            Method::GET,
            "/api/v1/security/events?type=rate_limit.refused&organization_id=platform",
            &root.token,
            200,
        )
        .await;
        let items = page["items"].as_array().unwrap().clone();
        (items.len() >= 2).then_some(items)
    })
    .await;
    assert_eq!(platform.len(), 2, "{platform:?}");
    let write = platform
        .iter()
        .find(|e| e["details"]["class"] == "write")
        .unwrap();
    assert_eq!(write["details"]["credential"], "unverified", "{write}");
    assert_eq!(write["user_id"], Value::Null);
    assert!(!write.to_string().contains(&forged[..20]), "no token");
    let auth = platform
        .iter()
        .find(|e| e["details"]["class"] == "auth")
        .unwrap();
    assert_eq!(auth["details"]["route"], "/api/v1/auth/login");
    assert_eq!(auth["details"]["caller"], "address");
    assert!(auth["ip"].as_str().is_some(), "{auth}");
    assert!(!auth.to_string().contains("nobody@example.org"));

    // The organisation named in the forged claim sees neither.
    assert!(refusal_events(&app, &app.api_key).await.is_empty());
    assert_eq!(refusal_count(&app, &app.api_key).await, 0);
    app.shutdown().await;
}
