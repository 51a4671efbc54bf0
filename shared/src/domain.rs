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
    /// A batch: recipients a caller streams in numbered chunks.
    BatchId
);
uuid_id!(
    /// A CSV bulk job: one uploaded file of recipients.
    BulkJobId
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
///
/// Workers move it `queued → sending → sent | failed | suppressed`; after
/// that only the provider's reports move it, and only forward (see
/// [`NotificationStatus::after_report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Accepted and waiting for a worker (also between retries).
    Queued,
    /// Held back for later (reserved: nothing sets it yet).
    Deferred,
    /// A worker holds it and is talking to the provider.
    Sending,
    /// The provider accepted it.
    Sent,
    /// The provider reported it delivered to the recipient's device or
    /// mailbox.
    Delivered,
    /// The provider reported it opened or read.
    Read,
    /// Given up: a permanent error, out of attempts, or the provider
    /// reported it undeliverable after accepting it.
    Failed,
    /// The provider reported that the receiving server bounced or dropped it.
    Bounced,
    /// Not sent: the subscriber's preferences rule it out.
    Suppressed,
    /// Withdrawn before it was sent (reserved: nothing sets it yet).
    Cancelled,
}

impl NotificationStatus {
    /// Every status.
    pub const ALL: &'static [NotificationStatus] = &[
        Self::Queued,
        Self::Deferred,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Bounced,
        Self::Suppressed,
        Self::Cancelled,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Deferred => "deferred",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Bounced => "bounced",
            Self::Suppressed => "suppressed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status a provider's `report` moves a notification in this status
    /// to, or `None` when the report changes nothing. Reports only move
    /// forward: `sent → delivered → read`, and `sent | delivered → bounced |
    /// failed`. A report about a message not yet recorded as sent, or one
    /// that arrives after a later status (a `delivered` after `read`, anything
    /// after a bounce), changes nothing.
    pub fn after_report(self, report: DeliveryReport) -> Option<NotificationStatus> {
        use DeliveryReport as R;
        use NotificationStatus as S;
        match (self, report) {
            (S::Sent, R::Delivered) => Some(S::Delivered),
            (S::Sent | S::Delivered, R::Read) => Some(S::Read),
            (S::Sent | S::Delivered, R::Bounced) => Some(S::Bounced),
            (S::Sent | S::Delivered, R::Failed) => Some(S::Failed),
            _ => None,
        }
    }
}

/// What a provider reported about a message it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryReport {
    /// Delivered to the device or mailbox.
    Delivered,
    /// Opened or read.
    Read,
    /// Bounced or dropped by the receiving side (email).
    Bounced,
    /// Undeliverable.
    Failed,
}

impl DeliveryReport {
    /// The status the report names.
    pub fn status(self) -> NotificationStatus {
        match self {
            DeliveryReport::Delivered => NotificationStatus::Delivered,
            DeliveryReport::Read => NotificationStatus::Read,
            DeliveryReport::Bounced => NotificationStatus::Bounced,
            DeliveryReport::Failed => NotificationStatus::Failed,
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

    #[test]
    fn provider_reports_only_move_a_notification_forward() {
        use DeliveryReport as R;
        use NotificationStatus as S;
        let reports = [R::Delivered, R::Read, R::Bounced, R::Failed];
        let moves = |from: S| -> Vec<(R, Option<S>)> {
            reports.iter().map(|&r| (r, from.after_report(r))).collect()
        };
        assert_eq!(
            moves(S::Sent),
            [
                (R::Delivered, Some(S::Delivered)),
                (R::Read, Some(S::Read)),
                (R::Bounced, Some(S::Bounced)),
                (R::Failed, Some(S::Failed)),
            ]
        );
        assert_eq!(
            moves(S::Delivered),
            [
                (R::Delivered, None),
                (R::Read, Some(S::Read)),
                (R::Bounced, Some(S::Bounced)),
                (R::Failed, Some(S::Failed)),
            ],
            "a repeated delivered report changes nothing"
        );
        for from in [
            S::Queued,
            S::Deferred,
            S::Sending,
            S::Read,
            S::Failed,
            S::Bounced,
            S::Suppressed,
            S::Cancelled,
        ] {
            assert!(
                moves(from).iter().all(|(_, to)| to.is_none()),
                "nothing moves a {from:?} notification"
            );
        }
        // Whatever a report moves to is the status it names, and never back
        // to an earlier one.
        let rank = |s: S| S::ALL.iter().position(|x| *x == s).unwrap();
        for &from in S::ALL {
            for &r in &reports {
                if let Some(to) = from.after_report(r) {
                    assert_eq!(to, r.status());
                    assert!(rank(to) > rank(from), "{from:?} -> {to:?}");
                }
            }
        }
    }

    #[test]
    fn every_status_has_a_distinct_name() {
        let names: std::collections::HashSet<_> =
            NotificationStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), 10);
    }
}

