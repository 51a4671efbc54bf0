//! Local stand-ins for the HTTP providers: Twilio, SendGrid, FCM (with
//! Google's token endpoint) and the WhatsApp Cloud API, all on one port.
//!
//! Each checks the documented request shape (path, auth header, body
//! fields) and answers like the real service: the documented success body,
//! or the documented error body with its status. A malformed request gets
//! the provider's own 400/401, so a worker that builds requests wrongly fails
//! its test. Tests can script the next answers per account (429 with
//! `Retry-After`, 5xx, a hang, a permanent error, a request held at a
//! [`Gate`] until the test lets it through) and read every request.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use poem::{
    Body, EndpointExt, Request, Response, Route, handler,
    http::StatusCode,
    post,
    web::{Data, Path},
};
use serde_json::{Map, Value, json};

/// The Twilio auth token the fake accepts for any account SID.
pub const TWILIO_AUTH_TOKEN: &str = "twilio-test-auth-token-0123456789";
/// A Twilio account SID.
pub const TWILIO_SID_A: &str = "AC00000000000000000000000000000001";
/// Another Twilio account SID.
pub const TWILIO_SID_B: &str = "AC00000000000000000000000000000002";
/// The SendGrid API key the fake accepts.
pub const SENDGRID_KEY: &str = "SG.test-key.0123456789abcdefghij";
/// The WhatsApp access token the fake accepts.
pub const WHATSAPP_TOKEN: &str = "EAAtest0123456789whatsapp";
/// The Firebase service account's email.
pub const FCM_CLIENT_EMAIL: &str = "push@test-project.iam.gserviceaccount.com";
/// A number Twilio calls invalid (its documented error 21211).
pub const INVALID_NUMBER: &str = "+15005550001";
/// A WhatsApp number whose 24-hour window is closed (error 131047 on text).
pub const WINDOW_CLOSED_NUMBER: &str = "+15550100047";
/// Device tokens starting with this are unknown to FCM (`UNREGISTERED`).
pub const UNREGISTERED_TOKEN_PREFIX: &str = "gone-";

/// The provider config of Twilio account `sid` (the fake's auth token,
/// sending from +15005550999), named `name`, at `priority` when given.
pub fn twilio_config(name: &str, sid: &str, priority: Option<i32>) -> Value {
    let mut config = json!({
        "provider": "twilio", "name": name,
        "settings": {"account_sid": sid, "from": "+15005550999"},
        "credentials": {"auth_token": TWILIO_AUTH_TOKEN},
    });
    if let Some(p) = priority {
        config["priority"] = json!(p);
    }
    config
}

/// A service-account key file for the fake FCM project (the fixture RSA key).
pub fn fcm_service_account() -> Value {
    json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "rsa-a",
        "private_key": String::from_utf8(crate::jwks::fixture("rsa-a.pem")).expect("utf-8"),
        "client_email": FCM_CLIENT_EMAIL,
        "token_uri": "http://169.254.169.254/never-used",
    })
}

/// Which fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Twilio messages.
    Twilio,
    /// SendGrid mail send.
    SendGrid,
    /// FCM sends.
    Fcm,
    /// Google's OAuth2 token endpoint.
    GoogleToken,
    /// WhatsApp messages.
    WhatsApp,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 429, with `Retry-After` seconds when given.
    TooManyRequests(Option<u64>),
    /// 503 in the provider's error shape.
    Unavailable,
    /// No answer for this long (then a 504).
    Hang(Duration),
    /// 400 in the provider's error shape with a message that quotes the
    /// request back, recipient and text included, as real validation errors
    /// can (Twilio's echo the form, `To=%2B1555…&Body=…`).
    RejectEchoing,
    /// Holds the request until the test opens the [`Gate`], then answers as
    /// usual (accepted, for a well-formed request).
    Held(Gate),
}

/// Holds requests answered with [`Answer::Held`] until the test lets them
/// go, and tells the test when one has arrived: a provider that has the
/// message but has not answered yet, without a timer.
#[derive(Debug, Clone)]
pub struct Gate {
    arrived: Arc<tokio::sync::watch::Sender<usize>>,
    opened: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            arrived: Arc::new(tokio::sync::watch::channel(0).0),
            opened: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until `n` requests have arrived at the gate.
    pub async fn arrived(&self, n: usize) {
        let _ = self.arrived.subscribe().wait_for(|a| *a >= n).await;
    }

    /// Lets held requests (and later ones) through to their answer.
    pub fn open(&self) {
        self.opened.send_replace(true);
    }

