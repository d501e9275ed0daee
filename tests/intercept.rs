//! TLS interception in-process: CONNECT to a matched host is answered with a certificate our
//! generated CA signed for that host, the request inside gets the token, and every way an app
//! (or an attacker) can get it wrong is refused without a token leaving.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::tunnel::*;
use common::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "api.example.com";

struct Setup {
    _idp: FakeIdp,
    echo: Echo,
    proxy: tokenproxy::Running,
    trust: tempfile::TempDir,
}

async fn setup() -> Setup {
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = tempfile::tempdir().unwrap();
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let upstreams = format!(
        "  api:\n    url: {}\n    match: [{HOST}, \"*.wild.example.com\", 127.0.0.9]\n    client: idp\n  \
           quiet:\n    url: {}\n    match: [quiet.example.com]\n    intercept: false\n    client: idp\n",
        echo.url(),
        echo.url()
    );
    let config = config(&idp, &proxy_block, &upstreams);
    let proxy = tokenproxy::start(config).await.unwrap();
    Setup {
        _idp: idp,
        echo,
        proxy,
        trust,
    }
}

impl Setup {
    fn fwd(&self) -> SocketAddr {
        self.proxy.forward_addr().unwrap()
    }

    async fn metrics(&self) -> String {
        let admin = self.proxy.admin_addr().unwrap();
        get(admin, "/metrics", "x", "").await.body
    }
}

async fn https_get(s: &Setup, sni_name: &str, host_header: &str) -> Result<RawResponse, String> {
    let tcp = connect(s.fwd(), &format!("{HOST}:443")).await?;
    let name = ServerName::try_from(sni_name.to_string()).unwrap();
    let tls = client(s.trust.path(), true)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(exchange(tls, host_header).await)
}

#[tokio::test]
async fn https_through_connect_gets_the_token_with_a_minted_certificate() {
    let s = setup().await;
    let r = https_get(&s, HOST, HOST).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["authorization"][0], "Bearer tok-1", "{seen}");
    assert_eq!(seen["uri"], "/items?x=1");
    assert_eq!(
        seen["host"],
        s.echo.addr.to_string(),
        "Host is the upstream's own"
    );
    // A second connection reuses the host certificate.
    let again = https_get(&s, HOST, HOST).await.unwrap();
    assert_eq!(again.status, 200);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="intercepted"} 2"#),
        "{m}"
    );
    assert!(
        m.contains("tokenproxy_intercept_certificates_minted_total 1"),
        "{m}"
    );
    assert!(
        m.contains(r#"tokenproxy_requests_total{code="200",upstream="api"} 4"#),
        "{m}"
    );
}

#[tokio::test]
async fn wildcard_hosts_get_their_own_certificate() {
    let s = setup().await;
    let tcp = connect(s.fwd(), "a.b.wild.example.com:443").await.unwrap();
    let name = ServerName::try_from("a.b.wild.example.com").unwrap();
    let tls = client(s.trust.path(), true)
        .connect(name, tcp)
        .await
        .unwrap();
    let r = exchange(tls, "a.b.wild.example.com").await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
}

#[tokio::test]
async fn the_trust_files_are_written_and_hold_no_key() {
    let s = setup().await;
    let dir = s.trust.path();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();
    assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(bundle.ends_with(&ca), "the bundle ends with our root");
    for f in ["ca.pem", "bundle.pem", "truststore.p12"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{f}"
        );
    }
    let p12 = std::fs::read(dir.join("truststore.p12")).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        "changeit",
        p12_keystore::Pkcs12ImportPolicy::Raw,
    )
    .unwrap();
    let ours = pem_certs(ca.as_bytes()).remove(0);
    let found = store.entries().any(|(_, e)| match e {
        p12_keystore::KeyStoreEntry::Certificate(c) => c.as_der() == ours.as_ref(),
        _ => false,
    });
    assert!(found, "our root is in the Java truststore");
    let _ = &s.echo;
}

