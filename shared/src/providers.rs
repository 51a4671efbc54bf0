//! Delivery providers an organisation configures per channel: which kinds
//! exist, what each needs, and how its settings and credentials are checked.
//!
//! A config has plain `settings` (sender address, account sid, project id,
//! rate limit) and `credentials` (API keys, tokens, a service-account key).
//! Credentials are sealed at rest ([`crate::crypto`]) and never shown again:
//! the API answers a masked form ([`mask`]).
//!
//! Where a provider's API lives is the operator's choice, never a tenant's
//! (`*_BASE_URL` settings): a tenant-chosen address would let one organisation
//! make the workers call into the platform's own network.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::domain::{Channel, EmailAddress, PhoneNumber};

/// A provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ProviderKind {
    /// The platform's SMTP relay (no credentials of the tenant's own).
    Smtp,
    /// SendGrid v3 Mail Send.
    #[serde(rename = "sendgrid")]
    #[sqlx(rename = "sendgrid")]
    SendGrid,
    /// Twilio Programmable Messaging.
    Twilio,
    /// Firebase Cloud Messaging HTTP v1.
    Fcm,
    /// The WhatsApp Cloud API.
    #[serde(rename = "whatsapp")]
    #[sqlx(rename = "whatsapp")]
    WhatsApp,
    /// UPS tracking (OAuth2 client credentials); delivers no channel.
    Ups,
}

impl ProviderKind {
    /// Every kind.
    pub const ALL: &'static [ProviderKind] = &[
        ProviderKind::Smtp,
        ProviderKind::SendGrid,
        ProviderKind::Twilio,
        ProviderKind::Fcm,
        ProviderKind::WhatsApp,
        ProviderKind::Ups,
    ];

    /// The kind's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Smtp => "smtp",
            ProviderKind::SendGrid => "sendgrid",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Fcm => "fcm",
            ProviderKind::WhatsApp => "whatsapp",
            ProviderKind::Ups => "ups",
        }
    }

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The channel the kind delivers (none for UPS, which tracks shipments).
    pub fn channel(self) -> Option<Channel> {
        match self {
            ProviderKind::Smtp | ProviderKind::SendGrid => Some(Channel::Email),
            ProviderKind::Twilio => Some(Channel::Sms),
            ProviderKind::Fcm => Some(Channel::Push),
            ProviderKind::WhatsApp => Some(Channel::WhatsApp),
            ProviderKind::Ups => None,
        }
    }

    /// What a config of the kind is stored and listed under: its channel, or
    /// `tracking` for UPS.
    pub fn channel_name(self) -> &'static str {
        self.channel().map_or("tracking", Channel::as_str)
    }
}

/// The most messages per second a config may ask for.
pub const MAX_RATE_PER_SEC: u32 = 10_000;

/// Settings every kind accepts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Sends per second through this provider, across all workers (the
    /// queue's `rate_limit` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// SendGrid settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendGridSettings {
    /// The verified sender address.
    pub from_email: String,
    /// The sender's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// The signed event webhook's verification key, as SendGrid shows it
    /// (base64 of an ECDSA P-256 public key, or PEM). Without it, SendGrid's
    /// delivery callbacks are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_public_key: Option<String>,
    /// Sends per second, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// SendGrid credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendGridCredentials {
    /// An API key with Mail Send permission (`SG.…`).
    pub api_key: String,
}

/// Twilio settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    /// The account SID (`AC` and 32 hex digits).
    pub account_sid: String,
    /// The sending number (E.164); or use `messaging_service_sid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A Messaging Service SID (`MG…`) instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    /// Sends per second, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// Twilio credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioCredentials {
    /// The account's auth token (also signs Twilio's callbacks).
    pub auth_token: String,
}

/// FCM settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSettings {
    /// The Firebase project id.
    pub project_id: String,
    /// Sends per second, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// FCM credentials: the fields of a Google service-account key file that
/// signing needs. Other fields of the file are accepted and dropped; its
/// `token_uri` is ignored (the operator's `GOOGLE_TOKEN_URL` is used).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FcmCredentials {
    /// The service account's email (`…@….iam.gserviceaccount.com`).
    pub client_email: String,
    /// Its RSA private key, PEM.
    pub private_key: String,
    /// The key's id (sent as the JWT `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_id: Option<String>,
}

/// WhatsApp Cloud API settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSettings {
    /// The business phone number's id.
    pub phone_number_id: String,
    /// Sends per second, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// WhatsApp credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppCredentials {
    /// A system-user access token.
    pub access_token: String,
    /// The app secret, which signs Meta's callbacks (`X-Hub-Signature-256`).
    /// Without it, WhatsApp's delivery callbacks are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<String>,
    /// The token Meta echoes when the callback URL is verified (`GET` with
    /// `hub.verify_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token: Option<String>,
}

