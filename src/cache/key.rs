//! The Redis keys of one token request: a hash of everything that makes two tokens
//! different, and nothing secret.
//!
//! The hash covers the token endpoint (or the issuer, when the endpoint is discovered), the
//! client id, the auth method with the thumbprint of the key or certificate it uses, the
//! scopes as a sorted set, the audience, the resources as a sorted set, the extra params,
//! and the thumbprint of the DPoP key the tokens are bound to. A client that presents tokens
//! it did not make (a federated client assertion, a token exchange's subject and actor) is
//! known by each token's source, issuer and subject, never by the token: a rotated projected
//! token keeps the key, a different workload identity changes it.
//! Replicas (and upstreams) whose requests agree on all of these share a token; the client's
//! name in the config does not count, so replicas may name it differently. The value and its
//! lock share a Redis Cluster slot through the hash tag `{prefix:hash}`.

use serde_json::json;

use crate::config::{ClientConfig, ExternalToken, JwtSource, TokenRequest};
use crate::jose::key_file;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Where the sealed token is.
    pub token: String,
    /// The refresh lock.
    pub lock: String,
}

impl Keys {
    /// `dpop_jkt`: the thumbprint of the key the tokens are bound to, for a DPoP client.
    pub fn new(
        prefix: &str,
        client: &ClientConfig,
        request: &TokenRequest,
        dpop_jkt: Option<&str>,
    ) -> Keys {
        let id = identity(client, request, dpop_jkt);
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let hash: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Keys {
            token: format!("{{{prefix}:{hash}}}:token"),
            lock: format!("{{{prefix}:{hash}}}:lock"),
        }
    }
}

/// The canonical text hashed into the key.
fn identity(client: &ClientConfig, request: &TokenRequest, dpop_jkt: Option<&str>) -> String {
    let mut scopes = request.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let mut resource = request.resource.clone();
    resource.sort();
    resource.dedup();
    json!({
        "v": 1,
        "endpoint": client.token_endpoint.as_ref().map(|u| u.as_str()),
        "issuer": client.issuer,
        "client_id": client.client_id,
        "auth_method": client.auth_method.as_str(),
        "credential": credential(client),
        "grant": client.grant.as_str(),
        "presented": presented(client),
        "scopes": scopes,
        "audience": request.audience,
        "resource": resource,
        "params": request.params,
        "dpop_jkt": dpop_jkt,
    })
    .to_string()
}

/// The source, `iss` and `sub` of each token the client presents (read now, unverified);
/// `null` when it presents none.
fn presented(client: &ClientConfig) -> serde_json::Value {
    let mut tokens: Vec<&ExternalToken> = client.client_assertion.iter().collect();
    if let Some(ex) = &client.exchange {
        tokens.push(&ex.subject);
        tokens.extend(ex.actor.iter());
    }
    if tokens.is_empty() {
        return serde_json::Value::Null;
    }
    let exchange = client.exchange.as_ref();
    let facts: Vec<serde_json::Value> = tokens
        .into_iter()
        .map(|t| {
            let peeked = t.source.peek_now();
            json!({
                "source": source_name(&t.source),
                "type": t.token_type,
                "iss": peeked.as_ref().and_then(|p| p.iss.clone()),
                "sub": peeked.as_ref().and_then(|p| p.sub.clone()),
            })
        })
        .collect();
    json!({"tokens": facts, "requested": exchange.and_then(|e| e.requested_token_type.clone())})
}

/// Where a presented token comes from, without its value: the file, the variable, the
/// Actions audience, or the other client's name.
fn source_name(source: &JwtSource) -> String {
    match source {
        JwtSource::File(p) => format!("file:{}", p.display()),
        JwtSource::Env(n) => format!("env:{n}"),
        JwtSource::GithubActions { audience } => {
            format!("github_actions:{}", audience.as_deref().unwrap_or_default())
        }
        JwtSource::Client { name, request } => {
            format!(
                "client:{name}:{}:{:?}:{}",
                request.scopes.join(" "),
                request.audience,
                request.resource.join(" ")
            )
        }
    }
}

