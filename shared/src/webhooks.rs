//! Outgoing webhooks: organisations' own HTTPS endpoints that hear about their
//! notifications' delivery.
//!
//! * [`WebhookEvent`]: the events an endpoint can subscribe to.
//! * Signing: every delivery is a POST carrying `Webhook-Id`,
//!   `Webhook-Timestamp` (unix seconds) and
//!   `Webhook-Signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   keyed with the endpoint's secret ([`sign`]). [`verify`] is the receiver's
//!   rule, as a reference implementation.
//! * The address guard: an endpoint URL must be `https`, carry no
//!   credentials, and its host must never be (or resolve to) a loopback,
//!   private, link-local, CGNAT, unspecified, multicast, broadcast,
//!   documentation or cloud metadata address ([`check_url`],
//!   [`forbidden_reason`], [`resolve_allowed`]). It is checked when an
//!   endpoint is registered and again at connect time, so DNS rebinding
//!   cannot reach an internal address.
//! * [`describe_call_error`]: what a failed call to such a URL is recorded
//!   as.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// What a call that failed before any answer is recorded as: one of
/// `phrases` (no answer in time, cannot connect, any other failure) as
/// `timed_out` and `connect` say, followed by the innermost cause of `e`
/// (refused, forbidden address, TLS), which names no more than the URL's
/// own host.
pub fn describe_call_error(
    e: &dyn std::error::Error,
    timed_out: bool,
    connect: bool,
    phrases: [&str; 3],
) -> String {
    let [timeout, no_connection, failed] = phrases;
    let what = if timed_out {
        timeout
    } else if connect {
        no_connection
    } else {
        failed
    };
    let mut cause = e.source();
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// How far a receiver lets a timestamp stray from its clock, in seconds.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// What an endpoint can hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    /// The provider accepted the notification.
    Sent,
    /// The provider reported it delivered.
    Delivered,
    /// Given up: a permanent error, or out of attempts.
    Failed,
    /// The provider reported it bounced.
    Bounced,
    /// The recipient read it.
    Read,
    /// Not sent: the subscriber's preferences rule it out.
    Suppressed,
    /// A shipment's tracking status changed.
    ShipmentUpdated,
    /// A send quota reached 80% of its period's allowance (once per period).
    QuotaWarning,
    /// A send was first refused by a used-up quota (once per period).
    QuotaExceeded,
}

impl WebhookEvent {
    /// The event a provider's report of `status` raises, if any.
    pub fn for_report(status: crate::domain::NotificationStatus) -> Option<Self> {
        use crate::domain::NotificationStatus as S;
        match status {
            S::Delivered => Some(Self::Delivered),
            S::Read => Some(Self::Read),
            S::Bounced => Some(Self::Bounced),
            S::Failed => Some(Self::Failed),
            _ => None,
        }
    }

    /// Every event, in a stable order.
    pub const ALL: &'static [WebhookEvent] = &[
        WebhookEvent::Sent,
        WebhookEvent::Delivered,
        WebhookEvent::Failed,
        WebhookEvent::Bounced,
        WebhookEvent::Read,
        WebhookEvent::Suppressed,
        WebhookEvent::ShipmentUpdated,
        WebhookEvent::QuotaWarning,
        WebhookEvent::QuotaExceeded,
    ];

    /// The event's name, as subscribed to and sent in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Sent => "notification.sent",
            WebhookEvent::Delivered => "notification.delivered",
            WebhookEvent::Failed => "notification.failed",
            WebhookEvent::Bounced => "notification.bounced",
            WebhookEvent::Read => "notification.read",
            WebhookEvent::Suppressed => "notification.suppressed",
            WebhookEvent::ShipmentUpdated => "shipment.updated",
            WebhookEvent::QuotaWarning => "quota.warning",
            WebhookEvent::QuotaExceeded => "quota.exceeded",
        }
    }

    /// The event named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.as_str() == s)
    }
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The associated data an endpoint's secret is sealed with.
pub fn aad(
    tenant_id: crate::domain::TenantId,
    endpoint_id: crate::domain::WebhookEndpointId,
) -> Vec<u8> {
    format!("tenant:{tenant_id}/webhook:{endpoint_id}").into_bytes()
}

