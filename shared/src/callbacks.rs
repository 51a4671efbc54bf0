//! Providers' delivery callbacks: how each one's signature is checked and
//! how its events are read.
//!
//! After a provider accepts a message it reports what became of it (delivered,
//! opened or read, bounced, failed) by calling the platform back. Each
//! organisation's provider config carries its own signing secret, so the
//! callback URL names the config (`/webhooks/<provider>/<config id>`) and the
//! API checks the signature with that config's secret before it reads a byte
//! of the body:
//!
//! * SendGrid's signed event webhook: an ECDSA P-256 / SHA-256 signature (DER,
//!   base64) over the timestamp header followed by the raw body
//!   ([`verify_sendgrid`]), with the public key SendGrid shows
//!   ([`sendgrid_public_key`]).
//! * Twilio: base64 HMAC-SHA1 with the auth token over the public URL plus
//!   the form parameters sorted by name, each name followed by its value
//!   ([`verify_twilio`]).
//! * Meta (WhatsApp): `sha256=` and the hex HMAC-SHA256 of the raw body with
//!   the app secret ([`verify_meta`]).
//!
//! MACs are compared in constant time. The readers ([`sendgrid_events`],
//! [`twilio_event`], [`whatsapp_callback`]) keep only ids, event names, error
//! codes and times: never an address, a number (beyond matching an inbound
//! WhatsApp message to its subscriber) or message content.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::DeliveryReport;

/// How old a SendGrid timestamp may be (either way) before the callback is
/// refused as stale.
pub const SENDGRID_MAX_AGE_SECS: i64 = 600;

/// Why a signature was refused. The API answers 401 for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature (or no timestamp) header.
    #[error("the callback is not signed")]
    Missing,
    /// The signature does not match.
    #[error("the callback's signature does not match")]
    Mismatch,
    /// The timestamp is more than ten minutes away from now.
    #[error("the callback's timestamp is too old or in the future")]
    Stale,
    /// The provider config has no secret to check signatures with.
    #[error("signed callbacks are not configured for this provider")]
    NotConfigured,
}

/// Reads the ECDSA P-256 public key of SendGrid's signed event webhook, as
/// SendGrid shows it (base64 of the DER `SubjectPublicKeyInfo`) or as PEM.
pub fn sendgrid_public_key(text: &str) -> Result<VerifyingKey, &'static str> {
    use p256::pkcs8::DecodePublicKey;
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = B64
        .decode(body.as_bytes())
        .map_err(|_| "must be the base64 (or PEM) public key SendGrid shows")?;
    VerifyingKey::from_public_key_der(&der).map_err(|_| "must be an ECDSA P-256 public key")
}

/// Checks a SendGrid signed event webhook: `signature` (the
/// `X-Twilio-Email-Event-Webhook-Signature` header) over `timestamp` (the
/// `X-Twilio-Email-Event-Webhook-Timestamp` header) followed by `body`, and
/// that the timestamp is within [`SENDGRID_MAX_AGE_SECS`] of `now`.
pub fn verify_sendgrid(
    key: &VerifyingKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SignatureError::Missing);
    };
    let der = B64
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let signature = Signature::from_der(&der).map_err(|_| SignatureError::Mismatch)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    // ECDSA accepts both forms of `s`; some signers do not normalise it.
    let low_s = signature.normalize_s().unwrap_or(signature);
    if key.verify(&signed, &signature).is_err() && key.verify(&signed, &low_s).is_err() {
        return Err(SignatureError::Mismatch);
    }
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Stale)?;
    if (now.timestamp() - at).abs() > SENDGRID_MAX_AGE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Twilio's signature of a request: base64 HMAC-SHA1 with `auth_token` over
/// `url` followed by every form parameter sorted by name (then value), each
/// name followed by its value.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    B64.encode(twilio_mac(auth_token, url, params).finalize().into_bytes())
}

fn twilio_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<sha1::Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Checks Twilio's `X-Twilio-Signature` (in constant time).
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let given = B64
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    twilio_mac(auth_token, url, params)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks Meta's `X-Hub-Signature-256` (`sha256=` and the hex HMAC-SHA256 of
/// the raw body with the app secret), in constant time.
pub fn verify_meta(
    app_secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_mac = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Mismatch)?;
    let given = hex::decode(hex_mac).map_err(|_| SignatureError::Mismatch)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Whether two secrets are equal, compared in constant time.
pub fn secrets_match(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    // Hash first, so the comparison does not reveal the length either.
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.ct_eq(&b).into()
}

