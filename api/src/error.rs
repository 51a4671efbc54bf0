//! The API's one error type, and how every error leaves the API: as an
//! `application/problem+json` body (RFC 9457) carrying the request id.
//!
//! Errors raised by poem and poem-openapi themselves (a malformed body, an
//! unknown route, a wrong method, a missing key) are rendered the same way by
//! [`problem_response`], so a caller never sees another error shape.

use poem::{Response, error::ResponseError, http::StatusCode};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use serde::Serialize;
use shared::domain::{FieldError, Problems};

/// One field that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, poem_openapi::Object)]
pub struct InvalidParam {
    /// The field's name (JSON path for nested fields).
    pub name: String,
    /// Why it was rejected.
    pub reason: String,
}

/// One problem of a workflow definition, named by its step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, poem_openapi::Object)]
pub struct StepProblem {
    /// The step's key (`steps[i]` while it has none; `steps` for the list).
    pub step: String,
    /// The step's field (`type`, `channels[1]`, `if.step`, …).
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: one or more fields are invalid.
    #[error("the request has invalid fields")]
    Invalid(Vec<InvalidParam>),
    /// 400: a workflow definition has problems, each named by its step.
    #[error("the workflow has invalid steps")]
    InvalidSteps(Vec<StepProblem>),
    /// 400: a header is invalid.
    #[error("the {0} header {1}")]
    BadHeader(&'static str, &'static str),
    /// 401: no valid API key.
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// 401: a provider callback whose signature is missing, wrong or stale.
    #[error("{0}")]
    BadSignature(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such resource for this caller (also for other tenants' ids).
    #[error("no {0} with that id")]
    NotFound(&'static str),
    /// 409: conflicts with the current state (e.g. a name already taken).
    #[error("{0}")]
    Conflict(String),
    /// 413: a body (e.g. a CSV upload) over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 410: the resource existed but is no longer usable (an expired or
    /// cancelled invitation).
    #[error("{0}")]
    Gone(&'static str),
    /// 422: the idempotency key was used before with a different request.
    #[error("the Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// 422: well-formed, but fields the domain refuses (e.g. a tracking
    /// number that is no UPS format or fails its check digit).
    #[error("the request has fields that cannot be processed")]
    Unprocessable(Vec<InvalidParam>),
    /// 429: too many requests; try again after this many seconds
    /// (`Retry-After`).
    #[error("too many requests; try again in {0} s")]
    TooManyRequests(u64),
    /// 429: the caller's request rate limit of this class is used up; try
    /// again after `retry_after` seconds.
    #[error(
        "the {class} rate limit ({burst} at once, {rate} a second) is used up; try again in {retry_after} s"
    )]
    RateLimited {
        /// The route class (`send`, `read`, …).
        class: &'static str,
        /// Requests allowed at once.
        burst: u32,
        /// Sustained requests per second.
        rate: f64,
        /// Seconds until one more request is allowed.
        retry_after: u64,
    },
    /// 429: a send quota of the organisation would be passed.
    #[error("{detail}")]
    QuotaExceeded {
        /// `channel:period`, e.g. `sms:day`.
        name: String,
        /// What was refused, for a person.
        detail: String,
        /// Seconds until the quota renews.
        retry_after: u64,
    },
    /// 503: a dependency is down.
    #[error("the service is not ready: {0}")]
    Unavailable(String),
    /// 500: anything else; the cause is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![InvalidParam {
            name: name.into(),
            reason: reason.into(),
        }])
    }

    /// Every invalid field, as `invalid_params`.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        Self::Invalid(errors.into_iter().map(InvalidParam::from).collect())
    }
}

impl From<FieldError> for InvalidParam {
    fn from(e: FieldError) -> Self {
        Self {
            name: e.field,
            reason: e.reason,
        }
    }
}

impl From<Problems> for ApiError {
    fn from(p: Problems) -> Self {
        Self::fields(p.0)
    }
}

