//! The training run of a profile-guided build that needs nothing but Rust (`deploy/pgo-build.sh`,
//! and so the container image): an origin and token endpoint in this process (hyper, on HTTP/1.1,
//! HTTP/2 and TLS listeners), the tokenproxy binary under training, and a closed-loop load through
//! the paths `tests/e2e/bench.py --all` measures, which is what `tests/e2e/pgo.py` trains on with
//! nginx, wrk, ab, h2load and Redis: the reverse and forward listeners at 64 connections and at
//! one, TLS origination, HTTPS interception, h2c in with HTTP/1.1 and h2c out, DPoP, and a second
//! run with the access log and tracing on. One request in sixteen is a POST with a 1 KiB body and
//! one a GET of 64 KiB, so bodies are trained too. The Redis cache is not (no Redis here).
//!
//! `pgo_train BINARY [--seconds 2]` runs each scenario for `--seconds`, prints a line for each and
//! exits 1 if any request failed or a scenario made none (the origin answers 401 to a request
//! without the token, so a training that injected nothing fails rather than passing for one). It
//! stops the binary with SIGTERM, since a profile is written only at a clean exit. Everything
//! listens on 127.0.0.1; the binary it started is stopped by its PID.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod load;
mod origin;

use std::error::Error;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use load::{intercept_tls, load, Via};
use origin::{origin_tls, serve};
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn Error + Send + Sync>;

fn free_port() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// tokenproxy's listeners for one run.
struct Ports {
    forward: SocketAddr,
    admin: SocketAddr,
    plain: SocketAddr,
    tls: SocketAddr,
    h2: SocketAddr,
    dpop: SocketAddr,
}

fn ports() -> Ports {
    Ports {
        forward: free_port(),
        admin: free_port(),
        plain: free_port(),
        tls: free_port(),
        h2: free_port(),
        dpop: free_port(),
    }
}

/// The origin's listeners.
struct Origin {
    plain: SocketAddr,
    h2: SocketAddr,
    tls: SocketAddr,
}

fn config(p: &Ports, o: &Origin, dir: &Path, observed: bool) -> String {
    let dir = dir.display();
    let extra = if observed {
        format!("access_log:\n  enabled: true\ntracing:\n  otlp_endpoint: http://{}\n  sample_ratio: 1.0\n", o.plain)
    } else {
        String::new()
    };
    format!(
        "{extra}proxy:
  listen: {fwd}
  intercept:
    ca: generate
    trust_dir: {dir}/trust
admin:
  listen: {admin}
clients:
  train:
    token_endpoint: http://{op}/token
    client_id: train
    client_secret: train-secret
  train_dpop:
    token_endpoint: http://{op}/dpop-token
    token_type: dpop
    client_id: train
    client_secret: train-secret
upstreams:
  plain:
    url: http://{op}
    match: [plain.train]
    listen: {plain}
    client: train
  tls:
    url: https://{ot}
    match: [tls.train]
    listen: {tls}
    client: train
    ca_file: {dir}/origin.pem
  h2:
    url: http://{oh2}
    listen: {h2}
    client: train
    protocol: http2
  dpop:
    url: http://{op}
    listen: {dpop}
    client: train_dpop
",
        fwd = p.forward,
        admin = p.admin,
        op = o.plain,
        ot = o.tls,
        oh2 = o.h2,
        plain = p.plain,
        tls = p.tls,
        h2 = p.h2,
        dpop = p.dpop,
    )
}

/// 200 from the admin listener's `/readyz` (every upstream holds a token) within 20 s.
async fn ready(admin: SocketAddr, child: &mut Child) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(format!("tokenproxy exited at start: {status}").into());
        }
        if let Ok(mut admin) = TcpStream::connect(admin).await {
            let ask = "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
            let mut answer = Vec::new();
            if admin.write_all(ask.as_bytes()).await.is_ok()
                && admin.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("tokenproxy not ready within 20 s".into())
}

/// SIGTERM, then a clean exit within 15 s (the profile is written at exit).
async fn stop(mut child: Child) -> Result<(), BoxError> {
    Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("tokenproxy exited with {status}").into())
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill()?;
    child.wait()?;
    Err("tokenproxy did not stop within 15 s of SIGTERM; killed, so no profile".into())
}

