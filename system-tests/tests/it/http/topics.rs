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

use crate::http::org_support::platform_admin;
use crate::support::{call, expect, invalid_param_names};

mod sends;

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

/// The names of the invalid fields of a 400.
async fn invalid(resp: reqwest::Response) -> Vec<String> {
    invalid_param_names(&expect(resp, 400).await)
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
    let app = TestApp::spawn_api_only().await;
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
    let app = TestApp::spawn_api_only().await;
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
    let app = TestApp::spawn_api_only().await;
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
