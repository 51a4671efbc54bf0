//! What every request passes through, outermost first:
//!
//! 0. the client address ([`crate::client`]): the TCP peer, or behind a
//!    trusted proxy the address its `X-Forwarded-For` names;
//! 1. a request id (the caller's `X-Request-Id` when it is sane, else a new
//!    one), echoed in the response and carried by the request's span, which
//!    names the route by its template (`/api/v1/services/subscribers/{external_id}`),
//!    never by the path the caller sent: paths carry identifiers such as a
//!    patient's external id, and logs must not;
//! 2. metrics: requests by route and status, and latency;
//! 3. a Postgres outage ([`crate::outage`]): routes that need Postgres are
//!    answered 503 with `Retry-After` at once while it is down;
//! 4. the body limit: a request with a body needs a `Content-Length` (a
//!    chunked body gets 411), may not declare more than the limit (413), is
//!    cut off with 413 if it streams past it anyway, and must arrive within
//!    the body timeout (408);
//! 5. NUL characters anywhere in the path, query or body: 400 naming where
//!    ([`crate::input`]);
//! 6. the request rate limit of the caller and route class
//!    ([`crate::limits`]): `RateLimit-*` headers on every answer of a limited
//!    route, 429 with `Retry-After` once the limit is used up;
//! 7. problem+json for every error.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

use crate::{
    error::{ApiError, problem_response},
    limits::Checked,
    outage::PostgresWatch,
};

/// What the edge needs besides the request.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Largest body read into memory.
    pub max_body: usize,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
    /// How long a streamed upload may pause between two reads.
    pub upload_stall_timeout: Duration,
    /// Whether Postgres is reachable.
    pub postgres: PostgresWatch,
    /// The routes' path templates, for logs.
    pub templates: Arc<RouteTemplates>,
    /// Request rate limits; none: unlimited.
    pub limiter: Option<Arc<crate::limits::Limiter>>,
    /// Where rate-limit refusals are recorded as security events; none:
    /// they are not.
    pub refusals: Option<Arc<crate::limits::refusals::RefusalEvents>>,
    /// Proxies whose `X-Forwarded-For` names the client ([`crate::client`]).
    pub trusted_proxies: shared::config::TrustedProxies,
    /// Where 5xx answers are counted for error tracking.
    pub errors: shared::errors::ErrorTracker,
}

/// The documented routes' path templates, to name a request's route in logs
/// without the identifiers its path carries, and to say which methods a
/// path allows when it is called with another.
#[derive(Debug, Default)]
pub struct RouteTemplates {
    templates: Vec<Template>,
}

#[derive(Debug)]
struct Template {
    name: String,
    /// Literal segments, `None` for parameters.
    segments: Vec<Option<String>>,
    /// The methods served, as an `Allow` header says them.
    allow: String,
}

impl RouteTemplates {
    /// From the paths of an OpenAPI document (`{name}` segments are
    /// parameters).
    pub fn from_spec(spec: &str) -> Self {
        let doc = serde_json::from_str::<serde_json::Value>(spec).unwrap_or_default();
        let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else {
            return Self::default();
        };
        let templates = paths
            .iter()
            .map(|(name, ops)| {
                let segments = name
                    .split('/')
                    .map(|seg| {
                        (!(seg.starts_with('{') && seg.ends_with('}'))).then(|| seg.to_owned())
                    })
                    .collect();
                let mut methods: Vec<String> = ops
                    .as_object()
                    .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                methods.sort();
                Template {
                    name: name.clone(),
                    segments,
                    allow: methods.join(", "),
                }
            })
            .collect();
        Self { templates }
    }

    /// The template `path` matches, preferring the one with the most literal
    /// segments (as the router does).
    fn matching(&self, path: &str) -> Option<&Template> {
        let segments: Vec<&str> = path.split('/').collect();
        self.templates
            .iter()
            .filter(|t| {
                t.segments.len() == segments.len()
                    && t.segments
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.as_deref().is_none_or(|t| t == *s))
            })
            .max_by_key(|t| t.segments.iter().filter(|s| s.is_some()).count())
    }

    /// The name of the route `path` is served by: its template, or
    /// `unmatched` for a path no route serves.
    pub fn name(&self, path: &str) -> &str {
        match path {
            "/metrics" | "/api/v1/ws" | "/openapi.json" => {
                return STATIC_PATHS
                    .iter()
                    .find(|p| **p == path)
                    .copied()
                    .unwrap_or("unmatched");
            }
            p if p == "/docs" || p.starts_with("/docs/") => return "/docs",
            _ => {}
        }
        self.matching(path).map_or("unmatched", |t| t.name.as_str())
    }

    /// The methods `path` is served with (`GET, PUT`), for a 405's `Allow`.
    pub fn allow(&self, path: &str) -> Option<&str> {
        match path {
            "/metrics" | "/api/v1/ws" | "/openapi.json" => Some("GET"),
            _ => self.matching(path).map(|t| t.allow.as_str()),
        }
    }
}

