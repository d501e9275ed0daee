//! `proxy.deny_destinations`: the addresses passthrough requests and opaque tunnels may not
//! reach, checked on the address actually connected to.
//!
//! Entries are CIDRs, bare IPs, and three words: `metadata` (cloud instance metadata:
//! 169.254.0.0/16, AWS's fd00:ec2::/32, Alibaba's 100.100.100.200), `private` (RFC 1918,
//! shared 100.64.0.0/10, unique-local fc00::/7, link-local) and `loopback` (127.0.0.0/8, ::1,
//! and the unspecified addresses, which reach this machine too). An IPv6 address that carries
//! an IPv4 one (mapped `::ffff:a.b.c.d`, or NAT64 `64:ff9b::/96`) is checked as that address too.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

const METADATA: &[&str] = &["169.254.0.0/16", "fd00:ec2::/32", "100.100.100.200/32"];
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];
const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a CIDR, an IP address, nor one of metadata, private, loopback")]
pub struct BadDestination(pub String);

/// The denied networks; empty denies nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    nets: Vec<IpNet>,
}

impl DenyList {
    /// Parses the entries of `deny_destinations`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, BadDestination> {
        let mut nets = Vec::new();
        for entry in entries {
            let word = match entry {
                "metadata" => Some(METADATA),
                "private" => Some(PRIVATE),
                "loopback" => Some(LOOPBACK),
                _ => None,
            };
            let texts: Vec<&str> = word.map_or_else(|| vec![entry], <[&str]>::to_vec);
            for text in texts {
                nets.push(net(text).ok_or_else(|| BadDestination(entry.to_string()))?);
            }
        }
        Ok(DenyList { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether connecting to `ip` is denied.
    pub fn denies(&self, ip: IpAddr) -> bool {
        let hit = |ip: IpAddr| self.nets.iter().any(|n| n.contains(&ip));
        hit(ip) || embedded_v4(ip).is_some_and(hit)
    }

    /// Whether `host` (a normalised host) is an IP literal this list denies; names are
    /// checked when they are resolved.
    pub fn denies_literal(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok_and(|ip| self.denies(ip))
    }
}

fn net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The IPv4 address inside an IPv4-mapped or NAT64 (64:ff9b::/96) IPv6 address.
fn embedded_v4(ip: IpAddr) -> Option<IpAddr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(IpAddr::V4(v4));
    }
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    let s = v6.segments();
    (s[..6] == nat64.segments()[..6]).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        IpAddr::from([a, b, c, d])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn words_cover_their_networks() {
        let metadata = DenyList::parse(["metadata"]).unwrap();
        assert!(metadata.denies(ip("169.254.169.254")));
        assert!(metadata.denies(ip("fd00:ec2::254")));
        assert!(metadata.denies(ip("100.100.100.200")));
        assert!(!metadata.denies(ip("10.0.0.1")));
        let private = DenyList::parse(["private"]).unwrap();
        for denied in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
            "fe80::1",
        ] {
            assert!(private.denies(ip(denied)), "{denied}");
        }
        for allowed in ["172.32.0.1", "8.8.8.8", "127.0.0.1", "2001:db8::1"] {
            assert!(!private.denies(ip(allowed)), "{allowed}");
        }
        let loopback = DenyList::parse(["loopback"]).unwrap();
        for denied in ["127.0.0.1", "127.9.9.9", "::1", "0.0.0.0", "::"] {
            assert!(loopback.denies(ip(denied)), "{denied}");
        }
    }

    #[test]
    fn cidrs_and_bare_ips_parse_and_bad_entries_are_named() {
        let list = DenyList::parse(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
        assert!(list.denies(ip("203.0.113.9")) && list.denies(ip("2001:db8::5")));
        assert!(list.denies(ip("198.51.100.7")) && !list.denies(ip("198.51.100.8")));
        // Host bits set are the network they name, as most tools read them.
        assert!(DenyList::parse(["10.1.2.3/8"])
            .unwrap()
            .denies(ip("10.9.9.9")));
        for bad in ["meta", "10.0.0.0/33", "example.com", ""] {
            assert_eq!(DenyList::parse([bad]), Err(BadDestination(bad.into())));
        }
        assert!(DenyList::default().is_empty() && !list.denies(ip("127.0.0.1")));
    }

    #[test]
    fn ipv4_inside_ipv6_is_checked_as_ipv4() {
        let list = DenyList::parse(["metadata", "loopback"]).unwrap();
        assert!(list.denies(ip("::ffff:169.254.169.254")));
        assert!(list.denies(ip("64:ff9b::a9fe:a9fe")));
        assert!(list.denies(ip("::ffff:127.0.0.1")));
        assert!(!list.denies(ip("64:ff9b::808:808")));
        assert!(list.denies_literal("[::ffff:169.254.169.254]"));
        assert!(
            list.denies_literal("169.254.169.254") && !list.denies_literal("metadata.internal")
        );
    }
}
