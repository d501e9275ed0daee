//! Secret hygiene: the real binary at the most verbose log level, driven through success and
//! failure paths with a known client secret and token. Neither may appear, raw, base64- or
//! URL-encoded, in its logs, `/metrics`, `/status`, `/readyz` or any answer tokenproxy gives
//! itself. (Answers relayed from the upstream are the upstream's business: the echo upstream
//! here returns the token on purpose, and those bodies are not searched.)
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;

const SECRET: &str = "canary-SECRET-7f3a9+/=";
const TOKEN: &str = "canaryTOKEN4b8e1xyz";

fn forms(s: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
    vec![
        s.to_string(),
        b64.encode(s),
        b64.encode(format!("orders:{s}")),
        b64.encode(format!("orders:{url}")),
        url,
    ]
}

#[tokio::test]
async fn no_secret_or_token_leaks_anywhere_at_trace_level() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    // Failure paths first: errors whose bodies carry the secret and the token, a token with a
    // CRLF in it, then a good token.
    let leak = format!(
        r#"{{"error":"invalid_client","error_description":"bad secret {SECRET} for {TOKEN}"}}"#
    );
    idp.push(Answer::json(401, &leak));
    for _ in 0..8 {
        idp.push(Answer::json(500, &format!("<html>{SECRET} {TOKEN}</html>")));
    }
    idp.push(Answer::json(
        200,
        &format!(r#"{{"access_token":"{TOKEN}\r\nX: 1","token_type":"Bearer"}}"#),
    ));
    idp.push(Answer::token(TOKEN, 3600));
    let (fwd, admin, rev) = (free_port(), free_port(), free_port());
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new()
        .remove("tokens.wait_timeout")
        .set("proxy.listen", format!("127.0.0.1:{fwd}"))
        .set("proxy.unmatched", "deny")
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .client("idp", &idp.url(), "unused")
        .set(
            "clients.idp.client_secret",
            serde_json::json!({"env": "CANARY_SECRET"}),
        )
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set("upstreams.api.listen", format!("127.0.0.1:{rev}"))
        .upstream(
            "down",
            &format!("http://127.0.0.1:{closed}"),
            "down.example.com",
            "idp",
        )
        .write(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenproxy"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env("CANARY_SECRET", SECRET)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (fwd, admin, rev) = (
        format!("127.0.0.1:{fwd}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
        format!("127.0.0.1:{rev}").parse().unwrap(),
    );
    let mut own_answers = Vec::new();
    // While the token endpoint fails: 503s and not-ready answers.
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    own_answers.push(get(admin, "/readyz", "x", "").await.body);
    own_answers.push(get(admin, "/status", "x", "").await.body);
    let unavailable = get(fwd, "http://api.example.com/", "x", "").await;
    assert_eq!(unavailable.status, 503, "{unavailable:?}");
    own_answers.push(unavailable.body);
    // Then the good token: success, 401 replay, errors, denial, bad requests.
    for _ in 0..200 {
        if get(admin, "/readyz", "x", "").await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        get(fwd, "http://api.example.com/ok", "x", "").await.status,
        200
    );
    assert_eq!(get(rev, "/ok", "x", "").await.status, 200);
    assert_eq!(
        get(fwd, "http://api.example.com/401", "x", "").await.status,
        401
    );
    for (addr, target, extra) in [
        (fwd, "http://down.example.com/", ""),
        (fwd, "http://elsewhere.example.org/", ""),
        (fwd, "http://user:pw@api.example.com/", ""),
        (rev, "/x", "Host: a\r\n"),
    ] {
        own_answers.push(get(addr, target, "api.example.com", extra).await.body);
    }
    own_answers.push(raw(fwd, "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n").await.body);
    own_answers.push(get(admin, "/metrics", "x", "").await.body);
    own_answers.push(get(admin, "/status", "x", "").await.body);
    own_answers.push(get(admin, "/readyz", "x", "").await.body);
    assert!(idp.calls() >= 5, "the failure paths ran: {}", idp.calls());

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
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
        (s, logs)
    })
    .await
    .unwrap();
    let (exit, logs) = status;
    assert_eq!(exit.code(), Some(0));
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("token obtained"));
    assert!(!logs.contains("panicked"), "no panic");
    for needle in forms(SECRET).into_iter().chain(forms(TOKEN)) {
        assert!(!logs.contains(&needle), "{needle:?} found in the logs");
        for (i, body) in own_answers.iter().enumerate() {
            assert!(
                !body.contains(&needle),
                "{needle:?} found in answer {i}: {body}"
            );
        }
    }
}
