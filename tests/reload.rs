//! Hot reload and secret rotation with the files laid out the way Kubernetes mounts a
//! ConfigMap or Secret: `name -> ..data/name`, `..data -> ..<timestamp>/`, swapped atomically.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokenproxy::reload;

/// A directory laid out like a Kubernetes volume mount.
struct KubeDir {
    dir: tempfile::TempDir,
    generation: u32,
}

impl KubeDir {
    fn new(files: &[(&str, &str)]) -> KubeDir {
        let mut k = KubeDir {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        k.swap(files);
        for (name, _) in files {
            symlink(format!("..data/{name}"), k.dir.path().join(name)).unwrap();
        }
        k
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a new generation and points `..data` at it in one rename, as the kubelet does.
    fn swap(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let gen = format!("..2026_11_26_{:02}", self.generation);
        std::fs::create_dir(self.dir.path().join(&gen)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.path().join(&gen).join(name), text).unwrap();
        }
        let tmp = self.dir.path().join("..data_tmp");
        symlink(&gen, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }
}

fn yaml(idp: &FakeIdp, secret_path: &str, extra_proxy: &str, upstreams: &str) -> String {
    format!(
        "proxy:\n  listen: 127.0.0.1:0\n{extra_proxy}admin:\n  listen: 127.0.0.1:0\ntokens:\n  min_refresh_interval: 50ms\n  backoff_min: 100ms\n  backoff_max: 200ms\n\
         clients:\n  idp:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: {{ file: {secret_path} }}\nupstreams:\n{upstreams}",
        idp.url()
    )
}

async fn start_watching(path: PathBuf) -> Arc<tokenproxy::Running> {
    let text = std::fs::read_to_string(&path).unwrap();
    let config = tokenproxy::Config::from_yaml_checked(&text).unwrap();
    let running = Arc::new(tokenproxy::start(config).await.unwrap());
    let poll = Duration::from_secs(3600); // events only: the poll must not be what passes the test
    tokio::spawn(reload::watch(
        running.clone(),
        path,
        Some(text),
        poll,
        reload::Hangup::never(),
        std::future::pending(),
    ));
    running
}

async fn metrics(p: &tokenproxy::Running) -> String {
    get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body
}

async fn eventually_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5s");
}

#[tokio::test]
async fn reload_adds_moves_and_removes_upstreams_and_keeps_good_tokens() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let secrets = KubeDir::new(&[("client-secret", "s3cret\n")]);
    let secret = secrets.path("client-secret");
    let secret = secret.to_str().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let inv = |port: u16| {
        format!("  inventory:\n    url: {}\n    match: [inventory.example.com]\n    listen: 127.0.0.1:{port}\n    client: idp\n", echo.url())
    };
    let orders = format!("  orders:\n    url: {}\n    match: [orders.example.com]\n    client: idp\n    scopes: [orders:read]\n", echo.url());
    let mut conf = KubeDir::new(&[("config.yaml", &yaml(&idp, secret, "", &inv(p1)))]);
    let p = start_watching(conf.path("config.yaml")).await;
    let fwd = p.forward_addr().unwrap();
    let rev1: std::net::SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    assert_eq!(
        get(rev1, "/a", "x", "").await.json()["authorization"][0],
        "Bearer tok-1"
    );

    // v2: inventory's listener moves, orders is added.
    conf.swap(&[(
        "config.yaml",
        &yaml(&idp, secret, "", &format!("{}{orders}", inv(p2))),
    )]);
    eventually(|| p.reverse_addr("inventory").map(|a| a.port()) == Some(p2)).await;
    let rev2 = p.reverse_addr("inventory").unwrap();
    assert_eq!(
        get(rev2, "/a", "x", "").await.json()["authorization"][0],
        "Bearer tok-1",
        "token carried over"
    );
    assert!(
        tokio::net::TcpStream::connect(rev1).await.is_err(),
        "the old address is closed"
    );
    let r = get(fwd, "http://orders.example.com/o", "x", "").await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-2");
    assert_eq!(idp.calls(), 2, "only the new upstream fetched a token");
    assert!(metrics(&p)
        .await
        .contains(r#"tokenproxy_config_reloads_total{outcome="success"} 1"#));

    // v3: orders removed and unmatched requests denied.
    conf.swap(&[(
        "config.yaml",
        &yaml(&idp, secret, "  unmatched: deny\n", &inv(p2)),
    )]);
    eventually_async(|| async {
        get(fwd, "http://orders.example.com/o", "x", "")
            .await
            .status
            == 403
    })
    .await;
    assert_eq!(get(rev2, "/a", "x", "").await.status, 200);
    assert_eq!(idp.calls(), 2);
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    assert_eq!(status["upstreams"].as_array().unwrap().len(), 1);

    // v4: the forward and admin listeners move to fixed ports.
    let (fwd_port, admin_port) = (free_port(), free_port());
    let moved = yaml(&idp, secret, "  unmatched: deny\n", &inv(p2))
        .replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{fwd_port}"),
            1,
        )
        .replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{admin_port}"),
            1,
        );
    conf.swap(&[("config.yaml", &moved)]);
    eventually(|| p.admin_addr().map(|a| a.port()) == Some(admin_port)).await;
    assert_eq!(p.forward_addr().unwrap().port(), fwd_port);
    let r = get(
        p.forward_addr().unwrap(),
        "http://inventory.example.com/",
        "x",
        "",
    )
    .await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    assert!(
        tokio::net::TcpStream::connect(fwd).await.is_err(),
        "the old forward address is closed"
    );
    assert_eq!(
        get(p.admin_addr().unwrap(), "/livez", "x", "").await.status,
        200
    );
    p.shutdown().await;
}

