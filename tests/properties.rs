//! Property tests for the parts that decide where a token goes and what is sent: the host
//! normaliser, the router, the token-response parser and the header rewriter.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use proptest::prelude::*;
use tokenproxy::config::ExistingAuthorization;
use tokenproxy::host::{normalize_host, split_authority, HostError, HostPattern};
use tokenproxy::proxy::facts::Facts;
use tokenproxy::proxy::headers::{inject, strip_hop_by_hop, strip_request_hop_by_hop};
use tokenproxy::token::response::parse_success;
use tokenproxy::upstream::{Routed, Router};

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("example".to_string()),
        Just("com".to_string()),
        Just("api".to_string()),
        Just("evil".to_string()),
        "[a-z][a-z0-9-]{0,5}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        host(),
        prop::option::of(prop_oneof![Just(80u16), Just(443), Just(8443)]),
    )
        .prop_map(|(wild, h, port)| {
            let mut p = if wild { format!("*.{h}") } else { h };
            if let Some(port) = port {
                p.push_str(&format!(":{port}"));
            }
            p
        })
}

/// The straightforward normaliser (several passes over the name) that `normalize_host`, a
/// single pass on the request path, must agree with.
fn reference_normalize(raw: &str) -> Result<String, HostError> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains('@') {
        return Err(HostError::UserInfo);
    }
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| HostError::BadIpv6(raw.to_string()))?;
        return Ok(format!("[{ip}]"));
    }
    let host = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !host.chars().all(ok) || host.contains("..") || host.starts_with('.') {
        return Err(HostError::BadChars(raw.to_string()));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let last = host.rsplit('.').next().unwrap_or("");
    if last.chars().all(|c| c.is_ascii_digit()) || last.starts_with("0x") {
        return Err(HostError::AmbiguousNumeric(raw.to_string()));
    }
    Ok(host)
}

/// Host-like strings: mostly the characters a host may have, with dots, digits, `0x`,
/// brackets and a few that are not allowed.
fn host_like() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._x\\-]{0,6}(\\.[0-9a-fA-Fx_-]{0,4}){0,4}\\.?|[0-9.]{0,16}|\\PC{0,12}|[0-3]?[0-9]{1,3}(\\.[0-3]?[0-9]{1,3}){2,4}\\.?"
}

/// Path segments that servers read differently.
const PATH_PIECES: &[&str] = &[
    "orders", "users", "archive", "..", ".", "", "..;", "x;v=1", "%2e%2e", "%2E", "%2f", "%2F..",
    "a%2Fb", "%5c..", "\\..", "%6Frders",
];

