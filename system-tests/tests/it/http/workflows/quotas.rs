//! Send quotas charged for workflow sends: a send step counts its
//! notifications on the organisation's quota counters (the ones the API's
//! sends use), and a channel over quota is skipped with the quota named in
//! the step's detail, never sent.

use chrono::Utc;
use serde_json::json;
use shared::quotas::{Period, key};

use super::{driven_clinic, first_run, patient, run, runner, save, step};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_sends_are_charged_to_the_send_quota_and_a_channel_over_it_is_skipped_naming_it() {
    let app = driven_clinic().await;
    patient(&app, "sam").await;
    patient(&app, "kim").await;
    sqlx::query(
        "insert into send_quotas (tenant_id, channel, period, quota) values ($1, 'sms', 'day', 2)",
    )
    .bind(app.tenant_id)
    .execute(&app.pool)
    .await
    .unwrap();
    save(
        &app,
        "text",
        json!({"name": "Text", "steps": [
            {"key": "text", "type": "send", "template": "care.alert", "channels": ["sms", "inapp"]}
        ]}),
    )
    .await;
    let mut ids = Vec::new();
    for who in ["pat", "sam", "kim"] {
        let body = json!({"subscriber_id": who, "payload": {"topic": "t"}});
        ids.push(first_run(&app, "text", body).await);
    }
    let queues = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let runner = runner(&app).with_quotas(queues.connection(), &app.redis_prefix);
    let now = Utc::now();
    assert_eq!(runner.advance(now).await.unwrap(), 3);

    for id in &ids[..2] {
        let r = run(&app, id).await;
        assert_eq!(step(&r, "text")["outcome"], "sent");
        assert_eq!(step(&r, "text")["detail"], serde_json::Value::Null);
        assert_eq!(
            step(&r, "text")["notification_ids"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
    // The third run's SMS would pass the daily quota of 2: skipped, named;
    // its in-app message (no quota) goes.
    let r = run(&app, &ids[2]).await;
    assert_eq!(r["status"], "completed");
    let s = step(&r, "text");
    assert_eq!(s["outcome"], "sent");
    let detail = s["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("sms: over the `sms:day` quota: the daily sms quota of 2 is used up"),
        "{detail}"
    );
    assert_eq!(s["notification_ids"].as_array().unwrap().len(), 1);
    let sms: i64 = sqlx::query_scalar("select count(*) from notifications where channel = 'sms'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sms, 2);

    // Counted where the API counts: its counter holds 2, and the API's own
    // SMS send is now refused by the quota.
    let mut conn = queues.connection();
    let used: Option<i64> = redis::cmd("GET")
        .arg(key(
            &app.redis_prefix,
            app.tenant_id,
            "sms",
            Period::Day,
            now,
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(used, Some(2));
    let resp = app
        .send_email(
            &json!({"channel": "sms", "to": "+14155550100", "text": "Your results are in."}),
        )
        .await;
    assert_eq!(resp.status(), 429, "{}", resp.text().await.unwrap());
    app.shutdown().await;
}
