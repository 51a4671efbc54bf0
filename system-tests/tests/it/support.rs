//! What tests of both suites share: requests with a key and an optional
//! JSON body, the JSON of an answer that must have a status (an error must
//! be `application/problem+json`) and the names a 400 problem lists as
//! invalid; a clock the test moves; and the sends several delivery tests
//! start from (the flu-shot SMS template, a batch of SMS sent with it,
//! twelve of them held at Twilio, the lab-results SMS) with the count of
//! notifications in each status.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{Gate, TWILIO_SID_A, twilio_config},
};

/// Sends `method path` with bearer `key` and, when given, a JSON `body`.
pub async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let req = app.client.request(method, app.url(path)).bearer_auth(key);
    match body {
        Some(b) => req.json(&b),
        None => req,
    }
    .send()
    .await
    .unwrap()
}

/// The JSON of a response that must have `status`; an error answer must be
/// `application/problem+json`.
pub async fn expect(resp: reqwest::Response, status: u16) -> Value {
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

/// Sends `method path` with bearer `key` and, when given, a JSON `body`;
/// returns the status, the JSON (`Null` when the body is not JSON) and the
/// raw text.
pub async fn call_parts(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

/// The names a problem's `invalid_params` lists.
pub fn invalid_param_names(problem: &Value) -> Vec<String> {
    problem["invalid_params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A clock that stands still until the test moves it.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl api::signin::Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn at(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(start)))
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

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
