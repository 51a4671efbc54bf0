//! Deleting a workflow (its runs still going are cancelled, their history
//! stays, the key is free again, the delete is audited) and listing runs
//! (newest first, cursor pages, filters, bad input 400, other
//! organisations see nothing).

use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use super::{
    WORKFLOWS, call, driven_clinic, expect, first_run, patient, run, run_for, runner, save,
};

fn in_flight() -> Value {
    json!({"name": "Follow-up", "steps": [
        {"key": "msg", "type": "send", "template": "care.alert", "channels": ["inapp"]},
        {"key": "pause", "type": "delay", "duration_secs": 86400},
        {"key": "again", "type": "send", "template": "care.alert", "channels": ["inapp"]}
    ]})
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    call(app, key, Method::GET, path, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_workflow_cancels_its_runs_keeps_their_history_and_frees_its_key() {
    let app = driven_clinic().await;
    save(&app, "follow-up", in_flight()).await;
    let going = run_for(&app, "follow-up", "pat", "t").await;
    // Due, not yet started: cancelled too.
    runner(&app).advance(Utc::now()).await.unwrap();
    let queued = run_for(&app, "follow-up", "pat", "t").await;
    assert_eq!(run(&app, &going).await["current_step"], "pause");

    // Another organisation cannot delete it.
    let (_, other_key) = app.other_tenant().await;
    let path = format!("{WORKFLOWS}/follow-up");
    expect(
        call(&app, &other_key, Method::DELETE, &path, None).await,
        404,
    )
    .await;

    let deleted = expect(
        call(&app, &app.api_key, Method::DELETE, &path, None).await,
        200,
    )
    .await;
    assert_eq!(
        deleted,
        json!({"key": "follow-up", "runs_cancelled": 2, "notifications_cancelled": 1})
    );
    for id in [&going, &queued] {
        assert_eq!(run(&app, id).await["status"], "cancelled");
    }
    // The first message, undispatched, is cancelled; nothing more is sent.
    runner(&app)
        .advance(Utc::now() + chrono::TimeDelta::days(2))
        .await
        .unwrap();
    let statuses: Vec<String> = sqlx::query_scalar(
        "select status from notifications where metadata->>'workflow' = 'follow-up'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(statuses, vec!["cancelled".to_owned()]);

    // Gone: read, trigger, list, delete again.
    expect(get(&app, &app.api_key, &path).await, 404).await;
    expect(
        call(
            &app,
            &app.api_key,
            Method::POST,
            &format!("{path}/trigger"),
            Some(json!({"subscriber_id": "pat", "payload": {"topic": "t"}})),
        )
        .await,
        404,
    )
    .await;
    let listed = expect(get(&app, &app.api_key, WORKFLOWS).await, 200).await;
    assert_eq!(listed["items"], json!([]));
    expect(
        call(&app, &app.api_key, Method::DELETE, &path, None).await,
        404,
    )
    .await;
    // The history stays, listed under the key.
    let runs = expect(
        get(
            &app,
            &app.api_key,
            &format!("{WORKFLOWS}/runs?workflow=follow-up"),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 2);

    // Audited, with what it cancelled.
    let (actor, details): (String, Value) = sqlx::query_as(
        "select actor, details from audit_log where action = 'workflow.delete' and tenant_id = $1",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(actor.starts_with("api_key:"), "{actor}");
    assert_eq!(
        details,
        json!({"key": "follow-up", "runs_cancelled": 2, "notifications_cancelled": 1})
    );

    // The key is free: saving it again starts a new workflow at version 1.
    let again = save(&app, "follow-up", in_flight()).await;
    assert_eq!(again["version"], 1);
    let fresh = run_for(&app, "follow-up", "pat", "t").await;
    assert_eq!(run(&app, &fresh).await["status"], "running");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_are_listed_newest_first_in_pages_and_filtered() {
    let app = driven_clinic().await;
    patient(&app, "sam").await;
    save(&app, "follow-up", in_flight()).await;
    save(
        &app,
        "once",
        json!({"name": "Once", "steps": [
            {"key": "msg", "type": "send", "template": "care.alert", "channels": ["inapp"]}
        ]}),
    )
    .await;
    let mut ids = Vec::new();
    for (workflow, who, cancel) in [
        ("follow-up", "pat", "visit-1"),
        ("follow-up", "sam", "visit-1"),
        ("once", "pat", "visit-2"),
        ("follow-up", "pat", "visit-2"),
        ("once", "sam", "visit-3"),
    ] {
        let body =
            json!({"subscriber_id": who, "cancellation_key": cancel, "payload": {"topic": "t"}});
        ids.push(first_run(&app, workflow, body).await);
    }
    // `once` runs complete; `follow-up` runs wait in their delay.
    runner(&app).advance(Utc::now()).await.unwrap();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    // Every page of two, following the cursor, gives each run once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let page = expect(
            get(&app, &app.api_key, &format!("{WORKFLOWS}/runs?limit=2{q}")).await,
            200,
        )
        .await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let list = |query: &'static str| {
        let app = &app;
        async move {
            let page = expect(
                get(app, &app.api_key, &format!("{WORKFLOWS}/runs?{query}")).await,
                200,
            )
            .await;
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("workflow=once").await,
        vec![ids[4].clone(), ids[2].clone()]
    );
    assert_eq!(
        list("status=completed").await,
        vec![ids[4].clone(), ids[2].clone()]
    );
    assert_eq!(
        list("status=running&workflow=follow-up&subscriber_id=pat").await,
        vec![ids[3].clone(), ids[0].clone()]
    );
    assert_eq!(
        list("cancellation_key=visit-1").await,
        vec![ids[1].clone(), ids[0].clone()]
    );
    assert_eq!(list("subscriber_id=nobody").await, Vec::<String>::new());
    assert_eq!(list("workflow=unknown").await, Vec::<String>::new());
    assert_eq!(list("status=cancelled").await, Vec::<String>::new());
    let one = expect(
        get(
            &app,
            &app.api_key,
            &format!("{WORKFLOWS}/runs?workflow=follow-up&limit=1"),
        )
        .await,
        200,
    )
    .await;
    let item = &one["items"][0];
    assert_eq!(item["id"], ids[3].as_str());
    assert_eq!(item["workflow"], "follow-up");
    assert_eq!(item["version"], 1);
    assert_eq!(item["subscriber_id"], "pat");
    assert_eq!(item["status"], "running");
    assert_eq!(item["current_step"], "pause");
    assert_eq!(item["cancellation_key"], "visit-2");

    // Bad input: 400 naming the parameter.
    for (query, param) in [
        ("cursor=nope", "cursor"),
        ("cursor=99999999999999999999.x", "cursor"),
        ("cursor=1.not-a-uuid", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=paused", "status"),
        ("workflow=Not%20A%20Key", "workflow"),
        ("subscriber_id=%20", "subscriber_id"),
    ] {
        let problem = expect(
            get(&app, &app.api_key, &format!("{WORKFLOWS}/runs?{query}")).await,
            400,
        )
        .await;
        assert!(problem.to_string().contains(param), "{query}: {problem}");
    }

    // Another organisation sees none of them.
    let (_, other_key) = app.other_tenant().await;
    let theirs = expect(
        get(&app, &other_key, &format!("{WORKFLOWS}/runs")).await,
        200,
    )
    .await;
    assert_eq!(theirs["items"], json!([]));
    app.shutdown().await;
}
