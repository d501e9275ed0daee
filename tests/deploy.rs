//! deploy/ stays true to the binary: every metric the alert rules and the dashboard use is
//! exported, and the config shipped in the Kubernetes ConfigMap is valid.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;

use tokenproxy::metrics::{Metrics, RequestMetrics};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// `tokenproxy_*` names in a text, with histogram suffixes folded to the family name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("tokenproxy_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        i = end;
    }
    names
}

#[test]
fn every_metric_used_by_alerts_and_dashboard_is_exported() {
    let m = Metrics::new().unwrap();
    m.init_upstream("u");
    // What one answered request records (the latency histogram exists from the first one).
    let requests = RequestMetrics::new(&m, "u");
    requests.count(http::StatusCode::OK);
    requests.observe(0.01);
    // Exported once an endpoint exists for a method, and once a client has a certificate.
    m.token_fetches_by_auth_method
        .with_label_values(&["client_secret_basic", "success"]);
    m.client_certificate_expiry
        .with_label_values(&["c"])
        .set(0.0);
    // The shared cache's series exist once a cache is configured.
    m.cache.init();
    let exported: BTreeSet<String> = String::from_utf8(m.render())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    for file in [
        "deploy/monitoring/alerts.yaml",
        "deploy/monitoring/grafana-dashboard.json",
    ] {
        let used = metric_names(&read(file));
        assert!(!used.is_empty(), "{file} uses no tokenproxy metric?");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which tokenproxy does not export"
            );
        }
    }
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let cm: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/kubernetes/configmap.yaml")).unwrap();
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    let config = tokenproxy::Config::from_yaml(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.upstreams.len(), 1);
}

#[test]
fn the_redis_cache_example_holds_a_valid_config_with_a_cache() {
    let text = read("deploy/kubernetes/redis-cache.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let config = tokenproxy::Config::from_yaml(cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let cache = config.cache.expect("a cache section");
    assert_eq!(
        cache.redis.mode,
        tokenproxy::config::RedisMode::Url("redis://tokenproxy-redis:6379".into())
    );
    assert_eq!(cache.redis.username.as_deref(), Some("tokenproxy"));
    // The ACL lets the user reach the cache's keys, with the commands it sends.
    let redis = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = format!(
        "{:?}",
        redis["spec"]["template"]["spec"]["containers"][0]["args"]
    );
    for needed in [
        "~{tokenproxy:*",
        "+get",
        "+set",
        "+eval",
        "+evalsha",
        "+del",
        "+ping",
    ] {
        assert!(args.contains(needed), "{needed} not in {args}");
    }
}

#[test]
fn the_sentinel_example_names_every_sentinel_of_its_statefulset() {
    let text = read("deploy/kubernetes/redis-sentinel.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == k && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {k} {name}"))
    };
    let cm = kind("ConfigMap", "tokenproxy-config-sentinel");
    let config = tokenproxy::Config::from_yaml(cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let tokenproxy::config::RedisMode::Sentinel(sentinel) = &config.cache.unwrap().redis.mode
    else {
        panic!("a sentinel mode");
    };
    let set = kind("StatefulSet", "tokenproxy-redis-ha");
    let replicas = set["spec"]["replicas"].as_u64().unwrap();
    let service = set["spec"]["serviceName"].as_str().unwrap();
    let names: Vec<String> = sentinel.nodes.iter().map(|n| n.to_string()).collect();
    let pods: Vec<String> = (0..replicas)
        .map(|i| format!("tokenproxy-redis-ha-{i}.{service}:26379"))
        .collect();
    assert_eq!(names, pods);
    // The name the sentinels monitor is the one tokenproxy asks for, and the Redis ACL lets
    // the cache's user run what it sends.
    let script = kind("ConfigMap", "tokenproxy-redis-ha")["data"]["start.sh"]
        .as_str()
        .unwrap();
    assert!(script.contains(&format!(
        "sentinel monitor {} $primary 6379 2",
        sentinel.master_name
    )));
    for needed in [
        "\"~{tokenproxy:*\"",
        "+get",
        "+set",
        "+del",
        "+evalsha",
        "+ping",
        "+role",
    ] {
        assert!(script.contains(needed), "{needed} not in the ACL");
    }
    let pdb = kind("PodDisruptionBudget", "tokenproxy-redis-ha");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(replicas / 2 + 1));
}

#[test]
fn the_federated_identity_example_holds_a_secretless_config_and_projects_its_token() {
    let text = read("deploy/kubernetes/federated-identity.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    std::env::set_var("AZURE_TENANT_ID", "tenant");
    std::env::set_var("AZURE_CLIENT_ID", "client");
    let config = tokenproxy::Config::from_yaml(cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let client = &config.clients["entra"];
    assert_eq!(
        client.auth_method,
        tokenproxy::config::AuthMethod::ClientAssertion
    );
    assert!(client.client_secret.is_none());
    let tokenproxy::config::JwtSource::File(path) =
        &client.client_assertion.as_ref().unwrap().source
    else {
        panic!("a file source");
    };
    // The file the config reads is the one the projected volume writes.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = &pod["initContainers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "idp-token")
        .unwrap()["mountPath"];
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "idp-token")
        .unwrap();
    let projected = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        path.to_str().unwrap(),
        format!(
            "{}/{}",
            mount.as_str().unwrap(),
            projected["path"].as_str().unwrap()
        )
    );
    assert_eq!(projected["audience"], "api://AzureADTokenExchange");
    assert!(!text.contains("kind: Secret"), "no Secret in this example");
}
