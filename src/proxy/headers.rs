//! Header rewriting: hop-by-hop removal and token injection.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1), and any header the sender names in `Connection`,
//! belong to one connection and are removed before a request or response crosses the proxy.
//! A few names are never removed that way, because removing them would break framing or let
//! the app strip the token (`Connection: Authorization`). `Proxy-Authorization` is never
//! forwarded. The injected value is marked sensitive so hyper's debug output masks it.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;
use super::facts::{hop_by_hop_index, options_only, Facts, HOP_BY_HOP, TE_INDEX};
use crate::config::ExistingAuthorization;

/// Names `Connection` may not remove: framing, routing and the token are ours to decide.
static PROTECTED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
];

/// Removes hop-by-hop headers and those listed in `Connection` from a message whose [`Facts`]
/// were read.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, facts: &Facts) {
    strip(headers, facts, false);
}

/// [`strip_hop_by_hop`] for a request whose [`Facts`] were read, keeping `TE: trailers`: it
/// says the client accepts trailers (gRPC needs it), which holds end to end. Returns whether
/// it was kept.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap, facts: &Facts) -> bool {
    strip(headers, facts, true)
}

fn strip(headers: &mut HeaderMap, facts: &Facts, keep_te_trailers: bool) -> bool {
    // Only the hop-by-hop headers that are there are hashed for removal. Most messages carry
    // none, or only `Connection: keep-alive`, which names nothing to remove.
    if !facts.any_hop() {
        return false;
    }
    let trailers = keep_te_trailers && facts.has(TE_INDEX) && accepts_trailers(headers);
    if facts.names_others() {
        remove_connection_named(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if facts.has(i) {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    trailers
}

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

#[cfg(test)]
mod tests {
    use super::super::facts::tests::map;
    use super::*;

    fn strip_response(headers: &mut HeaderMap) {
        let facts = Facts::of(headers);
        strip_hop_by_hop(headers, &facts);
    }

    fn strip_request(headers: &mut HeaderMap) -> bool {
        let facts = Facts::of(headers);
        strip_request_hop_by_hop(headers, &facts)
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
        strip_response(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["authorization", "content-length", "host", "x-keep"]);
        // A request keeps `TE: trailers`, and only that.
        assert!(strip_request(&mut request));
        assert_eq!(request[header::TE], "trailers");
        let mut gzip = map(&[("te", "gzip, trailers;q=0.5"), ("x-a", "1")]);
        assert!(strip_request(&mut gzip));
        assert_eq!(
            gzip.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );
        let mut plain = map(&[("te", "gzip")]);
        assert!(!strip_request(&mut plain));
        assert!(plain.is_empty());
        // A second `Connection` header that names one counts, after a `keep-alive` one.
        let mut second = map(&[
            ("connection", "Keep-Alive"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-keep", "yes"),
        ]);
        strip_response(&mut second);
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
}
