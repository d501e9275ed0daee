//! The parent proxy of `proxy.upstream_proxy`: where it is, which destinations it carries,
//! and the `Proxy-Authorization` it is sent.
//!
//! `no_proxy` means what `NO_PROXY` means to curl, decided by hyper-util's matcher (the one
//! reqwest uses too): a host name matches itself and its subdomains (`.example.com` and
//! `example.com` alike), an IP or CIDR matches addresses written as IP literals, `*` matches
//! everything; ports are not looked at and names are not resolved.
//!
//! The password is read from its secret source at every new connection to the parent, as a
//! client secret is at every token request: a rotated file is used from the next connection
//! on, with no reload. The credential goes to the parent only: in the `CONNECT` request, or
//! in absolute-form requests on connections to it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine;
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use tokio::net::TcpStream;

use crate::config::{ParentProxyConfig, SecretSource};

/// The parent proxy, built once per config.
pub struct Parent {
    /// `host:port`, as written (IPv6 in brackets): for messages and the `CONNECT` target's
    /// neighbour in logs.
    authority: String,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<SecretSource>,
    no_proxy: Matcher,
    /// The `Proxy-Authorization` read at the newest connection: absolute-form requests on
    /// connections to the parent carry it.
    last: ArcSwapOption<HeaderValue>,
}

/// Why the parent could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParentError {
    #[error("parent proxy {parent} refused {what}: HTTP {status}{}", hint(*status))]
    Refused {
        parent: String,
        /// `CONNECT host:port`, or `a request to host:port`.
        what: String,
        status: u16,
    },
    #[error("parent proxy {parent} unreachable: {reason}")]
    Unreachable { parent: String, reason: String },
    #[error("parent proxy credentials unavailable: {0}")]
    Credentials(String),
}

fn hint(status: u16) -> &'static str {
    match status {
        407 => " (Proxy Authentication Required: check proxy.upstream_proxy username and password)",
        403 => " (Forbidden: the parent's policy does not allow this destination)",
        _ => "",
    }
}

impl ParentError {
    /// The parent's status, for a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ParentError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Parent {
    pub fn new(config: &ParentProxyConfig) -> Parent {
        let authority = format!("{}:{}", config.host, config.port);
        let no_proxy = Matcher::builder()
            .all(format!("http://{authority}"))
            .no(config.no_proxy.join(","))
            .build();
        Parent {
            authority,
            host: config.host.clone(),
            port: config.port,
            username: config.username.clone(),
            password: config.password.clone(),
            no_proxy,
            last: ArcSwapOption::empty(),
        }
    }

    /// `host:port` of the parent.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether a connection to `dst` (an `http` or `https` URI) goes through the parent.
    pub fn carries(&self, dst: &Uri) -> bool {
        self.no_proxy.intercept(dst).is_some()
    }

    /// Whether a tunnel to `host:port` goes through the parent.
    pub fn carries_host(&self, host: &str, port: u16) -> bool {
        match Uri::builder()
            .scheme("http")
            .authority(format!("{host}:{port}"))
            .path_and_query("/")
            .build()
        {
            Ok(uri) => self.carries(&uri),
            // Not a host a URI can name: no `no_proxy` entry can name it either.
            Err(_) => true,
        }
    }

