//! The access log of the real binary, read from its stdout: one JSON (or text) line per
//! request, whose status and error code match what the client saw, over success, a 401
//! replay, passthrough, a refusal, a token that cannot be had, and a deny; no token, secret
//! or query string in it; and nothing at all when it is not enabled.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const CANARY_SECRET: &str = "CANARY-SECRET-5bd1";
const CANARY_TOKEN: &str = "CANARY-TOKEN-77aa";

struct Proxy {
    child: Child,
    out: PathBuf,
    forward: std::net::SocketAddr,
    reverse: std::net::SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// The binary on `yaml` (with `FWD` and `REV` for two free ports), once it has started.
    async fn start(dir: &Path, yaml: &str) -> Proxy {
        let (fwd, rev) = (free_port(), free_port());
        let yaml = yaml
            .replace("FWD", &fwd.to_string())
            .replace("REV", &rev.to_string());
        let cfg = dir.join("c.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let out = dir.join("out.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tokenproxy"))
            .args(["run", "-c", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap();
        let proxy = Proxy {
            child,
            out,
            forward: format!("127.0.0.1:{fwd}").parse().unwrap(),
            reverse: format!("127.0.0.1:{rev}").parse().unwrap(),
        };
        for _ in 0..200 {
            if proxy.output().contains("tokenproxy started") {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("not started: {}", proxy.output());
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// The JSON access-log lines so far.
    fn access(&self) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("listener").is_some())
            .collect()
    }

    /// Waits for the line of the `n`th request (a line is written when the response ends,
    /// which can be a moment after the client has read it).
    async fn line(&self, n: usize) -> Value {
        for _ in 0..200 {
            if let Some(v) = self.access().get(n) {
                return v.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no access line {n} in: {}", self.output());
    }
}

fn yaml(idp: &FakeIdp, echo: &Echo, access_log: &str, unmatched: &str) -> String {
    let down = format!("http://127.0.0.1:{}/token", free_port());
    format!(
        "proxy:\n  listen: 127.0.0.1:FWD\n  unmatched: {unmatched}\nadmin:\n  listen: 127.0.0.1:0\n\
         tokens:\n  wait_timeout: 1s\n  min_refresh_interval: 50ms\n  backoff_min: 100ms\n  backoff_max: 200ms\n\
         clients:\n  idp:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: {CANARY_SECRET}\n\
         \x20 down:\n    token_endpoint: {down}\n    client_id: orders\n    client_secret: {CANARY_SECRET}\n\
         upstreams:\n  api:\n    url: {}\n    match: [api.example.com]\n    listen: 127.0.0.1:REV\n    client: idp\n\
         \x20 broken:\n    url: {}\n    match: [broken.example.com]\n    client: down\n\
         {access_log}",
        idp.url(),
        echo.url(),
        echo.url(),
    )
}

/// What the client saw and what the line says agree.
fn agrees(line: &Value, r: &RawResponse, error: Option<&str>) {
    assert_eq!(line["status"], r.status, "{line}");
    assert_eq!(line["error"].as_str(), error, "{line}");
    if let Some(code) = error {
        assert_eq!(r.json()["error"], code);
    }
    assert_eq!(line["bytes_out"], r.body.len() as u64, "{line}");
    let ms = line["duration_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && ms < 5000.0, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_match_what_the_client_saw_and_hold_no_secret() {
    let (idp, echo, other) = (
        FakeIdp::start().await,
        Echo::start().await,
        Echo::start().await,
    );
    idp.push(Answer::token(&format!("{CANARY_TOKEN}-1"), 3600));
    idp.push(Answer::token(&format!("{CANARY_TOKEN}-2"), 3600));
    echo.accepted
        .lock()
        .unwrap()
        .push(format!("{CANARY_TOKEN}-2"));
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start(
        dir.path(),
        &yaml(&idp, &echo, "access_log:\n  enabled: true\n", "passthrough"),
    )
    .await;

    // 0, 1: success, a new upstream connection and then a reused one; no query.
    let r = get(
        p.forward,
        "http://api.example.com/items?api_key=CANARY-QUERY",
        "api.example.com",
        "",
    )
    .await;
    let line = p.line(0).await;
    agrees(&line, &r, None);
    assert_eq!(line["listener"], "forward");
    assert_eq!(line["upstream"], "api");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "api.example.com");
    assert_eq!(line["path"], "/items");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["replayed"], false);
    assert_eq!(line["connection"], "new");
    assert!(line["token_wait_ms"].as_f64().is_some(), "{line}");
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    let r = get(p.forward, "http://api.example.com/items", "x", "").await;
    let line = p.line(1).await;
    agrees(&line, &r, None);
    assert_eq!(line["connection"], "reused");

    // 2: a 401 for the first token, a new one, the buffered body replayed.
    let body = "{\"a\":1}";
    let req = format!("POST http://api.example.com/401 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let r = raw(p.forward, &req).await;
    assert_eq!(r.status, 200, "{r:?}");
    let line = p.line(2).await;
    agrees(&line, &r, None);
    assert_eq!(line["replayed"], true);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["bytes_in"], body.len());

    // 3: passthrough, never a token.
    let r = get(p.forward, &format!("{}/elsewhere", other.url()), "x", "").await;
    let line = p.line(3).await;
    agrees(&line, &r, None);
    assert_eq!(line["upstream"], "unmatched");
    assert!(line["token_wait_ms"].is_null(), "{line}");
    assert_eq!(
        line["connection"], "new",
        "the shared client notes it too: {line}"
    );

    // 4: no token to be had.
    let r = get(p.forward, "http://broken.example.com/x", "x", "").await;
    let line = p.line(4).await;
    agrees(&line, &r, Some("token_unavailable"));
    assert_eq!(line["upstream"], "broken");
    assert_eq!(r.status, 503);

    // 5: refused by tokenproxy (two Host headers).
    let r = get(p.forward, "http://api.example.com/x", "x", "Host: y\r\n").await;
    let line = p.line(5).await;
    agrees(&line, &r, Some("bad_request"));

    // 6: the reverse listener, with a streamed (unsized) body counted as it passes.
    let req = "POST /rev HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = raw(p.reverse, req).await;
    let line = p.line(6).await;
    agrees(&line, &r, None);
    assert_eq!(line["listener"], "reverse");
    assert_eq!(line["host"], "localhost");
    assert_eq!(line["bytes_in"], 11);

    let out = p.output();
    for canary in [CANARY_TOKEN, CANARY_SECRET, "CANARY-QUERY"] {
        assert!(!out.contains(canary), "{canary} in the log: {out}");
    }
    let fields = line.as_object().unwrap().len();
    assert_eq!(fields, 16, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_lines_and_a_deny_with_the_query_when_asked_for() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let access = "access_log:\n  enabled: true\n  format: text\n  include_query: true\n";
    let p = Proxy::start(dir.path(), &yaml(&idp, &echo, access, "deny")).await;
    let r = get(p.forward, "http://nobody.example.com/p?q=1", "x", "").await;
    assert_eq!(r.status, 403);
    let r2 = get(p.forward, "http://api.example.com/ok", "x", "").await;
    assert_eq!(r2.status, 200);
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = p
            .output()
            .lines()
            .filter(|l| l.contains(" access "))
            .map(String::from)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 2, "{}", p.output());
    let deny = &lines[0];
    for part in [
        "listener=forward",
        "upstream=\"unmatched\"",
        "host=\"nobody.example.com\"",
        "path=\"/p?q=1\"",
        "status=403",
        "error=unmatched_denied",
        "token_wait_ms=-",
    ] {
        assert!(deny.contains(part), "{part} not in {deny}");
    }
    assert!(lines[1].contains("status=200 error=- "), "{}", lines[1]);
    assert!(lines[1].contains("connection=new"), "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_is_off_by_default() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start(dir.path(), &yaml(&idp, &echo, "", "passthrough")).await;
    let r = get(p.forward, "http://api.example.com/ok", "x", "").await;
    assert_eq!(r.status, 200);
    let r = get(p.forward, "http://broken.example.com/x", "x", "").await;
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = p.output();
    assert!(p.access().is_empty(), "{out}");
    assert!(!out.contains(" access "), "{out}");
}

/// In-process: the access log belongs to the running proxy, so two proxies in one process
/// write their own lines to their own destinations, and a stop flushes what is pending.
#[tokio::test]
async fn two_proxies_in_one_process_log_independently() {
    use std::sync::{Arc, Mutex};
    use tokenproxy::sink::Destination;
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let upstreams = format!(
        "  api:\n    url: {}\n    match: [api.example.com]\n    client: idp\n",
        echo.url()
    );
    let start = |lines: Arc<Mutex<Vec<u8>>>| {
        let mut yaml = config(&idp, "  listen: 127.0.0.1:0", &upstreams);
        yaml.access_log.enabled = true;
        tokenproxy::start_logging_to(yaml, tokenproxy::random_jitter, Destination::Memory(lines))
    };
    let (a_lines, b_lines) = (Arc::default(), Arc::default());
    let a = start(Arc::clone(&a_lines)).await.unwrap();
    let b = start(Arc::clone(&b_lines)).await.unwrap();
    assert_eq!(get_api(&a).await.status, 200);
    assert_eq!(get_api(&a).await.status, 200);
    let r = get(
        b.forward_addr().unwrap(),
        "http://api.example.com/other",
        "api.example.com",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    a.shutdown().await;
    b.shutdown().await;
    let read = |m: &Arc<Mutex<Vec<u8>>>| -> Vec<Value> {
        let text = String::from_utf8(m.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a_seen, b_seen) = (read(&a_lines), read(&b_lines));
    assert_eq!(a_seen.len(), 2, "{a_seen:?}");
    assert!(a_seen
        .iter()
        .all(|l| l["path"] == "/x" && l["status"] == 200));
    assert_eq!(b_seen.len(), 1, "{b_seen:?}");
    assert_eq!(b_seen[0]["path"], "/other");
}
