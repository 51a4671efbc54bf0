//! Runs: versions kept, cancellation (pending steps and unsent
//! notifications), events, digests, throttles, and each step exactly once
//! under racing runners and repeated sweeps.

use chrono::{TimeDelta, Utc};
use reqwest::Method;
use serde_json::json;
use testkit::TestApp;

use super::{
    WAIT, WORKFLOWS, advance_until, call, clinic, expect, first_run, patient, run, run_for, runner,
    save, step, trigger,
};

async fn notifications_of(app: &TestApp, run_id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "select channel, status from notifications where metadata->>'workflow_run_id' = $1
         order by created_at",
    )
    .bind(run_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_keep_their_version_and_cancelled_runs_send_nothing_more() {
    // No worker: notifications stay queued, as if no provider had them yet.
    let app = TestApp::builder().without_worker().spawn().await;
    clinic(&app).await;
    patient(&app, "sam").await;
    let v1 = json!({"name": "Reminder", "steps": [
        {"key": "now", "type": "send", "template": "care.alert", "channels": ["sms"]},
        {"key": "later", "type": "delay", "duration_secs": 3600},
        {"key": "again", "type": "send", "template": "care.alert", "channels": ["sms", "email"]}
    ]});
    assert_eq!(save(&app, "reminder", v1.clone()).await["version"], 1);
    let ids = trigger(
        &app,
        "reminder",
        json!({"subscriber_id": "pat", "cancellation_key": "appt-42", "payload": {"topic": "x"}}),
    )
    .await;
    let pat_run = ids[0].clone();
    let sam_run = first_run(
        &app,
        "reminder",
        json!({"subscriber_id": "sam", "cancellation_key": "appt-42"}),
    )
    .await;
    let other = first_run(
        &app,
        "reminder",
        json!({"subscriber_id": "sam", "cancellation_key": "appt-43"}),
    )
    .await;
    let mut v2 = v1.clone();
    v2["steps"][1]["duration_secs"] = json!(60);
    let saved = save(&app, "reminder", v2).await;
    assert_eq!(
        (saved["version"].as_i64(), saved["latest_version"].as_i64()),
        (Some(2), Some(2))
    );
    let start = Utc::now();
    for id in [&pat_run, &sam_run, &other] {
        let r = advance_until(&app, id, start, "the first send", |r| {
            step(r, "now")["state"] == "done"
        })
        .await;
        assert_eq!(r["version"], 1, "a run keeps the version it started with");
        assert_eq!(r["current_step"], "later");
    }
    let old = expect(
        call(
            &app,
            &app.api_key,
            Method::GET,
            &format!("{WORKFLOWS}/reminder?version=1"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(old["steps"][1]["duration_secs"], 3600);

    // Cancel by key: both runs stop, their queued SMS are cancelled.
    let done = expect(
        call(
            &app,
            &app.api_key,
            Method::POST,
            &format!("{WORKFLOWS}/cancel"),
            Some(json!({"cancellation_key": "appt-42"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        done,
        json!({"runs_cancelled": 2, "notifications_cancelled": 2})
    );
    runner(&app)
        .advance(start + TimeDelta::hours(2))
        .await
        .unwrap();
    for id in [&pat_run, &sam_run] {
        let r = run(&app, id).await;
        assert_eq!(r["status"], "cancelled");
        assert_eq!(step(&r, "again")["state"], "not_run");
        assert_eq!(
            notifications_of(&app, id).await,
            vec![("sms".to_owned(), "cancelled".to_owned())]
        );
    }
    // The run with another key went on.
    let r = run(&app, &other).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(notifications_of(&app, &other).await.len(), 3);
    // A run triggered after the second save keeps version 2. (Triggered
    // only now: the scheduler's own runner could otherwise execute its first
    // step before the test's clock moves two hours on and ends it.)
    let newer = trigger(&app, "reminder", json!({"subscriber_id": "pat"})).await;
    assert_eq!(run(&app, &newer[0]).await["version"], 2);
    // Cancelling one run; an ended run is 409.
    let path = format!("{WORKFLOWS}/runs/{}/cancel", newer[0]);
    let one = expect(
        call(&app, &app.api_key, Method::POST, &path, None).await,
        200,
    )
    .await;
    assert_eq!(one["runs_cancelled"], 1);
    expect(
        call(&app, &app.api_key, Method::POST, &path, None).await,
        409,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_resumes_the_runs_waiting_for_it_and_a_timeout_ends_the_others() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    patient(&app, "sam").await;
    save(&app, "confirm", json!({"name": "Confirm", "steps": [
        {"key": "wait", "type": "wait_for", "event": "appointment.confirmed", "timeout_secs": 86400},
        {"key": "unconfirmed", "type": "branch", "if": {"step": "wait", "outcome": "timed_out"}, "then": "end"},
        {"key": "thanks", "type": "send", "template": "care.alert", "channels": ["inapp"]}
    ]})).await;
    let pat = run_for(&app, "confirm", "pat", "your visit").await;
    let sam = first_run(&app, "confirm", json!({"subscriber_id": "sam"})).await;
    let start = Utc::now();
    for id in [&pat, &sam] {
        advance_until(&app, id, start, "the wait", |r| r["status"] == "waiting").await;
    }
    let resumed = expect(
        call(&app, &app.api_key, Method::POST, &format!("{WORKFLOWS}/events"),
             Some(json!({"subscriber_id": "pat", "name": "appointment.confirmed", "payload": {"topic": "Tuesday"}}))).await,
        202,
    )
    .await;
    assert_eq!(resumed["resumed_run_ids"], json!([pat]));
    let r = advance_until(&app, &pat, start, "the thanks", |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(step(&r, "wait")["outcome"], "met");
    assert_eq!(step(&r, "thanks")["outcome"], "sent");
    let r = advance_until(
        &app,
        &sam,
        start + TimeDelta::days(1) + TimeDelta::minutes(1),
        "the timeout",
        |r| r["status"] == "completed",
    )
    .await;
    assert_eq!(step(&r, "wait")["outcome"], "timed_out");
    assert_eq!(step(&r, "thanks")["state"], "not_run");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digest_sends_once_with_every_trigger_and_a_throttle_drops_the_rest() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    save(
        &app,
        "updates",
        json!({"name": "Updates", "steps": [
            {"key": "collect", "type": "digest", "window_secs": 600},
            {"key": "tell", "type": "send", "template": "care.digest", "channels": ["inapp"]}
        ]}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.extend(
            trigger(
                &app,
                "updates",
                json!({"subscriber_id": "pat", "payload": {"n": i}}),
            )
            .await,
        );
    }
    let start = Utc::now();
    let runner = runner(&app);
    testkit::eventually("the triggers to be collected", WAIT, || async {
        runner.advance(start).await.unwrap();
        let mut merged = 0;
        for id in &ids {
            merged += i32::from(run(&app, id).await["status"] == "merged");
        }
        (merged == 9).then_some(())
    })
    .await;
    let collector = ids[0].clone();
    let r = advance_until(
        &app,
        &collector,
        start + TimeDelta::minutes(11),
        "the digest",
        |r| r["status"] == "completed",
    )
    .await;
    assert_eq!(r["collected"], 10);
    let n = step(&r, "tell")["notification_ids"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(n.len(), 1);
    let sent = app
        .wait_for_status(n[0].as_str().unwrap(), "sent", WAIT)
        .await;
    assert_eq!(sent["channel"], "inapp");
    let (title, body): (String, String) = sqlx::query_as(
        "select content->>'title', content->>'body' from notifications where id = $1::uuid",
    )
    .bind(n[0].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(title, "10 updates from your care team");
    // Every trigger's payload, each once, in whatever order they joined.
    let mut items: Vec<u32> = body
        .trim_matches(|c| c == '[' || c == ']')
        .split("][")
        .map(|n| n.parse().unwrap())
        .collect();
    items.sort_unstable();
    assert_eq!(items, (0..10).collect::<Vec<u32>>(), "{body}");

    save(&app, "nudge", json!({"name": "Nudge", "steps": [
        {"key": "limit", "type": "throttle", "limit": 3, "window_secs": 3600, "on_limit": "drop"},
        {"key": "tell", "type": "send", "template": "care.alert", "channels": ["inapp"]}
    ]})).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.extend(
            trigger(
                &app,
                "nudge",
                json!({"subscriber_id": "pat", "payload": {"topic": "x"}}),
            )
            .await,
        );
    }
    let statuses = testkit::eventually("the throttle", WAIT, || async {
        runner.advance(start).await.unwrap();
        let mut s = Vec::new();
        for id in &ids {
            s.push(run(&app, id).await["status"].as_str().unwrap().to_owned());
        }
        s.sort();
        (!s.iter().any(|x| x == "running" || x == "waiting")).then_some(s)
    })
    .await;
    assert_eq!(statuses, ["completed", "completed", "completed", "dropped"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_runners_execute_each_step_of_each_run_once() {
    let app = TestApp::spawn_api_only().await;
    clinic(&app).await;
    save(
        &app,
        "once",
        json!({"name": "Once", "steps": [
            {"key": "a", "type": "send", "template": "care.alert", "channels": ["inapp", "sms"]},
            {"key": "pause", "type": "delay", "duration_secs": 60},
            {"key": "b", "type": "send", "template": "care.alert", "channels": ["email"]}
        ]}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let who = format!("p{i}");
        patient(&app, &who).await;
        ids.extend(
            trigger(
                &app,
                "once",
                json!({"subscriber_id": who, "payload": {"topic": "x"}}),
            )
            .await,
        );
    }
    let start = Utc::now();
    let (one, two, three) = (runner(&app), runner(&app), runner(&app));
    for now in [start, start + TimeDelta::minutes(2)] {
        let (a, b, c) = tokio::join!(one.advance(now), two.advance(now), three.advance(now));
        assert_eq!(
            a.unwrap() + b.unwrap() + c.unwrap(),
            30,
            "each run moved on by one runner"
        );
        // A repeated sweep at the same time finds nothing due.
        assert_eq!(one.advance(now).await.unwrap(), 0);
    }
    for id in &ids {
        let r = run(&app, id).await;
        assert_eq!(r["status"], "completed");
        let mut channels: Vec<String> = notifications_of(&app, id)
            .await
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        channels.sort();
        assert_eq!(
            channels,
            ["email", "inapp", "sms"],
            "one notification per channel and step"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_trigger_starts_a_run_per_member_and_a_wait_for_sent_ends_when_the_email_goes() {
    let app = TestApp::builder().spawn().await;
    clinic(&app).await;
    patient(&app, "sam").await;
    let topics = "/api/v1/services/topics";
    expect(
        call(
            &app,
            &app.api_key,
            Method::POST,
            topics,
            Some(json!({"key": "ward-3", "name": "Ward 3"})),
        )
        .await,
        201,
    )
    .await;
    expect(
        call(
            &app,
            &app.api_key,
            Method::POST,
            &format!("{topics}/ward-3/members"),
            Some(json!({"subscribers": ["pat", "sam"]})),
        )
        .await,
        200,
    )
    .await;
    save(&app, "visit", json!({"name": "Visit", "steps": [
        {"key": "mail", "type": "send", "template": "care.alert", "channels": ["email"]},
        {"key": "gone", "type": "wait_for", "step": "mail", "status": "sent", "timeout_secs": 3600},
        {"key": "sent", "type": "branch", "if": {"step": "gone", "outcome": "met"}, "then": "end"},
        {"key": "fallback", "type": "send", "template": "care.alert", "channels": ["sms"]}
    ]}))
    .await;
    let ids = trigger(
        &app,
        "visit",
        json!({"topic": "ward-3", "payload": {"topic": "visiting hours"}}),
    )
    .await;
    assert_eq!(ids.len(), 2);
    let mut who = Vec::new();
    for id in &ids {
        let r = advance_until(&app, id, Utc::now(), "the email to go", |r| {
            r["status"] == "completed"
        })
        .await;
        assert_eq!(step(&r, "gone")["outcome"], "met");
        assert_eq!(step(&r, "fallback")["state"], "not_run");
        who.push(r["subscriber_id"].as_str().unwrap().to_owned());
    }
    who.sort();
    assert_eq!(who, ["pat", "sam"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_held_by_a_runner_is_skipped_by_others_resumed_after_that_runner_dies_and_its_payload_erased_after_retention()
 {
    let app = TestApp::spawn_api_only().await;
    clinic(&app).await;
    save(
        &app,
        "one",
        json!({"name": "One", "steps": [
            {"key": "a", "type": "send", "template": "care.alert", "channels": ["inapp"]}
        ]}),
    )
    .await;
    let id = run_for(&app, "one", "pat", "x").await;
    let now = Utc::now();
    // A runner claims the run and dies before committing (its transaction
    // is never committed).
    let mut dying = app.pool.begin().await.unwrap();
    let claimed = shared::db::workflow_runs::claim_due(&mut dying, now)
        .await
        .unwrap();
    assert_eq!(claimed.map(|c| c.id.to_string()), Some(id.clone()));
    assert_eq!(
        runner(&app).advance(now).await.unwrap(),
        0,
        "the held run is skipped"
    );
    // Its transaction ends without a commit. (Dropping it would roll back
    // only when the pool next uses the connection, racing the next runner.)
    dying.rollback().await.unwrap();
    assert_eq!(runner(&app).advance(now).await.unwrap(), 1);
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(notifications_of(&app, &id).await.len(), 1);
    assert_eq!(
        runner(&app).advance(now).await.unwrap(),
        0,
        "nothing runs twice"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merging_throttle_hands_the_extra_triggers_to_the_run_that_passed() {
    let app = TestApp::spawn_api_only().await;
    clinic(&app).await;
    save(&app, "merge", json!({"name": "Merge", "steps": [
        {"key": "limit", "type": "throttle", "limit": 1, "window_secs": 3600, "on_limit": "merge"},
        {"key": "pause", "type": "delay", "duration_secs": 300},
        {"key": "tell", "type": "send", "template": "care.digest", "channels": ["inapp"]}
    ]}))
    .await;
    let now = Utc::now();
    let first = first_run(
        &app,
        "merge",
        json!({"subscriber_id": "pat", "payload": {"n": 1}}),
    )
    .await;
    runner(&app).advance(now).await.unwrap();
    let mut others = Vec::new();
    for n in 2..4 {
        others.extend(
            trigger(
                &app,
                "merge",
                json!({"subscriber_id": "pat", "payload": {"n": n}}),
            )
            .await,
        );
    }
    runner(&app).advance(Utc::now()).await.unwrap();
    for id in &others {
        let r = run(&app, id).await;
        assert_eq!(r["status"], "merged");
        assert_eq!(step(&r, "limit")["outcome"], "merged");
    }
    runner(&app)
        .advance(now + TimeDelta::minutes(6))
        .await
        .unwrap();
    let r = run(&app, &first).await;
    assert_eq!(
        (r["status"].as_str(), r["collected"].as_i64()),
        (Some("completed"), Some(3))
    );
    let title: String = sqlx::query_scalar(
        "select content->>'title' from notifications where metadata->>'workflow_run_id' = $1",
    )
    .bind(&first)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(title, "3 updates from your care team");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_without_an_address_is_skipped_and_a_deleted_template_fails_the_run_naming_the_step()
 {
    let app = TestApp::spawn_api_only().await;
    clinic(&app).await;
    let created = expect(
        call(&app, &app.api_key, Method::POST, "/api/v1/admin/templates", Some(json!({
            "key": "short.lived", "name": "Short", "default_locale": "en", "default_channels": ["inapp"],
            "locales": {"en": {"inapp": {"title": "Hello", "action_url": "/x"}}}
        })))
        .await,
        201,
    )
    .await;
    save(
        &app,
        "gaps",
        json!({"name": "Gaps", "steps": [
            {"key": "text", "type": "send", "template": "care.alert", "channels": ["sms", "inapp"]},
            {"key": "later", "type": "send", "template": "short.lived", "channels": ["inapp"]}
        ]}),
    )
    .await;
    let template_id = created["id"].as_str().unwrap();
    expect(
        call(
            &app,
            &app.api_key,
            Method::DELETE,
            &format!("/api/v1/admin/templates/{template_id}"),
            None,
        )
        .await,
        204,
    )
    .await;
    let email_only = call(
        &app,
        &app.api_key,
        Method::PUT,
        "/api/v1/services/subscribers/lee",
        Some(json!({"email": "lee@patients.example"})),
    )
    .await;
    assert!(email_only.status().is_success());
    let id = run_for(&app, "gaps", "lee", "x").await;
    runner(&app).advance(Utc::now()).await.unwrap();
    let r = run(&app, &id).await;
    assert_eq!(step(&r, "text")["outcome"], "sent", "in-app went");
    assert!(
        step(&r, "text")["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("sms"),
        "{r}"
    );
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("`later`"), "{r}");
    assert_eq!(step(&r, "later")["outcome"], "failed");
    app.shutdown().await;
}