#[tokio::test]
async fn an_invalid_config_leaves_the_old_one_serving() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let secrets = KubeDir::new(&[("client-secret", "s3cret")]);
    let secret = secrets.path("client-secret");
    let ups = format!(
        "  inventory:\n    url: {}\n    match: [inventory.example.com]\n    client: idp\n",
        echo.url()
    );
    let good = yaml(&idp, secret.to_str().unwrap(), "", &ups);
    let mut conf = KubeDir::new(&[("config.yaml", &good)]);
    let p = start_watching(conf.path("config.yaml")).await;
    let fwd = p.forward_addr().unwrap();
    for (n, bad) in [
        good.replace("    client: idp\n", "    client: idp\n    colour: blue\n"),
        yaml(&idp, "/nonexistent/secret", "", &ups),
        "clients: [".to_string(),
    ]
    .iter()
    .enumerate()
    {
        conf.swap(&[("config.yaml", bad)]);
        let want = format!(
            r#"tokenproxy_config_reloads_total{{outcome="failure"}} {}"#,
            n + 1
        );
        eventually_async(|| async { metrics(&p).await.contains(&want) }).await;
        assert!(metrics(&p)
            .await
            .contains("tokenproxy_config_last_reload_successful 0"));
        let r = get(fwd, "http://inventory.example.com/", "x", "").await;
        assert_eq!(
            r.json()["authorization"][0],
            "Bearer tok-1",
            "the old config still serves"
        );
    }
    conf.swap(&[(
        "config.yaml",
        &good.replace(
            "127.0.0.1:0\nadmin",
            "127.0.0.1:0\n  request_timeout: 9s\nadmin",
        ),
    )]);
    eventually_async(|| async {
        metrics(&p)
            .await
            .contains("tokenproxy_config_last_reload_successful 1")
    })
    .await;
    assert_eq!(idp.calls(), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn a_rotated_secret_is_used_and_a_rejected_one_keeps_the_token_in_hand() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.required_secret.lock().unwrap() = Some("old".into());
    *idp.default_expires_in.lock().unwrap() = 6; // usable 5s, refreshed at 4.5s
    let mut secrets = KubeDir::new(&[("client-secret", "old\n")]);
    let secret = secrets.path("client-secret");
    let ups = format!(
        "  inventory:\n    url: {}\n    match: [inventory.example.com]\n    client: idp\n",
        echo.url()
    );
    let conf = KubeDir::new(&[(
        "config.yaml",
        &yaml(&idp, secret.to_str().unwrap(), "", &ups),
    )]);
    let p = start_watching(conf.path("config.yaml")).await;
    let fwd = p.forward_addr().unwrap();
    let auth = |s: &str| format!("Basic {}", base64_encode(&format!("orders:{s}")));
    let last_seen = |idp: &FakeIdp| {
        idp.seen
            .lock()
            .unwrap()
            .last()
            .and_then(|s| s.authorization.clone())
    };
    assert_eq!(
        get(fwd, "http://inventory.example.com/", "x", "")
            .await
            .status,
        200
    );

    // Rotation: the server now wants the new secret, and the mounted file gets it.
    secrets.swap(&[("client-secret", "new\n")]);
    *idp.required_secret.lock().unwrap() = Some("new".into());
    let calls = idp.calls();
    tokio::time::sleep(Duration::from_millis(4600)).await;
    assert!(idp.calls() > calls);
    assert_eq!(
        last_seen(&idp),
        Some(auth("new")),
        "the next fetch used the rotated secret"
    );
    let r = get(fwd, "http://inventory.example.com/", "x", "").await;
    assert_eq!(r.status, 200);
    let token = r.json()["authorization"][0].as_str().unwrap().to_string();

    // A bad rotation: the server refuses it; the token in hand stays in use and it is reported.
    secrets.swap(&[("client-secret", "wrong\n")]);
    let bad = auth("wrong");
    eventually_async(|| {
        let seen = last_seen(&idp);
        let bad = bad.clone();
        async move {
            if seen.as_deref() != Some(bad.as_str()) {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            seen == Some(bad)
        }
    })
    .await;
    let r = get(fwd, "http://inventory.example.com/", "x", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["authorization"][0], token.as_str());
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    let up = &status["upstreams"][0];
    assert_eq!(up["state"], "valid_refresh_failing");
    assert!(
        up["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{up}"
    );
    p.shutdown().await;
}
