//! The interception CA: its name constraints hold under webpki and OpenSSL, a CA from files
//! signs host certificates and is checked by `validate`, `tokenproxy ca` writes its trust
//! files, and no CA key reaches a log or a trust file.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::tunnel::*;
use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use tokenproxy::intercept::authority::Authority;
use tokenproxy::intercept::trust::pem;

const HOST: &str = "api.example.com";
const BIN: &str = env!("CARGO_BIN_EXE_tokenproxy");

/// The generated intermediate is constrained to the intercepted names: a leaf for any other
/// name does not verify (webpki), even though the intermediate's key signed it.
#[test]
fn the_intermediate_cannot_sign_for_other_names() {
    let ca = Authority::generate(vec![HOST.to_string(), "wild.example.com".into()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.trust_anchor.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let verify = |minted_for: &str| {
        let (key, _) = ca
            .mint(minted_for, std::time::Duration::from_secs(3600))
            .unwrap();
        let name = ServerName::try_from(minted_for.to_string()).unwrap();
        verifier.verify_server_cert(&key.cert[0], &key.cert[1..], &name, &[], UnixTime::now())
    };
    assert!(verify(HOST).is_ok());
    assert!(verify("x.wild.example.com").is_ok());
    assert!(verify("evil.com").is_err(), "outside the name constraints");
    assert!(
        verify("example.com").is_err(),
        "a parent of a permitted name"
    );
    assert!(ca.covers("x.wild.example.com") && !ca.covers("notwild.example.com"));
}

/// A CA certificate and key in PEM files, name-constrained or not.
fn ca_files(dir: &Path, constrained: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, GeneralSubtree, IsCa, KeyPair, NameConstraints,
    };
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if constrained {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: vec![],
        });
    }
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn ca_config(dir: &Path, ca: &str) -> std::path::PathBuf {
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!("proxy:\n  listen: 127.0.0.1:0\n  intercept:\n    ca: {ca}\nclients:\n  idp:\n    token_endpoint: http://127.0.0.1:9/token\n    client_id: a\n    client_secret: b\nupstreams:\n  u:\n    url: http://127.0.0.1:9\n    match: [{HOST}]\n    client: idp\n"),
    )
    .unwrap();
    cfg
}

#[test]
fn the_ca_subcommand_writes_the_trust_files_of_a_ca_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_files(dir.path(), true);
    let files = format!(
        "{{cert_file: {}, key_file: {}}}",
        cert.display(),
        key.display()
    );
    let cfg = ca_config(dir.path(), &files);
    let out = dir.path().join("trust");
    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let written = run(&[
        "ca",
        "-c",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let ca_pem = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    assert_eq!(
        pem_certs(ca_pem.as_bytes()),
        pem_certs(&std::fs::read(&cert).unwrap())
    );
    assert!(out.join("bundle.pem").exists() && out.join("truststore.p12").exists());
    let printed = run(&["ca", "-c", cfg.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout), ca_pem);
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&printed.stdout).contains(key_body));

    let generated = run(&[
        "ca",
        "-c",
        ca_config(dir.path(), "generate").to_str().unwrap(),
    ]);
    assert_eq!(generated.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&generated.stderr).contains("trust_dir"));

    // A key that is not the certificate's: a config error with its line.
    let (_, other_key) = ca_files(&tempfile::tempdir().unwrap().keep(), true);
    let mismatched = format!(
        "{{cert_file: {}, key_file: {}}}",
        cert.display(),
        other_key.display()
    );
    let bad = run(&[
        "validate",
        "-c",
        ca_config(dir.path(), &mismatched).to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("line 4: proxy.intercept.ca:")
            && err.contains("is not the key of the certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_ca_from_files_signs_the_host_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_files(dir.path(), false);
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = dir.path().join("trust");
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: {{cert_file: {}, key_file: {}}}\n    trust_dir: {}\n",
        cert.display(),
        key.display(),
        trust.display()
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
    let tls = client(&trust, true)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, HOST).await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
}

/// OpenSSL agrees: a leaf the intermediate signed for a name outside its constraints fails
/// with a name-constraint error; one inside verifies.
#[test]
fn openssl_rejects_a_leaf_outside_the_name_constraints() {
    let ca = Authority::generate(vec![HOST.to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, pem(&ca.trust_anchor)).unwrap();
    let verify = |name: &str| {
        let (key, _) = ca.mint(name, std::time::Duration::from_secs(3600)).unwrap();
        let (leaf, inter) = (dir.path().join("leaf.pem"), dir.path().join("inter.pem"));
        std::fs::write(&leaf, pem(&key.cert[0])).unwrap();
        std::fs::write(&inter, pem(&key.cert[1])).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", root.to_str().unwrap(), "-untrusted"])
            .args([inter.to_str().unwrap(), leaf.to_str().unwrap()])
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = verify(HOST);
    assert!(ok, "{text}");
    let (ok, text) = verify("evil.com");
    assert!(!ok, "{text}");
    assert!(text.contains("permitted subtree violation"), "{text}");
}

/// The real binary at trace level with a CA from files whose key is a canary: the key is in
/// no log line and no trust file, through a successful intercepted request and a refused one.
#[tokio::test]
async fn the_ca_key_reaches_no_log_and_no_trust_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_files(dir.path(), true);
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let canaries: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let (fwd, admin) = (free_port(), free_port());
    let trust = dir.path().join("trust");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, format!(
        "proxy:\n  listen: 127.0.0.1:{fwd}\n  intercept:\n    ca: {{cert_file: {}, key_file: {}}}\n    trust_dir: {}\nadmin:\n  listen: 127.0.0.1:{admin}\n\
         clients:\n  idp:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: s3cret\n\
         upstreams:\n  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n",
        cert.display(), key.display(), trust.display(), idp.url(), echo.url()
    )).unwrap();
    let log = dir.path().join("out.log");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{fwd}").parse().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(format!("127.0.0.1:{admin}")).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready, "the proxy did not start");
    let tcp = connect(addr, &format!("{HOST}:443")).await.unwrap();
    let tls = client(&trust, true)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(exchange(tls, HOST).await.status, 200);
    let tcp = connect(addr, &format!("{HOST}:443")).await.unwrap();
    let wrong =
        client(&trust, true).connect(ServerName::try_from("evil.example.com").unwrap(), tcp);
    assert!(wrong.await.is_err());
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let mut haystacks = vec![std::fs::read_to_string(&log).unwrap()];
    for f in ["ca.pem", "bundle.pem", "truststore.p12"] {
        haystacks
            .push(String::from_utf8_lossy(&std::fs::read(trust.join(f)).unwrap()).into_owned());
    }
    assert!(haystacks[0].contains("TRACE"), "trace logging was on");
    for hay in &haystacks {
        for canary in &canaries {
            assert!(!hay.contains(canary), "a line of the CA key leaked");
        }
    }
}
