//! `/api/v1/ops/failed*`, `/ops/actions`, `/ops/search` and the
//! notification timeline: failures show up grouped and without PHI, a
//! retry after the provider heals gets them sent, a filter runs as an
//! action in steps (and can be cancelled), discarding hides them, other
//! organisations' work is not found, and bad input answers 400.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{
    TestApp, eventually,
    providers::{Answer, FakeProviders, Kind, TWILIO_SID_A, twilio_config},
    smtp::Behaviour,
    webhooks::Receiver,
};

use crate::http::org_support::{
    WAIT, answer, expect, platform_admin, request, request_json, user, with,
};

mod cli;
mod kinds;
mod search;

pub const GROUPS: &str = "/api/v1/ops/failed/groups";
pub const FAILED: &str = "/api/v1/ops/failed";
pub const RETRY: &str = "/api/v1/ops/failed/retry";
pub const DISCARD: &str = "/api/v1/ops/failed/discard";
pub const PATIENT_EMAIL: &str = "pat.patient@example.org";
const PATIENT_PHONE: &str = "+15005550006";

pub async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    answer(app, Method::GET, path, token, 200).await
}

pub async fn post(app: &TestApp, token: &str, path: &str, body: &Value, status: u16) -> Value {
    let resp = request_json(app, Method::POST, path, token, body).await;
    expect(resp, status).await
}

/// Inserts `n` notifications of `tenant` that failed (as a worker would
/// leave them); returns their ids.
pub async fn failed_rows(app: &TestApp, tenant: shared::domain::TenantId, n: i32) -> Vec<String> {
    sqlx::query_scalar(
        "insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, status,
                                    attempts, last_error)
         select gen_random_uuid(), $1, 'email', 'someone@example.org', '{}', 5, 'failed', 5,
                'the mail server refused the message (SMTP 550 5.1.1)'
         from generate_series(1, $2)
         returning id::text",
    )
    .bind(tenant)
    .bind(n)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Waits until the action is no longer running; returns it.
async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    eventually("the action to finish", WAIT, || async {
        let a = get(app, token, &format!("/api/v1/ops/actions/{id}")).await;
        (a["status"] != "running").then_some(a)
    })
    .await
}

