//! Bad workflow definitions and requests: each answered with a precise 4xx
//! problem, nothing stored; other organisations' workflows and runs are 404.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use super::{WORKFLOWS, call, clinic, escalation, expect, save, trigger};

/// The `(step, field)` pairs of a 400's `errors`.
async fn step_errors(resp: reqwest::Response) -> Vec<(String, String)> {
    let body = expect(resp, 400).await;
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("an errors list: {body}"))
        .iter()
        .map(|e| {
            assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()));
            (
                e["step"].as_str().unwrap().to_owned(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn put(app: &TestApp, key: &str, steps: Value) -> reqwest::Response {
    call(
        app,
        &app.api_key,
        Method::PUT,
        &format!("{WORKFLOWS}/{key}"),
        Some(json!({"name": "Bad", "steps": steps})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_definitions_are_refused_with_each_problem_named_by_its_step() {
    let app = TestApp::builder().without_worker().spawn().await;
    clinic(&app).await;
    let send =
        json!({"key": "first", "type": "send", "template": "care.alert", "channels": ["inapp"]});
    let cases: Vec<(Value, (&str, &str))> = vec![
        (
            json!([send, {"key": "x", "type": "teleport"}]),
            ("x", "type"),
        ),
        (
            json!([send, {"key": "b", "type": "branch", "if": {"step": "first", "outcome": "sent"}, "then": "nowhere"}]),
            ("b", "then"),
        ),
        (
            json!([send, {"key": "b", "type": "branch", "if": {"step": "first", "outcome": "sent"}, "then": "first"}]),
            ("b", "then"),
        ),
        (
            json!([send, {"key": "d", "type": "delay", "duration_secs": 31_536_001}]),
            ("d", "duration_secs"),
        ),
        (
            json!([send, {"key": "w", "type": "wait_for", "step": "first", "status": "read", "timeout_secs": 40_000_000}]),
            ("w", "timeout_secs"),
        ),
        (
            json!([{"key": "s", "type": "send", "template": "no.such.template", "channels": ["inapp"]}]),
            ("s", "template"),
        ),
        (
            json!([{"key": "s", "type": "send", "template": "care.escalation", "channels": ["sms"]}]),
            ("s", "channels[0]"),
        ),
        (
            json!([{"key": "s", "type": "send", "template": "care.alert", "channels": ["email"], "to": "not an address"}]),
            ("s", "to"),
        ),
        (json!([send, send]), ("first", "key")),
        (json!([]), ("steps", "steps")),
    ];
    for (steps, want) in cases {
        let errors = step_errors(put(&app, "bad", steps.clone()).await).await;
        assert!(
            errors.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{steps}: {errors:?}"
        );
    }
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"key": format!("s{i}"), "type": "delay", "duration_secs": 60}))
        .collect();
    assert_eq!(
        step_errors(put(&app, "bad", Value::Array(many)).await).await,
        vec![("steps".to_owned(), "steps".to_owned())]
    );
    // Nothing was stored.
    expect(
        call(
            &app,
            &app.api_key,
            Method::GET,
            &format!("{WORKFLOWS}/bad"),
            None,
        )
        .await,
        404,
    )
    .await;
    // Malformed keys.
    let resp = put(&app, "Bad%20Key", escalation()["steps"].clone()).await;
    assert_eq!(resp.status(), 400);
    // `events` and `cancel` are routes of their own that take only POST,
    // `runs` one that takes only GET.
    for key in ["events", "runs"] {
        let resp = put(&app, key, escalation()["steps"].clone()).await;
        assert_eq!(resp.status(), 405, "{key}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_triggers_events_and_other_organisations_ids_get_precise_answers() {
    let app = TestApp::builder().without_worker().spawn().await;
    clinic(&app).await;
    save(&app, "care-alert", escalation()).await;
    let path = format!("{WORKFLOWS}/care-alert/trigger");
    let post = |body: Value| call(&app, &app.api_key, Method::POST, &path, Some(body));
    let invalid = |resp: reqwest::Response| async move {
        let body = expect(resp, 400).await;
        body["invalid_params"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(invalid(post(json!({})).await).await, "subscriber_id");
    assert_eq!(
        invalid(post(json!({"subscriber_id": "pat", "topic": "ward-3"})).await).await,
        "subscriber_id"
    );
    assert_eq!(
        invalid(post(json!({"subscriber_id": "pat", "payload": [1]})).await).await,
        "payload"
    );
    assert_eq!(
        invalid(post(json!({"subscriber_id": "pat", "colour": "red"})).await).await,
        "colour"
    );
    let big = "x".repeat(17 * 1024);
    expect(
        post(json!({"subscriber_id": "pat", "payload": {"note": big}})).await,
        413,
    )
    .await;
    expect(post(json!({"topic": "no-such-topic"})).await, 404).await;
    expect(
        call(
            &app,
            &app.api_key,
            Method::POST,
            &format!("{WORKFLOWS}/nope/trigger"),
            Some(json!({"subscriber_id": "pat"})),
        )
        .await,
        404,
    )
    .await;
    // The same Idempotency-Key: the same runs; with another body, 422.
    let keyed = |body: Value| with_key(&app, &path, "trigger-1", body);
    let first = expect(keyed(json!({"subscriber_id": "pat"})).await, 202).await;
    let again = keyed(json!({"subscriber_id": "pat"})).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(expect(again, 202).await["run_ids"], first["run_ids"]);
    expect(keyed(json!({"subscriber_id": "someone-else"})).await, 422).await;

    // Events: a bad name is 400, an unknown subscriber resumes nothing.
    let events = format!("{WORKFLOWS}/events");
    let bad = call(
        &app,
        &app.api_key,
        Method::POST,
        &events,
        Some(json!({"subscriber_id": "pat", "name": "Not A Name"})),
    )
    .await;
    assert_eq!(invalid(bad).await, "name");
    let none = call(
        &app,
        &app.api_key,
        Method::POST,
        &events,
        Some(json!({"subscriber_id": "nobody", "name": "x"})),
    )
    .await;
    assert_eq!(expect(none, 202).await["resumed_run_ids"], json!([]));

    // Another organisation sees none of it.
    let run_id = first["run_ids"][0].as_str().unwrap().to_owned();
    let (_, other_key) = app.other_tenant().await;
    for (method, p) in [
        (Method::GET, format!("{WORKFLOWS}/care-alert")),
        (Method::GET, format!("{WORKFLOWS}/runs/{run_id}")),
        (Method::POST, format!("{WORKFLOWS}/runs/{run_id}/cancel")),
        (Method::POST, format!("{WORKFLOWS}/care-alert/trigger")),
        (Method::GET, format!("{WORKFLOWS}/runs/not-a-uuid")),
    ] {
        let body = (method == Method::POST).then(|| json!({"subscriber_id": "pat"}));
        let resp = call(&app, &other_key, method.clone(), &p, body).await;
        assert_eq!(resp.status(), 404, "{method} {p}");
    }
    let listed = expect(
        call(&app, &other_key, Method::GET, WORKFLOWS, None).await,
        200,
    )
    .await;
    assert_eq!(listed["items"], json!([]));
    let cancelled = call(
        &app,
        &other_key,
        Method::POST,
        &format!("{WORKFLOWS}/cancel"),
        Some(json!({"cancellation_key": "x"})),
    )
    .await;
    assert_eq!(expect(cancelled, 200).await["runs_cancelled"], 0);
    // Triggers do not need the other organisation's ids to fail: the run is untouched.
    let ids = trigger(&app, "care-alert", json!({"subscriber_id": "pat"})).await;
    assert_eq!(ids.len(), 1);
    app.shutdown().await;
}

async fn with_key(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.api_key)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}
