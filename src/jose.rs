//! JOSE signing for client assertions (RFC 7523 §2.2, OIDC Core §9): a JWT signed with the
//! client's private key (`private_key_jwt`) or with its secret (`client_secret_jwt`), sent
//! instead of a secret. Here rather than under `token` because validation loads keys too.
//!
//! Signing is ring's, the process's one crypto provider: RSA PKCS#1 v1.5 and PSS, ECDSA P-256
//! and P-384 (fixed-width signatures, as JOSE wants), Ed25519, and HMAC. The `rsa` crate is
//! avoided on purpose (RUSTSEC-2023-0071). Keys are PEM (PKCS#8, or PKCS#1 for RSA) or a JWK,
//! read at every fetch so a rotated Secret is used at once. A key never reaches a log, an
//! error message or `Debug` output; only its JWK thumbprint (RFC 7638) is shown.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};

/// JWS algorithms for client assertions (and, later, DPoP proofs).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum SigningAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        use SigningAlg::*;
        match self {
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            EdDSA => "EdDSA",
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
        }
    }

    /// HS256/384/512: keyed with the client secret.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            SigningAlg::HS256 | SigningAlg::HS384 | SigningAlg::HS512
        )
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key (PKCS#8, or PKCS#1 for RSA) or a JWK")]
    Unreadable,
    #[error("an EC key in SEC1 form (BEGIN EC PRIVATE KEY): convert it with `openssl pkcs8 -topk8 -nocrypt`")]
    Sec1,
    #[error("the key does not fit {0}: {1}")]
    Mismatch(SigningAlg, &'static str),
    #[error("an {0} key must be at least {1} bytes (the hash's length); the secret has {2}")]
    ShortSecret(SigningAlg, usize, usize),
    #[error("signing failed")]
    Sign,
}

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
        // serde_json orders object keys, which is the canonical form RFC 7638 asks for.
        let canonical = self.public_jwk()?.to_string();
        Some(B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        )))
    }

    /// A compact JWS of `header` and `claims`.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, KeyError> {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
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
                k.sign(padding, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
            Kind::Ecdsa(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
            Kind::Ed25519(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            Kind::Hmac(k) => ring::hmac::sign(k, input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{input}.{}", B64.encode(sig)))
    }
}

/// What goes into one client assertion besides the key.
pub struct Assertion<'a> {
    pub client_id: &'a str,
    pub audience: &'a str,
    pub lifetime: Duration,
    pub kid: Option<&'a str>,
    /// `x5t#S256` and `x5t` of the client's certificate (Entra's certificate credentials).
    pub x5t: Option<(String, String)>,
}

impl Assertion<'_> {
    /// The signed JWT: `iss` = `sub` = client_id, `aud`, a unique `jti`, `iat`, `exp`.
    pub fn sign(&self, key: &SigningKey, now: SystemTime) -> Result<String, KeyError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| KeyError::Sign)?;
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience,
            "jti": B64.encode(jti),
            "iat": iat,
            "exp": iat + self.lifetime.as_secs(),
        });
        let mut header = json!({"alg": key.alg().as_str(), "typ": "JWT"});
        if let Some(kid) = self.kid.or(key.jwk_kid.as_deref()) {
            header["kid"] = json!(kid);
        }
        if let Some((s256, s1)) = &self.x5t {
            header["x5t#S256"] = json!(s256);
            header["x5t"] = json!(s1);
        }
        key.sign(&header, &claims)
    }
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

/// `x5t#S256` and `x5t`: the base64url SHA-256 and SHA-1 of a certificate's DER.
pub fn x5t(cert_der: &[u8]) -> (String, String) {
    let s256 = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let s1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    (B64.encode(s256), B64.encode(s1))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1: the thumbprint of the example RSA key.
    #[test]
    fn jwk_thumbprint_matches_the_rfc_7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"e": "AQAB", "kty": "RSA", "n": n});
        assert_eq!(
            thumbprint_of(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn x5t_of_a_known_certificate() {
        let pem = include_str!("../tests/fixtures/keys/rsa.cert.pem");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        // Computed by openssl: `openssl x509 -outform der | openssl dgst -sha256 -binary | base64url`.
        assert_eq!(
            x5t(&der),
            (
                "AhyeKf45Azf03hJUOiMtlW_l7S7UpR_CufT00bUjyEE".to_string(),
                "1mMjBGFoSGucDJyUDysBgxTS1l8".to_string()
            )
        );
    }

    #[test]
    fn hmac_keys_need_the_hash_length_and_hmac_algorithms() {
        assert_eq!(
            SigningKey::secret(b"short", SigningAlg::HS256).unwrap_err(),
            KeyError::ShortSecret(SigningAlg::HS256, 32, 5)
        );
        assert!(SigningKey::secret(&[7u8; 48], SigningAlg::HS384).is_ok());
        assert!(matches!(
            SigningKey::secret(&[7u8; 64], SigningAlg::RS256),
            Err(KeyError::Mismatch(SigningAlg::RS256, _))
        ));
        assert_eq!(
            SigningKey::private("not a key", None).unwrap_err(),
            KeyError::Unreadable
        );
    }

    #[test]
    fn an_hs256_assertion_has_the_claims_and_verifies() {
        let secret = [42u8; 32];
        let key = SigningKey::secret(&secret, SigningAlg::HS256).unwrap();
        let a = Assertion {
            client_id: "orders",
            audience: "https://idp.example.com/token",
            lifetime: Duration::from_secs(60),
            kid: Some("k1"),
            x5t: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = a.sign(&key, now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(claims["iss"], "orders");
        assert_eq!(claims["sub"], "orders");
        assert_eq!(claims["aud"], "https://idp.example.com/token");
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_000_060u64);
        assert_eq!(
            B64.decode(claims["jti"].as_str().unwrap()).unwrap().len(),
            16
        );
        let verify = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let input = format!("{}.{}", parts[0], parts[1]);
        ring::hmac::verify(&verify, input.as_bytes(), &B64.decode(parts[2]).unwrap()).unwrap();
        let again = a.sign(&key, now).unwrap();
        let jti = |jwt: &str| -> Value {
            let p = jwt.split('.').nth(1).unwrap();
            serde_json::from_slice::<Value>(&B64.decode(p).unwrap()).unwrap()["jti"].clone()
        };
        assert_ne!(jti(&jwt), jti(&again), "a new jti every time");
    }
}
