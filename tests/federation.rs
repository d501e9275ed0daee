//! No long-lived secret, in-process: a federated client assertion read from a projected
//! token file (kubelet's `..data` swap) or a variable, a token exchange (subject from a file
//! or from another client), and the JWT-bearer grant with a Google service-account key file.
//! What the authorization server receives is checked field by field; the JWT-bearer
//! assertion is verified with ring against the key's public half. Expired, missing and
//! truncated tokens are never sent, answer `503 assertion_unavailable`, and recover.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

const CANARY: &str = "CANARYsig";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A P-256 key made now, as PKCS#8 DER.
fn p256() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    der.as_ref().to_vec()
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// A token as a platform issuer (Kubernetes) would sign it: ES256 over the claims.
fn platform_jwt(sub: &str, exp: u64) -> String {
    let der = p256();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
    let h = B64.encode(json!({"alg": "ES256", "kid": "k8s"}).to_string());
    let c = B64.encode(
        json!({"iss": "https://kubernetes.default.svc", "sub": sub, "aud": ["idp"], "exp": exp, "iat": now()})
            .to_string(),
    );
    let input = format!("{h}.{c}");
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

/// Writes `token` the way kubelet does: a new timestamped directory, a `..data` symlink
/// swapped to it by rename, and `token` pointing through `..data`.
fn kubelet_write(dir: &Path, n: u32, token: &str) -> PathBuf {
    let d = dir.join(format!("..2026_12_04_00_00_0{n}"));
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("token"), token).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(d.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("token");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
    link
}

/// A config with the given clients block and one upstream `api` (reverse and forward) that
/// uses `client`.
fn yaml(clients: &str, client: &str, echo: &Echo, extra: &str) -> TestConfig {
    TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "2s")
        .merge("clients", clients)
        .upstream("api", &echo.url(), "api.example.com", client)
        .merge("upstreams.api", extra)
}

async fn start(config: &TestConfig) -> tokenproxy::Running {
    tokenproxy::start(config.config()).await.unwrap()
}

fn form(idp: &FakeIdp, i: usize) -> Vec<(String, String)> {
    let seen = idp.seen.lock().unwrap();
    form_urlencoded::parse(seen[i].body.as_bytes())
        .into_owned()
        .collect()
}