const STATIC_PATHS: [&str; 3] = ["/metrics", "/api/v1/ws", "/openapi.json"];

/// Routes served without Postgres.
fn needs_postgres(path: &str) -> bool {
    !matches!(
        path,
        "/health/live" | "/health/ready" | "/metrics" | "/openapi.json"
    ) && path != "/docs"
        && !path.starts_with("/docs/")
}

/// The id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

fn request_id_of(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A low-cardinality name for the route that served `resp`.
fn route_of(resp: &Response, path: &str) -> &'static str {
    if let Some(op) = resp.data::<poem_openapi::OperationId>() {
        return op.0;
    }
    match path {
        "/metrics" => "metrics",
        "/api/v1/ws" => "ws",
        "/openapi.json" => "openapi",
        p if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "unmatched",
    }
}

/// Wraps the whole application.
pub async fn edge<E: Endpoint>(ep: Arc<E>, mut req: Request, edge: Edge) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = request_id_of(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.set_data(RequestId(request_id.clone()));
    crate::client::resolve(&mut req, &edge.trusted_proxies);
    let route_template = edge.templates.name(&path).to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route_template);
    async move {
        let db = needs_postgres(&path);
        let mut req_stalled = None;
        let mut limited = None;
        let mut limiter_down = false;
        let result = if db && edge.postgres.is_down() {
            Err(ApiError::Unavailable("Postgres cannot be reached; try again shortly".into()).into())
        } else {
            let mut admitted = admit(&mut req, &path, &edge).await;
            if admitted.is_ok()
                && let Some(limiter) = &edge.limiter
            {
                match limiter.admit(&req, &route_template).await {
                    Checked::Unlimited => {}
                    Checked::Counted {
                        class,
                        limit,
                        verdict,
                        caller,
                    } => {
                        if !verdict.allowed {
                            if let Some(refusals) = &edge.refusals {
                                refusals.refused(&req, class, &caller, &route_template);
                            }
                            admitted = Err(ApiError::RateLimited {
                                class: class.as_str(),
                                burst: limit.burst,
                                rate: limit.per_sec,
                                retry_after: verdict.retry_after_secs.max(1),
                            }
                            .into());
                        }
                        limited = Some((class, limit, verdict));
                    }
                    Checked::Unavailable(class) => {
                        limiter_down = true;
                        admitted = Err(ApiError::Unavailable(format!(
                            "the {} rate limiter cannot be reached; try again shortly",
                            class.as_str()
                        ))
                        .into());
                    }
                }
            }
            req_stalled = req.data::<UploadStalled>().map(|s| s.0.clone());
            match admitted {
                Ok(()) if db => {
                    tokio::select! {
                        r = ep.call(req) => r.map(IntoResponse::into_response),
                        () = edge.postgres.went_down() => Err(ApiError::Unavailable(
                            "Postgres cannot be reached; try again shortly".into(),
                        )
                        .into()),
                    }
                }
                Ok(()) => ep.call(req).await.map(IntoResponse::into_response),
                Err(e) => Err(e),
            }
        };
        let stalled = req_stalled.is_some_and(|s| s.load(Ordering::Relaxed));
        let result = if stalled {
            Err(poem::Error::from_string(
                format!(
                    "the upload paused for over {} ms; send it again",
                    edge.upload_stall_timeout.as_millis()
                ),
                StatusCode::REQUEST_TIMEOUT,
            ))
        } else {
            result
        };
        let mut reason = None;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                reason = crate::error::server_error_reason(&err);
                problem_response(err, &path, &request_id)
            }
        };
        if db && !limiter_down && resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            edge.postgres.suspect();
        }
        if let Some((class, limit, verdict)) = limited {
            verdict.headers(&mut resp, class, limit.per_sec);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(allow) = edge.templates.allow(&path)
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        let route = route_of(&resp, &path);
        let status = resp.status();
        let elapsed = started.elapsed();
        metrics::counter!("http_requests_total", "method" => method.to_string(), "route" => route, "status" => status.as_u16().to_string())
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => method.to_string(), "route" => route)
            .record(elapsed.as_secs_f64());
        if status.is_server_error() {
            // Counted without anything of the request but its route template
            // and (when the platform made it) its id.
            let reason = reason.unwrap_or(if status == StatusCode::SERVICE_UNAVAILABLE {
                shared::errors::reasons::DEPENDENCY_UNAVAILABLE
            } else {
                shared::errors::reasons::SERVER_ERROR
            });
            let sample = uuid::Uuid::parse_str(&request_id)
                .ok()
                .map(|id| id.to_string());
            edge.errors.record(
                shared::errors::ErrorKind::Api,
                reason,
                &route_template,
                None,
                sample,
            );
            tracing::warn!(status = status.as_u16(), route, elapsed_ms = elapsed.as_millis() as u64, "served");
        } else {
            tracing::info!(status = status.as_u16(), route, elapsed_ms = elapsed.as_millis() as u64, "served");
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// The checks a request passes before its handler runs: the body limit and
/// timeout, and no NUL anywhere.
async fn admit(req: &mut Request, path: &str, edge: &Edge) -> poem::Result<()> {
    // A CSV upload is streamed by its handler, which enforces its own
    // (much larger) limit and stall timeout; every other body is read here,
    // bounded.
    let streamed = path == crate::routes::bulk::UPLOAD_PATH;
    let body = if streamed {
        let stalled = Arc::new(AtomicBool::new(false));
        let reader = StallGuard {
            inner: req.take_body().into_async_read(),
            timeout: edge.upload_stall_timeout,
            deadline: None,
            stalled: stalled.clone(),
        };
        req.set_body(Body::from_async_read(reader));
        req.set_data(UploadStalled(stalled));
        None
    } else {
        limit_body(req, edge.max_body, edge.body_timeout).await?
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    crate::input::refuse_nul(
        req.uri().path(),
        req.uri().query(),
        content_type.as_deref(),
        body.as_deref(),
    )?;
    Ok(())
}

/// Enforces the body limit and timeout on requests that carry a body, and
/// gives back the body read (which the request keeps too).
async fn limit_body(
    req: &mut Request,
    max: usize,
    timeout: Duration,
) -> poem::Result<Option<bytes::Bytes>> {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return Ok(None);
    }
    let declared = req.headers().get(header::CONTENT_LENGTH);
    let Some(declared) = declared else {
        // Without a length a body can only come chunked; with neither
        // header there is no body at all.
        if req.headers().contains_key(header::TRANSFER_ENCODING) {
            return Err(poem::Error::from_string(
                "a Content-Length header is required",
                StatusCode::LENGTH_REQUIRED,
            ));
        }
        return Ok(None);
    };
    let declared: usize = declared
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            poem::Error::from_string(
                "the Content-Length header is not a number",
                StatusCode::BAD_REQUEST,
            )
        })?;
    if declared > max {
        discard_body(req, declared).await;
        return Err(too_large(max));
    }
    let body = req.take_body();
    let bytes = tokio::time::timeout(timeout, body.into_bytes_limit(max))
        .await
        .map_err(|_| {
            poem::Error::from_string(
                format!(
                    "the body did not arrive within {} ms: {declared} bytes were announced",
                    timeout.as_millis()
                ),
                StatusCode::REQUEST_TIMEOUT,
            )
        })?
        .map_err(|e| match e {
            poem::error::ReadBodyError::PayloadTooLarge => too_large(max),
            other => poem::Error::from_string(
                format!("cannot read the body: {other}"),
                StatusCode::BAD_REQUEST,
            ),
        })?;
    if bytes.len() != declared {
        return Err(poem::Error::from_string(
            format!(
                "the body has {} bytes but Content-Length announced {declared}",
                bytes.len()
            ),
            StatusCode::BAD_REQUEST,
        ));
    }
    req.set_body(Body::from_bytes(bytes.clone()));
    Ok(Some(bytes))
}

