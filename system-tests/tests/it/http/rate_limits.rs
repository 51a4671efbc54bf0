//! Request rate limits and send quotas: the `RateLimit-*` headers, 429 once
//! a class's allowance is used up, one limit across API replicas, an
//! organisation's overrides and quotas, and what happens while Redis is
//! away.
//!
//! Limits are set tiny through the app's settings (one request every
//! 1,000 s after the burst) so nothing depends on timing.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use testkit::{TestApp, TestAppBuilder};

use crate::http::org_support::{
    answer, answer_json, expect, login, platform_admin, request_json, with,
};

const ORGS: &str = "/api/v1/admin/organizations";

/// An app whose `class` allows `burst` requests, then one every 1,000 s.
fn tiny(class: &str, burst: u32) -> TestAppBuilder {
    let class = class.to_ascii_uppercase();
    TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var(&format!("JOBS__RATE_LIMITS__{class}__PER_SEC"), 0.001)
        .var(&format!("JOBS__RATE_LIMITS__{class}__BURST"), burst)
}

/// A read with `key` (a notification that does not exist: 404).
async fn read(base: &str, client: &reqwest::Client, key: &str) -> Response {
    client
        .get(format!(
            "{base}/api/v1/services/notifications/{}",
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn header(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// The problem of a 429 for `limit`, checked.
async fn refused(resp: Response, limit: &str) -> Value {
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let retry = header(&resp, "retry-after").expect("Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["limit"], limit, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_count_down_then_refuse_with_retry_after() {
    let app = tiny("read", 3).spawn().await;
    for remaining in [2, 1, 0] {
        let resp = read(&app.base, &app.client, &app.api_key).await;
        assert_eq!(resp.status(), 404);
        assert_eq!(header(&resp, "ratelimit-limit"), Some(3));
        assert_eq!(header(&resp, "ratelimit-remaining"), Some(remaining));
        let reset = header(&resp, "ratelimit-reset").unwrap();
        assert!(reset >= 1, "reset {reset}");
    }
    let resp = read(&app.base, &app.client, &app.api_key).await;
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(0));
    let body = refused(resp, "read").await;
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(body["title"], "Too Many Requests");
    assert!(
        body["detail"].as_str().unwrap().contains("read rate limit"),
        "{body}"
    );

    // Another organisation's key has its own allowance; other classes are
    // not touched.
    let (_, other) = app.other_tenant().await;
    let resp = read(&app.base, &app.client, &other).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(2));
    let sent = app
        .send_email(&json!({"to": "pat@example.org", "subject": "Hello", "text": "Hi"}))
        .await;
    assert_eq!(sent.status(), 202);

    // Unlimited routes carry no headers.
    let live = app.get_anonymous("/health/live").await;
    assert_eq!(live.status(), 200);
    assert!(live.headers().get("ratelimit-limit").is_none());

    let refusals = app.metrics_page().await;
    assert!(
        refusals
            .lines()
            .any(|l| l.starts_with("rate_limit_refusals_total{class=\"read\"}")),
        "the refusal is counted"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_replicas_enforce_one_limit() {
    let app = tiny("read", 4).spawn().await;
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

    let mut remaining = Vec::new();
    for base in [&app.base, &second_base, &app.base, &second_base] {
        let resp = read(base, &app.client, &app.api_key).await;
        assert_eq!(resp.status(), 404);
        remaining.push(header(&resp, "ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, [3, 2, 1, 0], "one allowance across both");
    refused(read(&second_base, &app.client, &app.api_key).await, "read").await;
    refused(read(&app.base, &app.client, &app.api_key).await, "read").await;

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organisation_override_raises_and_lowers_its_limit() {
    let app = tiny("read", 2).spawn().await;
    let root = platform_admin(&app).await;
    let limits_url = format!("{ORGS}/{}/rate-limits", app.tenant_id);

    for _ in 0..2 {
        assert_eq!(
            read(&app.base, &app.client, &app.api_key).await.status(),
            404
        );
    }
    refused(read(&app.base, &app.client, &app.api_key).await, "read").await;

    // The organisation's own key may not change its limits.
    let own = request_json(
        &app,
        Method::PUT,
        &limits_url,
        &app.api_key,
        &json!({"read": {"per_sec": 1000, "burst": 1000}}),
    )
    .await;
    assert_eq!(own.status(), 403);

    let raised = answer_json(
        &app,
        Method::PUT,
        &limits_url,
        &root.token,
        &json!({"read": {"per_sec": 1000, "burst": 1000}}),
        200,
    )
    .await;
    let read_limit = raised["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "read")
        .unwrap()
        .clone();
    assert_eq!(read_limit["burst"], 1000);
    assert_eq!(read_limit["source"], "organization");
    for _ in 0..20 {
        let resp = read(&app.base, &app.client, &app.api_key).await;
        assert_eq!(resp.status(), 404, "the raised limit applies at once");
        assert_eq!(header(&resp, "ratelimit-limit"), Some(1000));
    }

    answer_json(
        &app,
        Method::PUT,
        &limits_url,
        &root.token,
        &json!({"read": {"per_sec": 0.001, "burst": 1}}),
        200,
    )
    .await;
    let resp = read(&app.base, &app.client, &app.api_key).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "ratelimit-limit"), Some(1));
    refused(read(&app.base, &app.client, &app.api_key).await, "read").await;

    let cleared = answer(&app, Method::DELETE, &limits_url, &root.token, 200).await;
    assert!(
        cleared["limits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["source"] == "platform"),
        "{cleared}"
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action like 'organization.rate_limits.%' and result = 'success' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "organization.rate_limits.update",
            "organization.rate_limits.update",
            "organization.rate_limits.delete"
        ]
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_overrides_and_quotas_are_refused() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let limits_url = format!("{ORGS}/{}/rate-limits", app.tenant_id);
    let quotas_url = format!("{ORGS}/{}/quotas", app.tenant_id);
    let put = |url: &str, body: Value| with(&app, Method::PUT, url, &root.token).json(&body).send();
    for (body, field) in [
        (json!({"send": {"per_sec": 0, "burst": 10}}), "send"),
        (json!({"read": {"per_sec": 10, "burst": 0}}), "read"),
        (json!({"write": {"per_sec": 1e9, "burst": 10}}), "write"),
        (json!({"upload": {"per_sec": -1, "burst": 10}}), "upload"),
    ] {
        let problem = expect(put(&limits_url, body).await.unwrap(), 400).await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    for body in [
        json!({"auth": {"per_sec": 10, "burst": 10}}),
        json!({"send": {"per_sec": "fast", "burst": 10}}),
        json!({"send": {"per_sec": 10, "burst": 10, "extra": 1}}),
        json!({"send": {"per_sec": 10, "burst": -3}}),
    ] {
        let resp = put(&limits_url, body).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    for (body, field) in [
        (
            json!({"quotas": [{"channel": "fax", "period": "day", "quota": 5}]}),
            "quotas[0].channel",
        ),
        (
            json!({"quotas": [{"channel": "sms", "period": "week", "quota": 5}]}),
            "quotas[0].period",
        ),
        (
            json!({"quotas": [{"channel": "sms", "period": "day", "quota": 5},
                              {"channel": "sms", "period": "day", "quota": 6}]}),
            "quotas[1].period",
        ),
        (
            json!({"quotas": [{"channel": "sms", "period": "day", "quota": 2_000_000_000_000u64}]}),
            "quotas[0].quota",
        ),
    ] {
        let problem = expect(put(&quotas_url, body).await.unwrap(), 400).await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    let many: Vec<Value> = (0..11)
        .map(|_| json!({"channel": "sms", "period": "day", "quota": 1}))
        .collect();
    expect(
        put(&quotas_url, json!({"quotas": many})).await.unwrap(),
        400,
    )
    .await;
    let negative = put(
        &quotas_url,
        json!({"quotas": [{"channel": "sms", "period": "day", "quota": -1}]}),
    )
    .await
    .unwrap();
    assert_eq!(negative.status(), 400);

    // An organisation that does not exist, or a malformed id.
    let missing = format!("{ORGS}/{}/rate-limits", uuid::Uuid::new_v4());
    expect(
        put(&missing, json!({"send": {"per_sec": 1, "burst": 1}}))
            .await
            .unwrap(),
        404,
    )
    .await;
    answer(
        &app,
        Method::GET,
        &format!("{ORGS}/not-an-id/quotas"),
        &root.token,
        404,
    )
    .await;
    // Another organisation's admin learns nothing about this one.
    let (_, other_key) = app.other_tenant().await;
    answer(&app, Method::GET, &quotas_url, &other_key, 404).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_sign_in_and_invitation_tokens_are_limited_per_address() {
    let app = tiny("auth", 3).spawn().await;
    let validate = || async {
        app.get_anonymous("/api/v1/invitations/validate/no-such-token-at-all")
            .await
    };
    let first = validate().await;
    assert_ne!(first.status(), 429);
    assert_eq!(header(&first, "ratelimit-remaining"), Some(2));
    assert_ne!(validate().await.status(), 429);
    let third = login(&app, "nobody@example.org", "Wrong-Password-1").await;
    assert_ne!(
        third.status(),
        429,
        "one allowance for every anonymous route"
    );
    assert_eq!(header(&third, "ratelimit-remaining"), Some(0));
    let body = refused(
        login(&app, "nobody@example.org", "Wrong-Password-1").await,
        "auth",
    )
    .await;
    assert_eq!(body["type"], "/problems/rate-limited");
    refused(validate().await, "auth").await;

    // Another client address has its own allowance.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let resp = elsewhere
        .get(app.url("/api/v1/invitations/validate/no-such-token-at-all"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 429);
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(2));

    // Authenticated callers are counted by their key, not their address.
    let resp = read(&app.base, &app.client, &app.api_key).await;
    assert_eq!(resp.status(), 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_redis_is_away_reads_go_through_and_sign_in_is_refused() {
    let app = tiny("auth", 100)
        .var("JOBS__RATE_LIMITS__READ__PER_SEC", 0.001)
        .var("JOBS__RATE_LIMITS__READ__BURST", 100)
        .redis_through_proxy()
        .spawn()
        .await;
    let resp = read(&app.base, &app.client, &app.api_key).await;
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(99));

    app.proxy.as_ref().unwrap().cut();
    for _ in 0..3 {
        let resp = read(&app.base, &app.client, &app.api_key).await;
        assert_eq!(resp.status(), 404, "reads fail open");
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
    let resp = login(&app, "nobody@example.org", "Wrong-Password-1").await;
    assert_eq!(resp.status(), 503, "sign-in fails closed");
    assert_eq!(header(&resp, "retry-after"), Some(1));
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("auth rate limiter"),
        "{body}"
    );

    app.proxy.as_ref().unwrap().restore();
    testkit::eventually(
        "sign-in is limited again once Redis is back",
        Duration::from_secs(15),
        || async {
            let resp = login(&app, "nobody@example.org", "Wrong-Password-1").await;
            (resp.status() != 503 && resp.headers().get("ratelimit-limit").is_some()).then_some(())
        },
    )
    .await;
    app.shutdown().await;
}

/// Sends one email with `key`.
/// Sets the app's organisation's send quotas (a JSON list) as a platform
/// admin; the answer, which must be 200.
async fn set_quotas(app: &TestApp, quotas: Value) -> Value {
    let root = platform_admin(app).await;
    let path = format!("{ORGS}/{}/quotas", app.tenant_id);
    let body = json!({ "quotas": quotas });
    answer_json(app, Method::PUT, &path, &root.token, &body, 200).await
}

async fn email(app: &TestApp, key: &str) -> Response {
    app.post_send(
        key,
        None,
        &json!({"to": "pat@example.org", "subject": "Your results", "text": "They are ready."}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_quota_warns_at_80_percent_and_refuses_past_100() {
    let app = TestApp::spawn_api_only().await;
    let quotas_url = format!("{ORGS}/{}/quotas", app.tenant_id);
    let set = set_quotas(
        &app,
        json!([
            {"channel": "email", "period": "day", "quota": 5},
            {"channel": "email", "period": "month", "quota": 1000},
        ]),
    )
    .await;
    assert_eq!(set["quotas"][0]["used"], 0, "{set}");

    let warnings = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from audit_log where action = 'quota.warning' and tenant_id = $1",
        )
        .bind(app.tenant_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    for n in 1..=5 {
        assert_eq!(email(&app, &app.api_key).await.status(), 202);
        let expected = if n >= 4 { 1 } else { 0 };
        assert_eq!(warnings().await, expected, "after {n} sends");
    }
    let body = refused(email(&app, &app.api_key).await, "quota:email:day").await;
    assert_eq!(body["type"], "/problems/quota-exceeded");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("daily email quota of 5"), "{detail}");

    // The refused send was not counted.
    let usage = answer(&app, Method::GET, &quotas_url, &app.api_key, 200).await;
    let day = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["period"] == "day")
        .unwrap()
        .clone();
    assert_eq!(day["used"], 5, "{usage}");
    assert_eq!(day["remaining"], 0);
    let month = usage["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["period"] == "month")
        .unwrap()
        .clone();
    assert_eq!(month["used"], 5, "{usage}");

    // Another channel, and another organisation, are not touched.
    let sms = app
        .post_send(
            &app.api_key,
            None,
            &json!({"channel": "sms", "to": "+15551234567", "text": "Your results are ready."}),
        )
        .await;
    assert_eq!(sms.status(), 202, "{}", sms.text().await.unwrap());
    let (_, other) = app.other_tenant().await;
    assert_eq!(email(&app, &other).await.status(), 202);
    assert_eq!(warnings().await, 1, "one warning per period");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_send_gives_its_quota_back() {
    let app = TestApp::spawn_api_only().await;
    set_quotas(
        &app,
        json!([{"channel": "email", "period": "day", "quota": 2}]),
    )
    .await;
    let body =
        json!({"to": "pat@example.org", "subject": "Your results", "text": "They are ready."});
    for _ in 0..3 {
        let resp = app.post_send(&app.api_key, Some("visit-42"), &body).await;
        assert_eq!(resp.status(), 202);
    }
    assert_eq!(
        email(&app, &app.api_key).await.status(),
        202,
        "the replays took nothing"
    );
    refused(email(&app, &app.api_key).await, "quota:email:day").await;
    let replay = app.post_send(&app.api_key, Some("visit-42"), &body).await;
    assert_eq!(
        replay.status(),
        202,
        "a replay answers as the first time, even with the quota used up"
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_chunk_that_would_pass_a_quota_is_refused_whole() {
    let app = TestApp::spawn_api_only().await;
    let post = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(&app.api_key)
            .json(&body)
            .send()
    };
    app.add_template(&json!({
        "key": "lab.ready",
        "name": "Lab results ready",
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {"email": {"subject": "Results for {{name}}", "text": "Hello {{name}}."}}}
    }))
    .await;
    let quotas_url = format!("{ORGS}/{}/quotas", app.tenant_id);
    set_quotas(
        &app,
        json!([{"channel": "email", "period": "day", "quota": 10}]),
    )
    .await;
    let batch = expect(
        post(
            "/api/v1/services/notifications/send-batch",
            json!({"template": "lab.ready", "channels": ["email"]}),
        )
        .await
        .unwrap(),
        202,
    )
    .await["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let people = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"subscriber_id": format!("patient-{i}"), "email": format!("p{i}@example.org"), "data": {"name": format!("P{i}")}}))
            .collect()
    };
    let chunk = |seq: i64, recipients: Vec<Value>| {
        post(
            "/api/v1/services/notifications/send-chunk",
            json!({"batch_id": batch, "seq": seq, "recipients": recipients}),
        )
    };
    expect(chunk(0, people(0, 8)).await.unwrap(), 202).await;
    let body = refused(chunk(1, people(8, 3)).await.unwrap(), "quota:email:day").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("8 sent this period, this request needs 3"),
        "{body}"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from batch_chunks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "nothing of the refused chunk is stored");
    // The repeated first chunk is a replay and takes nothing.
    expect(chunk(0, people(0, 8)).await.unwrap(), 202).await;
    expect(chunk(1, people(8, 2)).await.unwrap(), 202).await;
    let usage = answer(&app, Method::GET, &quotas_url, &app.api_key, 200).await;
    assert_eq!(usage["quotas"][0]["used"], 10, "{usage}");
    assert_eq!(usage["quotas"][0]["remaining"], 0, "{usage}");
    app.shutdown().await;
}