/// Removes dot segments from `/`-separated segments (RFC 3986 §5.2.4).
fn resolve<'a>(segments: impl Iterator<Item = &'a str>, keep_empty: bool) -> String {
    let segments: Vec<&str> = segments.collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            "" if !keep_empty && !last => {}
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// A strict server: `%2e` is a dot, `%2f` is data.
fn rfc_reading(path: &str) -> String {
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%6F", "o");
    resolve(decoded.split('/').skip(1), true)
}

/// nginx with merge_slashes, a server that decodes `%2F` and `%5C`, and Tomcat's `;`.
fn forgiving_reading(path: &str) -> String {
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%6F", "o")
        .replace(['\\'], "/")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/");
    let segments = decoded
        .split('/')
        .skip(1)
        .map(|s| s.split(';').next().unwrap_or(""));
    resolve(segments, false)
}

proptest! {
    #[test]
    fn normalising_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
        if let Ok(h) = normalize_host(&raw) {
            prop_assert_eq!(normalize_host(&h).unwrap(), h.clone());
            prop_assert!(!h.contains('@') && !h.ends_with('.') && !h.contains('%'));
            prop_assert_eq!(h.to_ascii_lowercase(), h);
        }
        let _ = split_authority(&raw, 80);
        let _ = HostPattern::parse(&raw);
    }

    #[test]
    fn the_single_pass_normaliser_agrees_with_the_reference(raw in host_like()) {
        // The same names accepted, normalised the same way. (The kind of error may differ:
        // the reference calls `a..` ambiguous-numeric, the single pass an empty label.)
        prop_assert_eq!(normalize_host(&raw).ok(), reference_normalize(&raw).ok(), "{:?}", raw);
    }

    #[test]
    fn a_routed_target_always_matches_its_upstreams_patterns(
        table in prop::collection::vec(prop::collection::vec(pattern(), 1..3), 1..6),
        target in host(),
        port in prop_oneof![Just(80u16), Just(443), Just(8443), Just(9000)],
    ) {
        let table: Vec<Vec<HostPattern>> = table
            .iter()
            .map(|ps| ps.iter().map(|p| HostPattern::parse(p).unwrap()).collect())
            .collect();
        let router = Router::new(table.iter().map(Vec::as_slice));
        let target = normalize_host(&target).unwrap();
        match router.route(&target, port, "/").unwrap().index {
            Some(i) => prop_assert!(table[i].iter().any(|p| p.matches(&target, port)),
                "routed {target}:{port} to {i} whose patterns do not match"),
            None => prop_assert!(!table.iter().flatten().any(|p| p.matches(&target, port)),
                "{target}:{port} matches a pattern but was not routed"),
        }
    }

    #[test]
    fn the_written_table_agrees_with_the_full_route(
        table in prop::collection::vec(prop::collection::vec(
            (pattern(), prop::option::of(Just("/orders/*"))), 1..3), 1..6),
        pick in any::<prop::sample::Index>(),
        other in host(),
        written_port in prop::option::of(prop_oneof![Just(80u16), Just(443), Just(8443), Just(9000)]),
        upper in any::<bool>(),
    ) {
        let table: Vec<Vec<HostPattern>> = table
            .iter()
            .map(|ps| ps.iter().map(|(p, path)| {
                HostPattern::parse(&format!("{p}{}", path.unwrap_or(""))).unwrap()
            }).collect())
            .collect();
        let router = Router::new(table.iter().map(Vec::as_slice));
        // A target written as one of the patterns' hosts (or another), with or without a port.
        let hosts: Vec<&str> = table.iter().flatten().map(|p| p.host.as_str()).collect();
        let host = hosts.get(pick.index(hosts.len() + 1)).copied().unwrap_or(&other);
        let mut authority = if upper { host.to_uppercase() } else { host.to_string() };
        if let Some(port) = written_port {
            authority.push_str(&format!(":{port}"));
        }
        for default in [80u16, 443] {
            let Ok((normal, port)) = split_authority(&authority, default) else { continue };
            match router.written(&authority, default) {
                Some(w) => {
                    prop_assert_eq!(&authority[..w.host_len], &*normal);
                    prop_assert_eq!(w.port, port);
                    for path in ["/", "/orders/x", "/users"] {
                        let full = router.route(&normal, port, path).unwrap();
                        prop_assert_eq!(full, Routed { index: Some(w.index), path: None },
                            "{} at {} for {}", authority, default, path);
                    }
                }
                None => {
                    // Missed only where the table may miss: a target not in normal form, a
                    // host only a wildcard covers, or a host with path patterns.
                    let exact = table.iter().flatten().any(|p| {
                        !p.wildcard && p.path.is_none() && p.matches(&normal, port)
                    });
                    let paths = table.iter().flatten().any(|p| p.path.is_some());
                    prop_assert!(upper || !exact || paths, "{} at {} not in the table", authority, default);
                }
            }
        }
    }

    #[test]
    fn a_prefix_token_never_reaches_a_path_outside_it_on_any_reading(
        segments in prop::collection::vec(prop::sample::select(PATH_PIECES), 0..7),
    ) {
        let table = [
            vec![HostPattern::parse("api.example.com").unwrap()],
            vec![HostPattern::parse("api.example.com/orders/*").unwrap()],
        ];
        let router = Router::new(table.iter().map(Vec::as_slice));
        let path = format!("/{}", segments.join("/"));
        let Ok(routed) = router.route("api.example.com", 443, &path) else {
            return Ok(()); // refused: no token at all
        };
        let sent = routed.path.clone().unwrap_or_else(|| path.clone());
        prop_assert_eq!(tokenproxy::host::strict(&sent).unwrap(), sent.clone(), "sent in normal form");
        for reading in [rfc_reading(&sent), forgiving_reading(&sent)] {
            let inside = reading == "/orders" || reading.starts_with("/orders/");
            prop_assert_eq!(routed.index == Some(1), inside,
                "{} (sent as {}, read as {}) got upstream {:?}", path, sent, reading, routed.index);
        }
    }

    #[test]
    fn the_token_parser_never_panics_and_never_accepts_header_breaking_bytes(
        token in "\\PC{0,30}|[\\x00-\\x7f]{0,30}",
        body in prop::collection::vec(any::<u8>(), 0..200),
        expires in prop_oneof![Just(serde_json::json!(60)), any::<i64>().prop_map(|n| serde_json::json!(n)),
                               any::<f64>().prop_map(|f| serde_json::json!(f)), "\\PC{0,8}".prop_map(|s| serde_json::json!(s))],
    ) {
        let _ = parse_success(&body, Duration::from_secs(300), 0);
        let json = serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": expires});
        if let Ok(issued) = parse_success(json.to_string().as_bytes(), Duration::from_secs(300), 0) {
            let v = issued.token.header().as_bytes();
            prop_assert!(v.starts_with(b"Bearer "));
            prop_assert!(v[7..].iter().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b)));
            prop_assert!(issued.lifetime > Duration::ZERO);
        }
    }

    #[test]
    fn rewritten_requests_carry_exactly_the_token_and_no_hop_by_hop_header(
        headers in prop::collection::vec((
            prop_oneof![Just("connection"), Just("keep-alive"), Just("proxy-authorization"),
                        Just("authorization"), Just("content-length"), Just("te"), Just("upgrade"),
                        Just("x-a"), Just("x-b"), Just("host")],
            prop_oneof![Just("x-a"), Just("authorization"), Just("content-length"), Just("1"),
                        Just("close, x-b"), Just("Bearer app")],
        ), 0..10),
    ) {
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let cl_before = map.get_all(CONTENT_LENGTH).iter().count();
        let token = HeaderValue::from_static("Bearer tok");
        // A response's strip, and a request's from the facts read where it came in (no value
        // here is `trailers`, so `TE` goes from both).
        let mut request = map.clone();
        let facts = Facts::of(&request);
        strip_hop_by_hop(&mut map, &facts);
        strip_request_hop_by_hop(&mut request, &facts);
        for map in [&mut map, &mut request] {
            inject(map, ExistingAuthorization::Overwrite, &token).unwrap();
            let auth: Vec<_> = map.get_all(AUTHORIZATION).iter().collect();
            prop_assert_eq!(auth, vec![&token]);
            for hop in ["connection", "keep-alive", "proxy-authorization", "te", "upgrade"] {
                prop_assert!(!map.contains_key(hop));
            }
            prop_assert_eq!(map.get_all(CONTENT_LENGTH).iter().count(), cl_before, "framing untouched");
        }
    }
}

