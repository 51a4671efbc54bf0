//! Shipments tracked with UPS: tracking numbers, statuses, how UPS's status
//! types map onto ours, and how often a shipment is polled.
//!
//! Everything here is pure (no I/O, no clock): the poll interval is a
//! function of the status, the time since it last changed and the time of the
//! poll, which the cron tick carries, so tests drive it with any clock.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// A UPS tracking number, upper-cased, without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrackingNumber(String);

/// Why a tracking number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingNumberError {
    /// Not one of the UPS formats.
    #[error(
        "is not a UPS tracking number (1Z and 16 letters or digits, T and 10 digits, 9 digits, MI and 6 digits then up to 22 letters or digits, or 22 digits)"
    )]
    Format,
    /// A 1Z number whose check digit is wrong (mistyped).
    #[error("has a wrong check digit (expected {expected}): it is probably mistyped")]
    CheckDigit {
        /// The digit the number's characters call for.
        expected: u8,
    },
}

/// The value of a 1Z character in the check-digit sum: digits as they are,
/// letters `(ASCII − 63) mod 10` (A=2 … H=9, I=0, J=1, …).
fn char_value(c: u8) -> u8 {
    if c.is_ascii_digit() {
        c - b'0'
    } else {
        (c - 63) % 10
    }
}

/// The UPS mod-10 check digit of a `1Z` number: over the 15 characters
/// after `1Z` (shipper, service, package), odd positions count once and even
/// positions twice; the digit brings the sum to a multiple of ten.
pub fn check_digit_1z(number: &str) -> Option<u8> {
    let b = number.as_bytes();
    if b.len() < 17 || !b[..17].iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let sum: u32 = b[2..17]
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let v = u32::from(char_value(c));
            if i % 2 == 0 { v } else { 2 * v }
        })
        .sum();
    Some(((10 - sum % 10) % 10) as u8)
}

impl TrackingNumber {
    /// Parses a tracking number in one of the UPS formats:
    ///
    /// * `1Z` + 6 shipper + 2 service + 7 package characters + check digit
    ///   (the check digit is verified);
    /// * `T` + 10 digits (freight "T-numbers");
    /// * 9 digits (freight PRO numbers and InfoNotice);
    /// * Mail Innovations: `MI` + 6 digits + 1 to 22 letters or digits, or 22
    ///   digits starting with 9.
    ///
    /// Spaces are dropped and letters upper-cased first.
    pub fn parse(raw: &str) -> Result<Self, TrackingNumberError> {
        if raw.len() > 64 {
            return Err(TrackingNumberError::Format);
        }
        let s: String = raw
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let b = s.as_bytes();
        let digits = |x: &[u8]| !x.is_empty() && x.iter().all(u8::is_ascii_digit);
        let alnum = |x: &[u8]| !x.is_empty() && x.iter().all(u8::is_ascii_alphanumeric);
        if s.starts_with("1Z") {
            if b.len() != 18 || !alnum(b) || !b[17].is_ascii_digit() {
                return Err(TrackingNumberError::Format);
            }
            let expected = check_digit_1z(&s).ok_or(TrackingNumberError::Format)?;
            if b[17] - b'0' != expected {
                return Err(TrackingNumberError::CheckDigit { expected });
            }
            return Ok(Self(s));
        }
        let ok = (b.len() == 11 && b[0] == b'T' && digits(&b[1..]))
            || (b.len() == 9 && digits(b))
            || (b.len() == 22 && b[0] == b'9' && digits(b))
            || (b.len() > 8
                && b.len() <= 30
                && s.starts_with("MI")
                && digits(&b[2..8])
                && alnum(&b[8..]));
        if ok {
            Ok(Self(s))
        } else {
            Err(TrackingNumberError::Format)
        }
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TrackingNumber {
    type Error = TrackingNumberError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TrackingNumber> for String {
    fn from(value: TrackingNumber) -> Self {
        value.0
    }
}

impl fmt::Display for TrackingNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shipment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Not seen by UPS yet.
    Pending,
    /// UPS has the label, not the package.
    LabelCreated,
    /// On its way.
    InTransit,
    /// On the truck for delivery today.
    OutForDelivery,
    /// Delivered (final).
    Delivered,
    /// Held up: damage, address problem, refused, delayed.
    Exception,
    /// Returned to the shipper (final).
    Returned,
}

impl ShipmentStatus {
    /// Every status.
    pub const ALL: &'static [ShipmentStatus] = &[
        ShipmentStatus::Pending,
        ShipmentStatus::LabelCreated,
        ShipmentStatus::InTransit,
        ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered,
        ShipmentStatus::Exception,
        ShipmentStatus::Returned,
    ];

    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Pending => "pending",
            ShipmentStatus::LabelCreated => "label_created",
            ShipmentStatus::InTransit => "in_transit",
            ShipmentStatus::OutForDelivery => "out_for_delivery",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Exception => "exception",
            ShipmentStatus::Returned => "returned",
        }
    }

    /// Parses a status's name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|x| x.as_str() == s)
    }

    /// Whether polling stops here.
    pub fn is_final(self) -> bool {
        matches!(self, ShipmentStatus::Delivered | ShipmentStatus::Returned)
    }

    /// The UPS Track API's activity `status.type`, mapped: `M`/`MV` label
    /// created (manifest), `P` picked up and `I` in transit, `O` out for
    /// delivery, `D` delivered, `X` exception, `RS` returned to shipper.
    /// `DO`/`DD` (delivered at origin/destination UPS Access Point) count as
    /// delivered. Anything else (`NA`, new codes) says nothing.
    pub fn from_ups_type(t: &str) -> Option<Self> {
        match t.trim().to_ascii_uppercase().as_str() {
            "M" | "MV" => Some(ShipmentStatus::LabelCreated),
            "P" | "I" => Some(ShipmentStatus::InTransit),
            "O" => Some(ShipmentStatus::OutForDelivery),
            "D" | "DO" | "DD" => Some(ShipmentStatus::Delivered),
            "X" => Some(ShipmentStatus::Exception),
            "RS" => Some(ShipmentStatus::Returned),
            _ => None,
        }
    }
}

