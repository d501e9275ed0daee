//! What one token request costs tokenproxy per grant and auth method, against an
//! authorization server on loopback that answers at once (so the figures are tokenproxy's
//! own work and the HTTP round trip, not a server's verification):
//! `cargo run --release --example fetch_cost`. Prints the median of five rounds of 300
//! fetches each, for `client_secret_basic` and for each credential that is not a long-lived
//! secret. A measuring tool, not a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use http::{Response, StatusCode};
use tokenproxy::body::full;
use tokenproxy::metrics::Metrics;
use tokenproxy::token::Endpoint;

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// A token shaped like a projected service-account token (ES256, an hour left).
fn platform_token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let h = B64.encode(r#"{"alg":"ES256","kid":"k8s"}"#);
    let c = B64.encode(format!(
        r#"{{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:shop:orders","aud":["idp"],"exp":{exp}}}"#
    ));
    format!("{h}.{c}.{}", B64.encode([7u8; 64]))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(tokenproxy::serve::serve(
        listener,
        |_req| async {
            let mut r = Response::new(full(
                r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ));
            *r.status_mut() = StatusCode::OK;
            r
        },
        rx,
    ));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, platform_token()).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let es = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let key_file = dir.path().join("sa.json");
    let sa = serde_json::json!({"type": "service_account", "private_key_id": "k1",
        "private_key": pem(es.as_ref()), "client_email": "sa@p.iam.gserviceaccount.com"});
    std::fs::write(&key_file, sa.to_string()).unwrap();
    let endpoint = format!("http://{addr}/token");
    let (t, k) = (token_file.display(), key_file.display());
    let clients = [
        (
            "client_secret_basic",
            "client_id: a\n    client_secret: s3cret".to_string(),
        ),
        (
            "client_assertion (file)",
            format!("auth_method: client_assertion\n    client_assertion: {{ file: {t} }}"),
        ),
        (
            "token_exchange (file)",
            format!(
                "grant: token_exchange\n    auth_method: none\n    subject_token: {{ file: {t} }}"
            ),
        ),
        (
            "jwt_bearer (ES256 key file)",
            format!(
                "grant: jwt_bearer\n    private_key: {{ file: {k} }}\n    scopes_in: assertion"
            ),
        ),
    ];
    let metrics = Metrics::new().unwrap();
    println!("one token request, median of 5 rounds of 300 (server answers at once):");
    for (name, client) in clients {
        let yaml = format!(
            "clients:\n  c:\n    token_endpoint: {endpoint}\n    {client}\nupstreams:\n  u:\n    url: https://api.example.com\n    client: c\n    scopes: [read]\n"
        );
        let config = tokenproxy::Config::from_yaml(&yaml).unwrap();
        let up = config.upstream("u").unwrap();
        let e = Endpoint::new(up.client.clone(), &up.request, &config.tokens, &metrics).unwrap();
        let e = Arc::new(e);
        e.fetch().await.unwrap();
        let mut rounds: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..300 {
                e.fetch().await.unwrap();
            }
            rounds.push(start.elapsed() / 300);
        }
        rounds.sort();
        println!("  {name:30} {:7.1} µs", rounds[2].as_secs_f64() * 1e6);
    }
}
