//! JOSE signing for client assertions (RFC 7523 §2.2, OIDC Core §9): a JWT signed with the
//! client's private key (`private_key_jwt`) or with its secret (`client_secret_jwt`), sent
//! instead of a secret. Here rather than under `token` because validation loads keys too.
//!
//! Signing is ring's, the process's one crypto provider: RSA PKCS#1 v1.5 and PSS, ECDSA P-256
//! and P-384 (fixed-width signatures, as JOSE wants), Ed25519, and HMAC. The `rsa` crate is
//! avoided on purpose (RUSTSEC-2023-0071). Keys are PEM (PKCS#8, or PKCS#1 for RSA) or a JWK,
//! read at every fetch so a rotated Secret is used at once. A key never reaches a log, an
//! error message or `Debug` output; only its JWK thumbprint (RFC 7638) is shown.
//!
//! - `key`: private keys (PEM, JWK) and HMAC keys, signing, public JWKs and thumbprints;
//! - `dpop`: DPoP keys, proofs (RFC 9449) and the nonces servers send;
//! - `assertion`: the client assertion's claims and header, and `x5t`;
//! - `key_file`: Google service-account JSON key files (the key, `kid`, issuer, endpoint);
//! - `peek`: the unverified claims of a JWT someone else signed, and whether it is whole.

mod assertion;
pub mod dpop;
mod key;
pub mod key_file;
pub mod peek;

use std::fmt;

pub use assertion::{x5t, Assertion};
pub use dpop::{DpopKey, Nonces};
pub use key::{thumbprint_of, SigningKey};
pub use key_file::KeyFacts;
pub use peek::{peek, Peeked, ShapeError};

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
