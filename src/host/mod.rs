//! Host names as tokenproxy compares them: normalised, validated, matched against patterns.
//!
//! Which upstream gets a token is decided here, so the rules are strict. A host is lowercased
//! and loses one trailing dot; IP literals are put in canonical form; anything that a resolver
//! might read differently from us (percent-encoding, user info, zone ids, odd IPv4 spellings
//! such as `0x7f.1` or `2130706433`) is refused rather than guessed at. A pattern without a
//! port matches the default ports (80 and 443), so an app can call `http://api` while
//! tokenproxy speaks TLS to `https://api`; `*.example.com` matches whole labels only.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

mod deny;
mod name;
mod path;
mod pattern;

pub use deny::{BadDestination, DenyList};
pub use name::{normal_host, normalize_host};
pub use path::{lenient, strict, under, PathError};
pub use pattern::HostPattern;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("user info (user:pass@) is not allowed in a target")]
    UserInfo,
    #[error("host {0:?} has characters that are not allowed in a host name")]
    BadChars(String),
    #[error("host {0:?} is an ambiguous numeric address")]
    AmbiguousNumeric(String),
    #[error("bad port in {0:?}")]
    BadPort(String),
    #[error("bad IPv6 literal {0:?}")]
    BadIpv6(String),
    #[error("bad host pattern {0:?}: a wildcard may only be a leading \"*.\" label")]
    BadPattern(String),
    #[error("bad path in pattern {0:?}: write a path prefix as /segment/.../* (no empty, dot or ; segments, no %-encoding that need not be there)")]
    BadPathPattern(String),
}

/// Splits `host[:port]` (IPv6 in brackets) and normalises the host; `default_port` fills in.
/// User info (`user:pass@host`) is refused, and named as the reason whatever else is wrong.
pub fn split_authority(
    authority: &str,
    default_port: u16,
) -> Result<(Cow<'_, str>, u16), HostError> {
    // No host or port that passes has an '@' in it, so it is looked for only on failure.
    let split = split_port(authority).and_then(|(host, port)| Ok((normal_host(host)?, port)));
    match split {
        Ok((host, port)) => Ok((host, port.unwrap_or(default_port))),
        Err(_) if authority.contains('@') => Err(HostError::UserInfo),
        Err(e) => Err(e),
    }
}

/// `host` and `port` of `host[:port]` or `[v6][:port]`, as written (not normalised).
pub fn split_port(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    let bad_port = || HostError::BadPort(authority.to_string());
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| HostError::BadIpv6(authority.to_string()))?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => {
                let p = rest.strip_prefix(':').ok_or_else(bad_port)?;
                Ok((host, Some(parse_port(p).ok_or_else(bad_port)?)))
            }
        };
    }
    // A short string, scanned from its end (cheaper here than a memrchr).
    match authority.bytes().rposition(|b| b == b':') {
        Some(at) => {
            let port = parse_port(&authority[at + 1..]).ok_or_else(bad_port)?;
            Ok((&authority[..at], Some(port)))
        }
        None => Ok((authority, None)),
    }
}

/// A port: 1 to 65535 in decimal digits only (no sign, no spaces).
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut n = 0u32;
    for b in p.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).ok().filter(|&n| n != 0)
}

/// True for `https`, and for `http` to a loopback host: where a credential (a token request,
/// a runner's request token) may be sent.
pub fn credential_safe(scheme: &str, host: Option<&str>) -> bool {
    let loopback = || {
        host.and_then(|h| normalize_host(h).ok())
            .is_some_and(|h| is_loopback(&h))
    };
    scheme == "https" || (scheme == "http" && loopback())
}

/// True for `localhost` and loopback IP literals: the only plain-HTTP peers a token may reach
/// without `allow_plaintext`.
pub fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True if `ip` is an address of this machine: binding a socket to it succeeds only then. (A
/// host with `net.ipv4.ip_nonlocal_bind` set says yes to every address.)
pub fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The one rule for requests and upstream URLs that would loop back into tokenproxy.
///
/// Whether `host:port` reaches one of the listeners at `own`: a loopback name with the port of
/// any of them, the exact address of one, or a local address of this machine (by `is_local`)
/// with the port of one that listens on all addresses, such as a pod IP. Other names are not
/// resolved here.
pub fn targets_own_listener<'a>(
    own: impl IntoIterator<Item = &'a SocketAddr>,
    host: &str,
    port: u16,
    is_local: impl Fn(IpAddr) -> bool,
) -> bool {
    let mut on_port = own.into_iter().filter(|a| a.port() == port).peekable();
    if on_port.peek().is_none() {
        return false;
    }
    if is_loopback(host) {
        return true;
    }
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    // A connection to 0.0.0.0 or :: reaches this machine too.
    ip.is_unspecified()
        || on_port.any(|a| a.ip() == ip || (a.ip().is_unspecified() && is_local(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ports_and_rejects_bad_ones() {
        assert_eq!(
            split_authority("Api.Example.com:8443", 80).unwrap(),
            ("api.example.com".into(), 8443)
        );
        assert_eq!(split_authority("[::1]:9", 80).unwrap(), ("[::1]".into(), 9));
        assert_eq!(split_authority("host", 443).unwrap(), ("host".into(), 443));
        for bad in [
            "host:",
            "host:0",
            "host:99999",
            "host:+1",
            "u:p@host:80",
            "[::1]x",
        ] {
            assert!(split_authority(bad, 80).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("localhost") && is_loopback("127.0.0.9") && is_loopback("[::1]"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("localhost.evil.com"));
    }

    #[test]
    fn own_listeners_are_recognised_by_loopback_exact_and_local_addresses() {
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:4000".parse().unwrap(),
            "0.0.0.0:4001".parse().unwrap(),
            "10.1.2.3:4002".parse().unwrap(),
        ];
        // Pretend 10.1.2.3 and 10.9.9.9 are this machine's, 10.0.0.1 is not.
        let local =
            |ip: IpAddr| ip.to_string().starts_with("10.1.") || ip.to_string() == "10.9.9.9";
        let own_listener = |host: &str, port| targets_own_listener(&own, host, port, local);
        assert!(own_listener("localhost", 4000));
        assert!(own_listener("127.0.0.2", 4001));
        assert!(own_listener("[::1]", 4002));
        assert!(own_listener("0.0.0.0", 4000));
        assert!(
            own_listener("10.9.9.9", 4001),
            "a pod IP reaches a listener on 0.0.0.0"
        );
        assert!(own_listener("10.1.2.3", 4002), "the exact address");
        assert!(
            !own_listener("10.9.9.9", 4002),
            "another local address, specific listener"
        );
        assert!(!own_listener("10.0.0.1", 4001), "not this machine");
        assert!(!own_listener("127.0.0.1", 4003), "not our port");
        assert!(
            !own_listener("api.example.com", 4001),
            "names are not resolved here"
        );
    }

    #[test]
    fn local_addresses_are_found_by_binding() {
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        // TEST-NET-2 (RFC 5737) is assigned to no machine.
        assert!(!is_local_address("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        assert!(credential_safe("https", Some("idp.example.com")));
        assert!(credential_safe("http", Some("127.0.0.1")));
        assert!(credential_safe("http", Some("LOCALHOST")));
        assert!(credential_safe("http", Some("[::1]")));
        assert!(!credential_safe("http", Some("idp.example.com")));
        assert!(!credential_safe("ftp", Some("127.0.0.1")));
        assert!(!credential_safe("http", None));
    }
}