    async fn hold(&self) {
        self.arrived.send_modify(|a| *a += 1);
        let _ = self.opened.subscribe().wait_for(|o| *o).await;
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which fake.
    pub kind: Kind,
    /// The path.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body: JSON, or a form as a JSON object.
    pub body: Value,
    /// What the fake answered.
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    scripts: Mutex<HashMap<(Kind, String), VecDeque<Answer>>>,
    always: Mutex<HashMap<(Kind, String), Answer>>,
    requests: Mutex<Vec<Recorded>>,
    seq: AtomicU64,
    tokens: Mutex<Vec<String>>,
    base: Mutex<String>,
}

impl State {
    /// The scripted answer for the next request, if any; a held request
    /// waits for its gate and then gets the usual answer (`None`).
    async fn next_answer(&self, kind: Kind, account: &str) -> Option<Answer> {
        let key = (kind, account.to_owned());
        let scripted = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&key)
            .and_then(VecDeque::pop_front);
        let answer = scripted.or_else(|| self.always.lock().unwrap().get(&key).cloned());
        if let Some(Answer::Held(gate)) = &answer {
            gate.hold().await;
            return None;
        }
        answer
    }

    fn record(&self, kind: Kind, req: &Request, body: Value, status: u16) {
        self.requests.lock().unwrap().push(Recorded {
            kind,
            path: req.uri().path().to_owned(),
            authorization: req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            status,
            at: std::time::Instant::now(),
        });
    }

    fn id(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The fake providers, serving until dropped.
pub struct FakeProviders {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviders")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeProviders {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn form_to_json(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        map.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    Value::Object(map)
}

/// Plays a scripted answer in the provider's error shape; `request` is the
/// request's body (a form as a JSON object), for answers that quote it.
async fn scripted(kind: Kind, answer: Answer, request: &Value) -> Response {
    let (status, body) = match &answer {
        Answer::TooManyRequests(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            match kind {
                Kind::Twilio => {
                    json!({"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429})
                }
                Kind::SendGrid => {
                    json!({"errors": [{"message": "too many requests", "field": null, "help": null}]})
                }
                Kind::Fcm | Kind::GoogleToken => {
                    json!({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}]}})
                }
                Kind::WhatsApp => {
                    json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "AbCdEf"}})
                }
            },
        ),
        Answer::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            match kind {
                Kind::Twilio => {
                    json!({"code": 20500, "message": "Internal Server Error", "status": 503})
                }
                Kind::SendGrid => {
                    json!({"errors": [{"message": "service unavailable", "field": null, "help": null}]})
                }
                Kind::Fcm | Kind::GoogleToken => {
                    json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})
                }
                Kind::WhatsApp => {
                    json!({"error": {"message": "(#131000) Something went wrong", "type": "OAuthException", "code": 131000, "fbtrace_id": "AbCdEf"}})
                }
            },
        ),
        Answer::Hang(d) => {
            tokio::time::sleep(*d).await;
            (StatusCode::GATEWAY_TIMEOUT, json!({}))
        }
        Answer::RejectEchoing => (StatusCode::BAD_REQUEST, echoing_error(kind, request)),
        // Played by `State::next_answer`, which answers as usual afterwards.
        Answer::Held(_) => unreachable!("a held request gets the usual answer"),
    };
    let mut resp = json_response(status, body);
    if let Answer::TooManyRequests(Some(secs)) = answer {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    resp
}