fn ids_of(items: &Value) -> Vec<String> {
    let mut ids: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_are_grouped_without_phi_and_a_retry_after_healing_sends_them() {
    let fake = FakeProviders::start().await;
    let receiver = Receiver::start().await;
    let app = TestApp::builder()
        .providers(&fake)
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .var("JOBS__QUEUES__WEBHOOK__MAX_ATTEMPTS", 1)
        .spawn()
        .await;
    app.add_provider(&twilio_config("sms-main", TWILIO_SID_A, None))
        .await;
    let hook = expect(
        app.post_with_key(
            "/api/v1/admin/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["notification.failed"]}),
        )
        .await,
        201,
    )
    .await;
    assert!(hook["id"].is_string());
    receiver.always(503);
    app.smtp.set_behaviour(Behaviour::RejectRecipients(
        550,
        format!("5.1.1 <{PATIENT_EMAIL}>: no such user"),
    ));
    fake.always(Kind::Twilio, TWILIO_SID_A, Answer::RejectEchoing);

    let mut emails = Vec::new();
    for _ in 0..3 {
        emails.push(app.send_to(PATIENT_EMAIL).await);
    }
    let resp = app
        .send_email(&json!({"channel": "sms", "to": PATIENT_PHONE, "text": "Your HIV test result is ready"}))
        .await;
    let sms = expect(resp, 202).await["id"].as_str().unwrap().to_owned();
    for id in emails.iter().chain([&sms]) {
        app.wait_for_status(id, "failed", WAIT).await;
    }
    // Each failure raised a webhook delivery, which gave up (one attempt).
    eventually("the webhook deliveries to give up", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from webhook_deliveries where status = 'failed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (n == 4).then_some(())
    })
    .await;

    let root = platform_admin(&app).await;
    let resp = request(&app, Method::GET, GROUPS, &root.token).await;
    let text = resp.text().await.unwrap();
    for leak in ["pat.patient", "5005550006", "HIV", "no such user"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["total"], 8, "{body}");
    let groups = body["groups"].as_array().unwrap();
    let email = groups
        .iter()
        .find(|g| g["channel"] == "email")
        .expect("an email group");
    assert_eq!(email["kind"], "notification");
    assert_eq!(email["error_class"], "mail_refused");
    assert_eq!(email["provider"], "smtp");
    assert_eq!(email["count"], 3);
    assert_eq!(email["organizations"], 1);
    for s in email["sample_ids"].as_array().unwrap() {
        assert!(emails.contains(&s.as_str().unwrap().to_owned()), "{s}");
    }
    let sms_group = groups
        .iter()
        .find(|g| g["channel"] == "sms")
        .expect("an sms group");
    assert_eq!(sms_group["provider"], "sms-main");
    assert_eq!(sms_group["count"], 1);
    assert_ne!(sms_group["error_class"], "other");
    let hooks = groups
        .iter()
        .find(|g| g["kind"] == "webhook")
        .expect("a webhook group");
    assert_eq!(hooks["error_class"], "http_5xx");
    assert_eq!(hooks["count"], 4);

    // The group's items, by its key, page by page.
    let key = email["key"].as_str().unwrap();
    let first = get(&app, &root.token, &format!("{FAILED}?group={key}&limit=2")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get(
        &app,
        &root.token,
        &format!("{FAILED}?group={key}&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let mut listed = ids_of(&first["items"]);
    listed.extend(ids_of(&second["items"]));
    listed.sort();
    let mut expected = emails.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let item = &first["items"][0];
    assert_eq!(item["error_class"], "mail_refused");
    assert_eq!(item["attempts"], 1);
    assert!(
        item["error"]
            .as_str()
            .unwrap()
            .starts_with("the mail server refused"),
        "{item}"
    );
    let sms_items = get(&app, &root.token, &format!("{FAILED}?channel=sms")).await;
    let sms_text = sms_items.to_string();
    assert!(
        !sms_text.contains("5005550006") && !sms_text.contains("HIV"),
        "{sms_text}"
    );

    // Heal everything and retry: the emails by id, the webhooks by group.
    app.smtp.set_behaviour(Behaviour::Accept);
    fake.heal(Kind::Twilio, TWILIO_SID_A);
    receiver.always(204);
    let ids: Vec<Value> = emails
        .iter()
        .chain([&sms])
        .map(|id| json!({"kind": "notification", "id": id}))
        .collect();
    let done = post(&app, &root.token, RETRY, &json!({"ids": ids}), 200).await;
    assert_eq!(done, json!({"retried": 4, "skipped": 0, "not_found": 0}));
    for id in emails.iter().chain([&sms]) {
        let n = app.wait_for_status(id, "sent", WAIT).await;
        assert_eq!(n["attempt_count"], 1, "a full round of attempts again: {n}");
    }
    let again = post(&app, &root.token, RETRY, &json!({"ids": [ids[0]]}), 200).await;
    assert_eq!(again, json!({"retried": 0, "skipped": 1, "not_found": 0}));

    let started = post(
        &app,
        &root.token,
        RETRY,
        &json!({"filter": {"group": hooks["key"]}}),
        202,
    )
    .await;
    assert_eq!(started["matched"], 4);
    let action = finished(&app, &root.token, started["id"].as_str().unwrap()).await;
    assert_eq!(action["status"], "completed");
    assert_eq!(action["processed"], 4);
    assert_eq!(action["applied"], 4);
    receiver.wait_for(8, WAIT).await;
    eventually("the webhook deliveries to be delivered", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from webhook_deliveries where status = 'delivered'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (n == 4).then_some(())
    })
    .await;
    let left = get(&app, &root.token, GROUPS).await;
    assert_eq!(left["total"], 0, "{left}");

    // The timeline: accepted, the failed attempt, the sent one, webhooks.
    let resp = request(
        &app,
        Method::GET,
        &format!("/api/v1/ops/notifications/{}/timeline", emails[0]),
        &root.token,
    )
    .await;
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("pat.patient") && !text.contains("lab results"),
        "{text}"
    );
    let t: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(t["notification"]["status"], "sent");
    let events = t["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"accepted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"status"), "{kinds:?}");
    let attempts: Vec<&Value> = events.iter().filter(|e| e["kind"] == "attempt").collect();
    assert_eq!(attempts.len(), 2, "{events:?}");
    assert_eq!(attempts[0]["detail"]["outcome"], "failed");
    assert_eq!(attempts[0]["detail"]["provider"], "smtp");
    assert!(attempts[0]["detail"]["latency_ms"].is_number());
    assert_eq!(attempts[1]["detail"]["outcome"], "sent");
    assert!(kinds.contains(&"webhook"), "{kinds:?}");
    let ats: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = ats.clone();
    sorted.sort_by_key(|a| chrono::DateTime::parse_from_rfc3339(a).unwrap());
    assert_eq!(ats, sorted, "oldest first");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_runs_as_an_action_in_steps_that_a_scheduler_picks_up_and_can_be_cancelled() {
    let mut app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    failed_rows(&app, app.tenant_id, 2_500).await;
    let groups = get(&app, &root.token, GROUPS).await;
    assert_eq!(groups["total"], 2_500);
    let key = groups["groups"][0]["key"].as_str().unwrap().to_owned();

    // No scheduler runs: the action waits, durable, until one does.
    let started = post(
        &app,
        &root.token,
        DISCARD,
        &json!({"filter": {"group": key, "organization_id": app.tenant_id.to_string()}}),
        202,
    )
    .await;
    assert_eq!(started["status"], "running");
    assert_eq!(started["matched"], 2_500);
    assert_eq!(started["processed"], 0);
    let id = started["id"].as_str().unwrap().to_owned();
    app.start_scheduler();
    let done = finished(&app, &root.token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["processed"], 2_500);
    assert_eq!(done["applied"], 2_500);
    assert!(done["finished_at"].is_string());
    assert_eq!(get(&app, &root.token, GROUPS).await["total"], 0);
    // Discarded, not changed: the senders still see them failed.
    assert_eq!(app.count_status("failed").await, 2_500);

    // A cancelled action does nothing more.
    app.stop_scheduler().await;
    let newer = failed_rows(&app, app.tenant_id, 30).await;
    let started = post(
        &app,
        &root.token,
        RETRY,
        &json!({"filter": {"kind": "notification"}}),
        202,
    )
    .await;
    assert_eq!(started["matched"], 30);
    let id = started["id"].as_str().unwrap().to_owned();
    let cancelled = post(
        &app,
        &root.token,
        &format!("/api/v1/ops/actions/{id}/cancel"),
        &json!({}),
        200,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["processed"], 0);
    // Another action, started later, completing shows the scheduler ran.
    let marker = post(
        &app,
        &root.token,
        DISCARD,
        &json!({"filter": {"kind": "webhook"}}),
        202,
    )
    .await;
    app.start_scheduler();
    finished(&app, &root.token, marker["id"].as_str().unwrap()).await;
    let after = get(&app, &root.token, &format!("/api/v1/ops/actions/{id}")).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["processed"], 0);
    let listed = get(&app, &root.token, &format!("{FAILED}?limit=500")).await;
    let mut newer = newer;
    newer.sort();
    assert_eq!(ids_of(&listed["items"]), newer, "still failed, not retried");
    // Cancelling a finished action changes nothing.
    let again = post(
        &app,
        &root.token,
        &format!("/api/v1/ops/actions/{id}/cancel"),
        &json!({}),
        200,
    )
    .await;
    assert_eq!(again["status"], "cancelled");

    let audited: Vec<String> =
        sqlx::query_scalar("select action from audit_log where action like 'ops.%' order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            "ops.failed.discard",
            "ops.failed.retry",
            "ops.actions.cancel",
            "ops.failed.discard",
            "ops.actions.cancel"
        ]
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn organisation_admins_see_and_act_on_their_own_failures_only() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let (other, other_key) = app.other_tenant().await;
    let mine = failed_rows(&app, app.tenant_id, 3).await;
    let theirs = failed_rows(&app, other, 2).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;

    let all = get(&app, &root.token, GROUPS).await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["groups"][0]["organizations"], 2);
    let narrowed = get(
        &app,
        &root.token,
        &format!("{GROUPS}?organization_id={other}"),
    )
    .await;
    assert_eq!(narrowed["total"], 2);

    let own = get(&app, &admin.token, GROUPS).await;
    assert_eq!(own["total"], 3);
    assert_eq!(own["groups"][0]["organizations"], 1);
    // The API key acts as the organisation's admin.
    let by_key = get(&app, &app.api_key, &format!("{FAILED}?kind=notification")).await;
    let mut expected = mine.clone();
    expected.sort();
    assert_eq!(ids_of(&by_key["items"]), expected);
    let theirs_by_key = get(&app, &other_key, FAILED).await;
    assert_eq!(theirs_by_key["items"].as_array().unwrap().len(), 2);
    for path in [
        format!("{GROUPS}?organization_id={other}"),
        format!("{FAILED}?organization_id={other}"),
        format!("/api/v1/ops/notifications/{}/timeline", theirs[0]),
    ] {
        let resp = request(&app, Method::GET, &path, &admin.token).await;
        expect(resp, 404).await;
    }
    let resp = request(&app, Method::GET, GROUPS, &doctor.token).await;
    expect(resp, 403).await;
    let found = get(
        &app,
        &admin.token,
        &format!("/api/v1/ops/search?q={}", theirs[0]),
    )
    .await;
    assert_eq!(found["matches"], json!([]));

    // Another organisation's ids in a selection are not found, and stay.
    let body = json!({"ids": [
        {"kind": "notification", "id": mine[0]},
        {"kind": "notification", "id": theirs[0]},
        {"kind": "webhook", "id": theirs[1]},
    ]});
    let done = post(&app, &admin.token, DISCARD, &body, 200).await;
    assert_eq!(done, json!({"discarded": 1, "skipped": 0, "not_found": 2}));
    let n = app.notification(&mine[0]).await;
    assert_eq!(n["status"], "failed", "the sender still sees it failed");
    assert_eq!(get(&app, &root.token, GROUPS).await["total"], 4);
    // A filter from an organisation admin stays in its organisation.
    let started = post(&app, &admin.token, RETRY, &json!({"filter": {}}), 202).await;
    assert_eq!(started["matched"], 2);
    assert_eq!(started["organization_id"], app.tenant_id.to_string());
    let platform_wide = post(
        &app,
        &root.token,
        DISCARD,
        &json!({"filter": {"kind": "shipment"}}),
        202,
    )
    .await;
    for (method, path) in [
        (
            Method::GET,
            format!(
                "/api/v1/ops/actions/{}",
                platform_wide["id"].as_str().unwrap()
            ),
        ),
        (
            Method::POST,
            format!(
                "/api/v1/ops/actions/{}/cancel",
                platform_wide["id"].as_str().unwrap()
            ),
        ),
    ] {
        let resp = request(&app, method, &path, &admin.token).await;
        expect(resp, 404).await;
    }
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where result = 'failure' and action like 'ops.%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(refused >= 5, "refusals are audited: {refused}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_answers_400_naming_the_field() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let bad_gets = [
        (format!("{GROUPS}?kind=email"), "kind"),
        (format!("{GROUPS}?channel=fax"), "channel"),
        (
            format!("{GROUPS}?error_class=Mail%20Refused"),
            "error_class",
        ),
        (
            format!("{GROUPS}?organization_id=not-an-id"),
            "organization_id",
        ),
        (
            format!("{GROUPS}?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z"),
            "since",
        ),
        (format!("{GROUPS}?since=yesterday"), "since"),
        (format!("{FAILED}?limit=501"), "limit"),
        (format!("{FAILED}?limit=0"), "limit"),
        (format!("{FAILED}?cursor=garbage"), "cursor"),
        (format!("{FAILED}?group=garbage"), "group"),
        ("/api/v1/ops/search?q=".to_owned(), "q"),
        (format!("/api/v1/ops/search?q={}", "x".repeat(256)), "q"),
    ];
    for (path, field) in bad_gets {
        let resp = request(&app, Method::GET, &path, &root.token).await;
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem = expect(resp, 400).await;
        assert_eq!(
            problem["invalid_params"][0]["name"], field,
            "{path}: {problem}"
        );
    }
    // A malformed id names nothing, like an unknown one.
    for path in [
        "/api/v1/ops/actions/not-an-id",
        "/api/v1/ops/notifications/12/timeline",
    ] {
        let resp = request(&app, Method::GET, path, &root.token).await;
        let problem = expect(resp, 404).await;
        assert_eq!(problem["type"], "/problems/not-found", "{path}");
    }
    let id = uuid::Uuid::now_v7().to_string();
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"kind": "notification", "id": id}))
        .collect();
    let bad_posts = [
        (json!({}), "ids"),
        (json!({"ids": []}), "ids"),
        (json!({"ids": many}), "ids"),
        (json!({"ids": [{"kind": "email", "id": id}]}), "ids[0].kind"),
        (
            json!({"ids": [{"kind": "notification", "id": "12"}]}),
            "ids[0].id",
        ),
        (
            json!({"ids": [{"kind": "notification", "id": id}], "filter": {}}),
            "ids",
        ),
        (json!({"filter": {"kind": "fax"}}), "filter.kind"),
        (json!({"filter": {"group": "nope"}}), "filter.group"),
        (
            json!({"filter": {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}}),
            "filter.since",
        ),
    ];
    for path in [RETRY, DISCARD] {
        for (body, field) in &bad_posts {
            let problem = post(&app, &root.token, path, body, 400).await;
            assert_eq!(
                problem["invalid_params"][0]["name"], *field,
                "{body}: {problem}"
            );
        }
        let resp = with(&app, Method::POST, path, &root.token)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        expect(resp, 400).await;
    }
    for (method, path) in [
        (Method::GET, format!("/api/v1/ops/actions/{id}")),
        (Method::POST, format!("/api/v1/ops/actions/{id}/cancel")),
        (
            Method::GET,
            format!("/api/v1/ops/notifications/{id}/timeline"),
        ),
    ] {
        let resp = request(&app, method, &path, &root.token).await;
        expect(resp, 404).await;
    }
    let resp = app.get_anonymous(GROUPS).await;
    assert_eq!(resp.status(), 401);
    app.shutdown().await;
}