/// UPS settings (none yet; the API's address is the operator's
/// `UPS_BASE_URL`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsSettings {}

/// UPS OAuth2 client credentials, from the UPS developer portal.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsCredentials {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: String,
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(redacted)"))
            }
        }
    )*};
}
redacted_debug!(
    SendGridCredentials,
    TwilioCredentials,
    FcmCredentials,
    WhatsAppCredentials,
    UpsCredentials
);

/// A config's settings and credentials, checked for its kind.
#[derive(Debug, Clone)]
pub enum ProviderSpec {
    /// The platform's SMTP relay.
    Smtp(SmtpSettings),
    /// SendGrid.
    SendGrid(SendGridSettings, SendGridCredentials),
    /// Twilio.
    Twilio(TwilioSettings, TwilioCredentials),
    /// FCM.
    Fcm(FcmSettings, FcmCredentials),
    /// WhatsApp.
    WhatsApp(WhatsAppSettings, WhatsAppCredentials),
    /// UPS tracking.
    Ups(UpsSettings, UpsCredentials),
}

/// A problem with one field, named by its path (`settings.from_email`).
pub type FieldProblem = (String, String);

fn parse_part<T: DeserializeOwned>(
    part: &str,
    value: &Value,
    problems: &mut Vec<FieldProblem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let name = if path == "." || path.is_empty() {
                part.to_owned()
            } else {
                format!("{part}.{path}")
            };
            problems.push((name, e.into_inner().to_string()));
            None
        }
    }
}

fn check_rate(rate: Option<u32>, problems: &mut Vec<FieldProblem>) {
    if let Some(r) = rate
        && !(1..=MAX_RATE_PER_SEC).contains(&r)
    {
        problems.push((
            "settings.rate_per_sec".into(),
            format!("must be between 1 and {MAX_RATE_PER_SEC}"),
        ));
    }
}

