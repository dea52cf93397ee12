//! Which delivery targets may be connected to (the SSRF guard).
//!
//! Internal ranges are refused unless an operator opens them with `--allow-targets`. The check
//! is applied to every address chime actually connects to (see `dispatch::http`), and to IP
//! literals when an endpoint is saved.

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

    /// Whether chime may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = unwrap_embedded_v4(ip);
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !self.blocked.iter().any(|net| net.contains(&ip))
    }
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
