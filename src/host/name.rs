//! The host-name normaliser: what every forward request's target and every `match` pattern
//! goes through before a comparison. Lowercase, one trailing dot removed, IPv6 in canonical
//! form; an IPv4 literal only in its canonical dotted-decimal spelling, and any other all-digit
//! or `0x` last label refused as something a resolver might read as an address.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use super::HostError;

/// What each byte may be in a host name, as bits: a letter (upper or lower case), a digit,
/// `-` or `_` (`DASH`), a dot; a byte without `ALLOWED` is refused.
const ALLOWED: u8 = 1;
const LETTER: u8 = 2;
const UPPER: u8 = 4;
const DIGIT: u8 = 8;
const DOT: u8 = 16;
const DASH: u8 = 32;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_uppercase() {
            ALLOWED | LETTER | UPPER
        } else if c.is_ascii_lowercase() {
            ALLOWED | LETTER
        } else if c.is_ascii_digit() {
            ALLOWED | DIGIT
        } else if c == b'-' || c == b'_' {
            ALLOWED | DASH
        } else if c == b'.' {
            ALLOWED | DOT
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Normalises a host (no port): lowercase, one trailing dot removed, IPs canonical.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    normal_host(raw).map(Cow::into_owned)
}

/// `normalize_host` without a copy when `raw` is already in normal form, the usual case of a
/// request's target (this runs for every forward request).
pub fn normal_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| match raw.contains('@') {
            true => HostError::UserInfo,
            false => HostError::BadIpv6(raw.to_string()),
        })?;
        return Ok(Cow::Owned(format!("[{ip}]")));
    }
    // One branch-free pass over the bytes by a class table (this runs for every forward
    // request): which classes occur (`any`), whether every byte is allowed (`all`), and
    // whether two dots touch; then lowercase only if there was an upper-case letter.
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    let bad = || {
        if raw.contains('@') {
            HostError::UserInfo
        } else {
            HostError::BadChars(raw.to_string())
        }
    };
    let (mut any, mut all, mut empty_label) = (0u8, ALLOWED, 0u8);
    let mut previous = DOT; // a leading dot is refused like an empty label
    for b in trimmed.bytes() {
        let class = CLASS[usize::from(b)];
        any |= class;
        all &= class;
        empty_label |= previous & class & DOT;
        previous = class;
    }
    // Not allowed, empty, or an empty first, middle or last label.
    if all == 0 || empty_label != 0 || previous & DOT != 0 {
        return Err(bad());
    }
    if any & (LETTER | DASH) == 0 && canonical_ipv4(trimmed.as_bytes()) {
        return Ok(Cow::Borrowed(trimmed));
    }
    // A last label that is all digits (or 0x...) is something a resolver may read as an IPv4
    // address in a non-canonical spelling; we refuse it instead of disagreeing with it.
    let last = match trimmed.bytes().rposition(|b| b == b'.') {
        Some(dot) => &trimmed[dot + 1..],
        None => trimmed,
    };
    let hex = last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
    if last.bytes().all(|c| c.is_ascii_digit()) || hex {
        return Err(HostError::AmbiguousNumeric(raw.to_string()));
    }
    Ok(match any & UPPER != 0 {
        true => Cow::Owned(trimmed.to_ascii_lowercase()),
        false => Cow::Borrowed(trimmed),
    })
}

/// Whether `s` is an IPv4 address in its one canonical spelling: four decimal octets up to 255
/// without leading zeros (what `Ipv4Addr`'s parser accepts and its `Display` writes; the
/// property tests hold the two to it). Any other all-digit name is refused as ambiguous.
fn canonical_ipv4(s: &[u8]) -> bool {
    let mut octets = 0;
    let (mut value, mut digits, mut leading_zero) = (0u16, 0, false);
    for &b in s.iter().chain([b'.'].iter()) {
        if b == b'.' {
            if digits == 0 || value > 255 || (leading_zero && digits > 1) {
                return false;
            }
            octets += 1;
            (value, digits) = (0, 0);
        } else if b.is_ascii_digit() && digits < 3 {
            if digits == 0 {
                leading_zero = b == b'0';
            }
            value = value * 10 + u16::from(b - b'0');
            digits += 1;
        } else {
            return false;
        }
    }
    octets == 4
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
        for ip in ["0.0.0.0", "255.255.255.255", "10.200.3.49", "1.2.3.4."] {
            assert_eq!(
                normalize_host(ip).unwrap(),
                ip.trim_end_matches('.'),
                "{ip}"
            );
        }
    }

    #[test]
    fn a_name_already_in_normal_form_is_not_copied() {
        for borrowed in ["api.example.com", "api.example.com.", "127.0.0.1", "a_b-c"] {
            assert!(
                matches!(normal_host(borrowed), Ok(Cow::Borrowed(_))),
                "{borrowed}"
            );
        }
        assert!(
            matches!(normal_host("Api.example.com"), Ok(Cow::Owned(h)) if h == "api.example.com")
        );
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
            "256.0.0.1",
            "1.2.3.300",
            "1.2.3.4.5",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.00",
            "1.2.3.1000",
            "[fe80::1%25eth0]",
            "a..b",
            "sp ace",
            ".lead",
            "host\r\n",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
