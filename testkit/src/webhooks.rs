//! A webhook receiver on 127.0.0.1: records every delivery (path, signature
//! headers and the raw body) and answers with scripted status codes (200
//! unless told otherwise). A 3xx answer points back at this receiver's
//! `/followed`, so a test can tell whether a redirect was followed.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use poem::{Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, web::Data};

/// One delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// `Webhook-Id`.
    pub id: String,
    /// `Webhook-Timestamp`.
    pub timestamp: String,
    /// `Webhook-Signature`.
    pub signature: String,
    /// `Content-Type`.
    pub content_type: String,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

#[derive(Debug, Default)]
struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    fallback: Mutex<Option<u16>>,
}

/// The receiver.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[handler]
async fn receive(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let received = Received {
        path: req.uri().path().to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: body.into_vec().await.unwrap_or_default(),
    };
    state.received.lock().expect("lock").push(received);
    let code = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .or(*state.fallback.lock().expect("lock"))
        .unwrap_or(200);
    let status = StatusCode::from_u16(code).expect("a valid status");
    let mut resp = Response::builder().status(status);
    if status.is_redirection() {
        resp = resp.header("location", "/followed");
    }
    resp.body("")
}

impl Receiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let app = Route::new().at("/*", receive).data(state.clone());
        let (addr, task) = crate::serve_locally(app, "the receiver").await;
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next deliveries with these codes, in order.
    pub fn answer_next(&self, codes: &[u16]) {
        self.state
            .script
            .lock()
            .expect("lock")
            .extend(codes.iter().copied());
    }

    /// Answers every delivery past the script with `code`.
    pub fn always(&self, code: u16) {
        *self.state.fallback.lock().expect("lock") = Some(code);
    }

    /// Every delivery so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` deliveries arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{} of {n} webhook deliveries arrived", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