/// The HMAC key of a secret: the bytes its base64 part decodes to (the
/// secret's own bytes if it is not in the `whsec_` form).
fn key_of(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn mac(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Webhook-Signature` value of a delivery: `v1,` and the base64 of the
/// HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, id, timestamp, body).finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// Why a received webhook was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `Webhook-Timestamp` is not whole unix seconds.
    #[error("the timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is more than five minutes from now.
    #[error("the timestamp is more than five minutes from now")]
    Expired,
    /// No `v1` signature matches.
    #[error("no signature matches")]
    Mismatch,
}

/// The receiver's check of a delivery: recomputes the signature over the raw
/// `body` with `secret`, compares it in constant time with each `v1,…` entry
/// of `signature` (space separated), and rejects a `timestamp` more than five
/// minutes from `now`. Receivers should also remember the ids they accepted
/// (for longer than the tolerance) and drop a repeated id as a replay.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now.timestamp() - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Expired);
    }
    for entry in signature.split(' ') {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if mac(secret, id, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// Why an address may not be reached, or `None` when it may. With
/// `allow_loopback` (local development and tests only) loopback and private
/// addresses are allowed; cloud metadata addresses never are. An
/// IPv4-mapped, IPv4-compatible or NAT64 IPv6 address is judged by the IPv4
/// address inside it.
pub fn forbidden_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => forbidden_v6(v6, allow_loopback),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    if ip == METADATA || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some("a cloud metadata address");
    }
    let private: &[([u8; 4], u32, &str)] = &[
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 168, 0, 0], 16, "a private address"),
    ];
    for (net, prefix, why) in private {
        if in_v4(ip, *net, *prefix) {
            return (!allow_loopback).then_some(*why);
        }
    }
    let never: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "an unspecified address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([100, 64, 0, 0], 10, "a shared (CGNAT) address"),
        ([192, 0, 0, 0], 24, "a protocol assignment address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    never
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    let segments = ip.segments();
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if segments[..5] == [0; 5] && (segments[5] == 0xffff || segments[5] == 0) {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d), allow_loopback);
    }
    // 64:ff9b::a.b.c.d (NAT64) reaches the IPv4 address inside.
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
    {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d), allow_loopback).or(Some("a NAT64 address"));
    }
    // 2002:a.b.c.d::/48 (6to4) reaches the IPv4 address inside.
    if segments[0] == 0x2002 {
        let [a, b] = segments[1].to_be_bytes();
        let [c, d] = segments[2].to_be_bytes();
        if let Some(why) = forbidden_v4(Ipv4Addr::new(a, b, c, d), allow_loopback) {
            return Some(why);
        }
    }
    if in_v6(ip, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
        return (!allow_loopback).then_some("a private (unique local) address");
    }
    let never: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
            10,
            "a link-local address",
        ),
        (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            10,
            "a site-local address",
        ),
        (
            Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
            8,
            "a multicast address",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "a documentation address",
        ),
        (
            Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
            20,
            "a documentation address",
        ),
        (
            Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "a discard-only address",
        ),
    ];
    never
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

/// Checks an endpoint URL's form: at most [`MAX_URL_LEN`] characters,
/// `https` (`http` too with `allow_loopback`), a host, no user name or
/// password, and an IP-literal host that may be reached. `localhost` names
/// count as loopback. Returns the parsed URL, or why it was refused.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<url::Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute https URL".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback => {}
        _ => return Err("must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    match url.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(ip)) => {
            if let Some(why) = forbidden_reason(IpAddr::V4(ip), allow_loopback) {
                return Err(format!("must not point at {why}"));
            }
        }
        Some(url::Host::Ipv6(ip)) => {
            if let Some(why) = forbidden_reason(IpAddr::V6(ip), allow_loopback) {
                return Err(format!("must not point at {why}"));
            }
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !allow_loopback && (name == "localhost" || name.ends_with(".localhost")) {
                return Err("must not point at a loopback address".into());
            }
        }
    }
    Ok(url)
}

/// Resolves `host` and keeps the addresses that may be reached, with `port`.
/// Fails when the name does not resolve; answers an empty list when every
/// address is forbidden.
pub async fn resolve_allowed(
    host: &str,
    port: u16,
    allow_loopback: bool,
) -> std::io::Result<(Vec<SocketAddr>, Option<&'static str>)> {
    let mut allowed = Vec::new();
    let mut refused = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match forbidden_reason(addr.ip(), allow_loopback) {
            None => allowed.push(addr),
            Some(why) => refused = Some(why),
        }
    }
    Ok((allowed, refused))
}

/// The registration check: [`check_url`], then every address the host
/// resolves to must be allowed.
pub async fn check_endpoint(raw: &str, allow_loopback: bool) -> Result<url::Url, String> {
    let url = check_url(raw, allow_loopback)?;
    if let Some(url::Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let (_, refused) = resolve_allowed(name, port, allow_loopback)
            .await
            .map_err(|_| "the host name does not resolve".to_owned())?;
        if let Some(why) = refused {
            return Err(format!("the host resolves to {why}"));
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        forbidden_reason(s.parse().unwrap(), false).is_some()
    }

    #[test]
    fn every_forbidden_range_is_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.5",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::1",
            "2002:7f00:1::1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.253.255.255",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn the_loopback_flag_allows_loopback_and_private_but_never_metadata() {
        let allowed = |s: &str| forbidden_reason(s.parse().unwrap(), true).is_none();
        for ip in [
            "127.0.0.1",
            "10.0.0.5",
            "192.168.1.1",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(allowed(ip), "{ip} is allowed with the flag");
        }
        for ip in [
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!allowed(ip), "{ip} stays refused with the flag");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_length_credentials_and_host() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        for bad in [
            "http://hooks.example.com/in",
            "ftp://hooks.example.com/in",
            "https://user:pw@hooks.example.com/in",
            "https://user@hooks.example.com/in",
            "https://127.0.0.1/in",
            "https://10.0.0.5/in",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:127.0.0.1]/in",
            "https://[fd00:ec2::254]/in",
            "https://0x7f.1/in",
            "https://localhost/in",
            "https://api.localhost./in",
            "not a url",
            "/relative",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} must be refused");
        }
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, false).unwrap_err().contains("2048"));
        assert!(check_url("http://127.0.0.1:9000/in", true).is_ok());
        assert!(check_url("http://169.254.169.254/", true).is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let err = check_endpoint("https://localhost./in", false)
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // The resolution step alone refuses it too, whatever the name.
        let (allowed, refused) = resolve_allowed("localhost", 443, false).await.unwrap();
        assert!(allowed.is_empty());
        assert_eq!(refused, Some("a loopback address"));
        assert!(check_endpoint("http://localhost:1/in", true).await.is_ok());
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn a_signed_delivery_verifies() {
        let body = br#"{"id":"d1","type":"notification.sent"}"#;
        let sig = sign(SECRET, "d1", 1_700_000_000, body);
        assert!(sig.starts_with("v1,"));
        assert_eq!(
            verify(SECRET, "d1", "1700000000", body, &sig, now()),
            Ok(())
        );
        // Several signatures (during a secret rotation): any one matching will do.
        let both = format!("v1,AAAA {sig}");
        assert_eq!(
            verify(SECRET, "d1", "1700000000", body, &both, now()),
            Ok(())
        );
    }

    #[test]
    fn the_signature_matches_an_independent_computation() {
        // HMAC-SHA256 keyed with the decoded secret over "id.ts.body".
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        m.update(b"msg_1.1700000000.{}");
        let expected = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        assert_eq!(
            sign(SECRET, "msg_1", 1_700_000_000, b"{}"),
            format!("v1,{expected}")
        );
    }

    #[test]
    fn altered_deliveries_do_not_verify() {
        let body = b"{\"a\":1}";
        let sig = sign(SECRET, "d1", 1_700_000_000, body);
        let check = |secret: &str, id: &str, ts: &str, body: &[u8], sig: &str| {
            verify(secret, id, ts, body, sig, now())
        };
        assert_eq!(
            check(SECRET, "d1", "1700000000", b"{\"a\":2}", &sig),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, "d2", "1700000000", body, &sig),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, "d1", "1700000001", body, &sig),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&generate_secret(), "d1", "1700000000", body, &sig),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, "d1", "1700000000", body, "v2,abc"),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, "d1", "1700000000", body, "v1,!!!"),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, "d1", "soon", body, &sig),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn timestamps_more_than_five_minutes_away_are_refused() {
        let body = b"{}";
        for (ts, ok) in [
            (1_700_000_000 - 300, true),
            (1_700_000_000 + 300, true),
            (1_700_000_000 - 301, false),
            (1_700_000_000 + 301, false),
        ] {
            let sig = sign(SECRET, "d1", ts, body);
            let result = verify(SECRET, "d1", &ts.to_string(), body, &sig, now());
            assert_eq!(result.is_ok(), ok, "{ts}: {result:?}");
            if !ok {
                assert_eq!(result, Err(VerifyError::Expired));
            }
        }
    }

    #[test]
    fn secrets_are_fresh_and_events_round_trip() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with(SECRET_PREFIX) && a != b);
        assert_eq!(key_of(&a).len(), 32);
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(*e));
        }
        assert_eq!(WebhookEvent::parse("notification.opened"), None);
    }
}
