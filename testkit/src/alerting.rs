//! Alert targets played by local servers that check the documented request
//! shapes, as real services would, and record what arrived:
//!
//! * [`FakeSlack`]: a Slack incoming webhook. A POST with
//!   `Content-Type: application/json` and a body `{"text": "…"}` (non-empty)
//!   gets `200 ok`; anything else `400 invalid_payload`.
//! * [`FakePagerDuty`]: PagerDuty Events API v2 at `POST /v2/enqueue`. An
//!   event needs `routing_key` (32 characters), `event_action` (`trigger`,
//!   `acknowledge`, `resolve`) and `dedup_key`; a trigger also needs
//!   `payload.summary` (1 to 1024 characters), `payload.severity`
//!   (`critical`, `error`, `warning`, `info`) and `payload.source`. A valid
//!   event gets `202 {"status":"success","message":"Event processed",
//!   "dedup_key":…}`, an invalid one `400 {"status":"invalid event",…}`.
//!
//! Both can be told to answer the next requests with other status codes
//! (`answer_next`), to play an outage.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use poem::{Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, web::Data};
use serde_json::{Value, json};

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    /// The path.
    pub path: String,
    /// `Content-Type`.
    pub content_type: String,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// The status code it was answered with.
    pub status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Slack,
    PagerDuty,
}

#[derive(Debug)]
struct State {
    kind: Kind,
    calls: Mutex<Vec<Call>>,
    script: Mutex<VecDeque<u16>>,
}

#[handler]
async fn receive(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let raw = body.into_vec().await.unwrap_or_default();
    let parsed: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let path = req.uri().path().to_owned();
    let scripted = state.script.lock().expect("lock").pop_front();
    let (status, answer) = match scripted {
        Some(code) => (code, json!({"status": "scripted"}).to_string()),
        None => match state.kind {
            Kind::Slack => slack(&content_type, &parsed),
            Kind::PagerDuty => pagerduty(&path, &content_type, &parsed),
        },
    };
    state.calls.lock().expect("lock").push(Call {
        path,
        content_type,
        body: parsed,
        status,
    });
    Response::builder()
        .status(StatusCode::from_u16(status).expect("a status"))
        .body(answer)
}

fn slack(content_type: &str, body: &Value) -> (u16, String) {
    let ok = content_type.starts_with("application/json")
        && body.as_object().is_some_and(|o| {
            o.get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
        });
    if ok {
        (200, "ok".to_owned())
    } else {
        (400, "invalid_payload".to_owned())
    }
}

fn pagerduty(path: &str, content_type: &str, body: &Value) -> (u16, String) {
    let mut errors: Vec<&str> = Vec::new();
    if path != "/v2/enqueue" {
        return (404, json!({"status": "not found"}).to_string());
    }
    if !content_type.starts_with("application/json") {
        errors.push("Content-Type must be application/json");
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    if text(body, "routing_key").is_none_or(|k| k.len() != 32) {
        errors.push("routing_key must be a 32 character integration key");
    }
    let action = text(body, "event_action").unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action.as_str()) {
        errors.push("event_action must be trigger, acknowledge or resolve");
    }
    if text(body, "dedup_key").is_none_or(|k| k.is_empty() || k.len() > 255) {
        errors.push("dedup_key is required here");
    }
    if action == "trigger" {
        let payload = body.get("payload").cloned().unwrap_or(Value::Null);
        if text(&payload, "summary").is_none_or(|s| s.is_empty() || s.chars().count() > 1024) {
            errors.push("payload.summary must be 1 to 1024 characters");
        }
        if text(&payload, "severity")
            .is_none_or(|s| !["critical", "error", "warning", "info"].contains(&s.as_str()))
        {
            errors.push("payload.severity must be critical, error, warning or info");
        }
        if text(&payload, "source").is_none_or(|s| s.is_empty()) {
            errors.push("payload.source is required");
        }
    }
    if errors.is_empty() {
        (
            202,
            json!({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
                .to_string(),
        )
    } else {
        (
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                .to_string(),
        )
    }
}

/// A local alert target.
#[derive(Debug)]
pub struct FakeTarget {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// A Slack incoming webhook.
pub type FakeSlack = FakeTarget;
/// PagerDuty's Events API v2.
pub type FakePagerDuty = FakeTarget;

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTarget {
    async fn start(kind: Kind) -> Self {
        let state = Arc::new(State {
            kind,
            calls: Mutex::default(),
            script: Mutex::default(),
        });
        let app = Route::new().at("/*", receive).data(state.clone());
        let (addr, task) = crate::serve_locally(app, "the fake target").await;
        Self { addr, state, task }
    }

    /// A Slack incoming webhook on a free port.
    pub async fn slack() -> FakeSlack {
        Self::start(Kind::Slack).await
    }

    /// PagerDuty's Events API on a free port (set `PAGERDUTY_BASE_URL` to
    /// [`FakeTarget::base`]).
    pub async fn pagerduty() -> FakePagerDuty {
        Self::start(Kind::PagerDuty).await
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with these codes, in order, whatever they
    /// carry.
    pub fn answer_next(&self, codes: &[u16]) {
        self.state
            .script
            .lock()
            .expect("lock")
            .extend(codes.iter().copied());
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(&format!("{n} requests"), timeout, || async {
            let got = self.calls();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}