#[tokio::test]
async fn plaintext_http_inside_a_tunnel_gets_the_token() {
    // What Node's undici sends for an http:// URL through a proxy.
    let s = setup().await;
    let tcp = connect(s.fwd(), &format!("{HOST}:80")).await.unwrap();
    let r = exchange(tcp, HOST).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    assert!(s
        .metrics()
        .await
        .contains(r#"tokenproxy_connects_total{outcome="plaintext"} 1"#));
}

#[tokio::test]
async fn a_tls_name_other_than_the_connect_host_is_refused() {
    let s = setup().await;
    let err = https_get(&s, "other.example.com", HOST).await.unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="sni_mismatch"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_host_header_other_than_the_connect_host_gets_421() {
    let s = setup().await;
    for other in [
        "evil.example.com",
        "api.example.com:8443",
        "quiet.example.com",
    ] {
        let r = https_get(&s, HOST, other).await.unwrap();
        assert_eq!(r.status, 421, "{other}: {}", r.body);
        assert_eq!(r.json()["error"], "misdirected_request");
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_sni_is_refused() {
    let s = setup().await;
    let tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    assert!(client(s.trust.path(), false)
        .connect(name, tcp)
        .await
        .is_err());
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="no_sni"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn garbage_or_an_abort_closes_the_tunnel() {
    let s = setup().await;
    for (opening, reason) in [
        (&b"\x00\x01\x02\x03 not a protocol"[..], "not_tls"),
        (&b"\x16\x03\x01\x00"[..], "tls_error"),
    ] {
        let mut tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        if reason == "tls_error" {
            // A handshake record cut short, then the client goes away.
            tcp.shutdown().await.unwrap();
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_to_end(&mut rest),
        );
        read.await.unwrap().unwrap_or_default();
        // The tunnel closes without a byte from an upstream: nothing at all for bytes that
        // are not TLS, at most a TLS alert record (content type 21) for a broken handshake.
        match reason {
            "not_tls" => assert!(rest.is_empty(), "{rest:?}"),
            _ => assert!(rest.is_empty() || rest[0] == 21, "{rest:?}"),
        }
        let want =
            format!(r#"tokenproxy_intercept_handshake_failures_total{{reason="{reason}"}} 1"#);
        eventually_async(&s, &want).await;
    }
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

async fn eventually_async(s: &Setup, want: &str) {
    for _ in 0..100 {
        if s.metrics().await.contains(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("metrics never showed {want}:\n{}", s.metrics().await);
}

#[tokio::test]
async fn a_slow_client_hello_times_out() {
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = tempfile::tempdir().unwrap();
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  header_read_timeout: 300ms\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let ups = format!(
        "  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n",
        echo.url()
    );
    let proxy = tokenproxy::start(config(&idp, &proxy_block, &ups))
        .await
        .unwrap();
    let mut tcp = connect(proxy.forward_addr().unwrap(), &format!("{HOST}:443"))
        .await
        .unwrap();
    tcp.write_all(b"\x16\x03").await.unwrap(); // and nothing more
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut rest),
    );
    assert!(
        closed.await.is_ok(),
        "the tunnel is closed after header_read_timeout"
    );
}

#[tokio::test]
async fn ip_literals_and_opted_out_upstreams_are_not_intercepted() {
    let s = setup().await;
    for target in ["127.0.0.9:443", "quiet.example.com:443"] {
        let refused = connect(s.fwd(), target).await.unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 403"), "{target}: {refused}");
    }
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="refused"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn unmatched_hosts_are_still_tunnelled_untouched() {
    let s = setup().await;
    let tcp = connect(s.fwd(), &s.echo.addr.to_string()).await.unwrap();
    let r = exchange(tcp, "whatever").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!([]),
        "no token in a tunnel"
    );
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="tunnelled"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn an_oversized_client_hello_is_refused() {
    let s = setup().await;
    let mut tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
    // A handshake record announcing 65,535 bytes (rustls takes at most 16 KiB plus overhead).
    let mut hello = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    hello.extend(std::iter::repeat_n(0u8, 70_000));
    let _ = tcp.write_all(&hello).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut rest),
    );
    let _ = read.await.unwrap();
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="tls_error"} 1"#),
        "{m}"
    );
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A generated CA is constrained to the names configured at start: a host a reload adds is
/// refused (403), not served with a certificate clients would reject.
#[tokio::test]
async fn a_host_added_by_a_reload_is_not_intercepted_until_restart() {
    let s = setup().await;
    let idp = FakeIdp::start().await;
    let proxy_block = format!(
        "  listen: {}\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        s.fwd(),
        s.trust.path().display()
    );
    let ups = format!(
        "  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n  late:\n    url: {}\n    match: [late.example.com]\n    client: idp\n",
        s.echo.url(),
        s.echo.url()
    );
    s.proxy
        .apply(config(&idp, &proxy_block, &ups))
        .await
        .unwrap();
    let refused = connect(s.fwd(), "late.example.com:443").await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert_eq!(
        https_get(&s, HOST, HOST).await.unwrap().status,
        200,
        "the others still are"
    );
}

#[tokio::test]
async fn a_graceful_stop_lets_an_intercepted_request_finish() {
    let s = setup().await;
    let tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
    let mut tls = client(s.trust.path(), true)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    // The echo upstream takes 700 ms to answer /slow.
    let req = format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (drained, answer) = tokio::join!(s.proxy.shutdown(), async {
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        parse_response(&buf)
    });
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(drained, "the stop waited for the intercepted connection");
}

/// No token, no forwarding, inside a tunnel too: `503 token_unavailable`, and the upstream
/// never sees the request.
#[tokio::test]
async fn without_a_token_an_intercepted_request_gets_503_and_is_not_forwarded() {
    let (idp, echo, trust) = (
        FakeIdp::start().await,
        Echo::start().await,
        tempfile::tempdir().unwrap(),
    );
    // The server refuses the client (invalid_client): no token can be had.
    *idp.required_secret.lock().unwrap() = Some("not-the-configured-one".into());
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let ups = format!(
        "  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n",
        echo.url()
    );
    let proxy = tokenproxy::start(config(&idp, &proxy_block, &ups))
        .await
        .unwrap();
    let tcp = connect(proxy.forward_addr().unwrap(), &format!("{HOST}:443"))
        .await
        .unwrap();
    let tls = client(trust.path(), true)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, HOST).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "token_unavailable");
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}