/// Which notification an event is about. Callbacks only ever look within the
/// tenant whose provider config received them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The notification's own id (SendGrid's `custom_args`).
    Notification(Uuid),
    /// The provider's id of the message, as the worker stored it.
    MessageId(String),
}

/// One provider event that reports a delivery outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedEvent {
    /// The notification it is about.
    pub target: Target,
    /// What it reports.
    pub report: DeliveryReport,
    /// The provider's name for the event (`delivered`, `open`, `bounce`, …).
    pub event: String,
    /// A SHA-256 (hex) of what identifies the event at the provider: a
    /// repeated callback carries the same key.
    pub key: String,
    /// The provider's id of the message, as the event gives it.
    pub provider_message_id: Option<String>,
    /// The provider's error or SMTP status code, if it gives one.
    pub error_code: Option<String>,
    /// When the provider says it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The error to record when it reports a failure.
    pub error: Option<String>,
}

/// A problem with a callback's body (after its signature checked out).
pub type Malformed = String;

fn event_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// An id-like value: printable ASCII without spaces, 1 to 255 characters.
fn id_like(v: &str) -> bool {
    (1..=255).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// A short code of digits, dots and letters (`5.1.1`, `30003`).
fn code_like(v: &str) -> Option<String> {
    ((1..=32).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        .then(|| v.to_owned())
}

fn unix_time(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

/// The `X-Message-Id` SendGrid answered a send with, from an event's
/// `sg_message_id` (SendGrid appends `.filter…` and more to it).
pub fn sendgrid_message_id(sg_message_id: &str) -> &str {
    sg_message_id
        .split_once(".filter")
        .map_or(sg_message_id, |(id, _)| id)
}

/// Reads the events of a SendGrid event webhook body (a JSON array of
/// objects). Events that report no outcome (`processed`, `deferred`, `click`,
/// …) or name no message are left out; `tenant_id` is the config's tenant,
/// and an event whose `custom_args` name another tenant is left out too.
pub fn sendgrid_events(body: &[u8], tenant_id: Uuid) -> Result<Vec<ReportedEvent>, Malformed> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("is not valid JSON: {e}"))?;
    let items = value.as_array().ok_or("must be a JSON array of events")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("[{i}] must be an event object"))?;
        let str_of = |k: &str| obj.get(k).and_then(Value::as_str);
        let Some(event) = str_of("event") else {
            return Err(format!("[{i}].event is required"));
        };
        let report = match event {
            "delivered" => DeliveryReport::Delivered,
            "open" => DeliveryReport::Read,
            "bounce" | "dropped" => DeliveryReport::Bounced,
            _ => continue,
        };
        if let Some(t) = str_of("tenant_id")
            && Uuid::parse_str(t).ok() != Some(tenant_id)
        {
            continue;
        }
        let message_id = str_of("sg_message_id")
            .filter(|m| id_like(m))
            .map(|m| sendgrid_message_id(m).to_owned());
        let target = match str_of("notification_id").and_then(|n| Uuid::parse_str(n).ok()) {
            Some(id) => Target::Notification(id),
            None => match &message_id {
                Some(m) => Target::MessageId(m.clone()),
                None => continue,
            },
        };
        let timestamp = obj.get("timestamp").and_then(Value::as_i64);
        let key = match str_of("sg_event_id").filter(|e| id_like(e)) {
            Some(id) => event_key(&["sendgrid", id]),
            None => event_key(&[
                "sendgrid",
                message_id.as_deref().unwrap_or_default(),
                &format!("{target:?}"),
                event,
                &timestamp.unwrap_or_default().to_string(),
            ]),
        };
        let error_code = str_of("status").and_then(code_like);
        let error = (report == DeliveryReport::Bounced).then(|| {
            let what = if event == "dropped" {
                "SendGrid dropped the message"
            } else {
                "the receiving mail server bounced the message"
            };
            match &error_code {
                Some(code) => format!("{what} ({code})"),
                None => what.to_owned(),
            }
        });
        out.push(ReportedEvent {
            target,
            report,
            event: event.to_owned(),
            key,
            provider_message_id: message_id,
            error_code,
            occurred_at: timestamp.and_then(unix_time),
            error,
        });
    }
    Ok(out)
}

