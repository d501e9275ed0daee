//! Which upstream a forward-mode request belongs to, by host, port and path.
//!
//! The most specific host wins: an exact host beats any wildcard, and a longer wildcard
//! suffix (`*.eu.example.com`) beats a shorter one. Among one host's patterns, the longest
//! path prefix that covers the request's path wins, and a whole-host pattern is the fallback;
//! at equal length a pattern naming the port beats a portless one. Paths are compared only on
//! hosts that have a path pattern, in their strict normal form (`host::strict`), which is also
//! the form sent; a path whose lenient reading (`host::lenient`), of that form or of the path
//! as written, would land on another upstream is refused, so no server behind can be made to
//! read a prefix's token onto a path outside it.
//!
//! Most targets are written exactly as a pattern's host, with or without a port. For those
//! the table built with the router holds the answer (`written`): one hash lookup on the
//! target as sent, instead of normalising it and ranking the patterns, for every forward
//! request. Its entries are computed by [`Router::route`] itself and only where the answer
//! cannot depend on the path; anything else takes the full route.

use fnv::FnvHashMap;

use crate::host::{lenient, strict, HostPattern, PathError};

#[derive(Debug, Default)]
pub struct Router {
    exact: FnvHashMap<String, Vec<(HostPattern, usize)>>,
    wildcards: Vec<(HostPattern, usize)>,
    has_paths: bool,
    /// Targets written in normal form (`host` or `host:port`) whose upstream does not depend
    /// on the path: for `http://` (default port 80) and for `https://` (443).
    written: [FnvHashMap<Box<str>, Written>; 2],
}

/// A target found in the written table: its host is the first `host_len` bytes of what was
/// written, already in normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub host_len: usize,
    pub port: u16,
    pub index: usize,
}

/// Where a request goes: the upstream's index (none: unmatched), and the path to send when
/// routing normalised it (dot segments removed, unreserved characters decoded).
#[derive(Debug, PartialEq, Eq)]
pub struct Routed {
    pub index: Option<usize>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    BadPath(#[from] PathError),
    #[error("the path {0:?} reads as another path to servers that decode %2F, merge // or drop ;parameters, and the two readings belong to different upstreams")]
    Ambiguous(String),
}

/// What a pattern must cover besides the host: a path, or nothing (a CONNECT's claim).
#[derive(Clone, Copy)]
enum Want<'a> {
    Path(&'a str),
    Host,
}

impl Router {
    /// Builds the table from each upstream's patterns; the index is the upstream's position.
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a [HostPattern]>) -> Self {
        let mut router = Router::default();
        for (i, patterns) in upstreams.into_iter().enumerate() {
            for p in patterns {
                router.has_paths |= p.path.is_some();
                if p.wildcard {
                    router.wildcards.push((p.clone(), i));
                } else {
                    let entry = router.exact.entry(p.host.clone()).or_default();
                    entry.push((p.clone(), i));
                }
            }
        }
        router.written = [80, 443].map(|default| router.written_table(default));
        router
    }

