//! Which delivery targets may be connected to (the SSRF guard).
//!
//! Internal ranges are refused unless an operator opens them with `--allow-targets`. The check
//! is applied to every address chime actually connects to (see `dispatch::http`), and to IP
//! literals when an endpoint is saved. Both read a URL's host through [`classify_host`], so
//! what is refused at save is exactly what would be refused at an attempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The ranges refused by default. IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4)
/// are unwrapped and checked as IPv4 instead, so `::ffff:127.0.0.1` is loopback too.
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",       // "this network", unspecified
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // carrier-grade NAT
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local (cloud metadata lives here)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation
    "203.0.113.0/24",  // documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, broadcast
    "::/128",          // unspecified
    "::1/128",         // loopback
    "64:ff9b:1::/48",  // NAT64 local-use prefix (RFC 8215): internal by definition
    "100::/64",        // discard
    "2001::/23",       // IETF protocol assignments (Teredo among them)
    "2001:db8::/32",   // documentation
    "fc00::/7",        // unique local
    "fe80::/10",       // link-local
    "fec0::/10",       // site-local (deprecated, still routable internally)
    "ff00::/8",        // multicast
];

/// The delivery target policy: internal ranges closed, except the ones explicitly allowed.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    blocked: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        let blocked = BLOCKED
            .iter()
            .map(|s| s.parse().expect("built-in CIDR parses"))
            .collect();
        Self { blocked, allowed }
    }

    /// Whether a URL host (as `http::Uri::host` gives it) may be delivered to: a name is left
    /// to the guarded resolver, an address in any form is checked here. The one check used
    /// when an endpoint is saved and before every attempt.
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        match classify_host(host) {
            Ok(Host::Name) => Ok(()),
            Ok(Host::Ip(ip)) if self.permits(ip) => Ok(()),
            Ok(Host::Ip(ip)) => Err(Refusal::Closed(ip)),
            Err(why) => Err(Refusal::Malformed(why)),
        }
    }

    /// Whether chime may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = unwrap_embedded_v4(ip);
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !self.blocked.iter().any(|net| net.contains(&ip))
    }
}

/// Why a host is not delivered to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is in a range closed to delivery; an operator can open it with --allow-targets")]
    Closed(IpAddr),
    #[error("{0}")]
    Malformed(String),
}

/// What a URL host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// An address, in whatever spelling the system resolver would also read as one.
    Ip(IpAddr),
    /// A DNS name, resolved (and checked) on each attempt.
    Name,
}

/// Reads a URL host the way the system resolver would: `[…]` must be a plain IPv6 address
/// (zone ids such as `%25lo` are refused: they only name link-local scopes), and a host made
/// only of numeric labels is an IPv4 address in `inet_aton`'s forms (`127.1`, `0x7f.1`,
/// `2130706433`, `0177.0.0.1`) or is refused, since getaddrinfo would read it as one or fail.
pub fn classify_host(host: &str) -> Result<Host, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(format!("host {host:?} is not a bracketed IPv6 address"));
        };
        if inner.contains('%') {
            return Err(format!(
                "host {host:?} has an IPv6 zone id; delivery targets must be global addresses"
            ));
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("host {host:?} is not an IPv6 address"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("url must have a host".to_owned());
    }
    if !name.split('.').all(numeric_label) {
        return Ok(Host::Name);
    }
    inet_aton(name)
        .map(|ip| Host::Ip(IpAddr::V4(ip)))
        .ok_or_else(|| format!("host {host:?} looks like an IPv4 address but is not a valid one"))
}

