//! The real binary: flags, exit codes, the demo, and a graceful stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokenproxy");

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/config/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn version_help_and_usage_errors() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tokenproxy {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "validate", "demo"] {
        assert!(help.contains(sub), "{help}");
    }
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["run", "--log-format", "xml", "-c", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_exits_0_or_78_with_the_line() {
    let ok = Command::new(BIN)
        .args(["validate", "-c", &fixture("valid/minimal.yaml")])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new(BIN)
        .args([
            "validate",
            "--config",
            &fixture("invalid/unknown-client.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("line 10: upstreams.inventory.client: unknown client"),
        "{err}"
    );
    let env = Command::new(BIN)
        .arg("validate")
        .env(
            "TOKENPROXY_CONFIG",
            fixture("invalid/missing-secret-file.yaml"),
        )
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(78), "TOKENPROXY_CONFIG is read");
    let run = Command::new(BIN)
        .args(["run", "-c", &fixture("invalid/unknown-key.yaml")])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78));
    let missing = Command::new(BIN)
        .args(["validate", "-c", "/nonexistent/tokenproxy.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
}

#[test]
fn demo_shows_an_injected_token() {
    let out = Command::new(BIN).args(["demo", "--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DEMONSTRATION ONLY"));
    // Through the forward listener, the reverse listener (HTTP/1.1 and HTTP/2), and an
    // intercepted https:// call; the /admin/ path's own; and one for the client with no secret.
    assert_eq!(
        stdout.matches(r#""authorization":"Bearer demo-"#).count(),
        6,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches(r#""authorization":"Bearer demo-fed-"#)
            .count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("curl -x http://127.0.0.1:"));
    assert!(stdout.contains("/ca.pem https://api.demo.internal/"));
    // And a DPoP-bound token with a proof for that request.
    assert_eq!(
        stdout.matches(r#""authorization":"DPoP demo-"#).count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains(r#""htu":"http://127.0.0.1:"#), "{stdout}");
    assert!(stdout.contains("Token requests made to the authorization server: 4"));
}

/// A config with only an admin listener on port 0 (no token timings: the defaults).
fn bare() -> common::TestConfig {
    common::TestConfig::new().remove("tokens")
}

/// Writes a config whose token endpoint and upstream are unreachable (port 9): enough for the
/// process to start, serve its admin listener and stop.
fn unreachable_config(dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
    bare()
        .client("idp", "http://127.0.0.1:9/token", secret)
        .set("clients.idp.client_id", "a")
        .set(
            "upstreams.u",
            json!({"url": "http://127.0.0.1:9", "listen": "127.0.0.1:0", "client": "idp"}),
        )
        .write(dir)
}

#[test]
fn sigterm_stops_gracefully_with_exit_0_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = unreachable_config(dir.path(), "canary-SIGTERM-secret");
    let (mut child, mut stdout, line) = spawn_binary(&cfg);
    let start_line = line.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(start_line).unwrap();
    assert_eq!(v["fields"]["message"], "tokenproxy started");
    // At once: a stop signal is handled from before the start line, not from some time after.
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped: all connections drained"), "{rest}");
    assert!(!rest.contains("canary-SIGTERM-secret") && !line.contains("canary-SIGTERM-secret"));
}

#[test]
fn workers_sets_the_number_of_worker_threads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = unreachable_config(dir.path(), "s");
    // The start line reports the runtime's own count of worker threads.
    // One worker is the current-thread runtime (docs/performance.md, "Runtimes").
    let mut counts = Vec::new();
    for workers in ["1", "6"] {
        let (mut child, _stdout, line) = spawn_binary_with(&cfg, &["--workers", workers]);
        let start: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        let runtime = start["fields"]["runtime"].as_str().map(str::to_owned);
        counts.push((start["fields"]["workers"].as_u64(), runtime));
        signal(&child, "-TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
    let want = [
        (Some(1), Some("current_thread".to_owned())),
        (Some(6), Some("multi_thread".to_owned())),
    ];
    assert_eq!(counts, want, "worker threads and runtime");
    let out = Command::new(BIN)
        .args([
            "run",
            "--runtime",
            "current-thread",
            "--workers",
            "2",
            "-c",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a current-thread runtime is one worker"
    );
    let out = Command::new(BIN)
        .args(["run", "--workers", "0", "-c", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "0 workers is a usage error");
}

mod common;

use common::free_port;

/// Starts the binary on `config` (JSON logs, `RUST_LOG=debug`) and returns it once it logged
/// its start: the child, its stdout, and the log lines up to and including the start line.
fn spawn_binary(
    config: &std::path::Path,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    spawn_binary_with(config, &[])
}

/// [`spawn_binary`] with more flags.
fn spawn_binary_with(
    config: &std::path::Path,
    flags: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "-c",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .args(flags)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut preamble = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !preamble.contains("tokenproxy started") {
        assert!(
            stdout.read_line(&mut preamble).unwrap() > 0,
            "exited early: {preamble}"
        );
        assert!(Instant::now() < deadline, "no start line");
    }
    (child, stdout, preamble)
}

fn signal(child: &std::process::Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let (idp, echo) = (common::FakeIdp::start().await, common::Echo::start().await);
    let (rev, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = bare()
        .set("proxy.drain_timeout", "5s")
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .client("idp", &idp.url(), "s3cret")
        .set(
            "upstreams.u",
            json!({"url": echo.url(), "listen": format!("127.0.0.1:{rev}"), "client": "idp"}),
        )
        .write(dir.path());
    let (mut child, _out, _) = spawn_binary(&cfg);
    let rev: std::net::SocketAddr = format!("127.0.0.1:{rev}").parse().unwrap();
    common::eventually(|| idp.calls() == 1).await;
    let slow = tokio::spawn(common::get(rev, "/slow", "x", ""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "-TERM");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished: {r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(rev).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn sighup_and_file_changes_reload_the_config() {
    let (idp, echo) = (common::FakeIdp::start().await, common::Echo::start().await);
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    let conf = |ups: &str| {
        format!(
        "admin:\n  listen: 127.0.0.1:{admin}\nclients:\n  idp:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: s3cret\nupstreams:\n{ups}",
        idp.url()
    )
    };
    let one = format!(
        "  a:\n    url: {}\n    match: [a.example]\n    client: idp\n",
        echo.url()
    );
    std::fs::write(&cfg, conf(&one)).unwrap();
    let (mut child, _out, _) = spawn_binary(&cfg);
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    // The file is unchanged, so only SIGHUP can cause this reload.
    signal(&child, "-HUP");
    let want = r#"tokenproxy_config_reloads_total{outcome="success"} 1"#;
    let mut seen = false;
    for _ in 0..100 {
        if common::get(admin, "/metrics", "x", "")
            .await
            .body
            .contains(want)
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "SIGHUP reloaded the config");
    // A changed file is picked up by the directory watch.
    let two = format!(
        "{one}  b:\n    url: {}\n    match: [b.example]\n    client: idp\n",
        echo.url()
    );
    std::fs::write(&cfg, conf(&two)).unwrap();
    let mut names = 0;
    for _ in 0..100 {
        let status = common::get(admin, "/status", "x", "").await.json();
        names = status["upstreams"].as_array().unwrap().len();
        if names == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        names, 2,
        "the new upstream is served after the file changed"
    );
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Peak resident memory of a process, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_1_gib_upload_streams_through_with_flat_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: u64 = 1 << 30;
    // An upstream that reads and discards the body, then answers with the byte count.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut got = (head.len() - end) as u64;
        while got < SIZE {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "upstream saw EOF after {got} bytes");
            got += n as u64;
        }
        let body = got.to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
    });
    let idp = common::FakeIdp::start().await;
    let rev = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = bare()
        .client("idp", &idp.url(), "s3cret")
        .set("upstreams.u", json!({"url": format!("http://{sink_addr}"), "listen": format!("127.0.0.1:{rev}"), "client": "idp"}))
        .write(dir.path());
    let (mut child, _out, _) = spawn_binary(&cfg);
    let before = vm_hwm_kib(child.id());
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", rev))
        .await
        .unwrap();
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        s.write_all(&chunk).await.unwrap();
    }
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with(&SIZE.to_string()),
        "{resp}"
    );
    let peak = vm_hwm_kib(child.id());
    signal(&child, "-TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB for a 1 GiB upload (was {before} KiB idle)"
    );
}

#[tokio::test]
async fn wait_returns_once_ready_and_times_out_otherwise() {
    let idp = common::FakeIdp::start().await;
    *idp.default_delay.lock().unwrap() = Duration::from_millis(700);
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = bare()
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .client("idp", &idp.url(), "s3cret")
        .upstream("u", "http://127.0.0.1:9", "u.example", "idp")
        .write(dir.path());
    let (mut child, _out, _) = spawn_binary(&cfg);
    let started = Instant::now();
    let waited = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "wait",
                "--admin",
                &format!("127.0.0.1:{admin}"),
                "--timeout",
                "10s",
                "--interval",
                "100ms",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "returned before the token arrived"
    );
    assert_eq!(idp.calls(), 1);
    signal(&child, "-TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;

    let nobody = free_port();
    let out = Command::new(BIN)
        .args([
            "wait",
            "--admin",
            &format!("127.0.0.1:{nobody}"),
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready after 1s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_forward_listener_off_loopback_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    // Bound for a moment on an ephemeral port; no traffic is sent to it.
    let cfg = bare()
        .set("proxy.listen", "0.0.0.0:0")
        .client("idp", "http://127.0.0.1:9/token", "b")
        .set(
            "upstreams.u",
            json!({"url": "http://127.0.0.1:9", "client": "idp"}),
        )
        .write(dir.path());
    let (mut child, _out, log) = spawn_binary(&cfg);
    signal(&child, "-TERM");
    child.wait().unwrap();
    assert!(
        log.contains("anyone who can reach it can spend this proxy's tokens"),
        "{log}"
    );
}
