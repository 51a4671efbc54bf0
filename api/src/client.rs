//! The client address of a request.
//!
//! Without trusted proxies (`TRUSTED_PROXIES` empty, the default) it is the
//! TCP peer, and `X-Forwarded-For` is ignored: anyone can write that header.
//! When the peer is a trusted proxy, `X-Forwarded-For` is read from the right
//! (the entry the nearest proxy appended) leftwards, skipping the trusted
//! hops: the first untrusted address is the client. Entries left of it were
//! written by the client itself and are never believed. If every entry is
//! trusted, the leftmost is the client; if there is no header, the proxy
//! itself is. An entry on the way that is not an address (garbage, `unknown`,
//! an IPv6 zone) makes the peer the client: nothing beyond it can be trusted.
//!
//! The edge middleware works it out once per request ([`resolve`]); the
//! request rate limiter, the sign-in throttle and security events all read
//! it with [`address`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use poem::{Request, http::header::HeaderName};
use shared::config::TrustedProxies;

/// The `X-Forwarded-For` header.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address the edge worked out, kept on the request.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(Option<IpAddr>);

/// Works out the client address of `req` behind `trusted` and keeps it on
/// the request for [`address`].
pub fn resolve(req: &mut Request, trusted: &TrustedProxies) {
    let peer = peer(req);
    let client = peer.map(|peer| {
        let values: Vec<&[u8]> = req
            .headers()
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        client_of(peer, &values, trusted)
    });
    req.set_data(ClientAddr(client));
}

/// The client address of `req`: what the edge worked out, else the TCP peer.
/// `None` only when the request came from no IP socket.
pub fn address(req: &Request) -> Option<IpAddr> {
    match req.data::<ClientAddr>() {
        Some(ClientAddr(client)) => *client,
        None => peer(req),
    }
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_canonical())
}

/// The client behind `peer`, given the `X-Forwarded-For` header values in
/// the order received.
pub fn client_of(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let mut leftmost = peer;
    for value in forwarded_for.iter().rev() {
        for entry in value.rsplit(|b| *b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return peer;
            };
            if !trusted.contains(ip) {
                return ip;
            }
            leftmost = ip;
        }
    }
    leftmost
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally with a
/// port (`203.0.113.9:5012`, `[2001:db8::1]:443`) or in brackets.
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = s.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    fn client(peer: &str, headers: &[&str], list: &str) -> IpAddr {
        let values: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        client_of(ip(peer), &values, &trusted(list))
    }

    const LB: &str = "10.0.0.0/8";

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client("10.0.0.5", &["198.51.100.7"], ""), ip("10.0.0.5"));
        assert_eq!(
            client("203.0.113.1", &["198.51.100.7"], LB),
            ip("203.0.113.1"),
            "a peer outside the trusted networks is the client, whatever it writes"
        );
    }

    #[test]
    fn a_trusted_peer_passes_on_the_address_it_appended() {
        assert_eq!(
            client("10.0.0.5", &["198.51.100.7"], LB),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_client_are_ignored() {
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4, 5.6.7.8, 198.51.100.7"], LB),
            ip("198.51.100.7")
        );
        // A client claiming to be a trusted proxy does not move the walk
        // past its own address.
        assert_eq!(
            client("10.0.0.5", &["10.9.9.9, 198.51.100.7"], LB),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        assert_eq!(
            client(
                "10.0.0.5",
                &["1.2.3.4, 198.51.100.7, 10.1.1.1, 10.2.2.2"],
                LB
            ),
            ip("198.51.100.7")
        );
        // Several headers are one list, in the order received.
        assert_eq!(
            client("10.0.0.5", &["1.2.3.4", "198.51.100.7", "10.2.2.2"], LB),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn all_trusted_means_the_leftmost() {
        assert_eq!(
            client("10.0.0.5", &["10.3.3.3, 10.2.2.2"], LB),
            ip("10.3.3.3")
        );
        assert_eq!(client("10.0.0.5", &[], LB), ip("10.0.0.5"), "no header");
    }

    #[test]
    fn a_malformed_entry_on_the_way_falls_back_to_the_peer() {
        for header in [
            "garbage",
            "unknown",
            "",
            " , ",
            "198.51.100.7,",
            "198.51.100.7, 10.1.1.1,,",
            "198.51.100.7 10.1.1.1",
            "198.51.100.300",
            "fe80::1%eth0",
            "[2001:db8::1",
            "2001:db8::1]:80",
            "198.51.100.7:99999",
        ] {
            assert_eq!(
                client("10.0.0.5", &[header], LB),
                ip("10.0.0.5"),
                "{header:?}"
            );
        }
        let long = format!("{}1", "0".repeat(80));
        assert_eq!(client("10.0.0.5", &[&long], LB), ip("10.0.0.5"));
        let values: Vec<&[u8]> = vec![b"198.51.100.\xff"];
        assert_eq!(
            client_of(ip("10.0.0.5"), &values, &trusted(LB)),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn a_malformed_entry_left_of_the_client_is_never_read() {
        assert_eq!(
            client("10.0.0.5", &["garbage, 198.51.100.7"], LB),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv6_and_ports() {
        let list = "10.0.0.0/8, fd00::/8";
        assert_eq!(client("fd00::1", &["2001:db8::7"], list), ip("2001:db8::7"));
        assert_eq!(
            client("fd00::1", &["[2001:db8::7]:443"], list),
            ip("2001:db8::7")
        );
        assert_eq!(
            client("fd00::1", &["[2001:db8::7]"], list),
            ip("2001:db8::7")
        );
        assert_eq!(
            client("10.0.0.5", &["198.51.100.7:5012, [fd00::2]:80"], list),
            ip("198.51.100.7")
        );
        // IPv4 peers and entries seen as IPv4-mapped IPv6 are IPv4.
        assert_eq!(
            client("::ffff:10.0.0.5", &["::ffff:198.51.100.7"], list),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("::ffff:203.0.113.1", &["198.51.100.7"], ""),
            ip("203.0.113.1")
        );
    }
}
