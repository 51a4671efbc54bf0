//! Domain types. Each is parsed once at the edge, so code that holds one knows
//! it is valid: an [`EmailAddress`] is a deliverable address, a [`Subject`]
//! cannot inject a header, a [`TenantId`] is never confused with another id.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod content;
mod problems;
mod recipient;
mod rules;
mod whatsapp;

pub use content::*;
pub use problems::{FieldError, Problems};
pub use recipient::recipient;
pub use rules::*;
pub use whatsapp::*;

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
uuid_id!(
    /// A parcel an organisation tracks with its carrier.
    ShipmentId
);
uuid_id!(
    /// An organisation's provider config: one provider account (Twilio,
    /// SendGrid, UPS, …) with its credentials and failover priority.
    ProviderId
);
uuid_id!(
    /// An organisation's webhook endpoint: a URL that receives events.
    WebhookEndpointId
);
uuid_id!(
    /// An organisation's own report template: the sections and period of
    /// a delivery report.
    ReportTemplateId
);
uuid_id!(
    /// A report schedule: a report emailed to users on a cron schedule.
    ReportScheduleId
);
uuid_id!(
    /// One run of a workflow for one subscriber.
    WorkflowRunId
);
uuid_id!(
    /// An error group: the failures that share a kind, class, reason,
    /// provider, channel and source.
    ErrorGroupId
);
uuid_id!(
    /// An operator's retry or discard of every failed item a filter
    /// matches, done in the background.
    OpsActionId
);
uuid_id!(
    /// An invitation of a person to join an organisation as a staff user.
    InvitationId
);
uuid_id!(
    /// A permission set: named permissions, with the sets it includes,
    /// built in or an organisation's own.
    PermissionSetId
);
uuid_id!(
    /// A user who signs in with a password: platform or organisation
    /// staff. It is the `sub` of the tokens it is issued.
    UserId
);
uuid_id!(
    /// An alert rule: a metric, a threshold and whom to tell when it is
    /// crossed.
    AlertRuleId
);
uuid_id!(
    /// An alert a rule opened about one subject (PagerDuty's dedup key).
    AlertId
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

/// An FCM registration token: 1 to [`PushToken::MAX_LEN`] printable ASCII
/// characters (no spaces). Opaque; never logged.
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
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid(
                "must be a device registration token: printable ASCII without spaces".into(),
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
mod tests;

#[cfg(test)]
mod properties;