    /// The `Proxy-Authorization` to send, read from the secret source now; `None` without a
    /// username. Absolute-form requests use it from here on ([`Parent::last_authorization`]).
    pub fn authorization(&self) -> Result<Option<HeaderValue>, ParentError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password {
            Some(p) => Some(
                p.read()
                    .map_err(|e| ParentError::Credentials(e.to_string()))?,
            ),
            None => None,
        };
        let pair = format!("{user}:{}", password.as_ref().map_or("", |p| p.expose()));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ParentError::Credentials("not a header value".into()))?;
        value.set_sensitive(true);
        self.last.store(Some(Arc::new(value.clone())));
        Ok(Some(value))
    }

    /// The `Proxy-Authorization` for an absolute-form request: the one read at the newest
    /// connection to the parent (or now, before the first).
    pub fn forward_authorization(&self) -> Result<Option<HeaderValue>, ParentError> {
        match self.last.load().as_deref() {
            Some(value) => Ok(Some(value.clone())),
            None => self.authorization(),
        }
    }

    /// The parent's 407 to an absolute-form request: the credential is read again for the
    /// next request (a rotated password is taken up without a new connection).
    pub fn rejected(&self, what: String) -> ParentError {
        if let Err(e) = self.authorization() {
            tracing::warn!(parent = %self.authority, error = %e, "parent proxy credentials unavailable");
        }
        self.refused(what, 407)
    }

    /// A new TCP connection to the parent (no delay on small writes).
    pub async fn connect(&self) -> Result<TcpStream, ParentError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let unreachable = |e: std::io::Error| ParentError::Unreachable {
            parent: self.authority.clone(),
            reason: e.to_string(),
        };
        let tcp = TcpStream::connect((host, self.port))
            .await
            .map_err(unreachable)?;
        tcp.set_nodelay(true).map_err(unreachable)?;
        Ok(tcp)
    }

    /// A refusal of `what` with `status`.
    pub fn refused(&self, what: String, status: u16) -> ParentError {
        ParentError::Refused {
            parent: self.authority.clone(),
            what,
            status,
        }
    }

    /// The same parent for reqwest (the token endpoint client): a custom proxy, so that the
    /// password is read at each request and `no_proxy` is decided by the same matcher.
    pub fn reqwest_proxy(self: Arc<Self>) -> reqwest::Proxy {
        reqwest::Proxy::custom(move |url: &reqwest::Url| self.reqwest_target(url))
    }

    fn reqwest_target(&self, url: &reqwest::Url) -> Option<reqwest::Url> {
        let carried = match url.as_str().parse::<Uri>() {
            Ok(dst) => self.carries(&dst),
            Err(_) => true,
        };
        if !carried {
            return None;
        }
        let mut proxy = reqwest::Url::parse(&format!("http://{}", self.authority)).ok()?;
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map(SecretSource::read).transpose();
            match password {
                Ok(password) => {
                    // Cannot fail on an http URL with a host.
                    let _ = proxy.set_username(user);
                    let _ = proxy.set_password(password.as_ref().map(|p| p.expose()));
                }
                Err(e) => tracing::warn!(parent = %self.authority, error = %e,
                    "parent proxy password unavailable; asking without it"),
            }
        }
        Some(proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn parent(no_proxy: &[&str]) -> Parent {
        Parent::new(&ParentProxyConfig {
            host: "proxy.corp.example".into(),
            port: 3128,
            username: Some("tp".into()),
            password: Some(SecretSource::Literal(Secret::new("pa:ss"))),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn no_proxy_has_curls_meaning() {
        let p = parent(&[
            "localhost",
            ".svc.cluster.local",
            "internal.example",
            "10.0.0.0/8",
            "192.0.2.7",
        ]);
        let carried = |u: &str| p.carries(&u.parse().unwrap());
        assert!(!carried("http://localhost:8080/"));
        assert!(!carried("https://api.ns.svc.cluster.local/"));
        assert!(!carried("https://internal.example/"));
        assert!(!carried("https://a.internal.example/"));
        assert!(!carried("http://10.1.2.3/"));
        assert!(!carried("https://192.0.2.7:8443/"));
        assert!(carried("https://notinternal.example/"));
        assert!(carried("https://api.example.com/"));
        // Names are not resolved and 127.0.0.1 is not `localhost`, as with curl.
        assert!(carried("http://127.0.0.1/"));
        assert!(!p.carries_host("api.ns.svc.cluster.local", 443));
        assert!(p.carries_host("api.example.com", 443));
        assert!(parent(&["*"])
            .no_proxy
            .intercept(&"https://x/".parse().unwrap())
            .is_none());
    }

    #[test]
    fn authorization_is_basic_and_sensitive_and_remembered() {
        let p = parent(&[]);
        assert!(p.last.load().is_none());
        let v = p.forward_authorization().unwrap().unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic dHA6cGE6c3M="); // tp:pa:ss
        assert!(v.is_sensitive());
        assert_eq!(p.last.load().as_deref(), Some(&v));
    }

    #[test]
    fn reqwest_gets_the_parent_with_credentials_unless_no_proxy_says_direct() {
        let p = parent(&[".internal"]);
        let to = |u: &str| p.reqwest_target(&reqwest::Url::parse(u).unwrap());
        let via = to("https://idp.example.com/token").unwrap();
        assert_eq!(via.host_str(), Some("proxy.corp.example"));
        assert_eq!(via.port(), Some(3128));
        assert_eq!(via.username(), "tp");
        assert_eq!(via.password(), Some("pa%3Ass"));
        assert!(to("https://idp.internal/token").is_none());
    }

    #[test]
    fn refusals_say_what_to_check() {
        let p = parent(&[]);
        let e = p.refused("CONNECT idp.example.com:443".into(), 407);
        assert_eq!(
            e.to_string(),
            "parent proxy proxy.corp.example:3128 refused CONNECT idp.example.com:443: HTTP 407 \
             (Proxy Authentication Required: check proxy.upstream_proxy username and password)"
        );
        assert_eq!(e.status(), Some(407));
    }
}
