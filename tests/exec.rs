//! `tokenproxy exec` and `tokenproxy token`, the real binary running real programs (sh, and
//! Python's urllib, which reads the proxy variables) against the in-process fake authorization
//! server and echo upstream.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tokenproxy");
const SECRET: &str = "canary-exec-SECRET-91b2";

/// A config for `idp`, with fixed forward and reverse ports (so `--ephemeral` matters).
fn config_file(dir: &Path, token_endpoint: &str, echo: &Echo, extra_tokens: &str) -> PathBuf {
    TestConfig::new()
        .set("proxy.listen", format!("127.0.0.1:{}", free_port()))
        .set("admin.listen", format!("127.0.0.1:{}", free_port()))
        .remove("tokens.wait_timeout")
        .remove("tokens.min_refresh_interval")
        .merge("tokens", extra_tokens)
        .client("idp", token_endpoint, SECRET)
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set("upstreams.api.listen", format!("127.0.0.1:{}", free_port()))
        .set("upstreams.api.scopes", serde_json::json!(["api:read"]))
        .write(dir)
}

/// `tokenproxy exec -c CFG --ephemeral -- PROGRAM -c SCRIPT` (`sh` or `python3`).
async fn exec_script(cfg: &Path, program: &str, script: &str) -> std::process::Output {
    let cfg = cfg.to_str().unwrap();
    run(&[
        "exec",
        "-c",
        cfg,
        "--ephemeral",
        "--",
        program,
        "-c",
        script,
    ])
    .await
}

async fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

const PYTHON_GETS: &str = "import os, urllib.request as u\n\
print(u.urlopen('http://api.example.com/via-proxy').read().decode())\n\
print(u.urlopen(os.environ['TOKENPROXY_URL_API'] + '/via-reverse').read().decode())\n";

#[tokio::test(flavor = "multi_thread")]
async fn exec_gives_the_command_its_tokens_through_the_proxy_variables() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let out = exec_script(&cfg, "python3", PYTHON_GETS).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for l in &lines {
        assert_eq!(l["authorization"][0], "Bearer tok-1", "{l}");
    }
    assert_eq!(lines[0]["uri"], "/via-proxy");
    assert_eq!(lines[1]["uri"], "/via-reverse");
    assert_eq!(idp.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sets_the_variables_it_documents() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let script = "echo HTTP_PROXY=$HTTP_PROXY; echo http_proxy=$http_proxy; echo NO_PROXY=$NO_PROXY; echo URL=$TOKENPROXY_URL_API; echo HTTPS_PROXY=${HTTPS_PROXY:-unset}";
    let out = exec_script(&cfg, "sh", script).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP_PROXY=http://127.0.0.1:"), "{text}");
    assert!(text.contains("http_proxy=http://127.0.0.1:"), "{text}");
    assert!(text.contains("NO_PROXY=localhost,127.0.0.1,::1"), "{text}");
    assert!(text.contains("URL=http://127.0.0.1:"), "{text}");
    assert!(
        text.contains("HTTPS_PROXY=unset"),
        "no interception, no HTTPS_PROXY: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_exits_with_the_status_of_the_command() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    for (script, want) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
    ] {
        let out = exec_script(&cfg, "sh", script).await;
        assert_eq!(out.status.code(), Some(want), "{script}");
    }
    let missing = run(&[
        "exec",
        "-c",
        cfg.to_str().unwrap(),
        "--ephemeral",
        "--",
        "/nonexistent/cmd",
    ])
    .await;
    assert_eq!(missing.status.code(), Some(127));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_exec_reaches_the_command() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = Command::new(BIN)
        .args([
            "exec",
            "-c",
            cfg.to_str().unwrap(),
            "--ephemeral",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("got-term")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ephemeral_jobs_at_once_do_not_collide() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let args = [
        "exec",
        "-c",
        cfg.to_str().unwrap(),
        "--ephemeral",
        "--",
        "python3",
        "-c",
        PYTHON_GETS,
    ];
    let (a, b) = tokio::join!(run(&args), run(&args));
    for out in [a, b] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("Bearer tok-")
                .count(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_authorization_server_down_the_command_never_runs() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://127.0.0.1:{}/token", free_port());
    let cfg = config_file(dir.path(), &down, &echo, "  wait_timeout: 1s\n");
    let marker = dir.path().join("ran");
    let started = Instant::now();
    let out = run(&[
        "exec",
        "-c",
        cfg.to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(69));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by wait_timeout"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running the command: no token for api"),
        "{err}"
    );
    assert!(err.contains("unreachable"), "{err}");
    assert!(!marker.exists(), "the command ran without a token");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_the_token_in_each_format() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let c = cfg.to_str().unwrap();
    let raw = run(&["token", "-c", c, "api"]).await;
    assert_eq!(
        raw.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&raw.stdout), "tok-1\n");
    let header = run(&["token", "-c", c, "api", "--format", "header"]).await;
    assert_eq!(
        String::from_utf8_lossy(&header.stdout),
        "Authorization: Bearer tok-2\n"
    );
    let json = run(&["token", "-c", c, "api", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["access_token"], "tok-3");
    assert_eq!(v["token_type"], "Bearer");
    let expires = humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    // The token request was the proxy's: same client, same scope.
    let seen = idp.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.body.contains("scope=api%3Aread")),
        "{seen:?}"
    );
    for out in [raw, header, json] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(SECRET), "the client secret was printed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_failures_exit_non_zero_with_the_reason() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "  wait_timeout: 1s\n");
    let c = cfg.to_str().unwrap();
    let unknown = run(&["token", "-c", c, "nope"]).await;
    assert_eq!(unknown.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("no upstream named \"nope\" in the config (upstreams: api)"));

    *idp.required_secret.lock().unwrap() = Some("another-secret".into());
    let rejected = run(&["token", "-c", c, "api"]).await;
    assert_eq!(rejected.status.code(), Some(69));
    let err = String::from_utf8_lossy(&rejected.stderr);
    assert!(err.contains("invalid_client"), "{err}");
    assert!(!err.contains(SECRET) && rejected.stdout.is_empty());

    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let cfg_down = config_file(
        &down,
        &format!("http://127.0.0.1:{}/token", free_port()),
        &echo,
        "  wait_timeout: 1s\n",
    );
    let started = Instant::now();
    let unreachable = run(&["token", "-c", cfg_down.to_str().unwrap(), "api"]).await;
    assert_eq!(unreachable.status.code(), Some(69));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("unreachable"));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_is_not_printed_to_a_terminal_without_show() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &idp.url(), &echo, "");
    let on_tty = |show: &str| {
        let inner = format!("{BIN} token -c {} api {show}", cfg.display());
        let log = dir.path().join(format!("tty{}.log", show.len()));
        let cmd = Command::new("script")
            .args(["-qec", &inner, log.to_str().unwrap()])
            .stdout(Stdio::null())
            .status();
        async move { (cmd.await.unwrap(), std::fs::read_to_string(log).unwrap()) }
    };
    let (status, screen) = on_tty("").await;
    assert_eq!(status.code(), Some(2));
    assert!(screen.contains("the output is a credential"), "{screen}");
    assert!(!screen.contains("tok-"), "{screen}");
    let (status, screen) = on_tty("--show").await;
    assert_eq!(status.code(), Some(0));
    assert!(screen.contains("tok-1"), "{screen}");
}
