//! What a DPoP proof costs to sign, per algorithm a `dpop_key` may have (ES256 is the
//! generated default): `cargo run --release --example proof_cost`. Prints microseconds per
//! proof, each the median of five rounds of 5,000 proofs. A measuring tool, not a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use tokenproxy::jose::{DpopKey, SigningAlg};

fn pkcs8_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

fn main() {
    let rng = ring::rand::SystemRandom::new();
    let es256 = DpopKey::generate().unwrap();
    let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let eddsa = DpopKey::from_text(&pkcs8_pem(ed.as_ref()), Some(SigningAlg::EdDSA)).unwrap();
    let p384 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let es384 = DpopKey::from_text(&pkcs8_pem(p384.as_ref()), Some(SigningAlg::ES384)).unwrap();
    let ath = tokenproxy::jose::dpop::ath("bench-token-0123456789");
    for (name, key) in [("ES256", &es256), ("EdDSA", &eddsa), ("ES384", &es384)] {
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let n = 5_000;
                let start = Instant::now();
                for _ in 0..n {
                    let p = key
                        .proof("GET", "http://127.0.0.1:8080/items", Some(&ath), None)
                        .unwrap();
                    std::hint::black_box(p);
                }
                start.elapsed().as_secs_f64() * 1e6 / n as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!("{name}: {:.1} µs per proof", rounds[2]);
    }
}
