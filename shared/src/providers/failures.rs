//! Why a delivery failed, in the platform's own words: the reason, the
//! provider's code and the error a provider call returns.

use super::*;

/// What went wrong with a send, in the platform's own words.
///
/// Providers' error answers may quote the request back: Twilio's 400s can
/// echo the form (`To=%2B1555…&Body=…`), SMTP servers name the refused
/// address, validation errors cite the text. A failure is therefore never
/// recorded with a provider's text: only with one of these reasons, the
/// provider's short error code and the status code ([`ProviderError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The provider called the recipient's address or number invalid.
    RecipientInvalid,
    /// The recipient cannot be reached there (unknown, unreachable, or a
    /// number that takes no messages).
    RecipientUnreachable,
    /// The recipient has opted out of messages from this sender at the
    /// carrier (e.g. replied STOP).
    RecipientOptedOut,
    /// The device token is no longer registered with the push service.
    DeviceTokenGone,
    /// The provider rejected the message's content.
    ContentRejected,
    /// WhatsApp free-form text outside the 24-hour customer-service window.
    WhatsAppWindowClosed,
    /// The provider rejected the sender (from address or number, messaging
    /// service, project).
    SenderRejected,
    /// The provider rejected the request for another reason.
    Rejected,
    /// The provider refused the configured credentials.
    CredentialsRefused,
    /// The provider's token endpoint refused to issue an access token.
    TokenRefused,
    /// The configured credentials cannot be used (a key that does not load
    /// or sign).
    CredentialsUnusable,
    /// The provider asked us to slow down.
    RateLimited,
    /// The provider answered with a server error.
    Unavailable,
    /// No answer from the provider in time.
    NoAnswer,
    /// No answer from the provider within this many seconds.
    NoAnswerWithin(u64),
    /// The provider could not be connected to.
    CannotConnect,
    /// The connection to the provider failed mid-way.
    ConnectionFailed,
    /// The TLS handshake or certificate check with the mail server failed.
    Tls,
    /// The provider's answer could not be read.
    UnreadableAnswer,
    /// The provider accepted but named no message id.
    NoMessageId,
    /// The mail server refused the message for good (SMTP 5xx).
    MailRefused,
    /// The mail server refused the message for now (SMTP 4xx).
    MailDeferred,
    /// The mail server's conversation failed (an unexpected reply, a closed
    /// connection).
    MailProtocol,
    /// Writing the message to the mail folder failed.
    MailFileFailed,
    /// The notification has neither a text nor an HTML body.
    NoBody,
    /// The notification's stored content cannot be read for its channel.
    ContentUnreadable,
    /// The recipient is not an address the message can be built for.
    RecipientMalformed,
    /// The message cannot be built.
    MessageUnbuildable,
    /// The provider config lacks what a send needs.
    ConfigIncomplete,
    /// The organisation has no provider for the channel.
    NoProvider(Channel),
    /// A config that delivers no messages (UPS tracking).
    NotAMessagingProvider,
    /// The WhatsApp customer-service window could not be checked.
    WindowUnknown,
    /// Skipped: the provider's circuit is open after repeated failures.
    CircuitOpen,
    /// Skipped: the provider's shared rate is spent for this many
    /// milliseconds.
    RateSpent(u64),
}