/// Properties of the parsers every caller reaches: none panics on any input
/// (NUL, long strings, any Unicode), and whatever one accepts keeps its
/// documented shape and parses again to itself.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any text, biased towards what breaks parsers: NUL and other
    /// control characters, whitespace, `@`, `+`, digits and long runs.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x20+@.0-9a-z<>,\\[\\]\"\\\\]{0,40}",
            "\\+[0-9\\x00 ]{0,20}",
            "[a-z0-9.\\x00]{1,20}@[a-z0-9.\\x00-]{1,20}",
            (any::<char>(), 0..5000_usize).prop_map(|(c, n)| c.to_string().repeat(n)),
        ]
    }

    proptest! {
        #[test]
        fn emails_accepted_are_single_clean_addresses_that_parse_to_themselves(raw in hostile()) {
            if let Ok(e) = EmailAddress::parse(&raw) {
                let s = e.as_str();
                prop_assert!(s.len() <= EmailAddress::MAX_LEN);
                prop_assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()), "{s:?}");
                let (_, domain) = s.rsplit_once('@').expect("an @");
                prop_assert_eq!(domain, domain.to_ascii_lowercase());
                prop_assert_eq!(EmailAddress::parse(s), Ok(e.clone()));
            }
        }

        #[test]
        fn well_formed_emails_are_accepted(
            user in "[a-z0-9][a-z0-9._+-]{0,30}[a-z0-9]",
            host in "[a-z0-9]{1,20}",
            tld in "[a-z]{2,6}",
        ) {
            let raw = format!("{user}@{host}.{}", tld.to_ascii_uppercase());
            if !user.contains("..") {
                let e = EmailAddress::parse(&raw).unwrap();
                prop_assert_eq!(e.as_str(), format!("{user}@{host}.{tld}"));
            }
        }

        #[test]
        fn phones_accepted_are_e164(raw in hostile()) {
            if let Ok(p) = PhoneNumber::parse(&raw) {
                let digits = p.as_str().strip_prefix('+').expect("a leading +");
                prop_assert!((8..=15).contains(&digits.len()), "{p:?}");
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
                prop_assert!(!digits.starts_with('0'));
                prop_assert_eq!(PhoneNumber::parse(p.as_str()), Ok(p.clone()));
            }
        }

        #[test]
        fn every_e164_number_is_accepted(first in 1_u8..=9, rest in "[0-9]{7,14}", pad in " {0,3}") {
            let raw = format!("{pad}+{first}{rest}{pad}");
            let parsed = PhoneNumber::parse(&raw).unwrap();
            prop_assert_eq!(parsed.as_str(), raw.trim());
        }

        #[test]
        fn push_tokens_accepted_have_no_whitespace_or_control_characters(raw in hostile()) {
            if let Ok(t) = PushToken::parse(&raw) {
                let s = t.as_str();
                prop_assert!(!s.is_empty() && s.chars().count() <= PushToken::MAX_LEN);
                prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()), "{s:?}");
                prop_assert_eq!(s, raw.as_str(), "nothing is rewritten");
            }
        }

        #[test]
        fn external_ids_accepted_are_not_blank_and_have_no_control_characters(raw in hostile()) {
            if let Ok(id) = ExternalId::parse(&raw) {
                let s = id.as_str();
                prop_assert!(!s.trim().is_empty());
                prop_assert!(s.chars().count() <= ExternalId::MAX_CHARS);
                prop_assert!(!s.contains('\0') && !s.chars().any(char::is_control), "{s:?}");
                prop_assert_eq!(s, raw.as_str(), "nothing is rewritten");
            }
        }

        #[test]
        fn ids_parse_only_from_uuids_and_print_back(raw in hostile(), id in any::<u128>()) {
            let _ = raw.parse::<NotificationId>();
            let id = NotificationId(Uuid::from_u128(id));
            prop_assert_eq!(id.to_string().parse::<NotificationId>().unwrap(), id);
        }
    }
}