fn check_token(name: &str, value: &str, max: usize, problems: &mut Vec<FieldProblem>) {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control() || c == ' ') {
        problems.push((
            name.into(),
            format!("must be 1 to {max} characters without spaces or control characters"),
        ));
    }
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl ProviderSpec {
    /// Checks `settings` and `credentials` for `kind`, naming every bad field.
    pub fn parse(
        kind: ProviderKind,
        settings: &Value,
        credentials: &Value,
    ) -> Result<Self, Vec<FieldProblem>> {
        let mut p = Vec::new();
        let no_credentials = |p: &mut Vec<FieldProblem>| {
            if !matches!(credentials, Value::Null)
                && credentials.as_object().is_none_or(|o| !o.is_empty())
            {
                p.push((
                    "credentials".into(),
                    "the platform's SMTP relay takes no credentials".into(),
                ));
            }
        };
        let spec = match kind {
            ProviderKind::Smtp => {
                no_credentials(&mut p);
                parse_part::<SmtpSettings>("settings", settings, &mut p).map(|s| {
                    check_rate(s.rate_per_sec, &mut p);
                    ProviderSpec::Smtp(s)
                })
            }
            ProviderKind::SendGrid => {
                let s = parse_part::<SendGridSettings>("settings", settings, &mut p);
                let c = parse_part::<SendGridCredentials>("credentials", credentials, &mut p);
                if let Some(s) = &s {
                    check_rate(s.rate_per_sec, &mut p);
                    if EmailAddress::parse(&s.from_email).is_err() {
                        p.push((
                            "settings.from_email".into(),
                            "must be an email address".into(),
                        ));
                    }
                    if let Some(n) = &s.from_name
                        && (n.chars().count() > 200 || n.chars().any(char::is_control))
                    {
                        p.push((
                            "settings.from_name".into(),
                            "must be one line of at most 200 characters".into(),
                        ));
                    }
                    if let Some(key) = &s.webhook_public_key
                        && let Err(reason) = (if key.len() > 4096 {
                            Err("must be at most 4096 characters")
                        } else {
                            crate::callbacks::sendgrid_public_key(key).map(drop)
                        })
                    {
                        p.push(("settings.webhook_public_key".into(), reason.into()));
                    }
                }
                if let Some(c) = &c {
                    check_token("credentials.api_key", &c.api_key, 512, &mut p);
                }
                s.zip(c).map(|(s, c)| ProviderSpec::SendGrid(s, c))
            }
            ProviderKind::Twilio => {
                let s = parse_part::<TwilioSettings>("settings", settings, &mut p);
                let c = parse_part::<TwilioCredentials>("credentials", credentials, &mut p);
                if let Some(s) = &s {
                    check_rate(s.rate_per_sec, &mut p);
                    if !is_sid(&s.account_sid, "AC") {
                        p.push((
                            "settings.account_sid".into(),
                            "must be `AC` followed by 32 hex digits".into(),
                        ));
                    }
                    match (&s.from, &s.messaging_service_sid) {
                        (Some(from), None) => {
                            if PhoneNumber::parse(from).is_err() {
                                p.push((
                                    "settings.from".into(),
                                    "must be an E.164 number such as +15005550006".into(),
                                ));
                            }
                        }
                        (None, Some(mg)) => {
                            if !is_sid(mg, "MG") {
                                p.push((
                                    "settings.messaging_service_sid".into(),
                                    "must be `MG` followed by 32 hex digits".into(),
                                ));
                            }
                        }
                        _ => p.push((
                            "settings.from".into(),
                            "exactly one of `from` and `messaging_service_sid` is required".into(),
                        )),
                    }
                }
                if let Some(c) = &c {
                    check_token("credentials.auth_token", &c.auth_token, 128, &mut p);
                }
                s.zip(c).map(|(s, c)| ProviderSpec::Twilio(s, c))
            }
            ProviderKind::Fcm => {
                let s = parse_part::<FcmSettings>("settings", settings, &mut p);
                let c = parse_part::<FcmCredentials>("credentials", credentials, &mut p);
                if let Some(s) = &s {
                    check_rate(s.rate_per_sec, &mut p);
                    let ok = (1..=64).contains(&s.project_id.len())
                        && s.project_id
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !ok {
                        p.push((
                            "settings.project_id".into(),
                            "must be a Firebase project id (lower-case letters, digits, `-`)"
                                .into(),
                        ));
                    }
                }
                if let Some(c) = &c {
                    if EmailAddress::parse(&c.client_email).is_err() {
                        p.push((
                            "credentials.client_email".into(),
                            "must be the service account's email".into(),
                        ));
                    }
                    if jsonwebtoken::EncodingKey::from_rsa_pem(c.private_key.as_bytes()).is_err() {
                        p.push((
                            "credentials.private_key".into(),
                            "must be the service account's RSA private key in PEM".into(),
                        ));
                    }
                    if let Some(kid) = &c.private_key_id {
                        check_token("credentials.private_key_id", kid, 128, &mut p);
                    }
                }
                s.zip(c).map(|(s, c)| ProviderSpec::Fcm(s, c))
            }
            ProviderKind::WhatsApp => {
                let s = parse_part::<WhatsAppSettings>("settings", settings, &mut p);
                let c = parse_part::<WhatsAppCredentials>("credentials", credentials, &mut p);
                if let Some(s) = &s {
                    check_rate(s.rate_per_sec, &mut p);
                    if s.phone_number_id.is_empty()
                        || s.phone_number_id.len() > 32
                        || !s.phone_number_id.bytes().all(|b| b.is_ascii_digit())
                    {
                        p.push((
                            "settings.phone_number_id".into(),
                            "must be the phone number's numeric id".into(),
                        ));
                    }
                }
                if let Some(c) = &c {
                    check_token("credentials.access_token", &c.access_token, 1024, &mut p);
                    if let Some(secret) = &c.app_secret {
                        check_token("credentials.app_secret", secret, 256, &mut p);
                    }
                    if let Some(token) = &c.verify_token {
                        check_token("credentials.verify_token", token, 256, &mut p);
                    }
                }
                s.zip(c).map(|(s, c)| ProviderSpec::WhatsApp(s, c))
            }
            ProviderKind::Ups => {
                let s = parse_part::<UpsSettings>("settings", settings, &mut p);
                let c = parse_part::<UpsCredentials>("credentials", credentials, &mut p);
                if let Some(c) = &c {
                    check_token("credentials.client_id", &c.client_id, 256, &mut p);
                    check_token("credentials.client_secret", &c.client_secret, 256, &mut p);
                }
                s.zip(c).map(|(s, c)| ProviderSpec::Ups(s, c))
            }
        };
        match spec {
            Some(spec) if p.is_empty() => Ok(spec),
            _ => Err(p),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSpec::Smtp(_) => ProviderKind::Smtp,
            ProviderSpec::SendGrid(..) => ProviderKind::SendGrid,
            ProviderSpec::Twilio(..) => ProviderKind::Twilio,
            ProviderSpec::Fcm(..) => ProviderKind::Fcm,
            ProviderSpec::WhatsApp(..) => ProviderKind::WhatsApp,
            ProviderSpec::Ups(..) => ProviderKind::Ups,
        }
    }

    /// The settings, as stored.
    pub fn settings(&self) -> Value {
        let v = match self {
            ProviderSpec::Smtp(s) => serde_json::to_value(s),
            ProviderSpec::SendGrid(s, _) => serde_json::to_value(s),
            ProviderSpec::Twilio(s, _) => serde_json::to_value(s),
            ProviderSpec::Fcm(s, _) => serde_json::to_value(s),
            ProviderSpec::WhatsApp(s, _) => serde_json::to_value(s),
            ProviderSpec::Ups(s, _) => serde_json::to_value(s),
        };
        v.unwrap_or_default()
    }

    /// The credentials as JSON (to be sealed), or `None` for none.
    pub fn credentials(&self) -> Option<Value> {
        let v = match self {
            ProviderSpec::Smtp(_) => return None,
            ProviderSpec::SendGrid(_, c) => serde_json::to_value(c),
            ProviderSpec::Twilio(_, c) => serde_json::to_value(c),
            ProviderSpec::Fcm(_, c) => serde_json::to_value(c),
            ProviderSpec::WhatsApp(_, c) => serde_json::to_value(c),
            ProviderSpec::Ups(_, c) => serde_json::to_value(c),
        };
        v.ok()
    }

    /// Messages per second the config asks for, if it sets a rate.
    pub fn rate_per_sec(&self) -> Option<u32> {
        match self {
            ProviderSpec::Smtp(s) => s.rate_per_sec,
            ProviderSpec::SendGrid(s, _) => s.rate_per_sec,
            ProviderSpec::Twilio(s, _) => s.rate_per_sec,
            ProviderSpec::Fcm(s, _) => s.rate_per_sec,
            ProviderSpec::WhatsApp(s, _) => s.rate_per_sec,
            // The UPS rate is the platform's (`queues.ups_poll.rate_limit`).
            ProviderSpec::Ups(..) => None,
        }
    }
}