impl FailureReason {
    /// The reason's stable name, e.g. `recipient_invalid`.
    pub fn as_str(self) -> &'static str {
        use FailureReason as R;
        match self {
            R::RecipientInvalid => "recipient_invalid",
            R::RecipientUnreachable => "recipient_unreachable",
            R::RecipientOptedOut => "recipient_opted_out",
            R::DeviceTokenGone => "device_token_gone",
            R::ContentRejected => "content_rejected",
            R::WhatsAppWindowClosed => "whatsapp_window_closed",
            R::SenderRejected => "sender_rejected",
            R::Rejected => "rejected",
            R::CredentialsRefused => "credentials_refused",
            R::TokenRefused => "token_refused",
            R::CredentialsUnusable => "credentials_unusable",
            R::RateLimited => "rate_limited",
            R::Unavailable => "provider_unavailable",
            R::NoAnswer | R::NoAnswerWithin(_) => "timeout",
            R::CannotConnect => "cannot_connect",
            R::ConnectionFailed => "connection_failed",
            R::Tls => "tls_failed",
            R::UnreadableAnswer => "unreadable_answer",
            R::NoMessageId => "no_message_id",
            R::MailRefused => "mail_refused",
            R::MailDeferred => "mail_deferred",
            R::MailProtocol => "mail_protocol",
            R::MailFileFailed => "mail_file_failed",
            R::NoBody => "no_body",
            R::ContentUnreadable => "content_unreadable",
            R::RecipientMalformed => "recipient_malformed",
            R::MessageUnbuildable => "message_unbuildable",
            R::ConfigIncomplete => "config_incomplete",
            R::NoProvider(_) => "no_provider",
            R::NotAMessagingProvider => "not_a_messaging_provider",
            R::WindowUnknown => "window_unknown",
            R::CircuitOpen => "circuit_open",
            R::RateSpent(_) => "rate_spent",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use FailureReason as R;
        let text = match self {
            R::RecipientInvalid => "the provider rejected the recipient's address as invalid",
            R::RecipientUnreachable => "the provider cannot reach the recipient's address",
            R::RecipientOptedOut => "the recipient has opted out of messages from this sender",
            R::DeviceTokenGone => "the device token is no longer registered",
            R::ContentRejected => "the provider rejected the message content",
            R::WhatsAppWindowClosed => {
                "more than 24 hours since the person last wrote: free-form WhatsApp text is not allowed; send a template"
            }
            R::SenderRejected => "the provider rejected the configured sender",
            R::Rejected => "the provider rejected the request",
            R::CredentialsRefused => "the provider refused the configured credentials",
            R::TokenRefused => "the provider refused to issue an access token",
            R::CredentialsUnusable => "the configured credentials cannot be used",
            R::RateLimited => "the provider asked to slow down",
            R::Unavailable => "the provider answered with a server error",
            R::NoAnswer => "no answer from the provider in time",
            R::NoAnswerWithin(secs) => {
                return write!(f, "no answer from the provider within {secs}s");
            }
            R::CannotConnect => "cannot connect to the provider",
            R::ConnectionFailed => "talking to the provider failed",
            R::Tls => "the TLS handshake or certificate check with the mail server failed",
            R::UnreadableAnswer => "the provider's answer could not be read",
            R::NoMessageId => "the provider answered without a message id",
            R::MailRefused => "the mail server refused the message",
            R::MailDeferred => "the mail server deferred the message",
            R::MailProtocol => "the conversation with the mail server failed",
            R::MailFileFailed => "writing the message to the mail folder failed",
            R::NoBody => "the notification has no body",
            R::ContentUnreadable => "the notification's content is unreadable for its channel",
            R::RecipientMalformed => "the recipient is not a valid address",
            R::MessageUnbuildable => "the message cannot be built",
            R::ConfigIncomplete => "the provider config lacks what a send needs",
            R::NoProvider(channel) => {
                return write!(
                    f,
                    "no {} provider is configured for this organisation",
                    channel.as_str()
                );
            }
            R::NotAMessagingProvider => "a UPS tracking config delivers no messages",
            R::WindowUnknown => "the WhatsApp customer-service window cannot be checked now",
            R::CircuitOpen => "skipped: circuit open after repeated failures",
            R::RateSpent(ms) => {
                return write!(f, "skipped: rate limit, next slot in {ms} ms");
            }
        };
        f.write_str(text)
    }
}

/// A provider's own error code, kept only in shapes that cannot carry a
/// recipient or content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCode {
    /// A number of at most [`ProviderCode::MAX_DIGITS`] digits (Twilio's
    /// `21211`, Meta's `131047`). An E.164 number has at least 8 digits, so
    /// a code can never be a phone number.
    Number(u32),
    /// A name from the provider's documented list (FCM's `UNREGISTERED`).
    Name(&'static str),
    /// An SMTP enhanced status code (`5.1.1`).
    Enhanced(u8, u16, u16),
}

