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
pub mod ups;
pub mod whatsapp;

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};
use shared::config::ProviderUrls;

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt, possibly through another provider: a timeout,
    /// a connection error, a 5xx, refused credentials.
    #[error("{error}")]
    Transient {
        /// The provider's status code, if it answered.
        code: Option<u16>,
        /// What happened.
        error: String,
    },
    /// The provider asked us to slow down (429): try another provider, or
    /// this one again after `retry_after`.
    #[error("{error}")]
    RateLimited {
        /// The provider's status code.
        code: Option<u16>,
        /// What happened.
        error: String,
        /// How long the provider asked us to wait.
        retry_after: Duration,
    },
    /// Never worth another attempt, through any provider: an invalid
    /// number, a recipient who opted out at the carrier, a message that
    /// cannot be built.
    #[error("{error}")]
    Permanent {
        /// The provider's status code, if it answered.
        code: Option<u16>,
        /// What happened.
        error: String,
    },
    /// Not to be sent: the subscriber's preferences rule it out.
    #[error("{0}")]
    Suppressed(String),
}

impl SendError {
    /// A transient failure.
    pub fn transient(code: u16, error: impl Into<String>) -> Self {
        Self::Transient {
            code: Some(code),
            error: error.into(),
        }
    }

    /// A permanent failure found before any provider was asked.
    pub fn permanent(error: impl Into<String>) -> Self {
        Self::Permanent {
            code: None,
            error: error.into(),
        }
    }

    /// A failure to reach the provider: always transient.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "no answer from the provider in time".to_owned()
        } else if e.is_connect() {
            "cannot connect to the provider".to_owned()
        } else {
            // reqwest errors name the URL, which holds no secrets (credentials
            // travel in headers); drop it anyway to keep logs short.
            format!("talking to the provider failed: {}", e.without_url())
        };
        Self::Transient {
            code: None,
            error: what,
        }
    }

    /// The provider's status code, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::Transient { code, .. }
            | SendError::RateLimited { code, .. }
            | SendError::Permanent { code, .. } => *code,
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

/// The usual reading of an HTTP error status: 429 slows down, 408 and 5xx
/// are transient, refused credentials (401, 403) are the provider config's
/// fault so another provider may do, and any other 4xx is the message's fault.
pub fn classify_status(status: StatusCode, wait: Option<Duration>, error: String) -> SendError {
    let code = Some(status.as_u16());
    match status {
        StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited {
            code,
            error,
            retry_after: wait.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        StatusCode::REQUEST_TIMEOUT | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            SendError::Transient { code, error }
        }
        s if s.is_server_error() => SendError::Transient { code, error },
        _ => SendError::Permanent { code, error },
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

impl HttpProviders {
    /// A client whose requests give up after `timeout`.
    pub fn new(
        urls: ProviderUrls,
        timeout: Duration,
        public_base_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("notify-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
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
        let e = |s: u16| classify_status(StatusCode::from_u16(s).unwrap(), None, "x".into());
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
