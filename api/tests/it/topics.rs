//! Topics, sends to a topic or the organisation, and system broadcasts: CRUD
//! and membership paging, a topic send reaching every member exactly once
//! with each member's preferences, other tenants' topics answering 404,
//! bad input answering 400, and a platform admin's broadcast reaching the
//! subscribers of two organisations.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use crate::org_support::{platform_admin, with};

const WAIT: Duration = Duration::from_secs(60);
const TOPICS: &str = "/api/v1/services/topics";
const SEND: &str = "/api/v1/services/notifications";

fn template() -> Value {
    json!({
        "key": "care.update",
        "name": "Care update",
        "category": "results",
        "default_locale": "en",
        "default_channels": ["inapp"],
        "locales": {"en": {
            "inapp": {"title": "An update from your care team", "action_url": "/care"},
            "email": {"subject": "An update", "text": "Hello, there is an update from your care team."}
        }}
    })
}

async fn app() -> TestApp {
    let app = TestApp::builder().spawn().await;
    let resp = call(
        &app,
        &app.api_key,
        Method::POST,
        "/api/v1/admin/templates",
        Some(template()),
    )
    .await;
    assert_eq!(resp.status(), 201);
    app
}

async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let req = with(app, method, path, key);
    match body {
        Some(b) => req.json(&b),
        None => req,
    }
    .send()
    .await
    .unwrap()
}

