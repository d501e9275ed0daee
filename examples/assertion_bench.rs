//! How long signing one client assertion takes, per key: a new assertion is signed for every
//! token request (not per app request), so this is the cost added to each fetch.
//!
//! `cargo run --release --example assertion_bench -- KEY.pem [KEY.pem…]` (PEM or JWK files).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime};

use tokenproxy::jose::{Assertion, SigningKey};

fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap();
        let started = Instant::now();
        let key = SigningKey::private(&text, None).unwrap();
        let load = started.elapsed();
        let a = Assertion {
            issuer: "orders-service",
            subject: "orders-service",
            audience: "https://idp.example.com/oauth2/token",
            scope: None,
            lifetime: Duration::from_secs(60),
            kid: Some("key-1"),
            x5t: None,
        };
        let n = 2000;
        let started = Instant::now();
        for _ in 0..n {
            a.sign(&key, SystemTime::now()).unwrap();
        }
        let each = started.elapsed() / n;
        println!(
            "{path}: {}: load {load:?}, sign {each:?} per assertion",
            key.alg()
        );
    }
}