/// One tokenproxy run: started on `config`, the scenarios, stopped. False if any failed.
async fn train(
    binary: &str,
    dir: &Path,
    name: &str,
    config: String,
    p: &Ports,
    seconds: u64,
    observed: bool,
) -> Result<bool, BoxError> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()?;
    if let Err(e) = ready(p.admin, &mut child).await {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // Stopped whatever the scenarios did, so that a failed training leaves no process behind.
    let passed = match intercept_tls(&dir.join("trust").join("ca.pem")) {
        Ok(tls) => scenarios(&tls, p, seconds, observed).await,
        Err(e) => {
            eprintln!("pgo_train: the interception CA: {e}");
            false
        }
    };
    stop(child).await?;
    Ok(passed)
}

/// The scenarios of one run (the observed run: the access log and traces), in order. False if
/// any request failed or a scenario made none.
async fn scenarios(tls: &TlsConnector, p: &Ports, seconds: u64, observed: bool) -> bool {
    let runs: Vec<(&str, Via, usize, usize)> = if observed {
        vec![
            (
                "access log and traces: reverse",
                Via::Reverse(p.plain),
                16,
                1,
            ),
            (
                "access log and traces: forward",
                Via::Forward(p.forward, "plain.train"),
                16,
                1,
            ),
        ]
    } else {
        vec![
            ("reverse", Via::Reverse(p.plain), 64, 1),
            ("reverse", Via::Reverse(p.plain), 1, 1),
            ("forward", Via::Forward(p.forward, "plain.train"), 64, 1),
            ("forward", Via::Forward(p.forward, "plain.train"), 1, 1),
            ("TLS origination", Via::Reverse(p.tls), 16, 1),
            (
                "HTTPS interception",
                Via::Intercept(p.forward, "tls.train"),
                16,
                1,
            ),
            ("h2c in, HTTP/1.1 out", Via::H2(p.plain), 4, 16),
            ("h2c in, h2c out", Via::H2(p.h2), 4, 16),
            ("DPoP", Via::Reverse(p.dpop), 16, 1),
        ]
    };
    let mut passed = true;
    for (what, via, connections, streams) in runs {
        let (ok, failed) = load(via, connections, streams, tls, seconds).await;
        let streams = if streams > 1 {
            format!(" x {streams} streams")
        } else {
            String::new()
        };
        println!("pgo_train: {what}, {connections} connection(s){streams}: {ok} requests, {failed} failed");
        passed &= ok > 0 && failed == 0;
    }
    passed
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match &args[..] {
        [binary] => Some((binary.clone(), 2)),
        [binary, flag, n] if flag == "--seconds" => n
            .parse()
            .ok()
            .filter(|&n: &u64| n > 0)
            .map(|n| (binary.clone(), n)),
        _ => None,
    };
    let Some((binary, seconds)) = parsed else {
        eprintln!("usage: pgo_train BINARY [--seconds N], N a whole number of seconds above 0");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let acceptor = origin_tls(&dir.path().join("origin.pem")).expect("the origin's certificate");
    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port")
    };
    let (plain, h2, tls) = (bind().await, bind().await, bind().await);
    let o = Origin {
        plain: plain.local_addr().expect("an address"),
        h2: h2.local_addr().expect("an address"),
        tls: tls.local_addr().expect("an address"),
    };
    tokio::spawn(serve(plain, None, false));
    tokio::spawn(serve(h2, None, true));
    tokio::spawn(serve(tls, Some(acceptor), false));
    let mut passed = true;
    for (name, observed) in [("plain", false), ("observed", true)] {
        let p = ports();
        let config = config(&p, &o, dir.path(), observed);
        match train(&binary, dir.path(), name, config, &p, seconds, observed).await {
            Ok(ok) => passed &= ok,
            Err(e) => {
                eprintln!("pgo_train: {name} run: {e}");
                passed = false;
            }
        }
    }
    if !passed {
        eprintln!(
            "pgo_train: the training failed (see above); a profile from it would guide wrongly"
        );
        std::process::exit(1);
    }
}