/// Unique and foreign-key constraints a caller can run into, and what 409
/// says for each.
const CONFLICTS: &[(&str, &str)] = &[
    (
        shared::db::templates::KEY_CONSTRAINT,
        "a template with this key already exists",
    ),
    (
        shared::db::users::EMAIL_CONSTRAINT,
        "a user with this email address already exists",
    ),
    (
        shared::db::invitations::OPEN_EMAIL_CONSTRAINT,
        "this address already has an open invitation to this organisation",
    ),
    (
        shared::db::permissions::SET_KEY_CONSTRAINT,
        "a permission set with this key already exists",
    ),
    (
        shared::db::permissions::SET_ASSIGNED_CONSTRAINT,
        "the permission set was deleted meanwhile",
    ),
    (
        shared::db::permissions::SET_INCLUDED_CONSTRAINT,
        "a set it includes was deleted meanwhile",
    ),
    (
        shared::db::shipments::TRACKING_CONSTRAINT,
        "a shipment with this tracking number already exists",
    ),
    (
        shared::db::report_templates::KEY_CONSTRAINT,
        "a report template with this key already exists",
    ),
    (
        shared::db::report_templates::SCHEDULE_CONSTRAINT,
        "a report schedule uses this template; change or delete the schedule first",
    ),
];

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        let conflict = shared::db::violated_constraint(&e)
            .and_then(|name| CONFLICTS.iter().find(|(c, _)| *c == name));
        match conflict {
            Some((_, detail)) => Self::Conflict((*detail).to_owned()),
            None if crate::outage::is_unreachable(&e) => {
                Self::Unavailable("Postgres cannot be reached; try again shortly".to_owned())
            }
            None => Self::Internal(anyhow::Error::new(e).context("while talking to Postgres")),
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::InvalidSteps(_) | ApiError::BadHeader(..) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::IdempotencyKeyReused | ApiError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TooManyRequests(_)
            | ApiError::RateLimited { .. }
            | ApiError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl poem_openapi::ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let statuses: [(u16, &'static str); 12] = [
            (400, "Invalid fields, headers or JSON"),
            (
                401,
                "A missing, unknown or revoked API key (or a bad callback signature)",
            ),
            (403, "Authenticated, but without the role this needs"),
            (404, "No such resource for this caller"),
            (409, "Conflicts with the resource's current state"),
            (410, "No longer usable (an expired or cancelled invitation)"),
            (411, "No Content-Length on a request with a body"),
            (413, "A body over the configured limit"),
            (
                422,
                "An Idempotency-Key reused with a different body, or fields that cannot be processed",
            ),
            (
                429,
                "A rate limit or send quota is used up; see Retry-After and the RateLimit headers",
            ),
            (503, "A dependency is down"),
            (500, "An internal error; quote the request id"),
        ];
        MetaResponses {
            responses: statuses
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/problem+json",
                        schema: <Problem as poem_openapi::types::Type>::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <Problem as poem_openapi::types::Type>::register(registry);
    }
}

/// A problem details body (RFC 9457).
#[derive(Debug, Serialize, poem_openapi::Object)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// The request path.
    pub instance: String,
    /// The request id, also in the `X-Request-Id` header.
    pub request_id: String,
    /// Invalid fields, when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[oai(default, skip_serializing_if_is_empty)]
    pub invalid_params: Vec<InvalidParam>,
    /// A workflow definition's problems, each named by its step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[oai(default, skip_serializing_if_is_empty)]
    pub errors: Vec<StepProblem>,
    /// On a 429, the limit used up: a rate-limit class (`send`, `read`,
    /// `write`, `upload`, `auth`, `callback`) or a send quota
    /// (`quota:<channel>:<period>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub limit: Option<String>,
}

/// The error-tracking reason code of an error that answers 5xx
/// ([`shared::errors::reasons`]), or `None` for a 4xx. Read from the error
/// itself, never from the request.
pub fn server_error_reason(err: &poem::Error) -> Option<&'static str> {
    use shared::errors::reasons;
    let internal = match err.downcast_ref::<ApiError>() {
        Some(ApiError::Internal(e)) => Some(e),
        _ => None,
    };
    let unreachable = internal.is_some_and(|e| {
        e.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .is_some_and(crate::outage::is_unreachable)
        })
    });
    let status = err.status();
    if unreachable {
        return Some(reasons::POSTGRES_UNREACHABLE);
    }
    if !status.is_server_error() {
        return None;
    }
    Some(match err.downcast_ref::<ApiError>() {
        Some(ApiError::Unavailable(detail)) if detail.starts_with("Postgres") => {
            reasons::POSTGRES_UNREACHABLE
        }
        _ if status == StatusCode::SERVICE_UNAVAILABLE => reasons::DEPENDENCY_UNAVAILABLE,
        _ if internal.is_some_and(|e| e.chain().any(|c| c.is::<sqlx::Error>())) => {
            reasons::DATABASE_ERROR
        }
        _ if status == StatusCode::INTERNAL_SERVER_ERROR => reasons::INTERNAL_ERROR,
        _ => reasons::SERVER_ERROR,
    })
}

