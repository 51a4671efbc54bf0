//! A local stand-in for UPS: the OAuth token endpoint and the Track API.
//!
//! * `POST /security/v1/oauth/token` checks HTTP Basic client authentication
//!   ([`CLIENT_ID`], [`CLIENT_SECRET`]) and the `grant_type=client_credentials`
//!   form, and answers UPS's documented body (`expires_in` as a string).
//! * `GET /api/track/v1/details/{inquiryNumber}` checks the bearer token
//!   (issued here, not revoked), the `transId` (1 to 32 characters) and
//!   `transactionSrc` headers, and answers the documented `trackResponse`
//!   with the package's activity, or UPS's errors: 401 `250002` for a bad
//!   token, 404 `TW0001` for an unknown number.
//!
//! Tests set each number's activity, script the next answers (429 with
//! `Retry-After`, 503, a malformed or oversized body), revoke tokens, and
//! count requests.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::Engine as _;
use poem::{
    Body, EndpointExt, Request, Response, Route, get, handler,
    http::StatusCode,
    post,
    web::{Data, Path},
};
use serde_json::{Value, json};

/// The client id the fake accepts.
pub const CLIENT_ID: &str = "ups-test-client-0123456789";
/// The client secret the fake accepts.
pub const CLIENT_SECRET: &str = "ups-test-secret-abcdefghijklmnop";

/// One scan of a package.
#[derive(Debug, Clone)]
pub struct Scan {
    /// UPS status type: `M`, `MV`, `P`, `I`, `O`, `D`, `X`, `RS`, …
    pub kind: &'static str,
    /// UPS status code.
    pub code: &'static str,
    /// Description.
    pub description: &'static str,
    /// `YYYYMMDD`.
    pub date: String,
    /// `HHMMSS`.
    pub time: String,
    /// City.
    pub city: &'static str,
}

impl Scan {
    /// A scan of `kind` at `date` `time` in Atlanta.
    pub fn new(kind: &'static str, date: &str, time: &str) -> Self {
        let (code, description) = match kind {
            "M" | "MV" => (
                "MP",
                "Shipper created a label, UPS has not received the package yet.",
            ),
            "P" => ("PU", "Pickup Scan"),
            "I" => ("DP", "Departed from Facility"),
            "O" => ("OT", "Out For Delivery Today"),
            "D" => ("FS", "DELIVERED"),
            "X" => ("UE", "The receiver was not available for delivery."),
            "RS" => ("RS", "Returned to shipper"),
            _ => ("ZZ", "Status not available"),
        };
        Self {
            kind,
            code,
            description,
            date: date.to_owned(),
            time: time.to_owned(),
            city: "ATLANTA",
        }
    }
}

/// A scripted answer to a Track request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 429, with `Retry-After` seconds when given.
    TooManyRequests(Option<u64>),
    /// 503 in UPS's error shape.
    Unavailable,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a body of this many bytes.
    Oversized(usize),
    /// 401: the token is refused (as after its expiry at UPS).
    Unauthorized,
}

#[derive(Default)]
struct State {
    packages: Mutex<HashMap<String, Vec<Scan>>>,
    scripts: Mutex<VecDeque<Answer>>,
    always: Mutex<Option<Answer>>,
    tokens: Mutex<Vec<String>>,
    token_requests: AtomicU64,
    track_requests: Mutex<Vec<String>>,
    expires_in: AtomicU64,
    seq: AtomicU64,
}

/// The fake UPS.
#[derive(Debug)]
pub struct FakeUps {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

impl Drop for FakeUps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(json!({"response": {"errors": [{"code": code, "message": message}]}}).to_string())
}

#[handler]
async fn token(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let form = body.into_string().await.unwrap_or_default();
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let grant = url::form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.into_owned());
    if auth != Some(expected.as_str()) {
        return errors(StatusCode::UNAUTHORIZED, "10401", "ClientId is Invalid");
    }
    if !is_form || grant.as_deref() != Some("client_credentials") {
        return errors(
            StatusCode::BAD_REQUEST,
            "10400",
            "Invalid/Missing grant_type",
        );
    }
    let n = state.seq.fetch_add(1, Ordering::SeqCst);
    let token = format!("ups-access-{n}-{}", uuid::Uuid::new_v4().simple());
    state.tokens.lock().unwrap().push(token.clone());
    let expires = match state.expires_in.load(Ordering::SeqCst) {
        0 => 14_399,
        s => s,
    };
    Response::builder().content_type("application/json").body(
        json!({
            "token_type": "Bearer",
            "issued_at": "1763700000000",
            "client_id": CLIENT_ID,
            "access_token": token,
            "expires_in": expires.to_string(),
            "status": "approved"
        })
        .to_string(),
    )
}

