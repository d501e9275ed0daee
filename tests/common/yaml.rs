//! Test configs built by key rather than as `format!`-ed YAML text: start from
//! [`TestConfig::new`] (an admin listener on port 0 and quick token timings), set any key by its
//! dotted path, add clients and upstreams, then take the YAML text (for the binary) or the
//! validated [`tokenproxy::Config`] (in-process).
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct TestConfig {
    root: Value,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TestConfig {
    /// `admin.listen` on port 0, and token timings short enough for tests.
    pub fn new() -> TestConfig {
        TestConfig {
            root: json!({
                "admin": {"listen": "127.0.0.1:0"},
                "tokens": {"wait_timeout": "5s", "min_refresh_interval": "50ms",
                           "backoff_min": "100ms", "backoff_max": "200ms"},
            }),
        }
    }

    /// A forward listener on port 0.
    pub fn forward(self) -> TestConfig {
        self.set("proxy.listen", "127.0.0.1:0")
    }

    /// Sets the key at a dotted path (`clients.idp.client_id`), making the maps on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> TestConfig {
        let mut at = &mut self.root;
        let keys: Vec<&str> = path.split('.').collect();
        for key in &keys[..keys.len() - 1] {
            if !at.get(*key).is_some_and(Value::is_object) {
                at[*key] = json!({});
            }
            at = &mut at[*key];
        }
        at[keys[keys.len() - 1]] = value.into();
        self
    }

    /// Sets each key of a YAML mapping `text` under the dotted path (the lines a test
    /// varies, such as a client's credentials, written as a user would).
    pub fn merge(mut self, path: &str, text: &str) -> TestConfig {
        let extra: Value = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if let Value::Object(map) = extra {
            for (k, v) in map {
                self = self.set(&format!("{path}.{k}"), v);
            }
        }
        self
    }

    /// Removes the key at a dotted path.
    pub fn remove(mut self, path: &str) -> TestConfig {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let at = parent
            .split('.')
            .filter(|k| !k.is_empty())
            .fold(&mut self.root, |v, k| &mut v[k]);
        if let Some(map) = at.as_object_mut() {
            map.remove(key);
        }
        self
    }

    /// A client with a secret at `token_endpoint` (`client_id: orders`, the secret given).
    pub fn client(self, name: &str, token_endpoint: &str, secret: &str) -> TestConfig {
        self.set(
            &format!("clients.{name}"),
            json!({"token_endpoint": token_endpoint, "client_id": "orders", "client_secret": secret}),
        )
    }

    /// An upstream sending to `url`, matched by `host`, with `client`'s tokens.
    pub fn upstream(self, name: &str, url: &str, host: &str, client: &str) -> TestConfig {
        self.set(
            &format!("upstreams.{name}"),
            json!({"url": url, "match": [host], "client": client}),
        )
    }

    /// The YAML text.
    pub fn text(&self) -> String {
        serde_yaml::to_string(&self.root).unwrap()
    }

    /// Validated (no secret read).
    pub fn config(&self) -> tokenproxy::Config {
        let text = self.text();
        tokenproxy::Config::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Validated with its secret sources read and files checked, as `run` does.
    pub fn config_checked(&self) -> tokenproxy::Config {
        let text = self.text();
        tokenproxy::Config::from_yaml_checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Written to `dir/c.yaml`, for the binary.
    pub fn write(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("c.yaml");
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}
