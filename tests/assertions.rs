//! `private_key_jwt` and `client_secret_jwt` in-process: keys made by openssl at run time, the
//! assertions the authorization server receives checked claim by claim and verified with
//! the public key, a rotated key used at the next fetch, and bad combinations refused by
//! `validate` with their line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;
use x509_parser::prelude::FromDer;

/// A new private key in PEM: `genpkey` arguments, then an optional conversion to PKCS#1.
fn key(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let ok = Command::new("openssl")
        .args(["genpkey", "-out", path.to_str().unwrap()])
        .args(args)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    path
}

fn rsa(dir: &Path, name: &str) -> PathBuf {
    key(
        dir,
        name,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    )
}

fn to_pkcs1(dir: &Path, pkcs8: &Path) -> PathBuf {
    let out = dir.join("pkcs1.pem");
    let ok = Command::new("openssl")
        .args([
            "rsa",
            "-traditional",
            "-in",
            pkcs8.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    out
}

/// The raw public key ring verifies with, from openssl's SPKI.
fn public_key(private: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap();
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&out.stdout).unwrap();
    spki.subject_public_key.data.to_vec()
}

fn hex(d: &ring::digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// The form fields of the last token request the fake server saw.
fn last_form(idp: &FakeIdp) -> Vec<(String, String)> {
    let seen = idp.seen.lock().unwrap();
    let body = &seen.last().unwrap().body;
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    &form
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {form:?}"))
        .1
}

async fn proxy_with(idp: &FakeIdp, echo: &Echo, client: &str) -> tokenproxy::Running {
    let config = TestConfig::new()
        .forward()
        .remove("tokens.wait_timeout")
        .set("clients.idp.token_endpoint", idp.url())
        .set("clients.idp.client_id", "orders")
        .merge("clients.idp", client)
        .upstream("api", &echo.url(), "api.example.com", "idp");
    tokenproxy::start(config.config_checked()).await.unwrap()
}

/// Checks the last assertion: header, claims, and the signature under `verify`.
fn check_assertion(idp: &FakeIdp, alg: &str, verify: &dyn Fn(&[u8], &[u8]) -> bool) -> Value {
    let form = last_form(idp);
    assert_eq!(
        field(&form, "client_assertion_type"),
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(field(&form, "client_id"), "orders");
    assert!(form.iter().all(|(k, _)| k != "client_secret"));
    let jwt = field(&form, "client_assertion");
    let parts: Vec<&str> = jwt.split('.').collect();
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], alg);
    assert_eq!(claims["iss"], "orders");
    assert_eq!(claims["sub"], "orders");
    assert_eq!(
        claims["aud"],
        idp.url(),
        "default audience: the token endpoint"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(
        verify(input.as_bytes(), &B64.decode(parts[2]).unwrap()),
        "{alg} signature does not verify"
    );
    header
}

#[tokio::test]
async fn private_key_jwt_signs_with_each_kind_of_key() {
    let dir = tempfile::tempdir().unwrap();
    let rsa_key = rsa(dir.path(), "rsa.pem");
    let pkcs1 = to_pkcs1(dir.path(), &rsa_key);
    let p256 = key(
        dir.path(),
        "p256.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let p384 = key(
        dir.path(),
        "p384.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let ed = key(dir.path(), "ed.pem", &["-algorithm", "ED25519"]);
    let cases: Vec<(
        &Path,
        &Path,
        &str,
        &'static dyn signature::VerificationAlgorithm,
    )> = vec![
        (
            &rsa_key,
            &rsa_key,
            "RS256",
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            &pkcs1,
            &rsa_key,
            "PS256",
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (&p256, &p256, "ES256", &signature::ECDSA_P256_SHA256_FIXED),
        (&p384, &p384, "ES384", &signature::ECDSA_P384_SHA384_FIXED),
        (&ed, &ed, "EdDSA", &signature::ED25519),
    ];
    for (private, public_of, alg, verify_alg) in cases {
        let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
        let client = format!(
            "    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n    signing_alg: {alg}\n    key_id: key-1\n",
            private.display()
        );
        let proxy = proxy_with(&idp, &echo, &client).await;
        let r = get_api(&proxy).await;
        assert_eq!(r.json()["authorization"][0], "Bearer tok-1", "{alg}");
        let public = public_key(public_of);
        let verify = |msg: &[u8], sig: &[u8]| {
            UnparsedPublicKey::new(verify_alg, &public)
                .verify(msg, sig)
                .is_ok()
        };
        let header = check_assertion(&idp, alg, &verify);
        assert_eq!(header["kid"], "key-1");
    }
}

#[tokio::test]
async fn the_certificate_gives_x5t_headers_and_the_status_shows_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let rsa_key = rsa(dir.path(), "rsa.pem");
    let cert = dir.path().join("cert.pem");
    let cnf = dir.path().join("c.cnf");
    std::fs::write(
        &cnf,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = orders\n",
    )
    .unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-config",
            cnf.to_str().unwrap(),
            "-key",
            rsa_key.to_str().unwrap(),
            "-days",
            "1",
        ])
        .args(["-out", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success());
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let client = format!(
        "    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n    certificate: {{ file: {} }}\n",
        rsa_key.display(),
        cert.display()
    );
    let proxy = proxy_with(&idp, &echo, &client).await;
    get_api(&proxy).await;
    let public = public_key(&rsa_key);
    let verify = |m: &[u8], s: &[u8]| {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(m, s)
            .is_ok()
    };
    let header = check_assertion(&idp, "RS256", &verify);
    let der = Command::new("openssl")
        .args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let s256 = B64.encode(ring::digest::digest(&ring::digest::SHA256, &der));
    assert_eq!(header["x5t#S256"], s256);
    let status = get(proxy.admin_addr().unwrap(), "/status", "x", "")
        .await
        .body;
    let key_text = std::fs::read_to_string(&rsa_key).unwrap();
    for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!status.contains(line));
    }
    let v: Value = serde_json::from_str(&status).unwrap();
    let up = &v["upstreams"][0];
    assert_eq!(up["auth_method"], "private_key_jwt");
    assert_eq!(
        up["credential"]["certificate_sha256"],
        hex(&ring::digest::digest(&ring::digest::SHA256, &der))
    );
    assert!(up["credential"]["certificate_expires"]
        .as_str()
        .unwrap()
        .starts_with("20"));
    assert_eq!(
        up["credential"]["key_thumbprint"].as_str().unwrap().len(),
        43,
        "{up}"
    );
    let metrics = get(proxy.admin_addr().unwrap(), "/metrics", "x", "")
        .await
        .body;
    assert!(
        metrics.contains("tokenproxy_client_certificate_expiry_timestamp_seconds{client=\"idp\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tokenproxy_token_fetches_by_auth_method_total{auth_method="private_key_jwt",outcome="success"} 1"#));
}

#[tokio::test]
async fn a_rotated_key_signs_the_next_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let old = rsa(dir.path(), "old.pem");
    let new = rsa(dir.path(), "new.pem");
    let live = dir.path().join("key.pem");
    std::fs::copy(&old, &live).unwrap();
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_expires_in.lock().unwrap() = 2; // refreshed within a second or two
    let client = format!(
        "    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n",
        live.display()
    );
    let _proxy = proxy_with(&idp, &echo, &client).await;
    let verifies_with = |key: &Path| {
        let public = public_key(key);
        let form = last_form(&idp);
        let jwt = field(&form, "client_assertion").to_string();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .is_ok()
    };
    eventually(|| idp.calls() >= 1).await;
    assert!(verifies_with(&old));
    std::fs::copy(&new, &live).unwrap();
    let before = idp.calls();
    eventually(|| idp.calls() > before).await;
    assert!(verifies_with(&new), "the next fetch used the rotated key");
}

#[tokio::test]
async fn client_secret_jwt_signs_with_the_secret() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let secret = "a-client-secret-of-at-least-32-bytes!";
    let client = format!("    client_secret: {secret}\n    auth_method: client_secret_jwt\n    assertion_audience: https://idp.example.com\n");
    let proxy = proxy_with(&idp, &echo, &client).await;
    let r = get_api(&proxy).await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    let form = last_form(&idp);
    let jwt = field(&form, "client_assertion");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(decode(parts[0])["alg"], "HS256");
    assert_eq!(decode(parts[1])["aud"], "https://idp.example.com");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let input = format!("{}.{}", parts[0], parts[1]);
    ring::hmac::verify(&key, input.as_bytes(), &B64.decode(parts[2]).unwrap()).unwrap();
    assert!(
        !idp.seen
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .body
            .contains(secret),
        "the secret is not sent"
    );
}