#[handler]
async fn track(req: &Request, Path(number): Path<String>, state: Data<&Arc<State>>) -> Response {
    state.track_requests.lock().unwrap().push(number.clone());
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let bearer = header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    let known = bearer
        .as_ref()
        .is_some_and(|t| state.tokens.lock().unwrap().contains(t));
    if !known {
        return errors(
            StatusCode::UNAUTHORIZED,
            "250002",
            "Invalid Authentication Information.",
        );
    }
    let trans_ok = header("transid").is_some_and(|t| (1..=32).contains(&t.len()));
    if !trans_ok || header("transactionsrc").is_none_or(|s| s.is_empty()) {
        return errors(
            StatusCode::BAD_REQUEST,
            "TV0002",
            "Missing or invalid transId or transactionSrc header",
        );
    }
    let scripted = state.scripts.lock().unwrap().pop_front();
    let answer = scripted.or_else(|| state.always.lock().unwrap().clone());
    if let Some(answer) = answer {
        return match answer {
            Answer::TooManyRequests(after) => {
                let mut r = errors(StatusCode::TOO_MANY_REQUESTS, "429", "Rate Limit Exceeded");
                if let Some(s) = after {
                    r.headers_mut()
                        .insert("retry-after", s.to_string().parse().unwrap());
                }
                r
            }
            Answer::Unavailable => errors(
                StatusCode::SERVICE_UNAVAILABLE,
                "503",
                "Service Unavailable",
            ),
            Answer::Malformed => Response::builder()
                .content_type("application/json")
                .body("{\"trackResponse\": {\"shipment\": [ {"),
            Answer::Oversized(n) => Response::builder()
                .content_type("application/json")
                .body(format!("{{\"pad\": \"{}\"}}", "x".repeat(n))),
            Answer::Unauthorized => {
                state.tokens.lock().unwrap().clear();
                errors(
                    StatusCode::UNAUTHORIZED,
                    "250002",
                    "Invalid Authentication Information.",
                )
            }
        };
    }
    let scans = state.packages.lock().unwrap().get(&number).cloned();
    let Some(scans) = scans else {
        return errors(
            StatusCode::NOT_FOUND,
            "TW0001",
            "Tracking Information Not Found",
        );
    };
    // UPS lists the newest activity first.
    let activity: Vec<Value> = scans
        .iter()
        .rev()
        .map(|s| {
            json!({
                "location": {"address": {"city": s.city, "stateProvince": "GA", "countryCode": "US", "country": "US"}},
                "status": {"type": s.kind, "description": s.description, "code": s.code, "statusCode": "005"},
                "date": s.date,
                "time": s.time
            })
        })
        .collect();
    let newest = scans.last();
    let mut package = json!({
        "trackingNumber": number,
        "activity": activity,
        "currentStatus": {"description": newest.map(|s| s.description).unwrap_or_default(), "code": "005"},
        "packageCount": 1
    });
    if let Some(last) = newest {
        let kind = if last.kind == "D" { "DEL" } else { "SDD" };
        package["deliveryDate"] = json!([{"type": kind, "date": last.date}]);
    }
    Response::builder().content_type("application/json").body(
        json!({"trackResponse": {"shipment": [{
            "inquiryNumber": number,
            "package": [package],
            "userRelation": [],
            "warnings": []
        }]}})
        .to_string(),
    )
}

impl FakeUps {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let app = Route::new()
            .at("/security/v1/oauth/token", post(token))
            .at("/api/track/v1/details/:number", get(track))
            .data(state.clone());
        let (addr, task) = crate::serve_locally(app, "the fake UPS").await;
        Self { addr, state, task }
    }

    /// The base URL (`UPS_BASE_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets a package's scans, oldest first.
    pub fn set_scans(&self, number: &str, scans: Vec<Scan>) {
        self.state
            .packages
            .lock()
            .unwrap()
            .insert(number.to_owned(), scans);
    }

    /// Queues answers for the next Track requests.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.scripts.lock().unwrap().extend(answers);
    }

    /// Answers every Track request this way until [`FakeUps::heal`].
    pub fn always(&self, answer: Answer) {
        *self.state.always.lock().unwrap() = Some(answer);
    }

    /// Back to normal answers.
    pub fn heal(&self) {
        *self.state.always.lock().unwrap() = None;
    }

    /// Refuses every token issued so far (as UPS does once they expire).
    pub fn revoke_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Token requests received.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Track requests received, by number, oldest first.
    pub fn track_requests(&self) -> Vec<String> {
        self.state.track_requests.lock().unwrap().clone()
    }
}