/// Reads a Twilio message status callback's form parameters. `MessageSid`
/// and `MessageStatus` are required; a status that reports no outcome
/// (`queued`, `sent`, …) gives `None`.
pub fn twilio_event(params: &[(String, String)]) -> Result<Option<ReportedEvent>, Malformed> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let sid = get("MessageSid").ok_or("MessageSid is required")?;
    if !(sid.len() >= 2 && sid.len() <= 64 && sid.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err("MessageSid must be a message SID".into());
    }
    let status = get("MessageStatus").ok_or("MessageStatus is required")?;
    let report = match status {
        "delivered" => DeliveryReport::Delivered,
        "read" => DeliveryReport::Read,
        "undelivered" | "failed" => DeliveryReport::Failed,
        _ => return Ok(None),
    };
    let error_code = get("ErrorCode").and_then(code_like);
    let error = (report == DeliveryReport::Failed).then(|| match &error_code {
        Some(code) => format!("Twilio reported the message {status} (error {code})"),
        None => format!("Twilio reported the message {status}"),
    });
    Ok(Some(ReportedEvent {
        target: Target::MessageId(sid.to_owned()),
        report,
        event: status.to_owned(),
        key: event_key(&["twilio", sid, status]),
        provider_message_id: Some(sid.to_owned()),
        error_code,
        occurred_at: None,
        error,
    }))
}

/// What a WhatsApp callback carried for one business number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatsAppCallback {
    /// Status reports about sent messages.
    pub statuses: Vec<ReportedEvent>,
    /// Inbound messages: the sender's number (E.164) and when they wrote.
    pub inbound: Vec<(String, DateTime<Utc>)>,
}

fn array<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a [Value], Malformed> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{path}.{key} must be an array")),
    }
}

fn meta_time(v: &Value) -> Option<DateTime<Utc>> {
    let secs = match v.get("timestamp")? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    unix_time(secs)
}

/// Reads a WhatsApp Cloud API webhook body: `entry[].changes[].value`
/// `statuses[]` (`delivered`, `read`, `failed`) and `messages[]` (inbound).
/// Changes for another business number than `phone_number_id` are left out.
pub fn whatsapp_callback(
    body: &[u8],
    phone_number_id: &str,
) -> Result<WhatsAppCallback, Malformed> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("must be a JSON object".into());
    }
    let Some(Value::Array(entries)) = value.get("entry") else {
        return Err("entry must be an array".into());
    };
    let mut out = WhatsAppCallback::default();
    for (e, entry) in entries.iter().enumerate() {
        let path = format!("entry[{e}]");
        for (c, change) in array(entry, "changes", &path)?.iter().enumerate() {
            let path = format!("{path}.changes[{c}]");
            let Some(v) = change.get("value").filter(|v| v.is_object()) else {
                return Err(format!("{path}.value must be an object"));
            };
            let number = v
                .get("metadata")
                .and_then(|m| m.get("phone_number_id"))
                .and_then(Value::as_str);
            if number != Some(phone_number_id) {
                continue;
            }
            let path = format!("{path}.value");
            for (s, status) in array(v, "statuses", &path)?.iter().enumerate() {
                let (Some(id), Some(name)) = (
                    status.get("id").and_then(Value::as_str),
                    status.get("status").and_then(Value::as_str),
                ) else {
                    return Err(format!("{path}.statuses[{s}] needs `id` and `status`"));
                };
                if !id_like(id) {
                    return Err(format!("{path}.statuses[{s}].id is not a message id"));
                }
                let report = match name {
                    "delivered" => DeliveryReport::Delivered,
                    "read" => DeliveryReport::Read,
                    "failed" => DeliveryReport::Failed,
                    _ => continue,
                };
                let error_code = status
                    .get("errors")
                    .and_then(|e| e.get(0))
                    .and_then(|e| e.get("code"))
                    .and_then(|c| match c {
                        Value::Number(n) => Some(n.to_string()),
                        Value::String(s) => code_like(s),
                        _ => None,
                    });
                let error = (report == DeliveryReport::Failed).then(|| match &error_code {
                    Some(code) => format!("WhatsApp reported the message failed (error {code})"),
                    None => "WhatsApp reported the message failed".to_owned(),
                });
                out.statuses.push(ReportedEvent {
                    target: Target::MessageId(id.to_owned()),
                    report,
                    event: name.to_owned(),
                    key: event_key(&["whatsapp", id, name]),
                    provider_message_id: Some(id.to_owned()),
                    error_code,
                    occurred_at: meta_time(status),
                    error,
                });
            }
            for message in array(v, "messages", &path)? {
                let from = message.get("from").and_then(Value::as_str).unwrap_or("");
                let digits = (8..=15).contains(&from.len())
                    && !from.starts_with('0')
                    && from.bytes().all(|b| b.is_ascii_digit());
                if let (true, Some(at)) = (digits, meta_time(message)) {
                    out.inbound.push((format!("+{from}"), at));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
