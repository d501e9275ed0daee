//! The JWTs tokenproxy signs (RFC 7523): the client assertion (§2.2, `iss` = `sub` =
//! client_id) and the JWT-bearer grant (§2.1, `iss` and `sub` as configured, and a `scope`
//! claim where the server wants one); `aud`, a random `jti`, `iat`, `exp`; `kid` and
//! `x5t#S256`/`x5t` in the header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

use super::key::SigningKey;
use super::KeyError;

/// What goes into one assertion besides the key.
pub struct Assertion<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audience: &'a str,
    /// A `scope` claim (space-separated), for servers that take the scopes in the grant.
    pub scope: Option<&'a str>,
    pub lifetime: Duration,
    pub kid: Option<&'a str>,
    /// `x5t#S256` and `x5t` of the client's certificate (Entra's certificate credentials).
    pub x5t: Option<(String, String)>,
}

impl Assertion<'_> {
    /// The signed JWT: `iss`, `sub`, `aud`, a unique `jti`, `iat`, `exp` (and `scope`).
    pub fn sign(&self, key: &SigningKey, now: SystemTime) -> Result<String, KeyError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| KeyError::Sign)?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "jti": B64.encode(jti),
            "iat": iat,
            "exp": iat + self.lifetime.as_secs(),
        });
        if let Some(scope) = self.scope {
            claims["scope"] = json!(scope);
        }
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

/// `x5t#S256` and `x5t`: the base64url SHA-256 and SHA-1 of a certificate's DER.
pub fn x5t(cert_der: &[u8]) -> (String, String) {
    let s256 = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let s1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    (B64.encode(s256), B64.encode(s1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{thumbprint_of, SigningAlg};
    use rustls_pki_types::pem::PemObject;
    use serde_json::Value;

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
        let pem = include_str!("../../tests/fixtures/keys/rsa.cert.pem");
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
            issuer: "orders",
            subject: "orders",
            audience: "https://idp.example.com/token",
            scope: None,
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
