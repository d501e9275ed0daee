//! The `proxy`, `admin` and `tokens` sections.

use std::path::PathBuf;

use super::super::raw::{RawCa, RawIntercept, RawProxy, RawTokens};
use super::super::{defaults, CaSource, InterceptConfig, Limits, ProxyConfig, TokenSettings};
use super::Validator;
use crate::host::DenyList;

impl Validator<'_> {
    pub(super) fn proxy(&mut self, p: &RawProxy) -> ProxyConfig {
        let key = |k| ["proxy", k];
        ProxyConfig {
            listen: p
                .listen
                .as_deref()
                .and_then(|s| self.addr(&key("listen"), s)),
            unmatched: p.unmatched.unwrap_or_default(),
            connect_timeout: self.duration(
                &key("connect_timeout"),
                &p.connect_timeout,
                defaults::CONNECT_TIMEOUT,
            ),
            request_timeout: self.duration(
                &key("request_timeout"),
                &p.request_timeout,
                defaults::REQUEST_TIMEOUT,
            ),
            drain_timeout: self.duration(
                &key("drain_timeout"),
                &p.drain_timeout,
                defaults::DRAIN_TIMEOUT,
            ),
            shutdown_delay: self.duration(
                &key("shutdown_delay"),
                &p.shutdown_delay,
                defaults::SHUTDOWN_DELAY,
            ),
            limits: self.limits(p),
            intercept: p.intercept.as_ref().and_then(|i| self.intercept(i)),
            connect_plaintext: p.connect_plaintext.unwrap_or(true),
            deny_destinations: self.deny_destinations(&p.deny_destinations),
            upstream_proxy: (p.upstream_proxy.as_ref())
                .and_then(|r| self.parent_proxy(r))
                .map(std::sync::Arc::new),
        }
    }

    fn deny_destinations(&mut self, entries: &[String]) -> DenyList {
        let path = ["proxy", "deny_destinations"];
        let entries: Vec<String> = entries.iter().map(|e| self.expand(&path, e)).collect();
        DenyList::parse(entries.iter().map(|e| e.trim())).unwrap_or_else(|e| {
            self.problem(&path, e.to_string());
            DenyList::default()
        })
    }

    fn intercept(&mut self, i: &RawIntercept) -> Option<InterceptConfig> {
        let key = |k| ["proxy", "intercept", k];
        let ca = match &i.ca {
            RawCa::Generate(word) if word == "generate" => CaSource::Generate,
            RawCa::Generate(other) => {
                let msg = format!("{other:?}: use generate, or {{cert_file: .., key_file: ..}}");
                self.problem(&key("ca"), msg);
                return None;
            }
            RawCa::Files(f) => CaSource::Files {
                cert_file: self.file(&key("ca"), Some(&f.cert_file))?,
                key_file: self.file(&key("ca"), Some(&f.key_file))?,
            },
        };
        let leaf_lifetime = self.duration(
            &key("leaf_lifetime"),
            &i.leaf_lifetime,
            defaults::LEAF_LIFETIME,
        );
        let (min, max) = defaults::LEAF_LIFETIME_RANGE;
        if leaf_lifetime < min || leaf_lifetime > max {
            self.problem(&key("leaf_lifetime"), "must be between 1h and 397 days");
        }
        let trust_dir = i
            .trust_dir
            .as_deref()
            .map(|d| PathBuf::from(self.expand(&key("trust_dir"), d)));
        Some(InterceptConfig {
            ca,
            trust_dir,
            leaf_lifetime,
        })
    }

    fn limits(&mut self, p: &RawProxy) -> Limits {
        let d = Limits::default();
        let limits = Limits {
            header_read_timeout: self.duration(
                &["proxy", "header_read_timeout"],
                &p.header_read_timeout,
                d.header_read_timeout,
            ),
            max_connections: p.max_connections.unwrap_or(d.max_connections),
            max_headers: p.max_headers.unwrap_or(d.max_headers),
            max_head_bytes: p.max_head_bytes.unwrap_or(d.max_head_bytes),
            http2_max_concurrent_streams: p
                .http2_max_concurrent_streams
                .unwrap_or(d.http2_max_concurrent_streams),
            http2_max_header_list_size: p
                .http2_max_header_list_size
                .unwrap_or(d.http2_max_header_list_size),
            http2_max_pending_reset_streams: p
                .http2_max_pending_reset_streams
                .unwrap_or(d.http2_max_pending_reset_streams),
            http2_max_error_reset_streams: p
                .http2_max_error_reset_streams
                .unwrap_or(d.http2_max_error_reset_streams),
        };
        if limits.http2_max_concurrent_streams == 0 {
            self.problem(
                &["proxy", "http2_max_concurrent_streams"],
                "must be at least 1",
            );
        }
        if limits.http2_max_header_list_size < 8192 {
            self.problem(
                &["proxy", "http2_max_header_list_size"],
                "must be at least 8192",
            );
        }
        if limits.http2_max_pending_reset_streams == 0 {
            self.problem(
                &["proxy", "http2_max_pending_reset_streams"],
                "must be at least 1",
            );
        }
        if limits.max_connections == 0 {
            self.problem(&["proxy", "max_connections"], "must be at least 1");
        }
        if limits.max_head_bytes < 8192 {
            self.problem(&["proxy", "max_head_bytes"], "must be at least 8192");
        }
        if limits.header_read_timeout.is_zero() {
            self.problem(&["proxy", "header_read_timeout"], "must be above zero");
        }
        limits
    }

    pub(super) fn tokens(&mut self, t: &RawTokens) -> TokenSettings {
        let d = TokenSettings::default();
        let p = |k| ["tokens", k];
        let settings = TokenSettings {
            default_lifetime: self.duration(
                &p("default_lifetime"),
                &t.default_lifetime,
                d.default_lifetime,
            ),
            max_lifetime: self.duration(&p("max_lifetime"), &t.max_lifetime, d.max_lifetime),
            min_refresh_interval: self.duration(
                &p("min_refresh_interval"),
                &t.min_refresh_interval,
                d.min_refresh_interval,
            ),
            backoff_min: self.duration(&p("backoff_min"), &t.backoff_min, d.backoff_min),
            backoff_max: self.duration(&p("backoff_max"), &t.backoff_max, d.backoff_max),
            wait_timeout: self.duration(&p("wait_timeout"), &t.wait_timeout, d.wait_timeout),
            fetch_timeout: self.duration(&p("fetch_timeout"), &t.fetch_timeout, d.fetch_timeout),
            replay_body_limit: t
                .replay_body_limit
                .map_or(d.replay_body_limit, |n| n as usize),
        };
        if settings.backoff_min.is_zero() || settings.backoff_min > settings.backoff_max {
            self.problem(
                &p("backoff_min"),
                "must be above zero and at most backoff_max",
            );
        }
        if settings.default_lifetime.is_zero() || settings.default_lifetime > settings.max_lifetime
        {
            self.problem(
                &p("default_lifetime"),
                "must be above zero and at most max_lifetime",
            );
        }
        settings
    }
}
