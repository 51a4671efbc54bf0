//! What several worker tests share: the flu-shot SMS template, a batch of
//! SMS sent with it, and twelve of them held at Twilio; the lab-results SMS.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{Gate, TWILIO_SID_A, twilio_config},
};

/// Adds the `flu.shot` SMS template with the app's key; it must be created.
pub async fn add_flu_shot_template(app: &TestApp) {
    app.add_template(&json!({
        "key": "flu.shot", "name": "Flu shot reminder", "default_locale": "en",
        "default_channels": ["sms"],
        "locales": {"en": {"sms": {"body": "Hello {{name}}, flu shots are available."}}}
    }))
    .await;
}

/// Sends `n` flu-shot SMS in one batch, to `+1500555` numbers counting up
/// from `first`; the batch must be accepted. Returns the batch's id.
pub async fn send_flu_shot_batch(app: &TestApp, first: u32, n: u32) -> String {
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"phone": format!("+1500555{:04}", first + i), "data": {"name": format!("P{i}")}}))
        .collect();
    let resp = app
        .post_with_key(
            "/api/v1/services/notifications/send-batch",
            &json!({"template": "flu.shot", "channels": ["sms"], "recipients": recipients}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    body["batch_id"].as_str().unwrap().to_owned()
}

/// Sends the lab-results SMS to `to` with the app's key; it must be
/// accepted. Returns the notification's id.
pub async fn lab_results_sms(app: &TestApp, to: &str) -> String {
    let body = json!({"channel": "sms", "to": to, "text": "Your lab results are ready."});
    let resp = app.post_send(&app.api_key, None, &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `(status, attempts, count)` of every notification, in that order.
pub async fn statuses(pool: &sqlx::PgPool) -> Vec<(String, i32, i64)> {
    sqlx::query_as(
        "select status, attempts, count(*) from notifications group by 1, 2 order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Sends twelve flu-shot SMS in one batch through Twilio (whose answers
/// `gate` holds), numbers counting up from `first`: the dispatcher gives
/// them to one job. Waits, up to `wait`, until eight are at Twilio and four
/// wait their turn, all twelve `sending`.
pub async fn twelve_sms_held(app: &TestApp, gate: &Gate, first: u32, wait: Duration) {
    app.add_provider(&twilio_config("twilio-main", TWILIO_SID_A, Some(10)))
        .await;
    add_flu_shot_template(app).await;
    send_flu_shot_batch(app, first, 12).await;
    tokio::time::timeout(wait, gate.arrived(8))
        .await
        .expect("Twilio has eight messages");
    assert_eq!(statuses(&app.pool).await, [("sending".to_owned(), 1, 12)]);
}