fn field(form: &[(String, String)], k: &str) -> Option<String> {
    form.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn a_projected_token_is_the_client_assertion_and_a_rotated_one_is_sent_next() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_expires_in.lock().unwrap() = 2;
    let dir = tempfile::tempdir().unwrap();
    let first = platform_jwt("system:serviceaccount:shop:orders", now() + 600);
    let path = kubelet_write(dir.path(), 1, &first);
    let clients = format!(
        "  fed:\n    token_endpoint: {}\n    auth_method: client_assertion\n    client_assertion: {{ file: {} }}\n",
        idp.url(),
        path.display()
    );
    let p = start(&yaml(&clients, "fed", &echo, "    scopes: [orders:read]\n")).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    let f = form(&idp, 0);
    assert_eq!(
        field(&f, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(
        field(&f, "client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(
        field(&f, "client_assertion").as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        field(&f, "client_id"),
        None,
        "no client_id: the server takes it from the assertion"
    );
    assert_eq!(field(&f, "scope").as_deref(), Some("orders:read"));
    assert_eq!(idp.seen.lock().unwrap()[0].authorization, None);

    // kubelet rotates the token; the next refresh (2 s tokens) sends the new one.
    let second = platform_jwt("system:serviceaccount:shop:orders", now() + 900);
    kubelet_write(dir.path(), 2, &second);
    let n = idp.calls();
    eventually(|| idp.calls() > n).await;
    let f = form(&idp, idp.calls() - 1);
    assert_eq!(
        field(&f, "client_assertion").as_deref(),
        Some(second.as_str())
    );

    // /status names the source, issuer, subject and expiry, never the token.
    let status = get(p.admin_addr().unwrap(), "/status", "x", "").await;
    let row = &status.json()["upstreams"][0];
    assert_eq!(row["auth_method"], "client_assertion");
    assert_eq!(row["grant"], "client_credentials");
    let a = &row["presented"]["client_assertion"];
    assert_eq!(a["source"], "file");
    assert_eq!(a["issuer"], "https://kubernetes.default.svc");
    assert_eq!(a["subject"], "system:serviceaccount:shop:orders");
    assert!(a["expires"].as_str().unwrap().ends_with('Z'), "{a}");
    let sig = second.rsplit('.').next().unwrap();
    assert!(!status.body.contains(sig));
    p.shutdown().await;
}

#[tokio::test]
async fn expired_missing_and_truncated_assertions_are_never_sent_and_the_proxy_recovers() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let clients = format!(
        "  fed:\n    token_endpoint: {}\n    client_id: orders\n    auth_method: client_assertion\n    client_assertion: {{ file: {} }}\n",
        idp.url(),
        path.display()
    );
    let p = start(&yaml(&clients, "fed", &echo, "")).await;
    let admin = p.admin_addr().unwrap();

    // Missing.
    let r = get_api(&p).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "assertion_unavailable");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("client assertion file"),
        "{r:?}"
    );
    let ready = get(admin, "/readyz", "x", "").await;
    assert_eq!(ready.status, 503);

    // Expired, then one that expires within the margin, then cut short (a half-written file).
    let expired = platform_jwt("sa", now() - 30);
    std::fs::write(&path, &expired).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get_api(&p).await;
    assert_eq!(r.json()["error"], "assertion_unavailable", "{r:?}");
    assert!(r.body.contains("expired"), "{r:?}");
    // The answer, /status and /readyz say why, never with the token.
    let status = get(admin, "/status", "x", "").await.body;
    let ready = get(admin, "/readyz", "x", "").await.body;
    for part in expired.split('.') {
        for text in [&r.body, &status, &ready] {
            assert!(
                !text.contains(part),
                "a part of the assertion leaked: {text}"
            );
        }
    }
    std::fs::write(&path, platform_jwt("sa", now() + 3)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get_api(&p).await;
    assert!(r.body.contains("too soon"), "{r:?}");
    let good = platform_jwt("sa", now() + 600);
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get_api(&p).await;
    assert!(r.body.contains("cut short"), "{r:?}");
    assert_eq!(idp.calls(), 0, "nothing unusable was ever sent");

    let metrics = get(admin, "/metrics", "x", "").await.body;
    assert!(
        metrics.contains(
            r#"tokenproxy_token_fetches_total{outcome="assertion_unavailable",upstream="api"}"#
        ),
        "{metrics}"
    );

    // A fresh token appears: the proxy recovers by itself.
    std::fs::write(&path, &good).unwrap();
    eventually(|| idp.calls() == 1).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    let f = form(&idp, 0);
    assert_eq!(field(&f, "client_id").as_deref(), Some("orders"));
    assert_eq!(
        field(&f, "client_assertion").as_deref(),
        Some(good.as_str())
    );
    assert_eq!(get(admin, "/readyz", "x", "").await.status, 200);
    p.shutdown().await;
}

#[tokio::test]
async fn a_token_exchange_sends_the_subject_and_checks_what_was_issued() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let subject = platform_jwt("system:serviceaccount:shop:orders", now() + 600);
    let path = kubelet_write(dir.path(), 1, &subject);
    let exchanged = |token: &str, issued: &str| {
        Answer::json(
            200,
            &format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600,"issued_token_type":"{issued}"}}"#
            ),
        )
    };
    // Refused first: an ID token is not an access token; then a good answer.
    idp.push(exchanged(
        "not-an-access-token",
        "urn:ietf:params:oauth:token-type:id_token",
    ));
    idp.push(exchanged(
        "exchanged-1",
        "urn:ietf:params:oauth:token-type:access_token",
    ));
    let clients = format!(
        "  sts:\n    token_endpoint: {}\n    grant: token_exchange\n    auth_method: none\n    subject_token: {{ file: {} }}\n    requested_token_type: urn:ietf:params:oauth:token-type:access_token\n",
        idp.url(),
        path.display()
    );
    let extra = "    scopes: [read]\n    audience: https://api.example.com\n    resource: [https://api.example.com/v1]\n";
    let p = start(&yaml(&clients, "sts", &echo, extra)).await;
    eventually(|| idp.calls() == 2).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer exchanged-1");
    let f = form(&idp, 1);
    let want = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("scope", "read"),
        ("audience", "https://api.example.com"),
        ("resource", "https://api.example.com/v1"),
    ];
    for (k, v) in want {
        assert_eq!(field(&f, k).as_deref(), Some(v), "{k} in {f:?}");
    }
    assert_eq!(field(&f, "client_id"), None);
    assert_eq!(idp.seen.lock().unwrap()[1].authorization, None);
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    let row = &status["upstreams"][0];
    assert_eq!(row["grant"], "token_exchange");
    assert_eq!(row["auth_method"], "none");
    assert_eq!(row["failures"], 1);
    p.shutdown().await;
}

