//! A closed-loop HTTPS load client for `tests/e2e/bench.py`: keep-alive connections that speak
//! TLS either straight to a server (`--connect-to ADDR`) or inside a CONNECT tunnel through a
//! proxy (`--proxy ADDR`), so nginx terminating TLS and tokenproxy intercepting it are driven
//! by the same client. wrk cannot send CONNECT.
//!
//! `tlsload --host NAME --ca PEM (--proxy ADDR | --connect-to ADDR) [--connections 64]
//!  [--seconds 8] [--first N]` prints one JSON line: requests, req/s, p50 and p99 in ms.
//! `--first N` instead times N first requests to N new names under `NAME` (`i.NAME`), each a
//! new connection and so, through tokenproxy, a newly minted certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    host: String,
    ca: String,
    proxy: Option<SocketAddr>,
    connect_to: Option<SocketAddr>,
    connections: usize,
    seconds: u64,
    first: usize,
}

fn args() -> Args {
    let mut a = Args {
        host: String::new(),
        ca: String::new(),
        proxy: None,
        connect_to: None,
        connections: 64,
        seconds: 8,
        first: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().expect("a value after each flag");
        match flag.as_str() {
            "--host" => a.host = v,
            "--ca" => a.ca = v,
            "--proxy" => a.proxy = Some(v.parse().unwrap()),
            "--connect-to" => a.connect_to = Some(v.parse().unwrap()),
            "--connections" => a.connections = v.parse().unwrap(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--first" => a.first = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn tls(ca: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

/// A keep-alive HTTP/1.1 connection over TLS to `host`, through the proxy or straight.
async fn open(a: &Args, tls: &tokio_rustls::TlsConnector, host: &str) -> Sender {
    let mut tcp = TcpStream::connect(a.proxy.or(a.connect_to).unwrap())
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    if a.proxy.is_some() {
        let req = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT refused");
    }
    let name = ServerName::try_from(host.to_string()).unwrap();
    let stream = tls.connect(name, tcp).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender, host: &str) {
    sender.ready().await.unwrap();
    let req = http::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

fn ms(d: &[u32], q: f64) -> f64 {
    d[((d.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Arc::new(args());
    let tls = tls(&a.ca);
    if a.first > 0 {
        let mut times = Vec::new();
        for i in 0..a.first {
            let host = format!("n{i}.{}", a.host);
            let started = Instant::now();
            let mut s = open(&a, &tls, &host).await;
            get(&mut s, &host).await;
            times.push(started.elapsed().as_micros() as u32);
        }
        times.sort_unstable();
        println!(
            r#"{{"first_requests":{},"p50_ms":{:.2},"max_ms":{:.2}}}"#,
            times.len(),
            ms(&times, 0.5),
            ms(&times, 1.0)
        );
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (a, tls) = (a.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = open(&a, &tls, &a.host).await;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                get(&mut s, &a.host).await;
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        r#"{{"requests":{},"rps":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
        all.len(),
        all.len() as f64 / took,
        ms(&all, 0.5),
        ms(&all, 0.99)
    );
}