impl fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// How long until a shipment in `status`, whose status last changed
/// `since_change` ago, is polled again; `None` once it is final.
///
/// Out for delivery: every 15 minutes. An exception: every 30 minutes.
/// Otherwise sooner when it changed recently, backing off as it stays the
/// same: 30 minutes within 2 hours of a change, hourly within a day, every 3
/// hours within 3 days, then every 6 hours. A shipment UPS has not seen yet
/// is asked about hourly.
pub fn poll_interval(status: ShipmentStatus, since_change: Duration) -> Option<Duration> {
    Some(match status {
        ShipmentStatus::Delivered | ShipmentStatus::Returned => return None,
        ShipmentStatus::OutForDelivery => 15 * MINUTE,
        ShipmentStatus::Exception => 30 * MINUTE,
        ShipmentStatus::Pending => HOUR,
        ShipmentStatus::LabelCreated | ShipmentStatus::InTransit => {
            if since_change < 2 * HOUR {
                30 * MINUTE
            } else if since_change < 24 * HOUR {
                HOUR
            } else if since_change < 72 * HOUR {
                3 * HOUR
            } else {
                6 * HOUR
            }
        }
    })
}

/// How long to wait after `failures` failed polls in a row: 5 minutes,
/// doubling, at most 6 hours.
pub fn failure_backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    (5 * MINUTE * 2u32.pow(exp)).min(6 * HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_z_numbers_are_checked_with_the_mod_ten_check_digit() {
        assert_eq!(
            TrackingNumber::parse("1Z999AA10123456784")
                .unwrap()
                .as_str(),
            "1Z999AA10123456784"
        );
        assert_eq!(
            TrackingNumber::parse("1z 999aa1 0123456784")
                .unwrap()
                .as_str(),
            "1Z999AA10123456784"
        );
        assert_eq!(
            TrackingNumber::parse("1Z999AA10123456785"),
            Err(TrackingNumberError::CheckDigit { expected: 4 })
        );
        for bad in [
            "1Z999AA1012345678",
            "1Z999AA101234567844",
            "1Z999AA1012345678X",
            "1Z999-A10123456784",
        ] {
            assert_eq!(TrackingNumber::parse(bad), Err(TrackingNumberError::Format));
        }
    }

    #[test]
    fn the_other_ups_formats_are_accepted() {
        for ok in [
            "T1234567890",
            "123456789",
            "MI123456ABC123",
            "9212345678901234567890",
        ] {
            assert!(TrackingNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "T123456789",
            "12345678",
            "MI12AB",
            "8212345678901234567890",
            "<script>",
            &"1".repeat(100),
        ] {
            assert!(TrackingNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_ups_status_type_maps() {
        let cases = [
            ("M", Some(ShipmentStatus::LabelCreated)),
            ("MV", Some(ShipmentStatus::LabelCreated)),
            ("P", Some(ShipmentStatus::InTransit)),
            ("I", Some(ShipmentStatus::InTransit)),
            ("O", Some(ShipmentStatus::OutForDelivery)),
            ("D", Some(ShipmentStatus::Delivered)),
            ("DO", Some(ShipmentStatus::Delivered)),
            ("DD", Some(ShipmentStatus::Delivered)),
            ("X", Some(ShipmentStatus::Exception)),
            ("RS", Some(ShipmentStatus::Returned)),
            ("NA", None),
            ("", None),
        ];
        for (t, want) in cases {
            assert_eq!(ShipmentStatus::from_ups_type(t), want, "{t}");
        }
    }

    #[test]
    fn intervals_shorten_after_changes_and_stop_when_final() {
        use ShipmentStatus as S;
        assert_eq!(poll_interval(S::Delivered, Duration::ZERO), None);
        assert_eq!(poll_interval(S::Returned, 100 * HOUR), None);
        assert_eq!(
            poll_interval(S::OutForDelivery, 50 * HOUR),
            Some(15 * MINUTE)
        );
        assert_eq!(poll_interval(S::InTransit, MINUTE), Some(30 * MINUTE));
        assert_eq!(poll_interval(S::InTransit, 5 * HOUR), Some(HOUR));
        assert_eq!(poll_interval(S::InTransit, 30 * HOUR), Some(3 * HOUR));
        assert_eq!(poll_interval(S::InTransit, 100 * HOUR), Some(6 * HOUR));
        assert_eq!(failure_backoff(1), 5 * MINUTE);
        assert_eq!(failure_backoff(2), 10 * MINUTE);
        assert_eq!(failure_backoff(30), 6 * HOUR);
    }
}