/// What the API shows of credentials: each string's last four characters
/// (none of a private key, and none of anything shorter than 12), the rest
/// as bullets.
pub fn mask(credentials: &Value) -> Value {
    let Some(obj) = credentials.as_object() else {
        return Value::Object(Map::new());
    };
    obj.iter()
        .map(|(k, v)| {
            let shown = match v.as_str() {
                Some(s) if k != "private_key" && s.chars().count() >= 12 => {
                    let tail: String = s
                        .chars()
                        .rev()
                        .take(4)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    format!("••••{tail}")
                }
                _ => "••••".to_owned(),
            };
            (k.clone(), Value::String(shown))
        })
        .collect::<Map<_, _>>()
        .into()
}

/// The associated data a config's credentials are sealed with.
pub fn aad(tenant_id: crate::domain::TenantId, provider_id: uuid::Uuid) -> Vec<u8> {
    format!("tenant:{tenant_id}/provider:{provider_id}").into_bytes()
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn twilio_configs_are_checked_field_by_field() {
        let ok = ProviderSpec::parse(
            ProviderKind::Twilio,
            &json!({"account_sid": format!("AC{}", "a".repeat(32)), "from": "+15005550006"}),
            &json!({"auth_token": "0123456789abcdef0123456789abcdef"}),
        )
        .unwrap();
        assert_eq!(ok.kind(), ProviderKind::Twilio);
        let names = |r: Result<ProviderSpec, Vec<FieldProblem>>| {
            r.unwrap_err()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(ProviderSpec::parse(
                ProviderKind::Twilio,
                &json!({"account_sid": "AC1", "from": "555", "rate_per_sec": 0}),
                &json!({"auth_token": "has space"}),
            )),
            [
                "settings.rate_per_sec",
                "settings.account_sid",
                "settings.from",
                "credentials.auth_token"
            ]
        );
        assert_eq!(
            names(ProviderSpec::parse(
                ProviderKind::Twilio,
                &json!({"account_sid": format!("AC{}", "a".repeat(32)), "from": "+15005550006", "url": "http://169.254.169.254"}),
                &json!({"auth_token": "x"}),
            )),
            ["settings.url"],
            "unknown fields (a tenant-chosen address) are refused"
        );
    }

    #[test]
    fn masks_never_show_more_than_four_characters() {
        let masked = mask(&json!({
            "api_key": "SG.abcdefghijklmnopqrstuvwxyz",
            "auth_token": "short",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n",
        }));
        assert_eq!(
            masked,
            json!({"api_key": "••••wxyz", "auth_token": "••••", "private_key": "••••"})
        );
    }

    #[test]
    fn callback_secrets_are_checked_and_masked() {
        use base64::Engine;
        use p256::pkcs8::EncodePublicKey;
        let signing = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let der = signing.verifying_key().to_public_key_der().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        let sendgrid = |key: &str| {
            ProviderSpec::parse(
                ProviderKind::SendGrid,
                &json!({"from_email": "care@clinic.example.org", "webhook_public_key": key}),
                &json!({"api_key": "SG.abcdefghijklmnopqrstuvwxyz"}),
            )
        };
        let spec = sendgrid(&key).unwrap();
        assert_eq!(spec.settings()["webhook_public_key"], key.as_str());
        for bad in ["not a key", "bm90IGEga2V5", &"A".repeat(5000)] {
            let problems = sendgrid(bad).unwrap_err();
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].0, "settings.webhook_public_key");
        }

        let whatsapp = |token: &str| {
            ProviderSpec::parse(
                ProviderKind::WhatsApp,
                &json!({"phone_number_id": "1234567890"}),
                &json!({"access_token": "EAAtoken0123456789", "app_secret": "0123456789abcdef", "verify_token": token}),
            )
        };
        let spec = whatsapp("verify-0123456789").unwrap();
        assert_eq!(
            mask(&spec.credentials().unwrap())["verify_token"],
            "••••6789"
        );
        assert_eq!(
            whatsapp("has space").unwrap_err()[0].0,
            "credentials.verify_token"
        );
    }

    #[test]
    fn ups_configs_need_client_credentials_and_are_masked() {
        let spec = ProviderSpec::parse(
            ProviderKind::Ups,
            &json!({}),
            &json!({"client_id": "client-0123456789", "client_secret": "secret-0123456789abcd"}),
        )
        .unwrap();
        assert_eq!(spec.kind().channel_name(), "tracking");
        assert_eq!(
            mask(&spec.credentials().unwrap())["client_secret"],
            "••••abcd"
        );
        let names = |c: Value| {
            ProviderSpec::parse(
                ProviderKind::Ups,
                &json!({"base_url": "http://169.254.169.254"}),
                &c,
            )
            .unwrap_err()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                json!({"client_id": "client-0123456789", "client_secret": "secret-0123456789abcd"})
            ),
            ["settings.base_url"],
            "a tenant cannot choose where UPS is"
        );
        assert_eq!(
            ProviderSpec::parse(
                ProviderKind::Ups,
                &json!({}),
                &json!({"client_id": "has space", "client_secret": ""})
            )
            .unwrap_err()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
            ["credentials.client_id", "credentials.client_secret"]
        );
    }

    #[test]
    fn provider_errors_show_only_the_platforms_words_and_short_codes() {
        let twilio = ProviderError::answered(
            ProviderKind::Twilio,
            FailureReason::RecipientInvalid,
            Some(400),
        )
        .with_code(ProviderCode::number(21211));
        assert_eq!(
            twilio.to_string(),
            "the provider rejected the recipient's address as invalid (twilio error 21211, HTTP 400)"
        );
        assert_eq!(
            ProviderCode::number(15005550006),
            None,
            "a number long enough to be a phone number is no code"
        );
        assert_eq!(ProviderCode::number(-1), None);
        assert_eq!(
            ProviderCode::number(9_999_999),
            Some(ProviderCode::Number(9_999_999))
        );
        assert_eq!(
            ProviderCode::named("pat@example.org", &["UNREGISTERED"]),
            None
        );
        let smtp =
            ProviderError::answered(ProviderKind::Smtp, FailureReason::MailRefused, Some(550))
                .with_code(ProviderCode::smtp_enhanced(
                    "5.1.1 <pat@example.org>: Recipient address rejected",
                ));
        assert_eq!(
            smtp.to_string(),
            "the mail server refused the message (SMTP 550 5.1.1)"
        );
        for not_enhanced in [
            "<pat@example.org> 5.1.1",
            "5.1",
            "5.1.1.1",
            "15005550006",
            "",
        ] {
            assert_eq!(
                ProviderCode::smtp_enhanced(not_enhanced),
                None,
                "{not_enhanced}"
            );
        }
        assert_eq!(
            ProviderError::new(FailureReason::NoProvider(Channel::Sms)).to_string(),
            "no sms provider is configured for this organisation"
        );
    }

    #[test]
    fn smtp_takes_no_credentials() {
        assert!(ProviderSpec::parse(ProviderKind::Smtp, &json!({}), &Value::Null).is_ok());
        assert!(
            ProviderSpec::parse(ProviderKind::Smtp, &json!({}), &json!({"password": "x"})).is_err()
        );
    }
}
