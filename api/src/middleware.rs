//! What every request passes through, outermost first:
//!
//! 1. a request id (the caller's `X-Request-Id` when it is sane, else a new
//!    one), echoed in the response and carried by the request's span;
//! 2. metrics: requests by route and status, and latency;
//! 3. the body limit: a request with a body needs a `Content-Length` (a
//!    chunked body gets 411), may not declare more than the limit (413), and
//!    is cut off with 413 if it streams past it anyway;
//! 4. problem+json for every error.

use std::{sync::Arc, time::Instant};

use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use tracing::Instrument;

use crate::error::problem_response;

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
pub async fn edge<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    max_body: usize,
) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = request_id_of(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.set_data(RequestId(request_id.clone()));
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
    async move {
        // A CSV upload is streamed by its handler, which enforces its own
        // (much larger) limit; every other body is read here, bounded.
        let streamed = path == crate::routes::bulk::UPLOAD_PATH;
        let limited = if streamed {
            Ok(())
        } else {
            limit_body(&mut req, max_body).await
        };
        let result = match limited {
            Ok(()) => ep.call(req).await.map(IntoResponse::into_response),
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => problem_response(err, &path, &request_id),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        let route = route_of(&resp, &path);
        let status = resp.status();
        let elapsed = started.elapsed();
        metrics::counter!("http_requests_total", "method" => method.to_string(), "route" => route, "status" => status.as_u16().to_string())
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => method.to_string(), "route" => route)
            .record(elapsed.as_secs_f64());
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), route, elapsed_ms = elapsed.as_millis() as u64, "served");
        } else {
            tracing::info!(status = status.as_u16(), route, elapsed_ms = elapsed.as_millis() as u64, "served");
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// Enforces the body limit on requests that carry a body.
async fn limit_body(req: &mut Request, max: usize) -> poem::Result<()> {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
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
        return Ok(());
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
    let bytes = body.into_bytes_limit(max).await.map_err(|e| match e {
        poem::error::ReadBodyError::PayloadTooLarge => too_large(max),
        other => poem::Error::from_string(
            format!("cannot read the body: {other}"),
            StatusCode::BAD_REQUEST,
        ),
    })?;
    req.set_body(Body::from_bytes(bytes));
    Ok(())
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
