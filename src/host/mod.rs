//! Host names as tokenproxy compares them: normalised, validated, matched against patterns.
//!
//! Which upstream gets a token is decided here, so the rules are strict. A host is lowercased
//! and loses one trailing dot; IP literals are put in canonical form; anything that a resolver
//! might read differently from us (percent-encoding, user info, zone ids, odd IPv4 spellings
//! such as `0x7f.1` or `2130706433`) is refused rather than guessed at. A pattern without a
//! port matches the default ports (80 and 443), so an app can call `http://api` while
//! tokenproxy speaks TLS to `https://api`; `*.example.com` matches whole labels only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod deny;
mod path;
mod pattern;

pub use deny::{BadDestination, DenyList};
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

/// What each byte may be in a host name: a letter (upper or lower case), a digit, `-` or `_`,
/// a dot; anything else is refused.
const LETTER: u8 = 1;
const DIGIT: u8 = 2;
const OTHER_OK: u8 = 3;
const DOT: u8 = 4;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            DIGIT
        } else if c == b'-' || c == b'_' {
            OTHER_OK
        } else if c == b'.' {
            DOT
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Normalises a host (no port): lowercase, one trailing dot removed, IPs canonical.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| match raw.contains('@') {
            true => HostError::UserInfo,
            false => HostError::BadIpv6(raw.to_string()),
        })?;
        return Ok(format!("[{ip}]"));
    }
    // One pass over the bytes by a class table (this runs for every forward request): check
    // the characters and the dots, note where the last label starts and whether the name
    // could be a dotted-decimal IPv4 address; then lowercase the whole name at once.
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    let bad = || {
        if raw.contains('@') {
            HostError::UserInfo
        } else {
            HostError::BadChars(raw.to_string())
        }
    };
    let mut after_dot = true; // a leading dot is refused like an empty label
    let mut last_label = 0;
    let mut dotted_decimal = true;
    for (i, b) in trimmed.bytes().enumerate() {
        match CLASS[usize::from(b)] {
            DOT if after_dot => return Err(bad()),
            DOT => {
                after_dot = true;
                last_label = i + 1;
            }
            0 => return Err(bad()),
            class => {
                after_dot = false;
                dotted_decimal &= class == DIGIT;
            }
        }
    }
    if after_dot {
        return Err(bad()); // empty, or an empty last label
    }
    let host = trimmed.to_ascii_lowercase();
    if dotted_decimal {
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(ip.to_string());
        }
    }
    // A last label that is all digits (or 0x...) is something a resolver may read as an IPv4
    // address in a non-canonical spelling; we refuse it instead of disagreeing with it.
    let last = &host[last_label..];
    if last.bytes().all(|c| c.is_ascii_digit()) || last.starts_with("0x") {
        return Err(HostError::AmbiguousNumeric(raw.to_string()));
    }
    Ok(host)
}

/// Splits `host[:port]` (IPv6 in brackets) and normalises the host; `default_port` fills in.
pub fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), HostError> {
    if authority.contains('@') {
        return Err(HostError::UserInfo);
    }
    let (host, port) = split_port(authority)?;
    Ok((normalize_host(host)?, port.unwrap_or(default_port)))
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
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((host, Some(parse_port(p).ok_or_else(bad_port)?))),
        None => Ok((authority, None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
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
    fn normalises_case_trailing_dot_and_ips() {
        assert_eq!(
            normalize_host("API.Example.COM.").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_host("[0:0::1]").unwrap(), "[::1]");
        assert_eq!(normalize_host("127.0.0.1").unwrap(), "127.0.0.1");
    }

    #[test]
    fn user_info_is_named_whatever_else_is_wrong() {
        // The '@' is looked for only once a byte is refused: the error must still say why.
        for raw in ["user@host", "a..b@c", ".@", "sp ace@x", "[::1@x]", "1.2@"] {
            assert_eq!(normalize_host(raw), Err(HostError::UserInfo), "{raw:?}");
        }
        assert_eq!(
            normalize_host("sp ace"),
            Err(HostError::BadChars("sp ace".into()))
        );
    }

    #[test]
    fn refuses_ambiguous_and_hostile_hosts() {
        for bad in [
            "",
            "user@host",
            "ex%61mple.com",
            "0x7f.1",
            "127.1",
            "2130706433",
            "0177.0.0.1",
            "[fe80::1%25eth0]",
            "a..b",
            "sp ace",
            ".lead",
            "host\r\n",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?} should be refused");
        }
    }

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
