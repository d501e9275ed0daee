//! Signing keys: a private key from PEM (PKCS#8, PKCS#1 for RSA) or a JWK, or an HMAC key
//! over a client secret; the JWS signature; the public key as a JWK and its thumbprint.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use super::{KeyError, SigningAlg};

/// A key ready to sign assertions with one algorithm.
pub struct SigningKey {
    alg: SigningAlg,
    kind: Kind,
    /// The `kid` from a JWK, if it had one.
    pub jwk_kid: Option<String>,
}

enum Kind {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Hmac(ring::hmac::Key),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, ***)", self.alg)
    }
}

impl SigningKey {
    /// A private key for `alg`, from PEM or JWK text. `alg: None` picks the algorithm the key
    /// implies (RSA: RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA).
    pub fn private(text: &str, alg: Option<SigningAlg>) -> Result<SigningKey, KeyError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            return from_jwk(trimmed, alg);
        }
        let der =
            PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| KeyError::Unreadable)?;
        let kind = match &der {
            PrivateKeyDer::Pkcs1(k) => Kind::Rsa(
                RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|_| KeyError::Unreadable)?,
            ),
            PrivateKeyDer::Pkcs8(k) => pkcs8(k.secret_pkcs8_der(), alg)?,
            PrivateKeyDer::Sec1(_) => return Err(KeyError::Sec1),
            _ => return Err(KeyError::Unreadable),
        };
        finish(kind, alg, None)
    }

    /// An HMAC key over a client secret (`client_secret_jwt`).
    pub fn secret(secret: &[u8], alg: SigningAlg) -> Result<SigningKey, KeyError> {
        let (hmac, len) = match alg {
            SigningAlg::HS256 => (ring::hmac::HMAC_SHA256, 32),
            SigningAlg::HS384 => (ring::hmac::HMAC_SHA384, 48),
            SigningAlg::HS512 => (ring::hmac::HMAC_SHA512, 64),
            other => {
                return Err(KeyError::Mismatch(
                    other,
                    "client_secret_jwt signs with HS256, HS384 or HS512",
                ))
            }
        };
        if secret.len() < len {
            return Err(KeyError::ShortSecret(alg, len, secret.len()));
        }
        let kind = Kind::Hmac(ring::hmac::Key::new(hmac, secret));
        Ok(SigningKey {
            alg,
            kind,
            jwk_kid: None,
        })
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public key as a JWK (no private part), for thumbprints; `None` for HMAC.
    pub fn public_jwk(&self) -> Option<Value> {
        match &self.kind {
            Kind::Rsa(k) => {
                let (n, e) = rsa_public(k);
                Some(json!({"e": B64.encode(e), "kty": "RSA", "n": B64.encode(n)}))
            }
            Kind::Ecdsa(k) => {
                let point = k.public_key().as_ref();
                let (crv, half) = if self.alg == SigningAlg::ES384 {
                    ("P-384", 48)
                } else {
                    ("P-256", 32)
                };
                let (x, y) = point.get(1..)?.split_at_checked(half)?;
                Some(json!({"crv": crv, "kty": "EC", "x": B64.encode(x), "y": B64.encode(y)}))
            }
            Kind::Ed25519(k) => Some(
                json!({"crv": "Ed25519", "kty": "OKP", "x": B64.encode(k.public_key().as_ref())}),
            ),
            Kind::Hmac(_) => None,
        }
    }

    /// The RFC 7638 JWK thumbprint of the public key (SHA-256, base64url); `None` for HMAC.
    pub fn thumbprint(&self) -> Option<String> {
        self.public_jwk().map(|jwk| thumbprint_of(&jwk))
    }

    /// A compact JWS of `header` and `claims`.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, KeyError> {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.signature(input.as_bytes())?;
        Ok(format!("{input}.{}", B64.encode(sig)))
    }

    /// The JWS signature over `input` (the encoded header and claims, joined by a dot).
    pub fn signature(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let sig = match &self.kind {
            Kind::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match self.alg {
                    SigningAlg::RS256 => &signature::RSA_PKCS1_SHA256,
                    SigningAlg::RS384 => &signature::RSA_PKCS1_SHA384,
                    SigningAlg::RS512 => &signature::RSA_PKCS1_SHA512,
                    SigningAlg::PS256 => &signature::RSA_PSS_SHA256,
                    SigningAlg::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, input, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
            Kind::Ecdsa(k) => k
                .sign(&rng, input)
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
            Kind::Ed25519(k) => k.sign(input).as_ref().to_vec(),
            Kind::Hmac(k) => ring::hmac::sign(k, input).as_ref().to_vec(),
        };
        Ok(sig)
    }

    /// A new P-256 key, in memory only (a DPoP key nobody configured).
    pub fn generate_es256() -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| KeyError::Sign)?;
        let k = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| KeyError::Sign)?;
        finish(Kind::Ecdsa(k), Some(SigningAlg::ES256), None)
    }
}