impl ProviderCode {
    /// The most digits a numeric code may have.
    pub const MAX_DIGITS: u32 = 7;

    /// A numeric code, if it has at most [`ProviderCode::MAX_DIGITS`] digits.
    pub fn number(n: i64) -> Option<Self> {
        (0..10_i64.pow(Self::MAX_DIGITS))
            .contains(&n)
            .then_some(Self::Number(n as u32))
    }

    /// The entry of `known` equal to `name`, if any.
    pub fn named(name: &str, known: &[&'static str]) -> Option<Self> {
        known.iter().find(|k| **k == name).map(|k| Self::Name(k))
    }

    /// The enhanced status code (`5.1.1`) a reply text starts with, if any.
    pub fn smtp_enhanced(text: &str) -> Option<Self> {
        let first = text.split_whitespace().next()?;
        let mut parts = first.split('.');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str, max: usize| {
            (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if parts.next().is_some() || !(digits(a, 1) && digits(b, 3) && digits(c, 3)) {
            return None;
        }
        let class: u8 = a.parse().ok()?;
        matches!(class, 2 | 4 | 5).then_some(Self::Enhanced(
            class,
            b.parse().ok()?,
            c.parse().ok()?,
        ))
    }
}

impl std::fmt::Display for ProviderCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderCode::Number(n) => write!(f, "{n}"),
            ProviderCode::Name(n) => f.write_str(n),
            ProviderCode::Enhanced(a, b, c) => write!(f, "{a}.{b}.{c}"),
        }
    }
}

/// Why a send failed, as recorded and shown: a [`FailureReason`], the
/// provider's kind and short error code, and its status code (HTTP status or
/// SMTP reply code). Nothing in it can hold text a provider wrote, so its
/// `Display` (what an attempt's `error`, a notification's `last_error` and a
/// `notification.failed` webhook carry) can never quote a recipient or a
/// message back, e.g. `the provider rejected the recipient's address as
/// invalid (twilio error 21211, HTTP 400)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    reason: FailureReason,
    provider: Option<ProviderKind>,
    code: Option<ProviderCode>,
    status: Option<u16>,
}

impl ProviderError {
    /// A failure found by the platform itself, before or without a
    /// provider's answer.
    pub fn new(reason: FailureReason) -> Self {
        Self {
            reason,
            provider: None,
            code: None,
            status: None,
        }
    }

    /// A failure `provider` answered with `status` (HTTP status or SMTP
    /// reply code).
    pub fn answered(provider: ProviderKind, reason: FailureReason, status: Option<u16>) -> Self {
        Self {
            reason,
            provider: Some(provider),
            code: None,
            status,
        }
    }

    /// The same, with the provider's error code.
    #[must_use]
    pub fn with_code(mut self, code: Option<ProviderCode>) -> Self {
        self.code = code;
        self
    }

    /// The same, with another reason.
    #[must_use]
    pub fn with_reason(mut self, reason: FailureReason) -> Self {
        self.reason = reason;
        self
    }

    /// Why.
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// Which kind of provider answered, if one did.
    pub fn provider(&self) -> Option<ProviderKind> {
        self.provider
    }

    /// The provider's error code.
    pub fn code(&self) -> Option<ProviderCode> {
        self.code
    }

    /// The provider's status code (HTTP status or SMTP reply code).
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

impl From<FailureReason> for ProviderError {
    fn from(reason: FailureReason) -> Self {
        Self::new(reason)
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        let smtp = self.provider == Some(ProviderKind::Smtp);
        let code = match (self.provider, self.code) {
            (Some(p), Some(c)) if !smtp => Some(format!("{} error {c}", p.as_str())),
            _ => None,
        };
        let status = self.status.map(|s| match (smtp, self.code) {
            (true, Some(c)) => format!("SMTP {s} {c}"),
            (true, None) => format!("SMTP {s}"),
            (false, _) => format!("HTTP {s}"),
        });
        match (code, status) {
            (Some(c), Some(s)) => write!(f, " ({c}, {s})"),
            (Some(x), None) | (None, Some(x)) => write!(f, " ({x})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for ProviderError {}