/// A 400 body in `kind`'s error shape whose message quotes `request` back.
fn echoing_error(kind: Kind, request: &Value) -> Value {
    let quoted = request.to_string();
    match kind {
        Kind::Twilio => {
            let form: String = request
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let v: String = url::form_urlencoded::byte_serialize(
                        v.as_str().unwrap_or_default().as_bytes(),
                    )
                    .collect();
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join("&");
            let to = request["To"].as_str().unwrap_or_default();
            json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number. Request: {form}"), "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
        }
        Kind::SendGrid => {
            json!({"errors": [{"message": format!("Does not contain a valid address: {quoted}"), "field": "personalizations.0.to.0.email", "help": null}]})
        }
        Kind::Fcm | Kind::GoogleToken => {
            json!({"error": {"code": 400, "message": format!("Invalid JSON payload received: {quoted}"), "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}})
        }
        Kind::WhatsApp => {
            json!({"error": {"message": format!("(#100) Invalid parameter: {quoted}"), "type": "OAuthException", "code": 100, "fbtrace_id": "AbCdEf"}})
        }
    }
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn is_e164(s: &str) -> bool {
    let d = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

#[handler]
async fn twilio(
    req: &Request,
    Path(sid): Path<String>,
    body: Body,
    state: Data<&Arc<State>>,
) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let form = form_to_json(&bytes);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{TWILIO_AUTH_TOKEN}"))
    );
    let auth_ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let form_ok = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let resp = if !auth_ok {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}),
        )
    } else if let Some(answer) = state.next_answer(Kind::Twilio, &sid).await {
        scripted(Kind::Twilio, answer, &form).await
    } else {
        let to = form["To"].as_str().unwrap_or_default();
        let text = form["Body"].as_str().unwrap_or_default();
        let from_ok = form["From"].as_str().is_some_and(is_e164)
            || form["MessagingServiceSid"].as_str().is_some();
        if !form_ok || to.is_empty() {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 21604, "message": "A 'To' phone number is required.", "more_info": "https://www.twilio.com/docs/errors/21604", "status": 400}),
            )
        } else if !from_ok {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 21603, "message": "A 'From' phone number is required.", "more_info": "https://www.twilio.com/docs/errors/21603", "status": 400}),
            )
        } else if text.is_empty() {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 21602, "message": "Message body is required.", "more_info": "https://www.twilio.com/docs/errors/21602", "status": 400}),
            )
        } else if to == INVALID_NUMBER || !is_e164(to) {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number."), "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
            )
        } else {
            let n = state.id();
            json_response(
                StatusCode::CREATED,
                json!({
                    "sid": format!("SM{n:032x}"), "account_sid": sid, "to": to, "from": form["From"],
                    "body": text, "status": "queued", "num_segments": "1", "direction": "outbound-api",
                    "uri": format!("/2010-04-01/Accounts/{sid}/Messages/SM{n:032x}.json"),
                }),
            )
        }
    };
    state.record(Kind::Twilio, req, form, resp.status().as_u16());
    resp
}

#[handler]
async fn sendgrid(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let key = bearer(req).unwrap_or_default();
    let resp = if key != SENDGRID_KEY {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": null, "help": null}]}),
        )
    } else if let Some(answer) = state.next_answer(Kind::SendGrid, &key).await {
        scripted(Kind::SendGrid, answer, &json).await
    } else {
        let mut errors = Vec::new();
        if json["personalizations"][0]["to"][0]["email"]
            .as_str()
            .is_none()
        {
            errors.push(json!({"message": "The to array is required for all personalization objects", "field": "personalizations.0.to", "help": null}));
        }
        if json["from"]["email"].as_str().is_none() {
            errors.push(json!({"message": "The from object must be provided for every email send.", "field": "from", "help": null}));
        }
        if json["subject"].as_str().is_none_or(str::is_empty) {
            errors.push(
                json!({"message": "The subject is required.", "field": "subject", "help": null}),
            );
        }
        let types: Vec<&str> = json["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        if types.is_empty() {
            errors.push(json!({"message": "Unless a valid template_id is provided, the content parameter is required.", "field": "content", "help": null}));
        } else if types.len() > 1 && types[0] != "text/plain" {
            errors.push(json!({"message": "If present, text/plain content must be first, followed by text/html.", "field": "content", "help": null}));
        }
        if errors.is_empty() {
            let mut resp = Response::builder().status(StatusCode::ACCEPTED).finish();
            resp.headers_mut().insert(
                "x-message-id",
                format!("sg-{}", state.id()).parse().unwrap(),
            );
            resp
        } else {
            json_response(StatusCode::BAD_REQUEST, json!({"errors": errors}))
        }
    };
    state.record(Kind::SendGrid, req, json, resp.status().as_u16());
    resp
}

#[handler]
async fn google_token(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let form = form_to_json(&bytes);
    let resp = if let Some(answer) = state.next_answer(Kind::GoogleToken, "").await {
        scripted(Kind::GoogleToken, answer, &form).await
    } else {
        let grant_ok = form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer";
        let assertion = form["assertion"].as_str().unwrap_or_default();
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&crate::jwks::fixture("rsa-a.pub.pem"))
            .expect("fixture key");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        let audience = format!("{}/token", state.base.lock().unwrap());
        validation.set_audience(&[audience]);
        validation.set_issuer(&[FCM_CLIENT_EMAIL]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation).map(|d| d.claims);
        match claims {
            Ok(c)
                if grant_ok
                    && c["scope"] == "https://www.googleapis.com/auth/firebase.messaging" =>
            {
                let token = format!("ya29.fake-{}", state.id());
                state.tokens.lock().unwrap().push(token.clone());
                json_response(
                    StatusCode::OK,
                    json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
                )
            }
            _ => json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            ),
        }
    };
    // The assertion is a signed credential: keep only the grant type.
    state.record(
        Kind::GoogleToken,
        req,
        json!({"grant_type": form["grant_type"]}),
        resp.status().as_u16(),
    );
    resp
}