    /// The written table for targets whose scheme's default port is `default`: each exact
    /// host with each port its patterns cover, as `host:port` and, at the default port, as
    /// `host` alone.
    fn written_table(&self, default: u16) -> FnvHashMap<Box<str>, Written> {
        let mut table = FnvHashMap::default();
        for (host, patterns) in &self.exact {
            let mut ports: Vec<u16> = patterns
                .iter()
                .flat_map(|(p, _)| p.port.map_or(vec![80, 443], |port| vec![port]))
                .collect();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                if self.by_path(patterns, host, port) {
                    continue;
                }
                let Some(index) = self.pick(patterns, host, port, Want::Host) else {
                    continue;
                };
                let written = Written {
                    host_len: host.len(),
                    port,
                    index,
                };
                if port == default {
                    table.insert(host.as_str().into(), written);
                }
                table.insert(format!("{host}:{port}").into(), written);
            }
        }
        table
    }

    /// The answer for a target as written (the authority of an absolute-form request), when
    /// it is in normal form and its upstream does not depend on the path; `None` means: take
    /// the full route.
    pub fn written(&self, authority: &str, default_port: u16) -> Option<Written> {
        let table = match default_port {
            80 => &self.written[0],
            443 => &self.written[1],
            _ => return None,
        };
        table.get(authority).copied()
    }

    /// Whether some pattern for this host and port names a path, so that routing compares
    /// paths.
    fn by_path(&self, exact: &[(HostPattern, usize)], host: &str, port: u16) -> bool {
        self.has_paths
            && exact
                .iter()
                .chain(&self.wildcards)
                .any(|(p, _)| p.path.is_some() && p.matches(host, port))
    }

    /// The upstream for a normalised host and port and the request's path.
    pub fn route(&self, host: &str, port: u16, path: &str) -> Result<Routed, RouteError> {
        let exact = self.exact.get(host).map_or(&[][..], Vec::as_slice);
        if !self.by_path(exact, host, port) {
            let index = self.pick(exact, host, port, Want::Host);
            return Ok(Routed { index, path: None });
        }
        let normal = strict(path)?;
        let index = self.pick(exact, host, port, Want::Path(&normal));
        // Refused if a forgiving server would read the path as sent (the strict form), or as
        // the app wrote it, onto another upstream.
        let sent = self.pick(exact, host, port, Want::Path(&lenient(&normal)?));
        let written = self.pick(exact, host, port, Want::Path(&lenient(path)?));
        if index != sent || index != written {
            return Err(RouteError::Ambiguous(path.to_string()));
        }
        let path = match normal {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Ok(Routed { index, path })
    }

    /// The upstream that claims a host and port at all, for a CONNECT (which names no path):
    /// the whole-host pattern's if there is one.
    pub fn claim(&self, host: &str, port: u16) -> Option<usize> {
        let exact = self.exact.get(host).map_or(&[][..], Vec::as_slice);
        self.pick(exact, host, port, Want::Host)
    }

    fn pick(
        &self,
        exact: &[(HostPattern, usize)],
        host: &str,
        port: u16,
        want: Want,
    ) -> Option<usize> {
        best(exact, host, port, want).or_else(|| best(&self.wildcards, host, port, want))
    }
}

