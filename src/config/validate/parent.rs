//! `proxy.upstream_proxy`: the parent proxy's URL, its credentials and `no_proxy`.

use std::net::IpAddr;

use http::Uri;
use ipnet::IpNet;

use super::super::raw::{RawNoProxy, RawParentProxy};
use super::super::ParentProxyConfig;
use super::Validator;
use crate::host::normalize_host;

impl Validator<'_> {
    pub(super) fn parent_proxy(&mut self, p: &RawParentProxy) -> Option<ParentProxyConfig> {
        let key = |k| ["proxy", "upstream_proxy", k];
        let url = self.expand(&key("url"), &p.url);
        let at = self.parent_url(&url);
        let username = p
            .username
            .as_ref()
            .map(|u| self.expand(&key("username"), u));
        if username
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.contains(':'))
        {
            self.problem(
                &key("username"),
                "must not be empty or contain ':' (Basic authentication joins it to the password with one)",
            );
        }
        let password = p
            .password
            .as_ref()
            .map(|s| self.secret(&key("password"), s));
        match (&username, &password) {
            (Some(_), None) => self.problem(&key("username"), "needs password too"),
            (None, Some(_)) => self.problem(&key("password"), "needs username too"),
            _ => {}
        }
        let no_proxy = self.no_proxy(&p.no_proxy);
        let (host, port) = at?;
        Some(ParentProxyConfig {
            host,
            port,
            username,
            password,
            no_proxy,
        })
    }

    /// `http://host:port`, nothing more: the host (normalised) and the port.
    fn parent_url(&mut self, text: &str) -> Option<(String, u16)> {
        let path = ["proxy", "upstream_proxy", "url"];
        let Ok(uri) = text.parse::<Uri>() else {
            self.problem(
                &path,
                format!("{text:?} is not a URL like http://proxy.corp.example:3128"),
            );
            return None;
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                self.problem(&path, "TLS to the proxy itself is not supported: use http:// (https:// destinations are still tunnelled with CONNECT and encrypted end to end)");
                return None;
            }
            _ => {
                self.problem(&path, format!("{text:?}: use http://host:port"));
                return None;
            }
        }
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            self.problem(&path, "credentials in the URL would show wherever the URL does: use upstream_proxy.username and password");
            return None;
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            self.problem(
                &path,
                "a proxy URL is http://host:port, with no path or query",
            );
            return None;
        }
        let host = match uri.host().map(normalize_host) {
            Some(Ok(h)) => h,
            _ => {
                self.problem(&path, format!("{text:?} names no valid host"));
                return None;
            }
        };
        let Some(port) = uri.port_u16().filter(|&p| p != 0) else {
            self.problem(
                &path,
                "give the port, as in http://proxy.corp.example:3128 (proxies share no default port)",
            );
            return None;
        };
        Some((host, port))
    }

    /// The entries of `no_proxy`, each checked; IPs and CIDRs without brackets, names in
    /// lower case with their leading dot kept.
    fn no_proxy(&mut self, raw: &RawNoProxy) -> Vec<String> {
        let path = ["proxy", "upstream_proxy", "no_proxy"];
        let texts: Vec<String> = match raw {
            RawNoProxy::List(list) => list.iter().map(|e| self.expand(&path, e)).collect(),
            RawNoProxy::Text(text) => {
                let text = self.expand(&path, text);
                text.split(',').map(str::to_string).collect()
            }
        };
        let mut entries = Vec::new();
        for text in &texts {
            let entry = text.trim();
            match no_proxy_entry(entry) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(why) => self.problem(&path, format!("{entry:?}: {why}")),
            }
        }
        entries
    }
}

/// One `no_proxy` entry as the matcher takes it; `None` for an empty one (as `a,,b` has).
fn no_proxy_entry(entry: &str) -> Result<Option<String>, &'static str> {
    if entry.is_empty() {
        return Ok(None);
    }
    if entry == "*" {
        return Ok(Some(entry.to_string()));
    }
    let bare = entry.trim_start_matches('[').trim_end_matches(']');
    if let Ok(net) = bare.parse::<IpNet>() {
        return Ok(Some(net.to_string()));
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Some(ip.to_string()));
    }
    if entry.contains("://") {
        return Err("name a host, not a URL");
    }
    if entry.contains('/') {
        return Err("not a CIDR");
    }
    if entry.contains(':') {
        return Err("ports are not matched (as in curl's NO_PROXY): name the host alone");
    }
    if entry.starts_with("*.") {
        return Err(
            "write .domain: a leading dot covers every subdomain, and * alone is the only wildcard",
        );
    }
    let name = entry.strip_prefix('.').unwrap_or(entry);
    let host = normalize_host(name).map_err(|_| "not a host name, .domain, IP or CIDR")?;
    Ok(Some(if entry.starts_with('.') {
        format!(".{host}")
    } else {
        host
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_names_domains_ips_cidrs_or_star() {
        let ok = |e: &str| no_proxy_entry(e).unwrap().unwrap();
        assert_eq!(ok("LocalHost"), "localhost");
        assert_eq!(ok(".Svc.Cluster.Local"), ".svc.cluster.local");
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(ok("[::1]"), "::1");
        assert_eq!(ok("fd00::/8"), "fd00::/8");
        assert_eq!(ok("*"), "*");
        assert_eq!(no_proxy_entry("").unwrap(), None);
        for bad in [
            "http://a.example",
            "a.example:8080",
            "*.example.com",
            "10.0.0.0/33",
            "a b",
        ] {
            assert!(no_proxy_entry(bad).is_err(), "{bad}");
        }
    }
}
