//! Which upstream a forward-mode request target belongs to.
//!
//! Exact host patterns are looked up in a map; wildcard patterns are tried longest suffix
//! first, so `*.eu.example.com` wins over `*.example.com`. An exact match beats any wildcard.

use std::collections::HashMap;

use crate::host::HostPattern;

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<(HostPattern, usize)>>,
    wildcards: Vec<(HostPattern, usize)>,
}

impl Router {
    /// Builds the table from each upstream's patterns; the index is the upstream's position.
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a [HostPattern]>) -> Self {
        let mut router = Router::default();
        for (i, patterns) in upstreams.into_iter().enumerate() {
            for p in patterns {
                if p.wildcard {
                    router.wildcards.push((p.clone(), i));
                } else {
                    router
                        .exact
                        .entry(p.host.clone())
                        .or_default()
                        .push((p.clone(), i));
                }
            }
        }
        router
            .wildcards
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.host.len()));
        router
    }

    /// The upstream index for a normalised host and port.
    pub fn route(&self, host: &str, port: u16) -> Option<usize> {
        if let Some(entries) = self.exact.get(host) {
            // A pattern naming the port beats a portless one.
            let mut best = None;
            for (p, i) in entries {
                if p.matches(host, port) {
                    if p.port.is_some() {
                        return Some(*i);
                    }
                    best = Some(*i);
                }
            }
            if best.is_some() {
                return best;
            }
        }
        self.wildcards
            .iter()
            .find(|(p, _)| p.matches(host, port))
            .map(|(_, i)| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<HostPattern> {
        list.iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn exact_beats_wildcard_and_longer_suffix_wins() {
        let table = [
            pats(&["*.example.com"]),
            pats(&["api.example.com"]),
            pats(&["*.eu.example.com"]),
            pats(&["api.example.com:8443"]),
        ];
        let r = Router::new(table.iter().map(Vec::as_slice));
        assert_eq!(r.route("api.example.com", 443), Some(1));
        assert_eq!(r.route("api.example.com", 8443), Some(3));
        assert_eq!(r.route("x.example.com", 80), Some(0));
        assert_eq!(r.route("x.eu.example.com", 443), Some(2));
        assert_eq!(r.route("evilexample.com", 443), None);
        assert_eq!(r.route("api.example.com", 9000), None);
    }
}
