//! Issuer discovery in-process: a metadata server on loopback in front of the fake token
//! endpoint; which well-known document is used, what is checked, and how often it is read.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokenproxy::body::{full, Body};

/// Serves metadata at one well-known path (the other answers 404) and counts the requests.
#[derive(Clone)]
struct Metadata {
    issuer: String,
    hits: Arc<AtomicUsize>,
    doc: Arc<Mutex<serde_json::Value>>,
    path: &'static str,
    _stop: Arc<tokio::sync::watch::Sender<bool>>,
}

const RFC8414: &str = "/.well-known/oauth-authorization-server";
const OIDC: &str = "/.well-known/openid-configuration";

impl Metadata {
    async fn start(path: &'static str, token_endpoint: &str) -> Metadata {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let doc = serde_json::json!({
            "issuer": issuer,
            "token_endpoint": token_endpoint,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        });
        let m = Metadata {
            issuer,
            hits: Arc::default(),
            doc: Arc::new(Mutex::new(doc)),
            path,
            _stop: Arc::new(stop),
        };
        let me = m.clone();
        tokio::spawn(tokenproxy::serve::serve(
            listener,
            move |req| {
                let me = me.clone();
                async move { me.answer(req) }
            },
            rx,
        ));
        m
    }

    fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != self.path {
            let mut r = Response::new(full("not here"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let mut r = Response::new(full(self.doc.lock().unwrap().to_string()));
        r.headers_mut()
            .insert("cache-control", "public, max-age=3600".parse().unwrap());
        r
    }
}

async fn proxy(
    idp: &FakeIdp,
    echo: &Echo,
    issuer: &str,
    client_extra: &str,
) -> tokenproxy::Running {
    let config = TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "2s")
        .set(
            "clients.idp",
            serde_json::json!({"issuer": issuer, "client_id": "orders", "client_secret": "s3cret"}),
        )
        .merge("clients.idp", client_extra)
        .upstream("api", &echo.url(), "api.example.com", "idp");
    let _ = idp;
    tokenproxy::start(config.config()).await.unwrap()
}

#[tokio::test]
async fn openid_configuration_is_the_fallback_and_is_read_once() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_expires_in.lock().unwrap() = 1;
    let meta = Metadata::start(OIDC, &idp.url()).await;
    let p = proxy(&idp, &echo, &meta.issuer, "").await;
    assert_eq!(get_api(&p).await.json()["authorization"][0], "Bearer tok-1");
    eventually(|| idp.calls() >= 3).await; // refreshed twice, with the cached metadata
    assert_eq!(
        meta.hits.load(Ordering::SeqCst),
        1,
        "metadata cached per max-age"
    );
}

#[tokio::test]
async fn rfc_8414_metadata_is_used_when_present() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let meta = Metadata::start(RFC8414, &idp.url()).await;
    let p = proxy(&idp, &echo, &meta.issuer, "").await;
    assert_eq!(get_api(&p).await.json()["authorization"][0], "Bearer tok-1");
    assert_eq!(meta.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_configured_token_endpoint_overrides_discovery() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let meta = Metadata::start(OIDC, "http://127.0.0.1:9/nowhere").await;
    let p = proxy(
        &idp,
        &echo,
        &meta.issuer,
        &format!("    token_endpoint: {}\n", idp.url()),
    )
    .await;
    assert_eq!(get_api(&p).await.json()["authorization"][0], "Bearer tok-1");
    assert_eq!(meta.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn metadata_for_another_issuer_or_without_the_method_is_refused() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let meta = Metadata::start(OIDC, &idp.url()).await;
    meta.doc.lock().unwrap()["issuer"] = serde_json::json!(format!("{}/", meta.issuer));
    let p = proxy(&idp, &echo, &meta.issuer, "").await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("the metadata names issuer"),
        "{}",
        r.body
    );
    assert_eq!(
        idp.calls(),
        0,
        "no token request to an endpoint from the wrong issuer"
    );

    let meta = Metadata::start(OIDC, &idp.url()).await;
    meta.doc.lock().unwrap()["token_endpoint_auth_methods_supported"] =
        serde_json::json!(["private_key_jwt"]);
    let p = proxy(&idp, &echo, &meta.issuer, "").await;
    let r = get_api(&p).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("does not list client_secret_basic"),
        "{}",
        r.body
    );
}

#[test]
fn a_client_needs_a_token_endpoint_or_an_issuer() {
    let yaml =
        "clients:\n  idp:\n    client_id: orders\n    client_secret: s3cret\nupstreams: {}\n";
    let err = tokenproxy::Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(
        err.contains(
            "line 2: clients.idp: needs token_endpoint, or issuer to find it by discovery"
        ),
        "{err}"
    );
    let yaml = "clients:\n  idp:\n    issuer: https://idp.example.com/?tenant=a\n    client_id: orders\n    client_secret: s3cret\nupstreams: {}\n";
    let err = tokenproxy::Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(
        err.contains("line 3: clients.idp.issuer: an issuer has no query or fragment"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_makes_the_metadata_be_read_again() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let moved_from = format!("http://127.0.0.1:{}/token", free_port());
    let meta = Metadata::start(OIDC, &moved_from).await;
    let _p = proxy(&idp, &echo, &meta.issuer, "").await;
    eventually(|| meta.hits.load(Ordering::SeqCst) >= 1).await;
    // The server moved its token endpoint; the metadata says so now.
    meta.doc.lock().unwrap()["token_endpoint"] = serde_json::json!(idp.url());
    eventually(|| idp.calls() >= 1).await;
    assert!(
        meta.hits.load(Ordering::SeqCst) >= 2,
        "read again after the failure, before max-age"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_online_finds_and_reaches_the_token_endpoints() {
    let idp = FakeIdp::start().await;
    let meta = Metadata::start(OIDC, &idp.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    let down = format!("http://127.0.0.1:{}/token", free_port());
    std::fs::write(
        &cfg,
        format!("clients:\n  found:\n    issuer: {}\n    client_id: a\n    client_secret: b\n  down:\n    token_endpoint: {down}\n    client_id: a\n    client_secret: b\nupstreams: {{}}\n", meta.issuer),
    )
    .unwrap();
    let run = |online: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenproxy"));
        cmd.args(["validate", "-c", cfg.to_str().unwrap()]);
        if online {
            cmd.arg("--online");
        }
        cmd.output()
    };
    let offline = run(false).await.unwrap();
    assert_eq!(offline.status.code(), Some(0));
    assert_eq!(
        meta.hits.load(Ordering::SeqCst),
        0,
        "validate alone never touches the network"
    );
    let online = run(true).await.unwrap();
    let out = String::from_utf8_lossy(&online.stdout);
    assert_eq!(online.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "client found: token endpoint {} answers",
            idp.url()
        )),
        "{out}"
    );
    assert!(
        out.contains("client down: token endpoint unreachable"),
        "{out}"
    );
    assert_eq!(meta.hits.load(Ordering::SeqCst), 1);
}
