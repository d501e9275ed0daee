//! A `match` entry: `host[:port][/path-prefix/*]`, where `host` may be `*.suffix`.

use super::path::{under, valid_prefix};
use super::{normalize_host, split_port, HostError};

/// One parsed `match` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// For a wildcard, the suffix after `*.`; otherwise the whole host.
    pub host: String,
    pub wildcard: bool,
    /// `None` matches the default ports 80 and 443.
    pub port: Option<u16>,
    /// A path prefix without its trailing `/*` (`/orders` for `/orders/*`); `None` for the
    /// whole host.
    pub path: Option<String>,
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        let (authority, path) = match raw.find('/') {
            Some(at) => (&raw[..at], Some(&raw[at..])),
            None => (raw, None),
        };
        let path = match path {
            None | Some("/*") => None,
            Some(p) => match p.strip_suffix("/*") {
                Some(prefix) if valid_prefix(prefix) => Some(prefix.to_string()),
                _ => return Err(HostError::BadPathPattern(raw.to_string())),
            },
        };
        let (host, port) = split_port(authority)?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(HostError::BadPattern(raw.to_string()));
        }
        Ok(HostPattern {
            host: normalize_host(host)?,
            wildcard,
            port,
            path,
        })
    }

    /// The whole host's pattern, for an upstream whose `match` comes from its `url`.
    pub fn host(host: String, port: Option<u16>) -> Self {
        HostPattern {
            host,
            wildcard: false,
            port,
            path: None,
        }
    }

    /// Whether a normalised host and port are this pattern's, paths aside.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        if !port_ok {
            return false;
        }
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        } else {
            host == self.host
        }
    }

    /// Whether a normalised path is under this pattern's prefix (every path is, without one).
    pub fn covers_path(&self, path: &str) -> bool {
        self.path
            .as_deref()
            .is_none_or(|prefix| under(path, prefix))
    }

    /// The length of the path prefix: how specific the pattern is within its host.
    pub fn path_len(&self) -> usize {
        self.path.as_ref().map_or(0, String::len)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        match &self.path {
            Some(path) => write!(f, "{path}/*"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_labels_only() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com", 443));
        assert!(p.matches("a.b.example.com", 80));
        assert!(!p.matches("example.com", 443));
        assert!(!p.matches("evilexample.com", 443));
        assert!(!p.matches("a.example.com.evil.net", 443));
        assert!(!p.matches("a.example.com", 8080));
    }

    #[test]
    fn ports_are_part_of_the_origin() {
        let p = HostPattern::parse("api.example.com:8443").unwrap();
        assert!(p.matches("api.example.com", 8443));
        assert!(!p.matches("api.example.com", 443));
        let bare = HostPattern::parse("api.example.com").unwrap();
        assert!(bare.matches("api.example.com", 80) && bare.matches("api.example.com", 443));
        assert!(!bare.matches("api.example.com", 8080));
        assert!(HostPattern::parse("a.*.com").is_err());
    }

    #[test]
    fn path_prefixes_parse_and_print_back() {
        for text in [
            "api.example.com/orders/*",
            "api.example.com:8443/v1/orders/*",
            "*.example.com/orders/*",
        ] {
            let p = HostPattern::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
        }
        let p = HostPattern::parse("API.example.com/orders/*").unwrap();
        assert_eq!(p.host, "api.example.com");
        assert_eq!(p.path.as_deref(), Some("/orders"));
        assert!(p.covers_path("/orders") && p.covers_path("/orders/1"));
        assert!(!p.covers_path("/ordersx") && !p.covers_path("/users"));
        assert_eq!(HostPattern::parse("api.example.com/*").unwrap().path, None);
        for bad in [
            "api.example.com/orders",
            "api.example.com/orders*",
            "api.example.com//orders/*",
            "api.example.com/a/../b/*",
            "api.example.com/%6frders/*",
            "api.example.com/a;b/*",
            "api.example.com/*/x/*",
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(matches!(e, HostError::BadPathPattern(_)), "{bad}: {e}");
        }
    }
}
