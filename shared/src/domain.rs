//! Domain types. Each is parsed once at the edge, so code that holds one knows
//! it is valid: an [`EmailAddress`] is a deliverable address, a [`Subject`]
//! cannot inject a header, a [`TenantId`] is never confused with another id.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An organisation on the platform; every tenant-owned row carries one.
    TenantId
);
uuid_id!(
    /// One notification: a message to one recipient on one channel.
    NotificationId
);
uuid_id!(
    /// A tenant's API key (its id, never the secret).
    ApiKeyId
);
uuid_id!(
    /// One of a tenant's end users, who has an in-app inbox.
    SubscriberId
);
uuid_id!(
    /// A tenant's reusable message template.
    TemplateId
);

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A single deliverable email address (`local@domain`), without display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Longest address accepted (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Parses and normalises (trims, lower-cases the domain).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(Invalid("must not be empty".into()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>' || c == ',')
        {
            return Err(Invalid(
                "must be a single address without spaces, brackets or control characters".into(),
            ));
        }
        let address: lettre::Address = s
            .parse()
            .map_err(|_| Invalid("is not a valid email address".into()))?;
        let domain = address.domain();
        if !domain.contains('.') && !domain.starts_with('[') && domain != "localhost" {
            return Err(Invalid("must have a fully qualified domain".into()));
        }
        Ok(Self(format!(
            "{}@{}",
            address.user(),
            domain.to_ascii_lowercase()
        )))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email subject: one line, no CR or LF, at most [`Subject::MAX_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Longest subject accepted, in characters.
    pub const MAX_CHARS: usize = 998;

    /// Parses a subject.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.contains(['\r', '\n']) {
            return Err(Invalid("must not contain CR or LF".into()));
        }
        if raw.chars().any(char::is_control) {
            return Err(Invalid("must not contain control characters".into()));
        }
        if raw.trim().is_empty() {
            return Err(Invalid("must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses an E.164 number (surrounding spaces are trimmed; nothing else
    /// is rewritten, so `(555) 010-0000` is refused rather than guessed at).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid(
                "must be an E.164 number: `+`, then 8 to 15 digits (e.g. +15005550006)".into(),
            ))
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subscriber's id in the tenant's own systems (the JWT subject they sign
/// in with): 1 to [`ExternalId::MAX_CHARS`] characters, not blank, without
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    /// Longest external id accepted, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Parses an external id; nothing is trimmed or rewritten.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.trim().is_empty() {
            return Err(Invalid("must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(Invalid("must not contain control characters".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An FCM registration token: 1 to [`PushToken::MAX_LEN`] characters without
/// whitespace or control characters. Opaque; never logged.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PushToken(String);

impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushToken(..)")
    }
}

impl PushToken {
    /// Longest token accepted, in characters.
    pub const MAX_LEN: usize = 4096;

    /// Parses a token; nothing is trimmed.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid("must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(Invalid(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid(
                "must not contain whitespace or control characters".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag such as `en`, `en-US`, `es-419` or `zh-Hant-TW`,
/// with its subtags in their conventional case (`en-us` becomes `en-US`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    /// Longest tag accepted.
    pub const MAX_LEN: usize = 35;

    /// Parses a tag: a 2 to 8 letter language, then subtags of 1 to 8
    /// letters or digits, joined by `-`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let refuse = || {
            Invalid(format!(
                "must be a BCP 47 language tag such as `en` or `en-US`, at most {} characters",
                Self::MAX_LEN
            ))
        };
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(refuse());
        }
        let mut tag = Vec::new();
        for (i, sub) in raw.split('-').enumerate() {
            let ok = if i == 0 {
                (2..=8).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphabetic())
            } else {
                (1..=8).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphanumeric())
            };
            if !ok {
                return Err(refuse());
            }
            let alpha = sub.bytes().all(|b| b.is_ascii_alphabetic());
            tag.push(match sub.len() {
                2 if i > 0 && alpha => sub.to_ascii_uppercase(),
                4 if i > 0 && alpha => {
                    let lower = sub.to_ascii_lowercase();
                    lower[..1].to_ascii_uppercase() + &lower[1..]
                }
                _ => sub.to_ascii_lowercase(),
            });
        }
        Ok(Self(tag.join("-")))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: 1 to [`PersonName::MAX_CHARS`] characters, not
/// blank, without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    /// Longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a name; nothing is trimmed or rewritten.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.trim().is_empty() {
            return Err(Invalid(
                "must not be empty (omit it or send null instead)".into(),
            ));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(Invalid("must not contain control characters".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name such as `America/Chicago`, parsed exactly.
pub fn parse_time_zone(raw: &str) -> Result<chrono_tz::Tz, Invalid> {
    raw.parse::<chrono_tz::Tz>().map_err(|_| {
        Invalid("must be an IANA time zone name such as `America/Chicago` or `UTC`".into())
    })
}

/// A delivery channel. One Redis queue serves each.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Channel {
    /// Email, over SMTP or SendGrid.
    Email,
    /// Text messages (Twilio).
    Sms,
    /// Mobile push (FCM).
    Push,
    /// WhatsApp (the Cloud API).
    #[serde(rename = "whatsapp")]
    #[sqlx(rename = "whatsapp")]
    WhatsApp,
    /// A row in the subscriber's in-app inbox.
    #[serde(rename = "inapp")]
    #[sqlx(rename = "inapp")]
    InApp,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: &'static [Channel] = &[
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::WhatsApp,
        Channel::InApp,
    ];

    /// The channel's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::WhatsApp => "whatsapp",
            Channel::InApp => "inapp",
        }
    }

    /// Parses a channel name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Accepted and waiting for a worker (also between retries).
    Queued,
    /// A worker holds it and is talking to the provider.
    Sending,
    /// The provider accepted it.
    Sent,
    /// Given up: a permanent error, or out of attempts.
    Failed,
    /// Not sent: the subscriber's preferences rule it out.
    Suppressed,
}

impl NotificationStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
        }
    }
}

/// What came of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The provider accepted the message.
    Sent,
    /// A transient failure; another attempt is scheduled.
    Retry,
    /// A permanent failure, or the last attempt failed.
    Failed,
    /// Not sent because of the subscriber's preferences.
    Suppressed,
    /// This provider failed or was skipped, and the send moved on to the
    /// next one within the same attempt.
    Failover,
}

impl AttemptOutcome {
    /// The outcome as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Failover => "failover",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_parsed_strictly() {
        assert_eq!(
            EmailAddress::parse(" Pat@Example.ORG ").unwrap().as_str(),
            "Pat@example.org"
        );
        for bad in [
            "",
            "no-at-sign",
            "a@b",
            "two@a.org,three@b.org",
            "Pat <pat@example.org>",
            "pat@exa mple.org",
            "pat@example.org\r\nBcc: x@evil.org",
            "@example.org",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn subscriber_fields_are_parsed_strictly() {
        assert_eq!(
            ExternalId::parse("patient 42").unwrap().as_str(),
            "patient 42"
        );
        for bad in [String::new(), "  ".into(), "a\nb".into(), "x".repeat(256)] {
            assert!(ExternalId::parse(&bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(ExternalId::parse(&"é".repeat(255)).is_ok());

        assert!(PushToken::parse(&"t".repeat(4096)).is_ok());
        for bad in [String::new(), "a b".into(), "a\tb".into(), "t".repeat(4097)] {
            assert!(PushToken::parse(&bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(
            format!("{:?}", PushToken::parse("secret").unwrap()),
            "PushToken(..)"
        );

        for (raw, tag) in [
            ("en", "en"),
            ("en-us", "en-US"),
            ("ES-419", "es-419"),
            ("zh-hant-tw", "zh-Hant-TW"),
        ] {
            assert_eq!(Locale::parse(raw).unwrap().as_str(), tag);
        }
        for bad in [
            "",
            "e",
            "en_US",
            "en-",
            "-en",
            "en--US",
            "en-US-toolongsubtag",
            "1a",
            "en US",
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad:?} must be rejected");
        }

        assert!(PersonName::parse("Ada").is_ok());
        for bad in [
            String::new(),
            " ".into(),
            "A\u{7}da".into(),
            "a".repeat(201),
        ] {
            assert!(PersonName::parse(&bad).is_err(), "{bad:?} must be rejected");
        }

        assert_eq!(
            parse_time_zone("America/Chicago").unwrap().name(),
            "America/Chicago"
        );
        for bad in ["", "Mars/Olympus", "america/chicago", "+02:00"] {
            assert!(parse_time_zone(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn subjects_cannot_carry_headers() {
        assert!(Subject::parse("Your results are ready").is_ok());
        assert_eq!(
            Subject::parse("Hi\r\nBcc: x@evil.org").unwrap_err().0,
            "must not contain CR or LF"
        );
        assert!(Subject::parse("Hi\nthere").is_err());
        assert!(Subject::parse("   ").is_err());
        assert!(Subject::parse(&"x".repeat(999)).is_err());
    }
}