#[tokio::test]
async fn an_exchange_without_issued_token_type_is_refused_and_said_why() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let clients = format!(
        "  sts:\n    token_endpoint: {}\n    grant: token_exchange\n    client_id: sts-client\n    client_secret: s3cret\n    subject_token: {{ env: TOKENPROXY_TEST_FED_SUBJECT }}\n    subject_token_type: urn:ietf:params:oauth:token-type:access_token\n",
        idp.url(),
    );
    std::env::set_var("TOKENPROXY_TEST_FED_SUBJECT", "opaque-subject-token");
    let p = start(&yaml(&clients, "sts", &echo, "")).await;
    eventually(|| idp.calls() >= 1).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "token_unavailable");
    assert!(r.body.contains("issued_token_type is missing"), "{r:?}");
    let f = form(&idp, 0);
    assert_eq!(
        field(&f, "subject_token").as_deref(),
        Some("opaque-subject-token")
    );
    assert!(idp.seen.lock().unwrap()[0]
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Basic "));
    p.shutdown().await;
}

#[tokio::test]
async fn a_token_of_one_client_is_exchanged_at_another() {
    let (home, sts, echo) = (
        FakeIdp::start().await,
        FakeIdp::start().await,
        Echo::start().await,
    );
    sts.push(Answer::json(
        200,
        r#"{"access_token":"exchanged","token_type":"Bearer","expires_in":3600,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
    ));
    let clients = format!(
        "  home:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: s3cret\n\
         \x20 sts:\n    token_endpoint: {}\n    grant: token_exchange\n    auth_method: none\n    subject_token: {{ client: home, scopes: [exchange] }}\n",
        home.url(),
        sts.url()
    );
    let p = start(&yaml(&clients, "sts", &echo, "")).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer exchanged");
    assert_eq!(home.calls(), 1);
    assert_eq!(field(&form(&home, 0), "scope").as_deref(), Some("exchange"));
    let f = form(&sts, 0);
    assert_eq!(field(&f, "subject_token").as_deref(), Some("tok-1"));
    assert_eq!(
        field(&f, "subject_token_type").as_deref(),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    p.shutdown().await;
}

/// The raw public key ring verifies with: the uncompressed point of the key pair.
fn public_of(der: &[u8]) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).unwrap();
    key.public_key().as_ref().to_vec()
}

