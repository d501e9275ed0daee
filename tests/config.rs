//! Config parsing and validation: shipped examples, valid and invalid fixtures.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use tokenproxy::config::{
    AccessLog, AccessLogFormat, AuthMethod, ClusterConfig, Config, ExistingAuthorization,
    RedisMode, RedisNode, Scheme, SecretSource, SentinelConfig, Unmatched, UpstreamProtocol,
};

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn every_shipped_example_config_parses() {
    std::env::set_var("PARTNER_CLIENT_ID", "reports-client");
    for path in yaml_files("config") {
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!config.upstreams.is_empty(), "{}", path.display());
    }
}

#[test]
fn valid_fixtures_pass_the_full_check() {
    for path in yaml_files("tests/fixtures/config/valid") {
        Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn invalid_fixtures_name_the_key_and_line() {
    for path in yaml_files("tests/fixtures/config/invalid") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap();
        let err = Config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", path.display()));
        let shown = err.to_string();
        assert!(
            shown.contains(expect),
            "{}:\n  want: {expect}\n  got:  {shown}",
            path.display()
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid/bad-values.yaml");
    let shown = Config::load(&path).err().unwrap().to_string();
    for want in [
        "line 3: proxy.request_timeout",
        "line 4: proxy.listen: \"0.0.0.0\" is not an IP:PORT address",
        "line 13: upstreams.inventory.match: bad host pattern \"a.*.example.com\"",
        "line 15: upstreams.inventory.scopes: scope \"inventory read\" is not a valid scope token",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
}

#[test]
fn everything_fixture_has_the_values_written() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/everything.yaml");
    let c = Config::load(&path).unwrap();
    let home = std::env::var("HOME").unwrap();
    assert_eq!(c.proxy.listen, Some("127.0.0.1:3128".parse().unwrap()));
    assert_eq!(c.proxy.unmatched, Unmatched::Deny);
    assert_eq!(c.proxy.request_timeout, Duration::from_secs(60));
    let l = c.proxy.limits;
    assert_eq!(
        (
            l.http2_max_concurrent_streams,
            l.http2_max_header_list_size,
            l.http2_max_pending_reset_streams,
            l.http2_max_error_reset_streams
        ),
        (50, 16384, 10, 100)
    );
    assert_eq!(c.admin.listen, Some("[::1]:9901".parse().unwrap()));
    assert_eq!(c.tokens.backoff_min, Duration::from_millis(500));
    assert_eq!(c.tokens.replay_body_limit, 1024);
    let idp = &c.clients["idp"];
    assert_eq!(idp.client_id.as_deref(), Some(home.as_str()));
    assert_eq!(idp.client_secret, Some(SecretSource::Env("HOME".into())));
    assert_eq!(idp.auth_method, AuthMethod::ClientSecretPost);
    let inv = c.upstream("inventory").unwrap();
    let url = inv.url.as_ref().unwrap();
    assert_eq!(
        (
            url.scheme,
            url.host.as_str(),
            url.port,
            url.base_path.as_str()
        ),
        (Scheme::Https, "inventory.example.com", 8443, "/api")
    );
    assert_eq!(inv.listen, Some("127.0.0.1:8081".parse().unwrap()));
    assert_eq!(inv.match_hosts.len(), 2);
    assert_eq!(inv.request.params["tenant"], "acme");
    assert_eq!(inv.existing_authorization, ExistingAuthorization::Keep);
    assert_eq!(inv.protocol, UpstreamProtocol::Http2);
    let legacy = c.upstream("legacy").unwrap();
    assert!(legacy.allow_plaintext);
    assert_eq!(legacy.protocol, UpstreamProtocol::Auto, "the default");
    assert_eq!(
        legacy.match_hosts[0].to_string(),
        "legacy.internal",
        "default match is the url's host"
    );
    assert!(c.upstream("local").unwrap().url.is_none());
    let cache = c.cache.as_ref().unwrap();
    assert_eq!(
        cache.redis.mode,
        RedisMode::Url("rediss://redis.example.com:6380/2".into())
    );
    assert_eq!(cache.redis.username.as_deref(), Some("tokenproxy"));
    assert_eq!(cache.redis.password, Some(SecretSource::Env("HOME".into())));
    assert_eq!(cache.redis.key_prefix, "tp-e2e");
    assert_eq!(cache.redis.timeout, Duration::from_millis(50));
    assert_eq!(
        tokenproxy::config::encryption_key_bytes(&cache.encryption_key).unwrap()[31],
        31
    );
    assert_eq!(
        c.access_log,
        AccessLog {
            enabled: true,
            format: AccessLogFormat::Text,
            include_query: true
        }
    );
}

#[test]
fn cache_problems_are_reported_with_their_lines() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config/invalid/cache-bad-values.yaml");
    let shown = Config::load(&path).err().unwrap().to_string();
    for want in [
        "line 13: cache.redis.url: credentials in the URL",
        "line 14: cache.redis.key_prefix: \"a {b}\": 1 to 64 printable characters",
        "line 15: cache.redis.timeout: between 5ms and 5s",
        "line 16: cache.encryption_key: the encryption key is 5 bytes; it must be 32",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    assert!(
        !shown.contains("pw@"),
        "the URL's password is not repeated: {shown}"
    );
}

fn cache_of(redis: &str) -> Result<tokenproxy::config::RedisConfig, String> {
    let yaml = format!(
        "clients:\n  idp:\n    token_endpoint: https://idp/t\n    client_id: a\n    client_secret: s\nupstreams: {{}}\ncache:\n  redis:\n{redis}  encryption_key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    );
    Config::from_yaml(&yaml)
        .map(|c| c.cache.unwrap().redis)
        .map_err(|e| e.to_string())
}

#[test]
fn sentinel_and_cluster_modes_parse_with_their_nodes() {
    let node = |h: &str, p| RedisNode {
        host: h.into(),
        port: p,
    };
    let sentinel = cache_of(
        "    sentinel: { master_name: tokenproxy, nodes: [s1:26380, s2, \"[::1]:26381\"], password: { env: HOME } }\n    username: tp\n    password: { env: HOME }\n",
    )
    .unwrap();
    assert_eq!(
        sentinel.mode,
        RedisMode::Sentinel(SentinelConfig {
            master_name: "tokenproxy".into(),
            nodes: vec![node("s1", 26380), node("s2", 26379), node("::1", 26381)],
            username: None,
            password: Some(SecretSource::Env("HOME".into())),
            tls: false,
        })
    );
    assert_eq!(sentinel.username.as_deref(), Some("tp"));
    let cluster = cache_of(
        "    cluster:\n      nodes: [rediss://r0:7000, rediss://r1]\n    ca_file: /etc/hostname\n",
    )
    .unwrap();
    assert_eq!(
        cluster.mode,
        RedisMode::Cluster(ClusterConfig {
            nodes: vec![node("r0", 7000), node("r1", 6379)],
            tls: true,
        })
    );
}

#[test]
fn redis_mode_problems_name_their_key_and_line() {
    for (redis, want) in [
        (
            "    url: redis://r:6379\n    cluster: { nodes: [r:1] }\n",
            "line 8: cache.redis: url, sentinel and cluster are three ways",
        ),
        (
            "    key_prefix: x\n",
            "line 8: cache.redis: redis needs one of url",
        ),
        (
            "    sentinel: { nodes: [s:1] }\n",
            "line 9: cache.redis.sentinel: sentinel needs master_name",
        ),
        (
            "    sentinel:\n      master_name: m\n      nodes: []\n",
            "line 11: cache.redis.sentinel.nodes: list at least one node",
        ),
        (
            "    cluster:\n      nodes: [r0:1, rediss://r1:2]\n",
            "line 10: cache.redis.cluster.nodes: mixes rediss:// and plaintext",
        ),
        (
            "    cluster: { nodes: [\"redis://u:pw@r0:1\"] }\n",
            "line 9: cache.redis.cluster.nodes: \"redis://u:pw@r0:1\": no credentials here",
        ),
        ("    cluster: { nodes: [r0:1/3] }\n", "only host:port"),
        (
            "    sentinel: { master_name: m, nodes: [s:1], username: u }\n",
            "line 9: cache.redis.sentinel.username: a sentinel username needs its password",
        ),
        (
            "    cluster: { nodes: [r0:1] }\n    ca_file: /etc/hostname\n",
            "line 10: cache.redis.ca_file: ca_file is for TLS",
        ),
    ] {
        let shown = cache_of(redis).err().unwrap_or_default();
        assert!(
            shown.contains(want),
            "{redis:?}: missing {want:?} in:\n{shown}"
        );
    }
}

#[test]
fn the_access_log_and_the_cache_are_off_by_default() {
    let c = Config::from_yaml(
        "clients:\n  idp:\n    token_endpoint: https://idp/t\n    client_id: a\n    client_secret: s\nupstreams: {}\n",
    )
    .unwrap();
    assert!(!c.access_log.enabled);
    assert!(c.cache.is_none());
}

#[test]
fn debug_of_a_config_masks_literal_secrets() {
    let c = Config::from_yaml(
        "clients:\n  idp:\n    token_endpoint: https://idp/t\n    client_id: a\n    client_secret: canary-Secret-4242\nupstreams: {}\n",
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("canary-Secret-4242"), "{shown}");
}

/// The tests' config builder (`common::TestConfig`) makes the YAML a user would write.
#[test]
fn keys_set_by_path_make_the_yaml_a_user_would_write() {
    let c = common::TestConfig::new()
        .forward()
        .client("idp", "http://127.0.0.1:9/token", "s3cret")
        .upstream("api", "http://127.0.0.1:8", "api.example.com", "idp")
        .set("upstreams.api.scopes", serde_json::json!(["read"]))
        .remove("tokens.wait_timeout");
    let config = c.config();
    assert_eq!(config.proxy.listen.unwrap().ip().to_string(), "127.0.0.1");
    assert_eq!(config.upstreams[0].request.scopes, ["read"]);
    assert_eq!(config.clients["idp"].client_id.as_deref(), Some("orders"));
    assert!(!c.text().contains("wait_timeout"));
}

#[test]
fn upstream_proxy_is_parsed_with_its_opt_outs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config/valid/upstream-proxy.yaml");
    let c = Config::load(&path).unwrap();
    let parent = c.proxy.upstream_proxy.clone().unwrap();
    assert_eq!(
        (parent.host.as_str(), parent.port),
        ("proxy.corp.example", 8080)
    );
    assert_eq!(parent.username.as_deref(), Some("svc-tokenproxy"));
    assert_eq!(
        parent.no_proxy,
        ["localhost", ".svc.cluster.local", "10.0.0.0/8", "::1"]
    );
    assert_eq!(c.clients["cloud"].upstream_proxy, Some(parent.clone()));
    assert_eq!(c.clients["inhouse"].upstream_proxy, None);
    assert_eq!(c.upstream("saas").unwrap().upstream_proxy, Some(parent));
    assert_eq!(c.upstream("internal").unwrap().upstream_proxy, None);
    // The password never shows in a printed config.
    assert!(!format!("{c:?}").contains("s3cret-parent"));
}
