//! Lookups: the lists of values the platform uses, for callers to show
//! and pick from.
//!
//! Two kinds are lists platform admins manage (`lookup_values`):
//! notification categories (add, relabel, remove) and organisation types
//! (relabel only: the set is the one organisations may have). The others
//! are the code's own enums, read-only, so they never drift from what the
//! platform accepts: BAA statuses, shipment statuses, error classes and
//! channels.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{db::organizations::Organization, domain::Channel, errors::ErrorClass};

/// A list of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupKind {
    /// Categories of notifications (templates' `category`, preferences).
    NotificationCategory,
    /// Types of organisation.
    OrganizationType,
    /// Where an organisation's BAA stands.
    BaaStatus,
    /// A shipment's tracking status.
    ShipmentStatus,
    /// Error tracking's classes.
    ErrorClass,
    /// Delivery channels.
    Channel,
}

impl LookupKind {
    /// Every kind, in a stable order.
    pub const ALL: &'static [LookupKind] = &[
        LookupKind::NotificationCategory,
        LookupKind::OrganizationType,
        LookupKind::BaaStatus,
        LookupKind::ShipmentStatus,
        LookupKind::ErrorClass,
        LookupKind::Channel,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::NotificationCategory => "notification_category",
            LookupKind::OrganizationType => "organization_type",
            LookupKind::BaaStatus => "baa_status",
            LookupKind::ShipmentStatus => "shipment_status",
            LookupKind::ErrorClass => "error_class",
            LookupKind::Channel => "channel",
        }
    }

    /// The kind named `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == raw)
    }

    /// Whether platform admins edit it (its values live in `lookup_values`).
    pub fn editable(self) -> bool {
        matches!(
            self,
            LookupKind::NotificationCategory | LookupKind::OrganizationType
        )
    }

    /// Whether values can be added and removed (not only relabelled).
    pub fn open(self) -> bool {
        self == LookupKind::NotificationCategory
    }

    /// The codes of a read-only kind, from the code's enums; empty for an
    /// editable kind.
    pub fn fixed_codes(self) -> Vec<&'static str> {
        match self {
            LookupKind::NotificationCategory | LookupKind::OrganizationType => Vec::new(),
            LookupKind::BaaStatus => BaaStatus::ALL.iter().map(|s| s.as_str()).collect(),
            LookupKind::ShipmentStatus => crate::shipments::ShipmentStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect(),
            LookupKind::ErrorClass => ErrorClass::ALL.iter().map(|c| c.as_str()).collect(),
            LookupKind::Channel => Channel::ALL.iter().map(|c| c.as_str()).collect(),
        }
    }
}

/// Where an organisation's BAA stands on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaaStatus {
    /// No BAA on file.
    Missing,
    /// Signed for a later day.
    Pending,
    /// In force.
    Active,
    /// Past its expiry day.
    Expired,
}

impl BaaStatus {
    /// Every status.
    pub const ALL: &'static [BaaStatus] = &[
        BaaStatus::Missing,
        BaaStatus::Pending,
        BaaStatus::Active,
        BaaStatus::Expired,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            BaaStatus::Missing => "missing",
            BaaStatus::Pending => "pending",
            BaaStatus::Active => "active",
            BaaStatus::Expired => "expired",
        }
    }

    /// The status of `org`'s current BAA on `today`; `Active` exactly when
    /// [`Organization::compliant`].
    pub fn of(org: &Organization, today: NaiveDate) -> Self {
        match (org.baa_signed_on, org.baa_expires_on) {
            (Some(_), Some(_)) if org.compliant(today) => BaaStatus::Active,
            (Some(_), Some(e)) if e <= today => BaaStatus::Expired,
            (Some(_), Some(_)) => BaaStatus::Pending,
            _ => BaaStatus::Missing,
        }
    }
}

/// A label for a code of a read-only kind: its words, capitalised.
pub fn label_of(code: &str) -> String {
    let words = code.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Longest code.
pub const MAX_CODE: usize = 64;
/// Longest label.
pub const MAX_LABEL: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// Most values of one editable kind.
pub const MAX_VALUES: i64 = 200;

/// Whether `code` is a valid code: a lower-case letter, then lower-case
/// letters, digits and `_`, at most [`MAX_CODE`].
pub fn valid_code(code: &str) -> bool {
    let b = code.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CODE
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_codes_are_valid() {
        for k in LookupKind::ALL {
            assert_eq!(LookupKind::parse(k.as_str()), Some(*k));
            for c in k.fixed_codes() {
                assert!(valid_code(c), "{c}");
            }
            assert_eq!(k.editable(), k.fixed_codes().is_empty());
        }
        assert_eq!(label_of("out_for_delivery"), "Out for delivery");
        for bad in ["", "A", "1a", "a-b", &"a".repeat(65)] {
            assert!(!valid_code(bad), "{bad}");
        }
    }
}
