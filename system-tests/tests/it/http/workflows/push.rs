//! Push in workflows: a send step on `push` goes to each device the
//! subscriber registered (one notification per token, as a single send
//! does), a subscriber without a device has the channel skipped and named,
//! and a definition whose template has no push content, or with a fixed
//! `to` on push, is refused on save.

use chrono::Utc;
use reqwest::Method;
use serde_json::json;

use super::{WORKFLOWS, call, driven_clinic, expect, run, run_for, runner, save, step};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_step_reaches_every_registered_device_and_skips_subscribers_without_one() {
    let app = driven_clinic().await;
    app.add_template(&json!({
        "key": "care.push",
        "name": "Care push",
        "default_locale": "en",
        "default_channels": ["push"],
        "locales": {"en": {
            "push": {"title": "About {{topic}}", "body": "Open the app.", "data": {"screen": "care"}},
            "inapp": {"title": "About {{topic}}"}
        }}
    }))
    .await;
    for (who, tokens) in [
        ("pat", json!(["fcm-phone", "fcm-tablet"])),
        ("sam", json!([])),
    ] {
        let resp = call(
            &app,
            &app.api_key,
            Method::PUT,
            &format!("/api/v1/services/subscribers/{who}"),
            Some(json!({"push_tokens": tokens})),
        )
        .await;
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    save(
        &app,
        "nudge",
        json!({"name": "Nudge", "steps": [
            {"key": "nudge", "type": "send", "template": "care.push", "channels": ["push", "inapp"]}
        ]}),
    )
    .await;
    let pat = run_for(&app, "nudge", "pat", "your results").await;
    let sam = run_for(&app, "nudge", "sam", "your results").await;
    assert_eq!(runner(&app).advance(Utc::now()).await.unwrap(), 2);

    let r = run(&app, &pat).await;
    assert_eq!(r["status"], "completed");
    let s = step(&r, "nudge");
    assert_eq!(s["outcome"], "sent");
    assert_eq!(s["detail"], serde_json::Value::Null);
    assert_eq!(s["notification_ids"].as_array().unwrap().len(), 3);
    let sent: Vec<(String, String, String)> = sqlx::query_as(
        "select channel, recipient, content->>'title' from notifications
         where metadata->>'workflow_run_id' = $1 order by channel, recipient",
    )
    .bind(&pat)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        sent,
        vec![
            ("inapp".into(), "pat".into(), "About your results".into()),
            (
                "push".into(),
                "fcm-phone".into(),
                "About your results".into()
            ),
            (
                "push".into(),
                "fcm-tablet".into(),
                "About your results".into()
            ),
        ]
    );

    let r = run(&app, &sam).await;
    let s = step(&r, "nudge");
    assert_eq!(s["outcome"], "sent");
    assert_eq!(s["detail"], "push: the subscriber has no registered device");
    assert_eq!(s["notification_ids"].as_array().unwrap().len(), 1);

    // Refused on save: a template without push content, a fixed `to`.
    for (steps, field) in [
        (
            json!([{"key": "a", "type": "send", "template": "care.alert", "channels": ["push"]}]),
            "channels[0]",
        ),
        (
            json!([{"key": "a", "type": "send", "template": "care.push", "channels": ["push"], "to": "fcm-x"}]),
            "to",
        ),
    ] {
        let problem = expect(
            call(
                &app,
                &app.api_key,
                Method::PUT,
                &format!("{WORKFLOWS}/bad"),
                Some(json!({"name": "Bad", "steps": steps})),
            )
            .await,
            400,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    app.shutdown().await;
}