/// A label `inet_aton` would read as a number: decimal, octal (leading 0) or hex (0x).
fn numeric_label(label: &str) -> bool {
    match hex_digits(label) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `inet_aton`: one to four numbers, the last filling the remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u32> = s.split('.').map(aton_number).collect::<Option<_>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 || init.iter().any(|&p| p > 0xff) {
        return None;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if rest_bits < 32 && *last >> rest_bits != 0 {
        return None;
    }
    let high = init
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &p)| acc | p << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

/// The digits of a hexadecimal label (`0x…` or `0X…`).
fn hex_digits(label: &str) -> Option<&str> {
    label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
}

fn aton_number(label: &str) -> Option<u32> {
    if let Some(hex) = hex_digits(label) {
        return if hex.is_empty() {
            Some(0)
        } else {
            u32::from_str_radix(hex, 16).ok()
        };
    }
    if label.len() > 1 && label.starts_with('0') {
        return u32::from_str_radix(&label[1..], 8).ok();
    }
    label.parse().ok()
}

/// Parses a comma-separated CIDR list such as `127.0.0.0/8,::1/128`; a bare address means
/// that one address.
pub fn parse_cidr_list(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{p:?} is not a CIDR range (such as 127.0.0.0/8) or an address")
                })
        })
        .collect()
}

fn unwrap_embedded_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let seg = v6.segments();
    // IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 6145).
    if seg[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return IpAddr::V4(v4_from(seg[6], seg[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 destination.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(v4_from(seg[6], seg[7]));
    }
    // 6to4 2002::/16: bits 16..48 are the IPv4 address of the relay's site.
    if seg[0] == 0x2002 {
        return IpAddr::V4(v4_from(seg[1], seg[2]));
    }
    // IPv4-compatible ::a.b.c.d (deprecated but still parsed by some stacks).
    if seg[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return IpAddr::V4(v4_from(seg[6], seg[7]));
    }
    ip
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(s: &str) -> bool {
        !TargetPolicy::new(vec![]).permits(s.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_closed_by_default() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:abcd::8.8.8.8",
        ] {
            assert!(closed(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_open() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!closed(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn hosts_are_read_as_the_resolver_reads_them() {
        let ip = |h: &str| match classify_host(h) {
            Ok(Host::Ip(ip)) => ip.to_string(),
            other => panic!("{h}: {other:?}"),
        };
        assert_eq!(ip("127.0.0.1"), "127.0.0.1");
        assert_eq!(ip("127.0.0.1."), "127.0.0.1");
        assert_eq!(ip("127.1"), "127.0.0.1");
        assert_eq!(ip("0x7f.1"), "127.0.0.1");
        assert_eq!(ip("0177.0.0.1"), "127.0.0.1");
        assert_eq!(ip("2130706433"), "127.0.0.1");
        assert_eq!(ip("10.65535"), "10.0.255.255");
        assert_eq!(ip("[::1]"), "::1");
        assert_eq!(classify_host("example.com"), Ok(Host::Name));
        assert_eq!(classify_host("1.example"), Ok(Host::Name));
        assert_eq!(classify_host("0xg.1"), Ok(Host::Name));
        for bad in [
            "[fe80::1%25lo]",
            "[::1%lo]",
            "[::1",
            "[v1.x]",
            "[127.0.0.1]",
            "256.0.0.1",
            "1.2.3.4.5",
            "08.0.0.1",
            "4294967296",
            "1.16777216",
            ".",
        ] {
            assert!(classify_host(bad).is_err(), "{bad} should be malformed");
        }
        let policy = TargetPolicy::new(vec![]);
        assert!(matches!(
            policy.check_host("0x7f.1"),
            Err(Refusal::Closed(_))
        ));
        assert!(matches!(
            policy.check_host("[::1%lo]"),
            Err(Refusal::Malformed(_))
        ));
        assert!(policy.check_host("8.8.8.8").is_ok());
        assert!(policy.check_host("example.com").is_ok());
    }

    #[test]
    fn allow_list_opens_ranges() {
        let p = TargetPolicy::new(parse_cidr_list("127.0.0.0/8, ::1").unwrap());
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(p.permits("::ffff:127.0.0.2".parse().unwrap()));
        assert!(p.permits("::1".parse().unwrap()));
        assert!(!p.permits("10.0.0.1".parse().unwrap()));
        assert!(parse_cidr_list("nonsense").is_err());
        assert!(parse_cidr_list("").unwrap().is_empty());
    }
}
