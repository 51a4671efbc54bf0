//! What several worker tests share: the flu-shot SMS template and a batch
//! of SMS sent with it.

use serde_json::{Value, json};
use testkit::TestApp;

/// Adds the `flu.shot` SMS template with the app's key; it must be created.
pub async fn add_flu_shot_template(app: &TestApp) {
    let resp = app
        .post_with_key(
            "/api/v1/admin/templates",
            &json!({
                "key": "flu.shot", "name": "Flu shot reminder", "default_locale": "en",
                "default_channels": ["sms"],
                "locales": {"en": {"sms": {"body": "Hello {{name}}, flu shots are available."}}}
            }),
        )
        .await;
    assert_eq!(resp.status(), 201);
}

/// Sends `n` flu-shot SMS in one batch, to `+1500555` numbers counting up
/// from `first`; the batch must be accepted.
pub async fn send_flu_shot_batch(app: &TestApp, first: u32, n: u32) {
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
}