async fn expect(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let problem = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c == "application/problem+json");
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    if status >= 400 {
        assert!(problem, "a problem+json body: {text}");
    }
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The names of the invalid fields of a 400.
async fn invalid(resp: reqwest::Response) -> Vec<String> {
    expect(resp, 400).await["invalid_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates subscribers `{prefix}-{from..to}` in `key`'s organisation.
async fn subscribers(app: &TestApp, key: &str, prefix: &str, from: usize, to: usize) {
    let all: Vec<usize> = (from..to).collect();
    for part in all.chunks(1_000) {
        let body = json!({"subscribers": part.iter()
            .map(|i| json!({"external_id": format!("{prefix}-{i}"), "email": format!("{prefix}{i}@example.org")}))
            .collect::<Vec<_>>()});
        let resp = call(
            app,
            key,
            Method::POST,
            "/api/v1/services/subscribers/bulk",
            Some(body),
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
}

async fn create_topic(app: &TestApp, key: &str, topic: &str) -> Value {
    let body = json!({"key": topic, "name": format!("Topic {topic}"), "description": "For tests"});
    expect(call(app, key, Method::POST, TOPICS, Some(body)).await, 201).await
}

async fn add(app: &TestApp, key: &str, topic: &str, ids: Vec<String>) -> Value {
    let path = format!("{TOPICS}/{topic}/members");
    expect(
        call(
            app,
            key,
            Method::POST,
            &path,
            Some(json!({"subscribers": ids})),
        )
        .await,
        200,
    )
    .await
}

fn names(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}-{i}")).collect()
}

async fn batch(app: &TestApp, url: &str) -> Value {
    expect(call(app, &app.api_key, Method::GET, url, None).await, 200).await
}

async fn wait_completed(app: &TestApp, url: &str) -> Value {
    testkit::eventually("the batch to complete", WAIT, || async {
        let b = batch(app, url).await;
        (b["status"] == "completed").then_some(b)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_created_listed_read_updated_and_deleted() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let key = app.api_key.clone();
    let created = create_topic(&app, &key, "ward-3").await;
    assert_eq!(created["key"], "ward-3");
    assert_eq!(created["members"], 0);
    assert_eq!(created["description"], "For tests");
    for t in ["a.team", "b_team", "c-team"] {
        create_topic(&app, &key, t).await;
    }
    // The same key again is a conflict.
    let again = json!({"key": "ward-3", "name": "Again"});
    expect(
        call(&app, &key, Method::POST, TOPICS, Some(again)).await,
        409,
    )
    .await;

    // Listed by key, two a page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("{TOPICS}?limit=2&cursor={c}"),
            None => format!("{TOPICS}?limit=2"),
        };
        let page = expect(call(&app, &key, Method::GET, &path, None).await, 200).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["key"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a.team", "b_team", "c-team", "ward-3"]);

    let updated = json!({"name": "Ward three"});
    let t = expect(
        call(
            &app,
            &key,
            Method::PUT,
            &format!("{TOPICS}/ward-3"),
            Some(updated),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(t["name"], "Ward three");
    assert!(t["description"].is_null(), "left out, it is erased");
    let t = expect(
        call(&app, &key, Method::GET, &format!("{TOPICS}/ward-3"), None).await,
        200,
    )
    .await;
    assert_eq!(t["name"], "Ward three");

    // Another organisation finds none of it.
    let (_, other) = app.other_tenant().await;
    for (method, path, body) in [
        (Method::GET, format!("{TOPICS}/ward-3"), None),
        (
            Method::PUT,
            format!("{TOPICS}/ward-3"),
            Some(json!({"name": "Mine"})),
        ),
        (Method::DELETE, format!("{TOPICS}/ward-3"), None),
        (Method::GET, format!("{TOPICS}/ward-3/members"), None),
        (
            Method::POST,
            format!("{TOPICS}/ward-3/members"),
            Some(json!({"subscribers": ["x"]})),
        ),
        (
            Method::POST,
            format!("{TOPICS}/ward-3/members/remove"),
            Some(json!({"subscribers": ["x"]})),
        ),
    ] {
        expect(call(&app, &other, method, &path, body).await, 404).await;
    }
    let list = expect(call(&app, &other, Method::GET, TOPICS, None).await, 200).await;
    assert_eq!(list["items"], json!([]));
    // The other organisation may use the same key for its own topic.
    create_topic(&app, &other, "ward-3").await;

    expect(
        call(
            &app,
            &key,
            Method::DELETE,
            &format!("{TOPICS}/ward-3"),
            None,
        )
        .await,
        204,
    )
    .await;
    expect(
        call(&app, &key, Method::GET, &format!("{TOPICS}/ward-3"), None).await,
        404,
    )
    .await;
    expect(
        call(
            &app,
            &key,
            Method::DELETE,
            &format!("{TOPICS}/ward-3"),
            None,
        )
        .await,
        404,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_added_in_bulk_unknown_ids_reported_and_paged() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let key = app.api_key.clone();
    // p-25 exists but never joins.
    subscribers(&app, &key, "p", 0, 26).await;
    create_topic(&app, &key, "ward").await;
    let mut ids = names("p", 0, 20);
    ids.push("nobody-1".into());
    ids.push("nobody-2".into());
    let added = add(&app, &key, "ward", ids).await;
    assert_eq!(added["changed"], 20);
    assert_eq!(added["unchanged"], 0);
    assert_eq!(added["unknown"], json!(["nobody-1", "nobody-2"]));
    assert_eq!(added["members"], 20);
    // Adding again changes nothing; new ones join.
    let added = add(&app, &key, "ward", names("p", 15, 25)).await;
    assert_eq!(
        (added["changed"].as_i64(), added["unchanged"].as_i64()),
        (Some(5), Some(5))
    );
    assert_eq!(added["members"], 25);

    // Every member exactly once over the pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("{TOPICS}/ward/members?limit=7&cursor={c}"),
            None => format!("{TOPICS}/ward/members?limit=7"),
        };
        let page = expect(call(&app, &key, Method::GET, &path, None).await, 200).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(
            items
                .iter()
                .map(|m| m["subscriber_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.sort();
    let mut all = names("p", 0, 25);
    all.sort();
    assert_eq!(seen, all);

    let path = format!("{TOPICS}/ward/members/remove");
    let body = json!({"subscribers": ["p-0", "p-1", "p-25", "nobody"]});
    let removed = expect(call(&app, &key, Method::POST, &path, Some(body)).await, 200).await;
    assert_eq!(removed["changed"], 2);
    assert_eq!(removed["unchanged"], 1, "p-25 is no member");
    assert_eq!(removed["unknown"], json!(["nobody"]));
    assert_eq!(removed["members"], 23);
    let t = expect(
        call(&app, &key, Method::GET, &format!("{TOPICS}/ward"), None).await,
        200,
    )
    .await;
    assert_eq!(t["members"], 23);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_topic_and_member_input_answers_precise_problems() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let key = app.api_key.clone();
    for (body, field) in [
        (json!({"key": "Ward 3", "name": "x"}), "key"),
        (json!({"key": "", "name": "x"}), "key"),
        (json!({"key": "-x", "name": "x"}), "key"),
        (json!({"key": "x".repeat(101), "name": "x"}), "key"),
        (json!({"key": "ok", "name": " "}), "name"),
        (json!({"key": "ok", "name": "a\nb"}), "name"),
        (
            json!({"key": "ok", "name": "x", "description": "d".repeat(2001)}),
            "description",
        ),
        (
            json!({"key": "ok", "name": "x", "colour": "red"}),
            "colour|body",
        ),
    ] {
        let names = invalid(call(&app, &key, Method::POST, TOPICS, Some(body)).await).await;
        assert!(
            names.iter().any(|n| field.split('|').any(|f| n == f)),
            "{field}: {names:?}"
        );
    }
    create_topic(&app, &key, "ward").await;
    let members = format!("{TOPICS}/ward/members");
    let too_many: Vec<String> = (0..10_001).map(|i| format!("s{i}")).collect();
    for (body, field) in [
        (json!({"subscribers": []}), "subscribers"),
        (json!({"subscribers": too_many}), "subscribers"),
        (json!({"subscribers": ["a", "b", "a"]}), "subscribers[2]"),
        (json!({"subscribers": ["a", ""]}), "subscribers[1]"),
        (json!({"subscribers": ["a\u{7}"]}), "subscribers[0]"),
        (json!({"subscribers": "a"}), "subscribers"),
    ] {
        let resp = call(&app, &key, Method::POST, &members, Some(body)).await;
        let names = invalid(resp).await;
        assert_eq!(names.first().map(String::as_str), Some(field), "{names:?}");
    }
    // Unknown or malformed topics in the path are not found.
    for path in [
        format!("{TOPICS}/nope/members"),
        format!("{TOPICS}/NOPE"),
        format!("{TOPICS}/a%20b"),
    ] {
        expect(call(&app, &key, Method::GET, &path, None).await, 404).await;
    }
    for query in ["cursor=not-a-cursor", "limit=0", "limit=501"] {
        let path = format!("{members}?{query}");
        expect(call(&app, &key, Method::GET, &path, None).await, 400).await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_send_reaches_every_member_once_with_their_preferences() {
    let app = app().await;
    let key = app.api_key.clone();
    // 1,500 members over two chunks, and subscribers outside the topic.
    subscribers(&app, &key, "m", 0, 1_510).await;
    create_topic(&app, &key, "programme").await;
    add(&app, &key, "programme", names("m", 0, 1_000)).await;
    add(&app, &key, "programme", names("m", 1_000, 1_500)).await;
    // One member opted out of the template's category.
    let prefs = json!({"categories": {"results": {"enabled": false}}});
    let path = "/api/v1/services/subscribers/m-7/preferences";
    expect(call(&app, &key, Method::PUT, path, Some(prefs)).await, 200).await;

    let body = json!({"topic": "programme", "template": "care.update", "metadata": {"campaign": "spring"}});
    let send = |body: Value| {
        let app = &app;
        async move {
            with(
                app,
                Method::POST,
                &format!("{SEND}/send-topic"),
                &app.api_key,
            )
            .header("Idempotency-Key", "programme-spring")
            .json(&body)
            .send()
            .await
            .unwrap()
        }
    };
    let resp = send(body.clone()).await;
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let accepted = expect(resp, 202).await;
    assert_eq!(accepted["audience"], "topic:programme");
    assert_eq!(accepted["recipients"], 1_500);
    assert_eq!(accepted["status"], "closed");
    assert_eq!(accepted["status_url"], location);

    // Retried with the same key: the same batch, nothing more.
    let resp = send(body.clone()).await;
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let again = expect(resp, 202).await;
    assert_eq!(again["batch_id"], accepted["batch_id"]);
    // The same key with another body is refused.
    let other = json!({"topic": "programme", "template": "care.update"});
    expect(send(other).await, 422).await;

    let done = wait_completed(&app, &location).await;
    assert_eq!(done["recipients"], 1_500);
    assert_eq!(done["notifications"], 1_500, "{done}");
    assert_eq!(done["counts"]["sent"], 1_499, "{done}");
    assert_eq!(done["counts"]["suppressed"], 1, "{done}");

    let batch_id = accepted["batch_id"].as_str().unwrap();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select recipient, status, count(*) from notifications
         where batch_id = $1::uuid group by recipient, status",
    )
    .bind(batch_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1_500);
    assert!(
        rows.iter().all(|(_, _, n)| *n == 1),
        "each member exactly once"
    );
    let mut reached: Vec<&str> = rows.iter().map(|(r, _, _)| r.as_str()).collect();
    reached.sort();
    let mut members = names("m", 0, 1_500);
    members.sort();
    assert_eq!(
        reached,
        members.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let suppressed: Vec<&str> = rows
        .iter()
        .filter(|(_, s, _)| s == "suppressed")
        .map(|(r, _, _)| r.as_str())
        .collect();
    assert_eq!(suppressed, ["m-7"]);
    let inbox: i64 = sqlx::query_scalar(
        "select count(*) from notifications n join subscribers s on s.id = n.subscriber_id
         where n.batch_id = $1::uuid and n.status = 'sent' and s.external_id = n.recipient
           and n.metadata = '{\"campaign\": \"spring\"}'::jsonb",
    )
    .bind(batch_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        inbox, 1_499,
        "in the members' own inboxes, with the metadata"
    );

    // The whole organisation: every subscriber, members or not.
    let resp = call(
        &app,
        &key,
        Method::POST,
        &format!("{SEND}/send-organization"),
        Some(json!({"template": "care.update", "channels": ["inapp"]})),
    )
    .await;
    let accepted = expect(resp, 202).await;
    assert_eq!(accepted["audience"], "organization");
    assert_eq!(accepted["recipients"], 1_510);
    let done = wait_completed(&app, accepted["status_url"].as_str().unwrap()).await;
    assert_eq!(done["notifications"], 1_510, "{done}");
    assert_eq!(done["counts"]["sent"], 1_509, "{done}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_or_foreign_topic_sends_answer_400_or_404() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let resp = call(
        &app,
        &app.api_key,
        Method::POST,
        "/api/v1/admin/templates",
        Some(template()),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let key = app.api_key.clone();
    create_topic(&app, &key, "ward").await;
    let (_, other) = app.other_tenant().await;
    create_topic(&app, &other, "theirs").await;
    let url = format!("{SEND}/send-topic");
    for topic in ["theirs", "nope"] {
        let body = json!({"topic": topic, "template": "care.update"});
        expect(call(&app, &key, Method::POST, &url, Some(body)).await, 404).await;
    }
    for (body, field) in [
        (
            json!({"topic": "Ward!", "template": "care.update"}),
            "topic",
        ),
        (json!({"topic": "ward", "template": "nope"}), "template"),
        (
            json!({"topic": "ward", "template": "care.update", "channels": ["push"]}),
            "channels[0]",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "channels": ["inapp", "inapp"]}),
            "channels[1]",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "channels": []}),
            "channels",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "defaults": [1]}),
            "defaults",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "recipients": []}),
            "recipients|body",
        ),
        (json!({"template": "care.update"}), "topic|body"),
    ] {
        let names = invalid(call(&app, &key, Method::POST, &url, Some(body)).await).await;
        assert!(
            names.iter().any(|n| field.split('|').any(|f| n == f)),
            "{field}: {names:?}"
        );
    }
    let resp = with(&app, Method::POST, &url, &key)
        .header("Idempotency-Key", "k".repeat(256))
        .json(&json!({"topic": "ward", "template": "care.update"}))
        .send()
        .await
        .unwrap();
    expect(resp, 400).await;
    // An empty topic is accepted and its batch has nothing to do.
    let body = json!({"topic": "ward", "template": "care.update"});
    let accepted = expect(call(&app, &key, Method::POST, &url, Some(body)).await, 202).await;
    assert_eq!(accepted["recipients"], 0);
    let b = batch(&app, accepted["status_url"].as_str().unwrap()).await;
    assert_eq!(b["status"], "completed");
    // Another organisation cannot read the batch.
    let path = accepted["status_url"].as_str().unwrap();
    expect(call(&app, &other, Method::GET, path, None).await, 404).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_reaches_the_subscribers_of_the_organisations_named() {
    let app = TestApp::builder().spawn().await;
    let admin = platform_admin(&app).await;
    let (second, second_key) = app.other_tenant().await;
    let (third, third_key) = app.other_tenant().await;
    subscribers(&app, &app.api_key, "a", 0, 3).await;
    subscribers(&app, &second_key, "b", 0, 2).await;
    subscribers(&app, &third_key, "c", 0, 4).await;

    // The live alert, as every API instance hears it.
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(shared::events::channel_pattern(&app.redis_prefix))
        .await
        .unwrap();

    let url = "/api/v1/admin/broadcasts";
    let body = json!({"title": "Maintenance tonight", "body": "The portal is down 01:00-02:00 UTC.",
                      "severity": "warning", "email": true,
                      "organizations": [app.tenant_id.to_string(), second.to_string()]});
    // Not a platform admin: refused.
    expect(
        call(&app, &app.api_key, Method::POST, url, Some(body.clone())).await,
        403,
    )
    .await;
    let resp = with(&app, Method::POST, url, &admin.token)
        .header("Idempotency-Key", "maintenance-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let sent = expect(resp, 202).await;
    assert_eq!(sent["inapp"], 5);
    assert_eq!(sent["email"], 5);
    let id = sent["id"].as_str().unwrap().to_owned();
    let resp = with(&app, Method::POST, url, &admin.token)
        .header("Idempotency-Key", "maintenance-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(expect(resp, 202).await["id"], id.as_str());

    let mut alerted = Vec::new();
    let mut messages = pubsub.on_message();
    while alerted.len() < 2 {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        if event["type"] == "system.alert" {
            assert_eq!(event["topic"], "org");
            assert_eq!(event["data"]["broadcast_id"], id.as_str());
            assert_eq!(event["data"]["title"], "Maintenance tonight");
            alerted.push(event["tenant_id"].as_str().unwrap().to_owned());
        }
    }
    alerted.sort();
    let mut expected = vec![app.tenant_id.to_string(), second.to_string()];
    expected.sort();
    assert_eq!(alerted, expected);

    let path = format!("{url}/{id}");
    let done = testkit::eventually("the broadcast to be delivered", WAIT, || async {
        let b = expect(
            with(&app, Method::GET, &path, &admin.token)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        (b["counts"]["inapp"]["sent"] == 5 && b["counts"]["email"]["sent"] == 5).then_some(b)
    })
    .await;
    assert_eq!(
        done["counts"]["inapp"].as_object().unwrap().len(),
        1,
        "{done}"
    );
    let inboxes: Vec<(String, String)> = sqlx::query_as(
        "select s.external_id, n.content->>'title' from notifications n
         join subscribers s on s.id = n.subscriber_id
         where n.broadcast_id = $1::uuid and n.channel = 'inapp' and n.status = 'sent'
         order by 1",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let who: Vec<&str> = inboxes.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(who, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    assert!(inboxes.iter().all(|(_, t)| t == "Maintenance tonight"));
    let third_reached: i64 = sqlx::query_scalar(
        "select count(*) from notifications where broadcast_id = $1::uuid and tenant_id = $2",
    )
    .bind(&id)
    .bind(third)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(third_reached, 0, "an organisation not named is not reached");
    let mailed = app.smtp.received().len();
    assert_eq!(mailed, 5);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'broadcast.send' and resource_id = $1 and result = 'success'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'broadcast.send' and result = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 1);

    // Bad input: precise fields.
    for (body, field) in [
        (json!({"title": "", "body": "x"}), "title"),
        (
            json!({"title": "t", "body": "x", "severity": "loud"}),
            "severity",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": []}),
            "organizations",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": ["nope"]}),
            "organizations[0]",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": [third.to_string(), third.to_string()]}),
            "organizations[1]",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": [uuid::Uuid::now_v7().to_string()]}),
            "organizations[0]",
        ),
        (
            json!({"title": "t", "body": "x", "email_subject": "s"}),
            "email_subject",
        ),
        (
            json!({"title": "t", "body": "x", "action_url": "javascript:alert(1)"}),
            "action_url",
        ),
    ] {
        let resp = with(&app, Method::POST, url, &admin.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let names = invalid(resp).await;
        assert!(names.iter().any(|n| n == field), "{field}: {names:?}");
    }
    expect(
        with(&app, Method::GET, &format!("{url}/nope"), &admin.token)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect(
        call(&app, &app.api_key, Method::GET, &path, None).await,
        403,
    )
    .await;
    app.shutdown().await;
}
