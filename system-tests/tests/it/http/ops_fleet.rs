//! `/api/v1/ops/*` fleet endpoints: live workers, the scheduler, providers
//! with pausing, real-time statistics and the API caches, for platform and
//! organisation admins.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{FakeProviders, Kind, TWILIO_SID_A, TWILIO_SID_B, twilio_config},
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

use crate::http::org_support::{Signed, WAIT, expect, platform_admin, request, with};

mod caches;

const PATIENT: &str = "+15005550006";

async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    request(app, Method::GET, path, token).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = with(app, Method::POST, path, token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

fn twilio(name: &str, sid: &str, priority: i32) -> Value {
    twilio_config(name, sid, Some(priority))
}

async fn audit_rows(app: &TestApp, action: &str, result: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log where action = $1 and result = $2")
        .bind(action)
        .bind(result)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_worker_is_listed_with_its_queues_until_it_stops() {
    let mut app = TestApp::builder()
        .var("WORKER_QUEUES", "email,sms")
        .without_scheduler()
        .spawn()
        .await;
    let admin = platform_admin(&app).await;
    let listed = testkit::eventually("the worker's heartbeat", WAIT, || async {
        let body = expect(get(&app, "/api/v1/ops/workers", &admin.token).await, 200).await;
        let items = body["items"].as_array().unwrap().clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let w = &listed[0];
    assert_eq!(w["queues"], json!(["email", "sms"]));
    assert_eq!(
        w["concurrency"],
        json!({
            "email": app.settings.jobs.queue(shared::jobs::QueueName::Email).concurrency,
            "sms": app.settings.jobs.queue(shared::jobs::QueueName::Sms).concurrency,
        })
    );
    assert_eq!(w["pid"], std::process::id());
    assert_eq!(w["in_flight"], 0);
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        w["name"]
            .as_str()
            .unwrap()
            .contains(&std::process::id().to_string())
    );
    assert!(w["last_heartbeat"].as_str().unwrap() >= w["started_at"].as_str().unwrap());

    // An organisation's admin does not see the platform's fleet.
    let resp = get(&app, "/api/v1/ops/workers", &app.api_key).await;
    assert_eq!(resp.status(), 403);

    app.stop_worker().await;
    let body = expect(get(&app, "/api/v1/ops/workers", &admin.token).await, 200).await;
    assert_eq!(body["items"], json!([]), "a stopped worker is gone at once");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_shows_every_cron_entry_with_its_next_tick_and_who_enqueued_the_last() {
    let app = TestApp::builder().without_worker().spawn().await;
    let admin = platform_admin(&app).await;
    let body = testkit::eventually("a dispatcher sweep", WAIT, || async {
        let body = expect(get(&app, "/api/v1/ops/scheduler", &admin.token).await, 200).await;
        body["dispatcher"]["last_sweep"].is_string().then_some(body)
    })
    .await;
    let replica = body["dispatcher"]["by"].as_str().unwrap().to_owned();
    assert!(
        replica.contains(&std::process::id().to_string()),
        "{replica}"
    );
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), app.settings.jobs.cron.len());
    let now = chrono::Utc::now();
    for (e, cron) in entries.iter().zip(&app.settings.jobs.cron) {
        assert_eq!(e["name"], cron.name.as_str());
        let next: chrono::DateTime<chrono::Utc> = e["next_tick"].as_str().unwrap().parse().unwrap();
        assert!(next > now - chrono::Duration::seconds(1), "{e}");
        assert_eq!(
            Some(next),
            cron.schedule
                .schedule()
                .after(&(next - chrono::Duration::seconds(1)))
                .next()
        );
        assert!(e["queue"].is_string() && e["schedule"].is_string());
    }
    let vacuum = entries
        .iter()
        .find(|e| e["name"] == "vacuum-queues")
        .unwrap();
    assert_eq!(vacuum["queue"], "maintenance");
    assert_eq!(vacuum["schedule"], "0 */5 * * * *");

    // A tick won by a scheduler replica, fired at a time the test picks.
    let entry = app
        .settings
        .jobs
        .cron
        .iter()
        .find(|c| c.name == "vacuum-queues")
        .unwrap()
        .clone();
    let at = entry
        .schedule
        .schedule()
        .after(&(now + chrono::Duration::days(1)))
        .next()
        .unwrap();
    let queues = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let mut ticker = scheduler::cron::CronTicker::new(
        app.pool.clone(),
        queues.clone(),
        vec![entry],
        at - chrono::Duration::seconds(1),
    );
    let won = ticker.tick(at).await.unwrap();
    assert_eq!(won.len(), 1);
    let reports =
        scheduler::fleet::FleetReports::new(app.pool.clone(), queues, app.settings.jobs.clone());
    reports.ticked(&won).await.unwrap();
    let body = expect(get(&app, "/api/v1/ops/scheduler", &admin.token).await, 200).await;
    let vacuum = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "vacuum-queues")
        .unwrap()
        .clone();
    let last: chrono::DateTime<chrono::Utc> =
        vacuum["last_tick"].as_str().unwrap().parse().unwrap();
    assert_eq!(last, at);
    assert_eq!(vacuum["last_enqueued_by"], reports.name());
    assert!(vacuum["last_enqueued_at"].is_string());

    let resp = get(&app, "/api/v1/ops/scheduler", &app.api_key).await;
    assert_eq!(resp.status(), 403);
    app.shutdown().await;
}

async fn sms(app: &TestApp) -> String {
    let resp = app
        .post_send(
            &app.api_key,
            None,
            &json!({"channel": "sms", "to": PATIENT, "text": "Your lab results are ready."}),
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The provider that sent the notification.
fn sent_by(n: &Value) -> String {
    n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["outcome"] == "sent")
        .map(|a| a["provider"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn requests_to(fake: &FakeProviders, sid: &str) -> usize {
    fake.requests(Kind::Twilio)
        .iter()
        .filter(|r| r.path.contains(sid))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_provider_is_skipped_and_sends_wait_when_none_is_left_until_it_resumes() {
    let fake = FakeProviders::start().await;
    let app = TestApp::builder()
        .providers(&fake)
        .var("JOBS__QUEUES__SMS__TIMEOUT_SECS", 2)
        .spawn()
        .await;
    let primary = app.add_provider(&twilio("primary", TWILIO_SID_A, 1)).await;
    let backup = app.add_provider(&twilio("backup", TWILIO_SID_B, 2)).await;
    let key = app.api_key.clone();

    // The organisation's own admin (its API key) pauses its primary.
    let paused = expect(
        post(
            &app,
            &format!("/api/v1/ops/providers/{primary}/pause"),
            &key,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["name"], "primary");
    assert_eq!(paused["circuit"], "closed");
    assert!(
        paused["paused_by"]
            .as_str()
            .unwrap()
            .starts_with("api_key:")
    );
    assert_eq!(audit_rows(&app, "provider.pause", "success").await, 1);

    let id = sms(&app).await;
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(sent_by(&n), "backup", "{n}");
    assert_eq!(
        requests_to(&fake, TWILIO_SID_A),
        0,
        "the paused one is not called"
    );
    assert_eq!(requests_to(&fake, TWILIO_SID_B), 1);

    // With every config paused the send waits; it is never failed for it.
    expect(
        post(
            &app,
            &format!("/api/v1/ops/providers/{backup}/pause"),
            &key,
            None,
        )
        .await,
        200,
    )
    .await;
    let id = sms(&app).await;
    let held = testkit::eventually("the send to wait", WAIT, || async {
        let n = app.notification(&id).await;
        (n["status"] == "deferred").then_some(n)
    })
    .await;
    assert_eq!(held["attempt_count"], 0, "{held}");
    assert_eq!(
        fake.requests(Kind::Twilio).len(),
        1,
        "nothing more was called"
    );

    let listed = expect(get(&app, "/api/v1/ops/providers", &key).await, 200).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["paused"] == true), "{listed}");

    let resumed = expect(
        post(
            &app,
            &format!("/api/v1/ops/providers/{primary}/resume"),
            &key,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["paused_at"], Value::Null);
    assert_eq!(audit_rows(&app, "provider.resume", "success").await, 1);
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(sent_by(&n), "primary", "{n}");
    assert_eq!(requests_to(&fake, TWILIO_SID_A), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_are_confined_to_their_organisation() {
    let app = TestApp::spawn_api_only().await;
    let own = app.add_provider(&twilio("ours", TWILIO_SID_A, 1)).await;
    let (other_tenant, other_key) = app.other_tenant().await;
    let resp = app
        .post_with_token(
            "/api/v1/admin/providers",
            &other_key,
            &twilio("theirs", TWILIO_SID_B, 1),
        )
        .await;
    let theirs = expect(resp, 201).await["id"].as_str().unwrap().to_owned();
    let key = app.api_key.clone();

    // An organisation's admin sees its own configs only.
    let listed = expect(get(&app, "/api/v1/ops/providers", &key).await, 200).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [own.as_str()]);
    assert_eq!(
        listed["items"][0]["organization_id"],
        app.tenant_id.to_string()
    );
    let resp = get(
        &app,
        &format!("/api/v1/ops/providers?organization_id={other_tenant}"),
        &key,
    )
    .await;
    assert_eq!(resp.status(), 404);
    let resp = get(
        &app,
        "/api/v1/ops/providers?organization_id=not-an-id",
        &key,
    )
    .await;
    let problem = expect(resp, 400).await;
    assert_eq!(problem["invalid_params"][0]["name"], "organization_id");

    // Another organisation's config, an unknown one and a malformed id: 404,
    // recorded as refusals; nothing changes.
    for id in [theirs.as_str(), &uuid::Uuid::new_v4().to_string(), "nope"] {
        let resp = post(
            &app,
            &format!("/api/v1/ops/providers/{id}/pause"),
            &key,
            None,
        )
        .await;
        assert_eq!(resp.status(), 404, "{id}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    assert_eq!(audit_rows(&app, "provider.pause", "failure").await, 3);
    let paused: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select paused_at from provider_configs where id = $1::uuid")
            .bind(&theirs)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(paused, None);

    // A platform admin sees and pauses every organisation's.
    let admin = platform_admin(&app).await;
    let all = expect(get(&app, "/api/v1/ops/providers", &admin.token).await, 200).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let one = expect(
        get(
            &app,
            &format!("/api/v1/ops/providers?organization_id={other_tenant}"),
            &admin.token,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert_eq!(one["items"][0]["id"], theirs.as_str());
    let paused = expect(
        post(
            &app,
            &format!("/api/v1/ops/providers/{theirs}/pause"),
            &admin.token,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["paused_by"], format!("user:{}", admin.id));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realtime_statistics_count_a_connected_websocket() {
    let app = TestApp::spawn_api_only().await;
    let admin: Signed = platform_admin(&app).await;
    let before = expect(get(&app, "/api/v1/ops/realtime", &admin.token).await, 200).await;
    assert_eq!(before["connections"], 0);

    let mut req = format!("ws://{}/api/v1/ws", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", admin.token).parse().unwrap(),
    );
    let (mut ws, _) = connect_async(req).await.unwrap();
    let ready = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(ready["type"], "ready");

    for path in ["/api/v1/ops/realtime", "/api/v1/admin/websocket/statistics"] {
        let body = expect(get(&app, path, &admin.token).await, 200).await;
        assert_eq!(body["connections"], 1, "{path}: {body}");
        let instances = body["instances"].as_array().unwrap();
        let busy: Vec<&Value> = instances.iter().filter(|i| i["connections"] == 1).collect();
        assert_eq!(busy.len(), 1, "{body}");
        assert_eq!(busy[0]["subscriptions"], json!({"user": 1}));
    }
    // Every instance publishes its figures; this one's shows up in Redis.
    testkit::eventually("the instance's report in Redis", WAIT, || async {
        let mut conn = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix)
            .unwrap()
            .connection();
        let all = shared::fleet::live_instances(&mut conn, &app.redis_prefix)
            .await
            .unwrap();
        all.iter().any(|i| i.connections == 1).then_some(())
    })
    .await;

    let resp = get(&app, "/api/v1/admin/websocket/statistics", &app.api_key).await;
    assert_eq!(resp.status(), 403);
    drop(ws);
    app.shutdown().await;
}

async fn revoke_keys(app: &TestApp) {
    sqlx::query("update api_keys set revoked_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn probe(app: &TestApp, key: &str) -> u16 {
    app.get_with_token(
        &format!("/api/v1/services/notifications/{}", uuid::Uuid::new_v4()),
        key,
    )
    .await
    .status()
    .as_u16()
}

fn cache<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["caches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}
