//! Header rewriting: hop-by-hop removal and token injection.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1), and any header the sender names in `Connection`,
//! belong to one connection and are removed before a request or response crosses the proxy.
//! A few names are never removed that way, because removing them would break framing or let
//! the app strip the token (`Connection: Authorization`). `Proxy-Authorization` is never
//! forwarded. The injected value is marked sensitive so hyper's debug output masks it.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;
use crate::config::ExistingAuthorization;

const HOP_BY_HOP_COUNT: usize = 9;
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Names `Connection` may not remove: framing, routing and the token are ours to decide.
static PROTECTED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
];

/// Removes hop-by-hop headers and those listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// [`strip_hop_by_hop`] for a request, keeping `TE: trailers`: it says the client accepts
/// trailers (gRPC needs it), which holds end to end. Returns whether it was kept.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap) -> bool {
    strip(headers, true)
}

fn strip(headers: &mut HeaderMap, keep_te_trailers: bool) -> bool {
    // One pass over the headers finds which hop-by-hop ones are there, so only those are
    // hashed for removal, and whether a `Connection` header names any other. Most messages
    // carry none, or only `Connection: keep-alive`, which names nothing to remove.
    let mut present = [false; HOP_BY_HOP_COUNT];
    let mut names_others = false;
    for (name, value) in headers.iter() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
            names_others |= i == 0 && !options_only(value);
        }
    }
    if !present.contains(&true) {
        return false;
    }
    let trailers = keep_te_trailers && present[TE_INDEX] && accepts_trailers(headers);
    if names_others {
        remove_connection_named(headers);
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    trailers
}

/// `keep-alive` and `close`, by far the most common `Connection` values, are options that
/// name no header.
fn options_only(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

const TE_INDEX: usize = 5;

fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let coding = t.split(';').next().unwrap_or("");
            coding.trim().eq_ignore_ascii_case("trailers")
        })
}

/// The position of `name` in [`HOP_BY_HOP`]. A match on the (lowercase) name is a length
/// check and at most one comparison, where comparing with each entry in turn is nine.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "trailer" => Some(6),
        "transfer-encoding" => Some(7),
        "upgrade" => Some(8),
        _ => None,
    }
}

/// Removes the headers a `Connection` header names.
fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter(|v| !options_only(v))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        // Hop-by-hop names are removed by the caller anyway.
        .filter(|name| hop_by_hop_index(name).is_none() && !PROTECTED.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Applies the `existing_authorization` policy and adds the token if the policy says so.
/// Returns whether the token was added (false: the app's own header was kept).
pub fn inject(
    headers: &mut HeaderMap,
    policy: ExistingAuthorization,
    token: &HeaderValue,
) -> Result<bool, ProxyError> {
    match headers.entry(header::AUTHORIZATION) {
        Entry::Vacant(slot) => {
            slot.insert(token.clone());
            Ok(true)
        }
        Entry::Occupied(mut sent) => match policy {
            // Replaces every value the app sent.
            ExistingAuthorization::Overwrite => {
                sent.insert(token.clone());
                Ok(true)
            }
            ExistingAuthorization::Keep if sent.iter().nth(1).is_none() => Ok(false),
            ExistingAuthorization::Keep => Err(ProxyError::DuplicateAuthorization),
            ExistingAuthorization::Reject => Err(ProxyError::AuthorizationRejected),
        },
    }
}

/// Accepts a request `Transfer-Encoding` only when it is exactly `chunked`. hyper has decoded
/// the chunked framing and re-frames the body upstream, dropping the header as hop-by-hop; any
/// other coding (`gzip, chunked`) or a repeated `chunked` would reach the upstream as bytes it
/// cannot interpret, or be read differently by another parser. (hyper itself refuses a
/// coding list that does not end in `chunked`, and resolves `Content-Length` plus
/// `Transfer-Encoding` by RFC 9112 §6.3: chunked wins and the connection is closed after.)
pub fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim);
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err(ProxyError::UnsupportedTransferEncoding),
    }
}

/// The checks every request gets before routing: its framing and a single `Host`.
pub fn check_request(headers: &HeaderMap) -> Result<(), ProxyError> {
    // One pass over a handful of headers costs less than hashing two names to look them up.
    let (mut hosts, mut coded) = (0, false);
    for (name, _) in headers.iter() {
        hosts += usize::from(name == header::HOST);
        coded |= name == header::TRANSFER_ENCODING;
    }
    if hosts > 1 {
        return Err(ProxyError::DuplicateHost);
    }
    match coded {
        true => check_transfer_encoding(headers),
        false => Ok(()),
    }
}