/// The most specific of `entries` that covers the request: the longest host (wildcards), then
/// the longest path prefix (or, for a claim, the shortest), then a named port.
fn best(entries: &[(HostPattern, usize)], host: &str, port: u16, want: Want) -> Option<usize> {
    let mut best: Option<((usize, usize, bool), usize)> = None;
    for (p, i) in entries {
        if !p.matches(host, port) {
            continue;
        }
        let path_rank = match want {
            Want::Path(path) if !p.covers_path(path) => continue,
            Want::Path(_) => p.path_len(),
            Want::Host => usize::MAX - p.path_len(),
        };
        let rank = (p.host.len(), path_rank, p.port.is_some());
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, *i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<HostPattern> {
        list.iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect()
    }

    fn router(table: &[&[&str]]) -> Router {
        let table: Vec<Vec<HostPattern>> = table.iter().map(|t| pats(t)).collect();
        Router::new(table.iter().map(Vec::as_slice))
    }

    #[test]
    fn exact_beats_wildcard_and_longer_suffix_wins() {
        let r = router(&[
            &["*.example.com"],
            &["api.example.com"],
            &["*.eu.example.com"],
            &["api.example.com:8443"],
        ]);
        let at = |h: &str, p| r.route(h, p, "/x").unwrap().index;
        assert_eq!(at("api.example.com", 443), Some(1));
        assert_eq!(at("api.example.com", 8443), Some(3));
        assert_eq!(at("x.example.com", 80), Some(0));
        assert_eq!(at("x.eu.example.com", 443), Some(2));
        assert_eq!(at("evilexample.com", 443), None);
        assert_eq!(at("api.example.com", 9000), None);
    }

    #[test]
    fn longest_prefix_wins_and_the_whole_host_is_the_fallback() {
        let r = router(&[
            &["api.example.com"],
            &["api.example.com/orders/*"],
            &["api.example.com/orders/archive/*"],
            &["*.example.com/users/*"],
        ]);
        let at = |h: &str, path| r.route(h, 443, path).unwrap().index;
        assert_eq!(at("api.example.com", "/orders"), Some(1));
        assert_eq!(at("api.example.com", "/orders/7"), Some(1));
        assert_eq!(at("api.example.com", "/orders/archive/7"), Some(2));
        assert_eq!(at("api.example.com", "/ordersx"), Some(0));
        assert_eq!(
            at("api.example.com", "/users/1"),
            Some(0),
            "exact host first"
        );
        assert_eq!(at("x.example.com", "/users/1"), Some(3));
        assert_eq!(at("x.example.com", "/orders/1"), None);
        assert_eq!(r.claim("api.example.com", 443), Some(0));
        assert_eq!(r.claim("x.example.com", 443), Some(3));
    }

    #[test]
    fn paths_route_on_their_normal_form_and_ambiguity_is_refused() {
        let r = router(&[&["api.example.com"], &["api.example.com/orders/*"]]);
        let route = |path| r.route("api.example.com", 443, path);
        // Dot segments: routed (and sent) as the path they name.
        let users = route("/orders/../users").unwrap();
        assert_eq!(
            (users.index, users.path.as_deref()),
            (Some(0), Some("/users"))
        );
        let encoded = route("/orders/%2e%2e/users").unwrap();
        assert_eq!(encoded.index, Some(0));
        let up = route("/x/../orders/1").unwrap();
        assert_eq!((up.index, up.path.as_deref()), (Some(1), Some("/orders/1")));
        // An encoded slash is data to one server and a separator to another.
        // Outside the prefix on either reading: the whole host's token.
        for outside in [
            "/orders%2f..%2fusers",
            "/orders%5c..%5cusers",
            "/orders\\..\\users",
        ] {
            assert_eq!(route(outside).unwrap().index, Some(0), "{outside}");
        }
        // Inside the prefix to tokenproxy, outside it to a lenient server: refused.
        for hostile in [
            "/orders/..%2fusers",
            "/orders/..%5Cusers",
            "/orders/..\\users",
            "/orders//../users",
            "/orders/..;/users",
            "//orders/1",
            "/x/..;/orders/1",
        ] {
            assert!(
                matches!(route(hostile), Err(RouteError::Ambiguous(_))),
                "{hostile}"
            );
        }
        // Both readings agree: no refusal, and an encoded slash is kept as it was.
        let data = route("/orders/a%2Fb").unwrap();
        assert_eq!((data.index, data.path), (Some(1), None));
        assert_eq!(route("/users;v=2").unwrap().index, Some(0));
        assert_eq!(
            route("/%zz"),
            Err(RouteError::BadPath(PathError::BadEscape))
        );
    }

    #[test]
    fn hosts_without_path_patterns_never_look_at_the_path() {
        let r = router(&[&["api.example.com"], &["other.example.com/orders/*"]]);
        let plain = r.route("api.example.com", 443, "/a/../%zz").unwrap();
        assert_eq!((plain.index, plain.path), (Some(0), None));
    }

    #[test]
    fn targets_written_in_normal_form_are_found_by_one_lookup() {
        let r = router(&[
            &["api.example.com"],
            &["api.example.com:8443", "[::1]:9000"],
            &["*.example.com"],
            &["paths.example.com/orders/*"],
        ]);
        let at = |authority: &str, default| r.written(authority, default).map(|w| w.index);
        let found = r.written("api.example.com:8443", 80);
        let want = Written {
            host_len: "api.example.com".len(),
            port: 8443,
            index: 1,
        };
        assert_eq!(found, Some(want));
        assert_eq!(at("api.example.com", 80), Some(0));
        assert_eq!(at("api.example.com", 443), Some(0));
        assert_eq!(at("api.example.com:443", 80), Some(0));
        assert_eq!(at("[::1]:9000", 443), Some(1));
        // Taken the full way: another port, another spelling, a wildcard's host, a host whose
        // upstream depends on the path, a scheme without a default of 80 or 443.
        for (authority, default) in [
            ("api.example.com:9000", 80),
            ("[::1]", 443),
            ("API.example.com", 443),
            ("api.example.com.", 443),
            ("api.example.com:0443", 443),
            ("x.example.com", 443),
            ("paths.example.com", 443),
            ("api.example.com", 8080),
        ] {
            assert_eq!(at(authority, default), None, "{authority} at {default}");
        }
    }
}