fn token_request() -> impl Strategy<Value = tokenproxy::config::TokenRequest> {
    let word = || prop_oneof![Just("read"), Just("write"), Just("admin")].prop_map(String::from);
    (
        proptest::collection::vec(word(), 0..4),
        proptest::option::of(
            prop_oneof![Just("https://a"), Just("https://b")].prop_map(String::from),
        ),
        proptest::collection::vec(
            prop_oneof![Just("https://r1"), Just("https://r2")].prop_map(String::from),
            0..3,
        ),
        proptest::collection::btree_map(
            prop_oneof![Just("tenant"), Just("region")].prop_map(String::from),
            prop_oneof![Just("x"), Just("y")].prop_map(String::from),
            0..2,
        ),
    )
        .prop_map(
            |(scopes, audience, resource, params)| tokenproxy::config::TokenRequest {
                scopes,
                audience,
                resource,
                params,
            },
        )
}

proptest! {
    /// Two upstreams share a token only if everything sent to the token endpoint is the same:
    /// the client, the scopes and resources as sets, the audience and the params.
    #[test]
    fn upstreams_share_a_token_exactly_when_their_token_requests_are_identical(
        a in token_request(),
        b in token_request(),
        same_client in any::<bool>(),
    ) {
        use std::collections::BTreeSet;
        use tokenproxy::token::sharing::SourceKey;
        let yaml = "clients:\n  one:\n    token_endpoint: https://idp.example.com/token\n    client_id: x\n    client_secret: s\n  two:\n    token_endpoint: https://idp.example.com/token\n    client_id: y\n    client_secret: s\nupstreams:\n  u:\n    url: https://api.example.com\n    client: one\n";
        let config = tokenproxy::Config::from_yaml(yaml).unwrap();
        let one = config.clients["one"].clone();
        let other = if same_client { one.clone() } else { config.clients["two"].clone() };
        let set = |v: &Vec<String>| v.iter().cloned().collect::<BTreeSet<_>>();
        let identical = same_client
            && set(&a.scopes) == set(&b.scopes)
            && a.audience == b.audience
            && set(&a.resource) == set(&b.resource)
            && a.params == b.params;
        prop_assert_eq!(SourceKey::new(one, &a, &Default::default()) == SourceKey::new(other, &b, &Default::default()), identical);
    }
}
