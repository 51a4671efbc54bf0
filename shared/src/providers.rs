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
pub fn aad(tenant_id: crate::domain::TenantId, provider_id: crate::domain::ProviderId) -> Vec<u8> {
    format!("tenant:{tenant_id}/provider:{provider_id}").into_bytes()
}

mod failures;
#[cfg(test)]
mod tests;

pub use failures::*;