#[tokio::test]
async fn the_jwt_bearer_grant_signs_with_a_google_key_file() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let der = p256();
    let key_file = dir.path().join("sa.json");
    let sa = json!({
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "key-123",
        "private_key": pem(&der),
        "client_email": "orders@demo.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": idp.url(),
    });
    std::fs::write(&key_file, sa.to_string()).unwrap();
    let clients = format!(
        "  google:\n    grant: jwt_bearer\n    private_key: {{ file: {} }}\n    scopes_in: assertion\n",
        key_file.display()
    );
    let extra = "    scopes: [https://www.googleapis.com/auth/cloud-platform, openid]\n";
    let p = start(&yaml(&clients, "google", &echo, extra)).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    let f = form(&idp, 0);
    assert_eq!(
        field(&f, "grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(field(&f, "scope"), None, "the scopes go in the assertion");
    assert_eq!(field(&f, "client_id"), None);
    let assertion = field(&f, "assertion").unwrap();
    let parts: Vec<&str> = assertion.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "key-123");
    let claims = jws_claims(&assertion).unwrap();
    assert_eq!(claims["iss"], "orders@demo.iam.gserviceaccount.com");
    assert_eq!(claims["sub"], "orders@demo.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], idp.url());
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform openid"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let verify = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        public_of(&der),
    );
    let input = format!("{}.{}", parts[0], parts[1]);
    verify
        .verify(input.as_bytes(), &B64.decode(parts[2]).unwrap())
        .expect("the assertion verifies with the key file's public key");
    let metrics = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        metrics.contains(
            r#"tokenproxy_token_fetches_by_grant_total{grant="jwt_bearer",outcome="success"} 1"#
        ),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_github_actions_token_is_asked_of_the_runner_at_each_fetch() {
    let (idp, runner, echo) = (
        FakeIdp::start().await,
        FakeIdp::start().await,
        Echo::start().await,
    );
    let oidc = platform_jwt("repo:acme/orders:ref:refs/heads/main", now() + 300);
    runner.push(Answer::json(
        200,
        &json!({"value": oidc, "count": 1}).to_string(),
    ));
    std::env::set_var(
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        format!("http://{}/token?api-version=2.0", runner.addr),
    );
    std::env::set_var("ACTIONS_ID_TOKEN_REQUEST_TOKEN", CANARY);
    let clients = format!(
        "  gh:\n    token_endpoint: {}\n    client_id: app\n    auth_method: client_assertion\n    client_assertion: {{ github_actions: {{ audience: api://AzureADTokenExchange }} }}\n",
        idp.url()
    );
    let p = start(&yaml(&clients, "gh", &echo, "")).await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(runner.calls(), 1);
    let asked = runner.seen.lock().unwrap()[0].clone();
    assert_eq!(
        asked.authorization.as_deref(),
        Some(format!("bearer {CANARY}").as_str())
    );
    assert_eq!(
        asked.uri,
        "/token?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange"
    );
    assert_eq!(
        field(&form(&idp, 0), "client_assertion").as_deref(),
        Some(oidc.as_str())
    );
    let status = get(p.admin_addr().unwrap(), "/status", "x", "").await;
    assert_eq!(
        status.json()["upstreams"][0]["presented"]["client_assertion"]["source"],
        "github_actions"
    );
    assert!(!status.body.contains(CANARY));
    p.shutdown().await;
}

/// Every wrong combination of the new keys is named with its key and line.
#[test]
fn wrong_federation_settings_are_config_errors_with_their_line() {
    let check = |client: &str| -> String {
        let yaml = format!(
            "clients:\n  idp:\n    token_endpoint: https://idp.example.com/token\n{client}  other:\n    token_endpoint: https://other.example.com/token\n    client_id: o\n    client_secret: s\nupstreams: {{}}\n"
        );
        match tokenproxy::Config::from_yaml(&yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    };
    let cases = [
        ("    auth_method: client_assertion\n", "line 4: clients.idp.auth_method: client_assertion needs client_assertion"),
        ("    client_id: a\n    client_secret: s\n    client_assertion: { file: /t }\n", "line 6: clients.idp.client_assertion: only used with auth_method: client_assertion"),
        ("    auth_method: client_assertion\n    client_assertion: { file: /t, env: T }\n", "line 5: clients.idp.client_assertion: needs exactly one of file, env or github_actions"),
        ("    auth_method: client_assertion\n    client_assertion: { client: other }\n", "line 5: clients.idp.client_assertion: needs exactly one of file, env or github_actions"),
        ("    auth_method: client_assertion\n    client_assertion: { file: /t }\n    client_secret: s\n", "line 6: clients.idp.client_secret: not used with client_assertion (the assertion proves who the client is)"),
        ("    auth_method: none\n", "line 4: clients.idp.auth_method: none is only allowed with grant token_exchange or jwt_bearer"),
        ("    client_secret: s\n", "line 2: clients.idp: client_secret_basic needs client_id"),
        ("    grant: token_exchange\n    auth_method: none\n", "line 4: clients.idp.grant: token_exchange needs subject_token"),
        ("    grant: token_exchange\n", "line 2: clients.idp: client_secret_basic needs client_id"),
        ("    grant: token_exchange\n    client_id: a\n    subject_token: { file: /t }\n", "line 2: clients.idp: client_secret_basic needs client_secret (or auth_method: none, for an endpoint that takes no client authentication)"),
        ("    grant: token_exchange\n    auth_method: none\n    subject_token: { client: nobody }\n", "line 6: clients.idp.subject_token: no client named \"nobody\""),
        ("    grant: token_exchange\n    auth_method: none\n    subject_token: { client: idp }\n", "subject tokens loop: idp -> idp"),
        ("    grant: token_exchange\n    auth_method: none\n    subject_token: { file: /t, scopes: [a] }\n", "line 6: clients.idp.subject_token: scopes, audience and resource are only used with client"),
        ("    grant: token_exchange\n    auth_method: none\n    subject_token: { file: /t }\n    subject_token_type: jwt\n", "line 7: clients.idp.subject_token_type: \"jwt\" is not a token type URI"),
        ("    grant: token_exchange\n    auth_method: none\n    subject_token: { file: /t }\n    actor_token_type: urn:x:y\n", "line 7: clients.idp.actor_token_type: needs actor_token"),
        ("    client_id: a\n    client_secret: s\n    subject_token: { file: /t }\n", "line 6: clients.idp.subject_token: only used with grant: token_exchange"),
        ("    grant: jwt_bearer\n", "line 4: clients.idp.grant: jwt_bearer needs private_key"),
        ("    grant: jwt_bearer\n    private_key: { file: /k }\n    auth_method: private_key_jwt\n    client_id: a\n", "line 6: clients.idp.auth_method: private_key_jwt is not used with grant jwt_bearer"),
        ("    client_id: a\n    client_secret: s\n    scopes_in: assertion\n", "line 6: clients.idp.scopes_in: only used with grant: jwt_bearer"),
        ("    client_id: a\n    client_secret: s\n    assertion_issuer: me\n", "line 6: clients.idp.assertion_issuer: only used with grant: jwt_bearer"),
    ];
    for (client, want) in cases {
        let shown = check(client);
        assert!(
            shown.contains(want),
            "want: {want}\n got: {shown}\nfor:\n{client}"
        );
    }
    // A chain that loops through another client, and a DPoP subject.
    let yaml = "clients:\n  a:\n    token_endpoint: https://a.example/t\n    grant: token_exchange\n    auth_method: none\n    subject_token: { client: b }\n  b:\n    token_endpoint: https://b.example/t\n    grant: token_exchange\n    auth_method: none\n    subject_token: { client: a }\nupstreams: {}\n";
    let shown = tokenproxy::Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(
        shown.contains("line 6: clients.a.subject_token: subject tokens loop: a -> b -> a"),
        "{shown}"
    );
    let yaml = "clients:\n  a:\n    token_endpoint: https://a.example/t\n    grant: token_exchange\n    auth_method: none\n    subject_token: { client: b }\n  b:\n    token_endpoint: https://b.example/t\n    client_id: b\n    client_secret: s\n    token_type: dpop\nupstreams: {}\n";
    let shown = tokenproxy::Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(shown.contains("has DPoP-bound tokens"), "{shown}");
    // What is valid: each contract example.
    let ok = "clients:\n  federated:\n    token_endpoint: https://login.example.com/oauth2/token\n    auth_method: client_assertion\n    client_assertion:\n      file: /var/run/secrets/tokens/idp\n  sts:\n    token_endpoint: https://sts.example.com/v1/token\n    grant: token_exchange\n    auth_method: none\n    subject_token: { file: /var/run/secrets/tokens/sts }\n  google:\n    grant: jwt_bearer\n    private_key: { file: /var/run/secrets/sa/key.json }\n    scopes_in: assertion\nupstreams: {}\n";
    let c = tokenproxy::Config::from_yaml(ok).unwrap();
    assert_eq!(
        c.clients["google"].auth_method,
        tokenproxy::config::AuthMethod::None
    );
    assert_eq!(c.clients["federated"].client_id, None);
}