/// What `Retry-After` says on a 503.
pub const RETRY_UNAVAILABLE_SECS: u64 = 1;

/// Renders any error as a problem+json response. 5xx causes are logged with
/// their chain and replaced by a generic detail.
pub fn problem_response(err: poem::Error, path: &str, request_id: &str) -> Response {
    let status = err.status();
    let mut invalid_params = Vec::new();
    let mut errors = Vec::new();
    let unreachable = matches!(
        err.downcast_ref::<ApiError>(),
        Some(ApiError::Internal(e)) if e.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .is_some_and(crate::outage::is_unreachable)
        })
    );
    let status = if unreachable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let (kind, detail) = if status.is_server_error() {
        if unreachable {
            (
                "unavailable",
                "the service is not ready: Postgres cannot be reached; try again shortly"
                    .to_owned(),
            )
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            ("unavailable", err.to_string())
        } else {
            let chain = match err.downcast_ref::<ApiError>() {
                Some(ApiError::Internal(e)) => format!("{e:#}"),
                _ => err.to_string(),
            };
            tracing::error!(error = %chain, "request failed");
            (
                "internal",
                "an internal error occurred; quote the request id when reporting it".to_owned(),
            )
        }
    } else {
        if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
            invalid_params = vec![InvalidParam {
                name: e.name.to_owned(),
                reason: e.reason.clone(),
            }];
        }
        let kind = match err.downcast_ref::<ApiError>() {
            Some(ApiError::Invalid(params) | ApiError::Unprocessable(params)) => {
                invalid_params = params.clone();
                "validation"
            }
            Some(ApiError::InvalidSteps(problems)) => {
                errors = problems.clone();
                "validation"
            }
            Some(ApiError::TooManyRequests(_)) => "too-many-requests",
            Some(ApiError::RateLimited { .. }) => "rate-limited",
            Some(ApiError::QuotaExceeded { .. }) => "quota-exceeded",
            Some(ApiError::BadHeader(..)) => "bad-header",
            Some(ApiError::Unauthorized) => "unauthorized",
            Some(ApiError::BadSignature(_)) => "bad-signature",
            Some(ApiError::Forbidden(_)) => "forbidden",
            Some(ApiError::NotFound(_)) => "not-found",
            Some(ApiError::Conflict(_)) => "conflict",
            Some(ApiError::Gone(_)) => "gone",
            Some(ApiError::IdempotencyKeyReused) => "idempotency-key-reused",
            // A parameter poem-openapi refused (e.g. outside the bounds its
            // document states).
            None if !invalid_params.is_empty() => "validation",
            _ => match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::NOT_FOUND => "not-found",
                StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
                StatusCode::LENGTH_REQUIRED => "length-required",
                StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
                _ => "bad-request",
            },
        };
        let detail = match status {
            _ if matches!(
                err.downcast_ref::<ApiError>(),
                Some(ApiError::BadSignature(_))
            ) =>
            {
                err.to_string()
            }
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized.to_string(),
            _ => err.to_string(),
        };
        (kind, detail)
    };
    let problem = Problem {
        kind: format!("/problems/{kind}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        instance: path.to_owned(),
        request_id: request_id.to_owned(),
        invalid_params,
        errors,
        limit: match err.downcast_ref::<ApiError>() {
            Some(ApiError::RateLimited { class, .. }) => Some((*class).to_owned()),
            Some(ApiError::QuotaExceeded { name, .. }) => Some(format!("quota:{name}")),
            _ => None,
        },
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut resp = Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body);
    if let Some(
        ApiError::TooManyRequests(secs)
        | ApiError::RateLimited {
            retry_after: secs, ..
        }
        | ApiError::QuotaExceeded {
            retry_after: secs, ..
        },
    ) = err.downcast_ref::<ApiError>()
    {
        resp.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            poem::http::HeaderValue::from(*secs),
        );
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        // A dependency is down: the probes recover within a second or two.
        resp.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            poem::http::HeaderValue::from(RETRY_UNAVAILABLE_SECS),
        );
    }
    if let Some(op) = err.data::<poem_openapi::OperationId>() {
        resp.set_data(*op);
    }
    resp
}
