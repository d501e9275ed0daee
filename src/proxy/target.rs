//! What a forward-mode request names: the scheme, host and port of an absolute-form target,
//! or the `host:port` of a CONNECT.

use std::borrow::Cow;

use http::Uri;

use super::error::ProxyError;
use crate::config::Scheme;
use crate::host::split_authority;

/// The scheme, normalised host and port of a target. The host borrows from the request when
/// it was already in normal form (a forward request's target, routed and dropped with the
/// request); a target kept beyond the request (a tunnel's) is `Target<'static>`.
pub struct Target<'a> {
    pub scheme: Scheme,
    pub host: Cow<'a, str>,
    pub port: u16,
}

impl<'a> Target<'a> {
    /// The scheme and the authority as written of an absolute-form target
    /// (`http://host:port/path`).
    pub fn split(uri: &'a Uri) -> Result<(Scheme, &'a str), ProxyError> {
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => return Err(ProxyError::SchemeNotProxied(other.to_string())),
            None => return Err(ProxyError::NotAbsoluteForm),
        };
        let authority = uri.authority().ok_or(ProxyError::TargetWithoutHost)?;
        Ok((scheme, authority.as_str()))
    }

    /// A target from [`Target::split`]'s parts: the host normalised, the port defaulted.
    pub fn of(scheme: Scheme, authority: &'a str) -> Result<Target<'a>, ProxyError> {
        let (host, port) =
            split_authority(authority, scheme.default_port()).map_err(ProxyError::BadTarget)?;
        Ok(Target { scheme, host, port })
    }

    /// `host:port`, for messages.
    pub fn display(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Target<'static> {
    /// A CONNECT target (`host:port`); the scheme is what a tunnel usually carries.
    pub fn connect(uri: &Uri) -> Result<Target<'static>, ProxyError> {
        let authority = uri.authority().ok_or(ProxyError::ConnectWithoutAuthority)?;
        let (host, port) =
            split_authority(authority.as_str(), 443).map_err(ProxyError::BadConnectTarget)?;
        Ok(Target {
            scheme: Scheme::Https,
            host: Cow::Owned(host.into_owned()),
            port,
        })
    }
}