/// Validation with the key files read: every wrong combination named with its key and line.
#[test]
fn wrong_credentials_are_config_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let rsa_key = rsa(dir.path(), "rsa.pem");
    let sec1 = dir.path().join("sec1.pem");
    let p256 = key(
        dir.path(),
        "p256.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let converted = Command::new("openssl")
        .args([
            "ec",
            "-in",
            p256.to_str().unwrap(),
            "-out",
            sec1.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(converted.status.success());
    let check = |client: &str| -> String {
        let yaml = format!(
            "clients:\n  idp:\n    token_endpoint: https://idp.example.com/token\n    client_id: orders\n{client}upstreams: {{}}\n"
        );
        match tokenproxy::Config::from_yaml_checked(&yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    };
    let cases = [
        (format!("    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n    signing_alg: ES256\n", rsa_key.display()),
         "line 7: clients.idp.signing_alg: the key does not fit ES256: an RSA key signs with RS256/384/512 or PS256/384/512"),
        (format!("    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n", sec1.display()),
         "line 6: clients.idp.private_key: an EC key in SEC1 form"),
        ("    auth_method: private_key_jwt\n".to_string(), "line 5: clients.idp.auth_method: private_key_jwt needs private_key"),
        (format!("    client_secret: s3cret\n    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n", rsa_key.display()),
         "line 5: clients.idp.client_secret: not used with private_key_jwt"),
        (format!("    auth_method: private_key_jwt\n    private_key: {{ file: {} }}\n    signing_alg: HS256\n", rsa_key.display()),
         "line 7: clients.idp.signing_alg: HS256 is keyed with the client secret"),
        ("    client_secret: short\n    auth_method: client_secret_jwt\n".to_string(),
         "line 5: clients.idp.client_secret: an HS256 key must be at least 32 bytes (the hash's length); the secret has 5"),
        ("    client_secret: s3cret\n    signing_alg: RS256\n".to_string(),
         "line 6: clients.idp.signing_alg: only used with client_secret_jwt, private_key_jwt or grant: jwt_bearer"),
        ("    client_secret: a-client-secret-of-at-least-32-bytes!\n    auth_method: client_secret_jwt\n    assertion_audience: issuer\n".to_string(),
         "line 7: clients.idp.assertion_audience: issuer needs clients.*.issuer"),
        ("    client_secret: a-client-secret-of-at-least-32-bytes!\n    auth_method: client_secret_jwt\n    assertion_lifetime: 1h\n".to_string(),
         "line 7: clients.idp.assertion_lifetime: must be between 10s and 10m"),
    ];
    let key_lines: Vec<String> = [&rsa_key, &sec1]
        .iter()
        .flat_map(|k| {
            std::fs::read_to_string(k)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for (client, want) in cases {
        let shown = check(&client);
        assert!(shown.contains(want), "want: {want}\n got: {shown}");
        assert!(
            key_lines.iter().all(|l| !shown.contains(l.as_str())),
            "no key material in errors"
        );
    }
}
