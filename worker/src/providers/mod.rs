//! Providers: the outside services a notification is delivered through, one
//! module per provider. [`chain`] tries an organisation's providers of a
//! channel in order, behind a shared rate limit and circuit breaker
//! ([`guard`]).

pub mod chain;
pub mod email;
pub mod fcm;
pub mod guard;
pub mod sendgrid;
pub mod twilio;
pub mod whatsapp;

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};
use shared::{
    config::ProviderUrls,
    providers::{FailureReason, ProviderCode, ProviderError, ProviderKind},
};

/// Why a send did not go through.
///
/// Every failure carries a [`ProviderError`]: a platform-written reason, the
/// provider's short code and its status code, never a provider's text
/// (which may quote the recipient or the message back). That is what is
/// recorded, shown by the API and sent in webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt, possibly through another provider: a timeout,
    /// a connection error, a 5xx, refused credentials.
    #[error("{error}")]
    Transient {
        /// What happened.
        error: ProviderError,
    },
    /// The provider asked us to slow down (429): try another provider, or
    /// this one again after `retry_after`.
    #[error("{error}")]
    RateLimited {
        /// What happened.
        error: ProviderError,
        /// How long the provider asked us to wait.
        retry_after: Duration,
    },
    /// Never worth another attempt, through any provider: an invalid
    /// number, a recipient who opted out at the carrier, a message that
    /// cannot be built.
    #[error("{error}")]
    Permanent {
        /// What happened.
        error: ProviderError,
    },
    /// Not to be sent: the subscriber's preferences rule it out.
    #[error("{0}")]
    Suppressed(String),
}

impl SendError {
    /// A transient failure.
    pub fn transient(error: impl Into<ProviderError>) -> Self {
        Self::Transient {
            error: error.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<ProviderError>) -> Self {
        Self::Permanent {
            error: error.into(),
        }
    }

    /// A failure to reach the provider: always transient. Nothing of
    /// reqwest's text is kept (it can name the URL).
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        let reason = if e.is_timeout() {
            FailureReason::NoAnswer
        } else if e.is_connect() {
            FailureReason::CannotConnect
        } else if e.is_decode() || e.is_body() {
            FailureReason::UnreadableAnswer
        } else {
            FailureReason::ConnectionFailed
        };
        Self::transient(reason)
    }

    /// The provider's status code, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::Transient { error }
            | SendError::RateLimited { error, .. }
            | SendError::Permanent { error } => error.status(),
            SendError::Suppressed(_) => None,
        }
    }
}

/// What a successful send returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the message: the `Message-ID`, SendGrid message
    /// id, Twilio SID, FCM message name or WhatsApp `wamid`.
    pub message_id: String,
    /// The provider's answer, e.g. `250 2.0.0 Ok: queued as 4F2A1`.
    pub response: String,
    /// The provider's status code (HTTP status or SMTP reply code).
    pub code: Option<u16>,
}

/// How long to wait after a 429 that names no time.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; longer ones are capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The `Retry-After` of a response, in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let wait = match value.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value.trim()).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The usual reading of an HTTP error status from `provider`: 429 slows
/// down, 408 and 5xx are transient, refused credentials (401, 403) are the
/// provider config's fault so another provider may do, and any other 4xx is
/// the message's fault. `reason` says what such a 4xx meant, when the
/// provider's code told more (the recipient, the content); `code` is the
/// provider's error code.
pub fn classify_status(
    provider: ProviderKind,
    status: StatusCode,
    wait: Option<Duration>,
    reason: Option<FailureReason>,
    code: Option<ProviderCode>,
) -> SendError {
    let answered = |reason: FailureReason| {
        ProviderError::answered(provider, reason, Some(status.as_u16())).with_code(code)
    };
    match status {
        StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited {
            error: answered(FailureReason::RateLimited),
            retry_after: wait.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        StatusCode::REQUEST_TIMEOUT => SendError::transient(answered(FailureReason::NoAnswer)),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            SendError::transient(answered(FailureReason::CredentialsRefused))
        }
        s if s.is_server_error() => SendError::transient(answered(FailureReason::Unavailable)),
        _ => SendError::permanent(answered(reason.unwrap_or(FailureReason::Rejected))),
    }
}

/// The HTTP client every HTTP provider shares, and where each provider lives.
#[derive(Debug)]
pub struct HttpProviders {
    /// Pooled, with a per-request timeout; redirects are not followed.
    pub client: reqwest::Client,
    /// Base URLs.
    pub urls: ProviderUrls,
    /// FCM access tokens, per provider config.
    pub fcm_tokens: fcm::TokenCache,
    /// Where the API is reached from outside (`PUBLIC_BASE_URL`), for
    /// per-message delivery callbacks; none when unset.
    pub public_base_url: Option<String>,
}

/// The worker's HTTP client for providers' and carriers' APIs: requests
/// give up after `timeout`, and redirects are not followed (they would let
/// an answer point the credentials elsewhere).
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("notify-worker/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl HttpProviders {
    /// A client whose requests give up after `timeout`.
    pub fn new(
        urls: ProviderUrls,
        timeout: Duration,
        public_base_url: Option<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: http_client(timeout)?,
            urls,
            fcm_tokens: fcm::TokenCache::default(),
            public_base_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_the_usual_way() {
        let e = |s: u16| {
            classify_status(
                ProviderKind::Twilio,
                StatusCode::from_u16(s).unwrap(),
                None,
                None,
                None,
            )
        };
        assert!(
            matches!(e(429), SendError::RateLimited { retry_after, .. } if retry_after == DEFAULT_RETRY_AFTER)
        );
        assert!(matches!(e(500), SendError::Transient { .. }));
        assert!(matches!(e(503), SendError::Transient { .. }));
        assert!(matches!(e(401), SendError::Transient { .. }));
        assert!(matches!(e(400), SendError::Permanent { .. }));
        assert!(matches!(e(404), SendError::Permanent { .. }));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
