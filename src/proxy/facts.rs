//! What one pass over a message's headers finds ([`Facts`]), and the checks a request gets
//! from it before routing: a single `Host`, and framing hyper can re-frame.
//!
//! The hop-by-hop headers (RFC 9110 §7.6.1) are listed here, for [`super::headers`] to remove.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;

const HOP_BY_HOP_COUNT: usize = 9;
pub(super) static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
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

pub(super) const TE_INDEX: usize = 5;
pub(super) const TRANSFER_ENCODING_INDEX: usize = 7;
pub(super) const UPGRADE_INDEX: usize = 8;

/// What one pass over a message's headers finds: which hop-by-hop headers it carries and
/// whether a `Connection` header names others (for their removal), how many `Host` headers it
/// has, whether it has a `Content-Length`, and whether its content type is gRPC's. A request's
/// facts are read once where it comes in and serve its checks, its routing and its stripping;
/// a response's serve its framing check and its stripping. Looking each up by name would hash
/// it, and the headers are few.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Bit `i` set: `HOP_BY_HOP[i]` is present.
    hop: u16,
    names_others: bool,
    hosts: u8,
    content_length: bool,
    /// A `Content-Type` was seen; `grpc` is about the first, as `HeaderMap::get` would be.
    typed: bool,
    grpc: bool,
}

impl Facts {
    pub fn of(headers: &HeaderMap) -> Facts {
        let mut facts = Facts::default();
        for (name, value) in headers.iter() {
            match kind(name) {
                Kind::Hop(i) => {
                    facts.hop |= 1 << i;
                    facts.names_others |= i == 0 && !options_only(value);
                }
                Kind::Host => facts.hosts = facts.hosts.saturating_add(1),
                Kind::ContentLength => facts.content_length = true,
                Kind::ContentType if !facts.typed => {
                    facts.typed = true;
                    facts.grpc = value.as_bytes().starts_with(b"application/grpc");
                }
                Kind::ContentType => {}
                Kind::Other => {}
            }
        }
        facts
    }

    /// `HOP_BY_HOP[i]` is present.
    pub(super) fn has(&self, i: usize) -> bool {
        self.hop & (1 << i) != 0
    }

    /// Any hop-by-hop header is present.
    pub(super) fn any_hop(&self) -> bool {
        self.hop != 0
    }

    /// A `Connection` header names headers besides its options.
    pub(super) fn names_others(&self) -> bool {
        self.names_others
    }

    /// An `Upgrade` header is present.
    pub fn upgrade(&self) -> bool {
        self.has(UPGRADE_INDEX)
    }

    /// A gRPC call, by its content type (`application/grpc`, `+proto`, `+json`, `-web`…).
    pub fn grpc(&self) -> bool {
        self.grpc
    }

    /// Both `Content-Length` and `Transfer-Encoding`: framing that two parsers may read two
    /// ways (RFC 9112 §6.1), refused in a response.
    pub fn ambiguous_framing(&self) -> bool {
        self.content_length && self.has(TRANSFER_ENCODING_INDEX)
    }

    /// The checks every request gets before routing: a single `Host`, and its framing.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        if self.hosts > 1 {
            return Err(ProxyError::DuplicateHost);
        }
        match self.has(TRANSFER_ENCODING_INDEX) {
            true => check_transfer_encoding(headers),
            false => Ok(()),
        }
    }
}

/// What a header name is to [`Facts`]: a hop-by-hop one (its position in [`HOP_BY_HOP`]),
/// `Host`, `Content-Length`, `Content-Type`, or any other. A match on the (lowercase) name is
/// a length check and at most one comparison, where comparing with each name in turn is twelve.
enum Kind {
    Hop(usize),
    Host,
    ContentLength,
    ContentType,
    Other,
}

fn kind(name: &HeaderName) -> Kind {
    match name.as_str() {
        "connection" => Kind::Hop(0),
        "keep-alive" => Kind::Hop(1),
        "proxy-connection" => Kind::Hop(2),
        "proxy-authenticate" => Kind::Hop(3),
        "proxy-authorization" => Kind::Hop(4),
        "te" => Kind::Hop(5),
        "trailer" => Kind::Hop(6),
        "transfer-encoding" => Kind::Hop(7),
        "upgrade" => Kind::Hop(8),
        "host" => Kind::Host,
        "content-length" => Kind::ContentLength,
        "content-type" => Kind::ContentType,
        _ => Kind::Other,
    }
}

/// The position of `name` in [`HOP_BY_HOP`].
pub(super) fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match kind(name) {
        Kind::Hop(i) => Some(i),
        _ => None,
    }
}

/// `keep-alive` and `close`, by far the most common `Connection` values, are options that
/// name no header. The spellings clients send are compared whole first (a length and a word
/// or two), any other letter case byte by byte.
pub(super) fn options_only(value: &HeaderValue) -> bool {
    match value.as_bytes() {
        b"keep-alive" | b"Keep-Alive" | b"close" | b"Close" => true,
        v => v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close"),
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A header map of `pairs`, in order (the header tests' too).
    pub(in crate::proxy) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
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
    fn one_pass_finds_upgrade_grpc_and_the_hop_by_hop_headers() {
        let facts = |pairs: &[(&str, &str)]| Facts::of(&map(pairs));
        let plain = facts(&[("host", "a"), ("accept", "*/*"), ("x-te", "1")]);
        assert!(!plain.upgrade() && !plain.grpc());
        assert_eq!(plain.hop, 0, "no hop-by-hop header");
        assert!(facts(&[("Upgrade", "websocket")]).upgrade());
        assert!(facts(&[("content-type", "application/grpc+proto")]).grpc());
        let json_first = facts(&[
            ("content-type", "application/json"),
            ("content-type", "application/grpc"),
        ]);
        assert!(
            !json_first.grpc(),
            "the first content type, as a lookup reads it"
        );
        let hop = facts(&[("te", "trailers"), ("connection", "keep-alive")]);
        assert_eq!(hop.hop, 1 << TE_INDEX | 1, "te and connection");
        assert!(!hop.names_others);
        assert!(facts(&[("connection", "close, x-hop")]).names_others);
        let both = [("Content-Length", "3"), ("transfer-encoding", "chunked")];
        assert!(facts(&both).ambiguous_framing());
        assert!(!facts(&both[..1]).ambiguous_framing());
        assert!(!facts(&both[1..]).ambiguous_framing());
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
    fn connection_options_in_any_letter_case_name_no_header() {
        for v in [
            "keep-alive",
            "Keep-Alive",
            "KEEP-ALIVE",
            "close",
            "Close",
            "cLoSe",
        ] {
            assert!(options_only(&HeaderValue::from_static(v)), "{v}");
        }
        for v in ["x-hop", "keep-alive, x-hop", "closed", "keep-alive ", ""] {
            assert!(!options_only(&HeaderValue::from_static(v)), "{v}");
        }
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
    fn the_request_checks_see_host_and_transfer_encoding_in_one_pass() {
        let check = |pairs: &[(&str, &str)]| {
            let headers = map(pairs);
            Facts::of(&headers).check(&headers)
        };
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
