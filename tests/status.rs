//! `tokenproxy status`: the real binary reading an in-process proxy's admin listener, ready and
//! not, as a table and as JSON, with its exit status.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;

async fn status(admin: std::net::SocketAddr, json: bool) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenproxy"));
    cmd.args(["status", "--admin", &admin.to_string()]);
    if json {
        cmd.arg("--json");
    }
    cmd.output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ready_proxy_and_one_with_a_failing_upstream() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let down = format!("http://127.0.0.1:{}/token", free_port());
    let config = TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "1s")
        .remove("tokens.min_refresh_interval")
        .client("good", &idp.url(), "s3cret")
        .client("bad", &down, "s3cret")
        .upstream("api", &echo.url(), "api.example.com", "good");
    let ready = tokenproxy::start(config.clone().config()).await.unwrap();
    eventually(|| idp.calls() >= 1).await;
    let out = status(ready.admin_addr().unwrap(), false).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.starts_with("UPSTREAM"), "{table}");
    let row = table.lines().find(|l| l.starts_with("api ")).unwrap();
    assert!(
        row.contains("good")
            && row.contains("client_secret_basic")
            && row.contains("valid")
            && row.contains("1/0"),
        "{row}"
    );
    assert!(table.ends_with("ready\n"), "{table}");
    assert!(!table.contains("s3cret") && !table.contains("tok-1"));

    let json = status(ready.admin_addr().unwrap(), true).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["upstreams"][0]["upstream"], "api");

    let failing = config.set("upstreams.api.client", "bad");
    let not_ready = tokenproxy::start(failing.config()).await.unwrap();
    let admin = not_ready.admin_addr().unwrap();
    let mut out = status(admin, false).await;
    for _ in 0..50 {
        if String::from_utf8_lossy(&out.stdout).contains("unreachable") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        out = status(admin, false).await;
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("unavailable") && table.contains("unreachable"),
        "{table}"
    );
    assert!(table.ends_with("NOT ready\n"), "{table}");

    let nobody = status(format!("127.0.0.1:{}", free_port()).parse().unwrap(), false).await;
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("cannot reach the admin listener"));
}