/// The one `Host` header of a request, refusing duplicates.
pub fn single_host(headers: &HeaderMap) -> Result<Option<&HeaderValue>, ProxyError> {
    let mut all = headers.get_all(header::HOST).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_index_match_agrees_with_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "authorization",
            "x-connection",
            "t",
        ] {
            let name = HeaderName::from_static(name);
            assert_eq!(hop_by_hop_index(&name), None, "{name}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            (
                "connection",
                "X-Secret-Hop, keep-alive, Content-Length, Authorization, Host",
            ),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("content-length", "3"),
            ("host", "a"),
            ("authorization", "Bearer app"),
            ("x-keep", "yes"),
        ]);
        let mut request = h.clone();
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["authorization", "content-length", "host", "x-keep"]);
        // A request keeps `TE: trailers`, and only that.
        assert!(strip_request_hop_by_hop(&mut request));
        assert_eq!(request[header::TE], "trailers");
        let mut gzip = map(&[("te", "gzip, trailers;q=0.5"), ("x-a", "1")]);
        assert!(strip_request_hop_by_hop(&mut gzip));
        assert_eq!(
            gzip.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );
        let mut plain = map(&[("te", "gzip")]);
        assert!(!strip_request_hop_by_hop(&mut plain));
        assert!(plain.is_empty());
        // A second `Connection` header that names one counts, after a `keep-alive` one.
        let mut second = map(&[
            ("connection", "Keep-Alive"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut second);
        assert_eq!(second.keys().collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn injection_policies() {
        let token = HeaderValue::from_static("Bearer new");
        let mut h = map(&[
            ("authorization", "Bearer app"),
            ("authorization", "Basic x"),
        ]);
        inject(&mut h, ExistingAuthorization::Overwrite, &token).unwrap();
        assert_eq!(
            h.get_all(header::AUTHORIZATION).iter().collect::<Vec<_>>(),
            [&token]
        );

        let mut h = map(&[("authorization", "Bearer app")]);
        assert!(!inject(&mut h, ExistingAuthorization::Keep, &token).unwrap());
        assert_eq!(h[header::AUTHORIZATION], "Bearer app");

        let mut h = HeaderMap::new();
        assert!(inject(&mut h, ExistingAuthorization::Keep, &token).unwrap());
        assert_eq!(h[header::AUTHORIZATION], "Bearer new");

        let mut h = map(&[("authorization", "Bearer app")]);
        assert!(inject(&mut h, ExistingAuthorization::Reject, &token).is_err());

        // `keep` with two values of the app's: neither is chosen, the request is refused.
        let mut h = map(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(
            inject(&mut h, ExistingAuthorization::Keep, &token),
            Err(ProxyError::DuplicateAuthorization)
        ));
        // `reject` without the app's own header: the token goes in.
        let mut h = map(&[("x-other", "1")]);
        assert!(inject(&mut h, ExistingAuthorization::Reject, &token).unwrap());
        assert_eq!(h[header::AUTHORIZATION], "Bearer new");
    }

    #[test]
    fn only_a_single_chunked_coding_is_accepted() {
        assert!(check_transfer_encoding(&map(&[])).is_ok());
        assert!(check_transfer_encoding(&map(&[("transfer-encoding", "Chunked")])).is_ok());
        for bad in ["gzip, chunked", "chunked, chunked", "identity", "chunked,"] {
            assert!(
                check_transfer_encoding(&map(&[("transfer-encoding", bad)])).is_err(),
                "{bad}"
            );
        }
        let twice = map(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(check_transfer_encoding(&twice).is_err());
    }

    #[test]
    fn duplicate_host_is_refused() {
        assert!(single_host(&map(&[("host", "a"), ("host", "b")])).is_err());
        assert_eq!(single_host(&map(&[("host", "a")])).unwrap().unwrap(), "a");
    }

    #[test]
    fn the_request_checks_see_host_and_transfer_encoding_in_one_pass() {
        let check = |pairs: &[(&str, &str)]| check_request(&map(pairs));
        assert!(check(&[]).is_ok());
        assert!(check(&[("host", "a"), ("transfer-encoding", "chunked")]).is_ok());
        assert!(matches!(
            check(&[("host", "a"), ("x-a", "1"), ("host", "b")]),
            Err(ProxyError::DuplicateHost)
        ));
        assert!(matches!(
            check(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]),
            Err(ProxyError::UnsupportedTransferEncoding)
        ));
    }
}