fn pkcs8(der: &[u8], alg: Option<SigningAlg>) -> Result<Kind, KeyError> {
    let rng = SystemRandom::new();
    if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
        return Ok(Kind::Rsa(k));
    }
    let p384 = alg == Some(SigningAlg::ES384);
    let (first, second) = if p384 {
        (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
    } else {
        (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        )
    };
    if let Ok(k) = EcdsaKeyPair::from_pkcs8(first, der, &rng) {
        return Ok(Kind::Ecdsa(k));
    }
    if let Ok(k) = EcdsaKeyPair::from_pkcs8(second, der, &rng) {
        return Ok(Kind::Ecdsa(k));
    }
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map(Kind::Ed25519)
        .map_err(|_| KeyError::Unreadable)
}

fn from_jwk(text: &str, alg: Option<SigningAlg>) -> Result<SigningKey, KeyError> {
    let jwk: Value = serde_json::from_str(text).map_err(|_| KeyError::Unreadable)?;
    let field = |name: &str| -> Result<Vec<u8>, KeyError> {
        let v = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or(KeyError::Unreadable)?;
        B64.decode(v).map_err(|_| KeyError::Unreadable)
    };
    let rng = SystemRandom::new();
    let kind = match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("RSA"), _) => {
            let (n, e, d, p, q, dp, dq, qi) = (
                field("n")?,
                field("e")?,
                field("d")?,
                field("p")?,
                field("q")?,
                field("dp")?,
                field("dq")?,
                field("qi")?,
            );
            let components = ring::rsa::KeyPairComponents {
                public_key: ring::rsa::PublicKeyComponents { n: &n, e: &e },
                d: &d,
                p: &p,
                q: &q,
                dP: &dp,
                dQ: &dq,
                qInv: &qi,
            };
            Kind::Rsa(RsaKeyPair::from_components(&components).map_err(|_| KeyError::Unreadable)?)
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let a = if crv == "P-256" {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let public = [vec![4u8], field("x")?, field("y")?].concat();
            let k = EcdsaKeyPair::from_private_key_and_public_key(a, &field("d")?, &public, &rng)
                .map_err(|_| KeyError::Unreadable)?;
            Kind::Ecdsa(k)
        }
        (Some("OKP"), Some("Ed25519")) => Kind::Ed25519(
            Ed25519KeyPair::from_seed_and_public_key(&field("d")?, &field("x")?)
                .map_err(|_| KeyError::Unreadable)?,
        ),
        _ => return Err(KeyError::Unreadable),
    };
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
    finish(kind, alg, kid)
}

/// Settles the algorithm: the one asked for, if the key fits it, else the key's own.
fn finish(
    kind: Kind,
    alg: Option<SigningAlg>,
    jwk_kid: Option<String>,
) -> Result<SigningKey, KeyError> {
    use SigningAlg::*;
    let p384 = matches!(&kind, Kind::Ecdsa(k) if k.public_key().as_ref().len() == 97);
    let implied = match (&kind, p384) {
        (Kind::Rsa(_), _) => RS256,
        (Kind::Ecdsa(_), false) => ES256,
        (Kind::Ecdsa(_), true) => ES384,
        (Kind::Ed25519(_), _) => EdDSA,
        (Kind::Hmac(_), _) => HS256,
    };
    let alg = alg.unwrap_or(implied);
    let fits = match &kind {
        Kind::Rsa(k) => {
            matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                && k.public().modulus_len() >= 256
        }
        Kind::Ecdsa(_) => alg == implied,
        Kind::Ed25519(_) => alg == EdDSA,
        Kind::Hmac(_) => false,
    };
    if !fits {
        let why = match &kind {
            Kind::Rsa(k) if k.public().modulus_len() < 256 => {
                "RSA keys must have at least 2048 bits"
            }
            Kind::Rsa(_) => "an RSA key signs with RS256/384/512 or PS256/384/512",
            Kind::Ecdsa(_) if p384 => "a P-384 key signs with ES384",
            Kind::Ecdsa(_) => "a P-256 key signs with ES256",
            _ => "an Ed25519 key signs with EdDSA",
        };
        return Err(KeyError::Mismatch(alg, why));
    }
    Ok(SigningKey { alg, kind, jwk_kid })
}

fn rsa_public(k: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
    (c.n, c.e)
}

/// The RFC 7638 thumbprint of a public JWK holding only its required members. serde_json
/// orders object keys and writes no whitespace: the canonical form RFC 7638 asks for.
pub fn thumbprint_of(public_jwk: &Value) -> String {
    let canonical = public_jwk.to_string();
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}
