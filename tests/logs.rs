//! Text logs are plain unless stdout is a terminal: what `kubectl logs`, journald and log
//! shippers read must carry no colour codes. `NO_COLOR` turns colour off on a terminal too.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokenproxy");
const ESC: char = '\u{1b}';

/// A config whose token endpoint is unreachable: the process starts, logs, and stops.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    common::TestConfig::new()
        .remove("tokens")
        .client("idp", "http://127.0.0.1:9/token", "b")
        .set(
            "upstreams.u",
            serde_json::json!({"url": "http://127.0.0.1:9", "listen": "127.0.0.1:0", "client": "idp"}),
        )
        .write(dir)
}

/// Runs `cmd` until `log` holds the start line, stops it with SIGTERM, returns the log.
fn run_until_started(mut cmd: Command, log: &std::path::Path) -> String {
    let child = cmd.stdin(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains("tokenproxy started") {
        assert!(Instant::now() < deadline, "no start line in: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
        text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    }
    let pid = child.id().to_string();
    Command::new("pkill")
        .args(["-TERM", "-P", &pid])
        .status()
        .unwrap();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    child.wait_with_output().unwrap();
    String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned()
}

#[test]
fn text_logs_to_a_file_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c", config(dir.path()).to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdout(std::fs::File::create(&log).unwrap());
    let text = run_until_started(cmd, &log);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains(ESC), "escape byte in a file log: {text:?}");
}

/// `script` gives the binary a pseudo-terminal and copies what it prints to a file.
fn on_a_terminal(dir: &std::path::Path, no_color: Option<&str>) -> String {
    let log = dir.join(format!("tty-{}.log", no_color.unwrap_or("unset")));
    let inner = format!("{BIN} run -c {}", config(dir).display());
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &inner, log.to_str().unwrap()])
        .stdout(Stdio::null())
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    run_until_started(cmd, &log)
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let coloured = on_a_terminal(dir.path(), None);
    assert!(
        coloured.contains(ESC),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(dir.path(), Some("1"));
    assert!(plain.contains("tokenproxy started"), "{plain}");
    assert!(!plain.contains(ESC), "NO_COLOR ignored: {plain:?}");
}