#[handler]
async fn fcm(
    req: &Request,
    Path(rest): Path<String>,
    body: Body,
    state: Data<&Arc<State>>,
) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // `{project}/messages:send`
    let Some(project) = rest.strip_suffix("/messages:send").map(str::to_owned) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}),
        );
    };
    let token_ok = bearer(req).is_some_and(|t| state.tokens.lock().unwrap().contains(&t));
    let resp = if !token_ok {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.", "status": "UNAUTHENTICATED"}}),
        )
    } else if let Some(answer) = state.next_answer(Kind::Fcm, &project).await {
        scripted(Kind::Fcm, answer, &json).await
    } else {
        let device = json["message"]["token"].as_str().unwrap_or_default();
        let data_ok = json["message"]["data"]
            .as_object()
            .is_none_or(|m| m.values().all(Value::is_string));
        if device.is_empty()
            || !data_ok
            || json["message"]["notification"]["title"].as_str().is_none()
        {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}}),
            )
        } else if device.starts_with(UNREGISTERED_TOKEN_PREFIX) {
            json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}),
            )
        } else {
            json_response(
                StatusCode::OK,
                json!({"name": format!("projects/{project}/messages/0:{}", state.id())}),
            )
        }
    };
    state.record(Kind::Fcm, req, json, resp.status().as_u16());
    resp
}

#[handler]
async fn whatsapp(
    req: &Request,
    Path((_version, phone_id)): Path<(String, String)>,
    body: Body,
    state: Data<&Arc<State>>,
) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let resp = if bearer(req).as_deref() != Some(WHATSAPP_TOKEN) {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190, "fbtrace_id": "AbCdEf"}}),
        )
    } else if let Some(answer) = state.next_answer(Kind::WhatsApp, &phone_id).await {
        scripted(Kind::WhatsApp, answer, &json).await
    } else {
        let to = json["to"].as_str().unwrap_or_default();
        let kind = json["type"].as_str().unwrap_or_default();
        let shape_ok = json["messaging_product"] == "whatsapp"
            && !to.is_empty()
            && match kind {
                "text" => json["text"]["body"].as_str().is_some_and(|b| !b.is_empty()),
                "template" => {
                    json["template"]["name"].as_str().is_some()
                        && json["template"]["language"]["code"].as_str().is_some()
                }
                _ => false,
            };
        if !shape_ok {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100, "fbtrace_id": "AbCdEf"}}),
            )
        } else if kind == "text" && format!("+{to}") == WINDOW_CLOSED_NUMBER {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047, "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}, "fbtrace_id": "AbCdEf"}}),
            )
        } else {
            json_response(
                StatusCode::OK,
                json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": format!("wamid.HBgL{}", state.id())}]}),
            )
        }
    };
    state.record(Kind::WhatsApp, req, json, resp.status().as_u16());
    resp
}

impl FakeProviders {
    /// Starts the fakes on a free port.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let app = Route::new()
            .at("/2010-04-01/Accounts/:sid/Messages.json", post(twilio))
            .at("/v3/mail/send", post(sendgrid))
            .at("/token", post(google_token))
            .at("/v1/projects/*rest", post(fcm))
            .at("/:version/:phone_id/messages", post(whatsapp))
            .data(state.clone());
        let (addr, task) = crate::serve_locally(app, "the fake providers").await;
        // Read only while answering, so set before any request arrives.
        *state.base.lock().unwrap() = format!("http://{addr}");
        Self { addr, state, task }
    }

    /// The base URL of every fake.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings that point a worker at the fakes.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TWILIO_BASE_URL", self.url()),
            ("SENDGRID_BASE_URL", self.url()),
            ("FCM_BASE_URL", self.url()),
            ("GOOGLE_TOKEN_URL", format!("{}/token", self.url())),
            ("WHATSAPP_BASE_URL", self.url()),
        ]
    }

    /// Queues answers for the next requests to one account (Twilio SID,
    /// SendGrid key, FCM project, WhatsApp phone number id; `""` for the
    /// token endpoint).
    pub fn script(&self, kind: Kind, account: &str, answers: impl IntoIterator<Item = Answer>) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry((kind, account.to_owned()))
            .or_default()
            .extend(answers);
    }

    /// Answers every request to one account this way (after any script),
    /// until [`FakeProviders::heal`].
    pub fn always(&self, kind: Kind, account: &str, answer: Answer) {
        self.state
            .always
            .lock()
            .unwrap()
            .insert((kind, account.to_owned()), answer);
    }

    /// Back to normal answers for one account.
    pub fn heal(&self, kind: Kind, account: &str) {
        self.state
            .always
            .lock()
            .unwrap()
            .remove(&(kind, account.to_owned()));
    }

    /// Every request one fake received, oldest first.
    pub fn requests(&self, kind: Kind) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }
}