/// The public identity of the client's key or certificate, if it has one: a JWK thumbprint
/// (RFC 7638) or a certificate's SHA-256. Read from its source now; one that cannot be read
/// gives `unreadable` (the token requests fail anyway).
fn credential(client: &ClientConfig) -> Option<String> {
    if let Some(tls) = &client.tls_client {
        let pem = tls.certificate.read().ok()?;
        let facts = crate::pki::certificate_facts(pem.expose());
        return Some(facts.map_or_else(|| "unreadable".into(), |(sha256, _)| sha256));
    }
    let a = client.assertion.as_ref()?;
    let source = a.private_key.as_ref()?;
    let key = source
        .read()
        .ok()
        .and_then(|text| key_file::load(text.expose(), a.signing_alg).ok())
        .and_then(|(k, _)| k.thumbprint());
    Some(key.unwrap_or_else(|| "unreadable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMethod, Secret, SecretSource, TokenType};

    fn client(id: &str) -> ClientConfig {
        ClientConfig {
            name: "local-name".into(),
            token_endpoint: Some("https://idp.example/token".parse().unwrap()),
            issuer: None,
            client_id: Some(id.into()),
            client_secret: Some(SecretSource::Literal(Secret::new(String::from(
                "CANARY-SECRET",
            )))),
            auth_method: AuthMethod::ClientSecretBasic,
            grant: crate::config::Grant::ClientCredentials,
            client_assertion: None,
            exchange: None,
            ca_file: None,
            assertion: None,
            tls_client: None,
            token_type: TokenType::Bearer,
            dpop_key: None,
            upstream_proxy: None,
        }
    }

    fn request(scopes: &[&str]) -> TokenRequest {
        TokenRequest {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            audience: None,
            resource: vec![],
            params: Default::default(),
        }
    }

    #[test]
    fn keys_follow_the_request_not_the_names_and_hold_no_secret() {
        let k = Keys::new("tp", &client("orders"), &request(&["b", "a"]), None);
        assert!(k.token.starts_with("{tp:") && k.token.ends_with("}:token"));
        assert_eq!(k.lock, k.token.replace(":token", ":lock"));
        let mut renamed = client("orders");
        renamed.name = "other-name".into();
        assert_eq!(
            k,
            Keys::new("tp", &renamed, &request(&["a", "b", "a"]), None)
        );
        assert_ne!(
            k,
            Keys::new("tp", &client("billing"), &request(&["a", "b"]), None)
        );
        assert_ne!(
            k,
            Keys::new("tp", &client("orders"), &request(&["a"]), None)
        );
        let mut post = client("orders");
        post.auth_method = AuthMethod::ClientSecretPost;
        assert_ne!(k, Keys::new("tp", &post, &request(&["a", "b"]), None));
        let mut aud = request(&["a", "b"]);
        aud.audience = Some("https://api".into());
        assert_ne!(k, Keys::new("tp", &client("orders"), &aud, None));
        assert!(!identity(&client("orders"), &aud, None).contains("CANARY"));
        let bound = Keys::new(
            "tp",
            &client("orders"),
            &request(&["a", "b"]),
            Some("jkt-1"),
        );
        assert_ne!(k, bound, "a DPoP-bound token is another token");
        let other = Keys::new(
            "tp",
            &client("orders"),
            &request(&["a", "b"]),
            Some("jkt-2"),
        );
        assert_ne!(bound, other, "bound to another key");
    }

    /// A JWT as a platform would issue it (unsigned here: only its claims are read).
    fn platform_token(sub: &str, jti: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        let h = B64.encode(r#"{"alg":"ES256"}"#);
        let c = B64.encode(format!(
            r#"{{"iss":"https://k8s","sub":"{sub}","exp":1900000000,"jti":"{jti}"}}"#
        ));
        format!("{h}.{c}.{}", B64.encode([9u8; 64]))
    }

    #[test]
    fn a_presented_token_is_known_by_its_issuer_and_subject_never_its_value() {
        use crate::config::{token_types, ExternalToken, JwtSource};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let federated = |path: &std::path::Path| {
            let mut c = client("orders");
            c.client_secret = None;
            c.auth_method = AuthMethod::ClientAssertion;
            c.client_assertion = Some(ExternalToken {
                source: JwtSource::File(path.to_path_buf()),
                token_type: token_types::CLIENT_ASSERTION.into(),
            });
            c
        };
        let first = platform_token("system:serviceaccount:shop:orders", "one");
        std::fs::write(&path, &first).unwrap();
        let c = federated(&path);
        let text = identity(&c, &request(&["a"]), None);
        assert!(text.contains("system:serviceaccount:shop:orders"), "{text}");
        assert!(text.contains("https://k8s"), "{text}");
        for part in first.split('.') {
            assert!(
                !text.contains(part),
                "a part of the token is in the key: {text}"
            );
        }
        let k = Keys::new("tp", &c, &request(&["a"]), None);
        // kubelet rotates the token: same identity, same key.
        std::fs::write(
            &path,
            platform_token("system:serviceaccount:shop:orders", "two"),
        )
        .unwrap();
        assert_eq!(k, Keys::new("tp", &c, &request(&["a"]), None));
        // Another workload: another key.
        std::fs::write(
            &path,
            platform_token("system:serviceaccount:shop:billing", "three"),
        )
        .unwrap();
        assert_ne!(k, Keys::new("tp", &c, &request(&["a"]), None));
        // The same client with a secret instead: another key.
        assert_ne!(
            k,
            Keys::new("tp", &client("orders"), &request(&["a"]), None)
        );
    }
}
