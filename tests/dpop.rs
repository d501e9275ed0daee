//! DPoP in-process, against the scripted authorization server and the echo upstream: proofs
//! at the token endpoint (with the server's nonce after `use_dpop_nonce`), a proof with every
//! request (method, URL, `ath`, a new `jti`), the upstream's nonce, no silent downgrade to a
//! bearer token, and `/status` without the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use serde_json::Value;

fn header_of(jws: &str) -> Value {
    let h = jws.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(h).unwrap()).unwrap()
}

/// Checks the proof's signature with the key in its own header, and returns its claims.
fn verified(jws: &str) -> (Value, Value) {
    let header = header_of(jws);
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "ES256");
    let jwk = &header["jwk"];
    let point = [
        vec![4u8],
        B64.decode(jwk["x"].as_str().unwrap()).unwrap(),
        B64.decode(jwk["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    let (input, sig) = jws.rsplit_once('.').unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &B64.decode(sig).unwrap())
        .expect("the proof's signature verifies");
    (header, jws_claims(jws).unwrap())
}

fn ath(token: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn dpop_token(token: &str) -> Answer {
    Answer::json(
        200,
        &format!(r#"{{"access_token":"{token}","token_type":"DPoP","expires_in":3600}}"#),
    )
}

async fn start(idp: &FakeIdp, echo: &Echo) -> tokenproxy::Running {
    let config = TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "2s")
        .remove("tokens.min_refresh_interval")
        .client("idp", &idp.url(), "s3cret")
        .set("clients.idp.token_type", "dpop")
        .upstream(
            "api",
            &format!("{}/base", echo.url()),
            "api.example.com",
            "idp",
        )
        .set("upstreams.api.listen", "127.0.0.1:0");
    tokenproxy::start(config.config()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn proofs_at_the_token_endpoint_and_with_every_request() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let mut nonce = Answer::json(400, r#"{"error":"use_dpop_nonce"}"#);
    nonce
        .headers
        .push(("DPoP-Nonce".into(), "as-nonce-1".into()));
    idp.push(nonce);
    idp.push(dpop_token("dpop-tok-1"));
    let p = start(&idp, &echo).await;
    let fwd = p.forward_addr().unwrap();

    // The token endpoint: a proof for POST to it, then the same with the nonce it asked for.
    eventually(|| idp.calls() >= 2).await;
    let seen = idp.seen.lock().unwrap().clone();
    let (h1, first) = verified(seen[0].dpop.as_deref().unwrap());
    let (h2, second) = verified(seen[1].dpop.as_deref().unwrap());
    assert_eq!(first["htm"], "POST");
    assert_eq!(first["htu"], idp.url());
    assert!(first.get("nonce").is_none() && first.get("ath").is_none());
    assert_eq!(second["nonce"], "as-nonce-1");
    assert_eq!(h1["jwk"], h2["jwk"], "one key");
    assert_ne!(first["jti"], second["jti"]);

    // Each request: `DPoP <token>`, a proof for its method and the URL it really goes to.
    let mut jtis = HashSet::new();
    for i in 0..5 {
        let r = get(
            fwd,
            &format!("http://api.example.com/items/{i}?q=secret"),
            "x",
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        assert_eq!(v["authorization"], serde_json::json!(["DPoP dpop-tok-1"]));
        let (header, claims) = verified(v["dpop"].as_str().unwrap());
        assert_eq!(
            header["jwk"], h1["jwk"],
            "bound to the token endpoint's key"
        );
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], format!("{}/base/items/{i}", echo.url()));
        assert_eq!(claims["ath"], ath("dpop-tok-1"));
        jtis.insert(claims["jti"].to_string());
    }
    assert_eq!(jtis.len(), 5, "a new jti every time");

    // The reverse listener, a POST: the proof follows the method.
    let rev = p.reverse_addr("api").unwrap();
    let req =
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let r = raw(rev, req).await;
    let (_, claims) = verified(r.json()["dpop"].as_str().unwrap());
    assert_eq!(
        (claims["htm"].as_str(), claims["htu"].as_str()),
        (
            Some("POST"),
            Some(format!("{}/base/orders", echo.url()).as_str())
        )
    );

    // The upstream asks for its nonce: the request goes once more, with it.
    let before = echo.requests.load(std::sync::atomic::Ordering::SeqCst);
    let r = get(fwd, "http://api.example.com/dpop-nonce", "x", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let (_, claims) = verified(r.json()["dpop"].as_str().unwrap());
    assert_eq!(claims["nonce"], UPSTREAM_NONCE);
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::SeqCst) - before,
        2
    );
    // And it is remembered: the next request carries it at once.
    let r = get(fwd, "http://api.example.com/dpop-nonce", "x", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::SeqCst) - before,
        3
    );
    assert_eq!(idp.calls(), 2, "a nonce is not a new token");

    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    let d = &status["upstreams"][0]["dpop"];
    assert_eq!(d["jkt"], tokenproxy::jose::thumbprint_of(&h1["jwk"]));
    assert_eq!(
        (
            d["token_endpoint_nonce"].as_bool(),
            d["upstream_nonce"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let metrics = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    for want in [
        r#"tokenproxy_dpop_proofs_total{name="idp",server="token_endpoint"} 2"#,
        r#"tokenproxy_dpop_nonce_retries_total{name="idp",server="token_endpoint"} 1"#,
        r#"tokenproxy_dpop_nonce_retries_total{name="api",server="upstream"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_answer_to_a_dpop_client_is_refused_not_used() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    idp.push(Answer::token("plain-bearer", 3600));
    *idp.default_expires_in.lock().unwrap() = 3600;
    let p = start(&idp, &echo).await;
    eventually(|| idp.calls() >= 1).await;
    // The refresher records the refusal just after the IdP has answered: wait for it to show.
    let mut status = Value::Null;
    for _ in 0..250 {
        status = get(p.admin_addr().unwrap(), "/status", "x", "")
            .await
            .json();
        if !status["upstreams"][0]["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = status["upstreams"][0]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(last.contains("not DPoP"), "{status}");
    p.shutdown().await;
}

/// The DPoP key from `dpop_key`, at trace level through the real binary: its private part
/// appears nowhere (logs, `/status`, `/metrics`), while `/status` shows its thumbprint.
#[tokio::test(flavor = "multi_thread")]
async fn the_dpop_key_never_shows() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    idp.push(dpop_token("dpop-canary-tok"));
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dpop.pem");
    std::fs::write(&key_file, &pem).unwrap();
    let (fwd, admin) = (free_port(), free_port());
    let cfg = TestConfig::new()
        .remove("tokens")
        .set("proxy.listen", format!("127.0.0.1:{fwd}"))
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .client("idp", &idp.url(), "s3cret")
        .set("clients.idp.token_type", "dpop")
        .set("clients.idp.dpop_key.file", key_file.to_str().unwrap())
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .write(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenproxy"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (fwd, admin) = (
        format!("127.0.0.1:{fwd}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
    );
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && get(admin, "/readyz", "x", "").await.status == 200
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let r = get(fwd, "http://api.example.com/dpop-nonce", "x", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let (header, _) = verified(r.json()["dpop"].as_str().unwrap());
    let own = [
        get(admin, "/status", "x", "").await.body,
        get(admin, "/metrics", "x", "").await.body,
    ];
    let jkt = tokenproxy::jose::thumbprint_of(&header["jwk"]);
    assert!(own[0].contains(&jkt), "{}", own[0]);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let logs = tokio::task::spawn_blocking(move || {
        child.wait().unwrap();
        let mut logs = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        logs
    })
    .await
    .unwrap();
    assert!(logs.contains("token obtained"), "{logs}");
    // Any 24-character stretch of the key's encoding would give it away.
    for text in own.iter().chain([&logs]) {
        for i in (0..body.len() - 24).step_by(8) {
            assert!(
                !text.contains(&body[i..i + 24]),
                "part of the DPoP key in output"
            );
        }
    }
}
