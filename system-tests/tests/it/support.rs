//! Request helpers the API's tests share across areas: a call with a key
//! and an optional JSON body, the JSON of an answer that must have a status
//! (an error must be `application/problem+json`), and the names a 400
//! problem lists as invalid; and a clock the test moves.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::Value;
use testkit::TestApp;

use crate::org_support::with;

/// Sends `method path` with bearer `key` and, when given, a JSON `body`.
pub async fn call(
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
