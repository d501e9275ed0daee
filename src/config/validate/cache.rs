//! The `cache` section: the Redis the replicas share, and the key that seals its values.

use std::time::Duration;

use base64::Engine;

use super::super::raw::{RawCache, RawRedis};
use super::super::{defaults, CacheConfig, RedisConfig, SecretSource};
use super::Validator;

/// Length of the AES-256-GCM key, in bytes.
pub const ENCRYPTION_KEY_LEN: usize = 32;

impl Validator<'_> {
    pub(super) fn cache(&mut self, c: &RawCache) -> Option<CacheConfig> {
        let Some(raw) = &c.redis else {
            self.problem(
                &["cache"],
                "cache needs redis: {url: redis://host:6379} (the only shared cache so far)",
            );
            return None;
        };
        let redis = self.redis(raw);
        let Some(key) = &c.encryption_key else {
            self.problem(
                &["cache"],
                "cache needs encryption_key (32 random bytes, base64; e.g. { file: .. }): values in Redis are sealed with it",
            );
            return None;
        };
        let path = ["cache", "encryption_key"];
        let encryption_key = self.secret(&path, key);
        if self.check_sources {
            if let Err(e) = encryption_key_bytes(&encryption_key) {
                self.problem(&path, e);
            }
        }
        Some(CacheConfig {
            redis: redis?,
            encryption_key,
        })
    }

    fn redis(&mut self, r: &RawRedis) -> Option<RedisConfig> {
        let key = |k| ["cache", "redis", k];
        // Checked on even after a bad mode, so that one run reports every problem.
        let mode = self.redis_mode(r);
        let tls = mode.as_ref().map(|(_, tls)| *tls);
        let ca_file = self.file(&key("ca_file"), r.ca_file.as_deref());
        if ca_file.is_some() && tls == Some(false) {
            self.problem(
                &key("ca_file"),
                "ca_file is for TLS: use rediss:// (the url, or the nodes) with it",
            );
        }
        let key_prefix = r
            .key_prefix
            .clone()
            .unwrap_or_else(|| defaults::CACHE_KEY_PREFIX.to_string());
        let prefix_ok = !key_prefix.is_empty()
            && key_prefix.len() <= 64
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if !prefix_ok {
            self.problem(
                &key("key_prefix"),
                format!("{key_prefix:?}: 1 to 64 printable characters, no spaces or braces"),
            );
        }
        let timeout = self.duration(&key("timeout"), &r.timeout, defaults::CACHE_TIMEOUT);
        if timeout < Duration::from_millis(5) || timeout > Duration::from_secs(5) {
            self.problem(
                &key("timeout"),
                "between 5ms and 5s: Redis is bypassed after it, so keep it tight",
            );
        }
        let (mode, _) = mode?;
        Some(RedisConfig {
            mode,
            username: r
                .username
                .as_ref()
                .map(|u| self.expand(&key("username"), u)),
            password: r
                .password
                .as_ref()
                .map(|p| self.secret(&key("password"), p)),
            ca_file,
            key_prefix,
            timeout,
        })
    }

    /// Checks a Redis URL; returns whether it asks for TLS.
    pub(super) fn redis_url(&mut self, url: &str) -> Option<bool> {
        let path = ["cache", "redis", "url"];
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                self.problem(&path, format!("not a URL ({e})"));
                return None;
            }
        };
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                self.problem(
                    &path,
                    format!("scheme {other:?}: use redis:// or rediss:// (TLS)"),
                );
                return None;
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            self.problem(&path, "the URL names no host");
            return None;
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            self.problem(
                &path,
                "credentials in the URL would show wherever the URL does: use cache.redis.username and password",
            );
            return None;
        }
        Some(tls)
    }
}

/// The encryption key's bytes, from its source: 32 bytes in standard base64.
pub fn encryption_key_bytes(source: &SecretSource) -> Result<[u8; ENCRYPTION_KEY_LEN], String> {
    let text = source.read().map_err(|e| e.to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.expose().trim())
        .map_err(|_| "the encryption key is not base64".to_string())?;
    <[u8; ENCRYPTION_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "the encryption key is {} bytes; it must be {ENCRYPTION_KEY_LEN} (e.g. openssl rand -base64 32)",
            bytes.len()
        )
    })
}