/// The most of a refused body that is read before answering 413.
const DISCARD_MAX: usize = 4 * 1024 * 1024;
/// How long a refused body may take to arrive before the answer goes out.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops a refused body of moderate size for a bounded time. A
/// client still writing its body when the server answers and closes sees a
/// reset instead of the 413; reading what it sends first lets the answer
/// arrive. Larger bodies, and clients that never send what they declared,
/// get the 413 without waiting longer.
async fn discard_body(req: &mut Request, declared: usize) {
    use tokio::io::AsyncReadExt;
    if declared > DISCARD_MAX {
        return;
    }
    let mut reader = req.take_body().into_async_read();
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0usize;
        while read <= declared {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
}

fn too_large(max: usize) -> poem::Error {
    poem::Error::from_string(
        format!("the body is larger than {max} bytes"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// Set when a streamed upload paused for longer than its stall timeout.
#[derive(Debug, Clone)]
struct UploadStalled(Arc<AtomicBool>);

/// A streamed body that fails its read once the client has sent nothing for
/// `timeout` while the server waits for it. Time the server spends between
/// reads (writing parts to Postgres) does not count.
struct StallGuard<R> {
    inner: R,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    this.stalled.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped sending",
                    )));
                }
                Poll::Pending
            }
        }
    }
}
