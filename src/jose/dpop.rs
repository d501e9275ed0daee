//! DPoP (RFC 9449): the key a client's tokens are bound to, the proofs signed with it, and
//! the nonces servers hand out.
//!
//! A proof is a JWS with the header `{"typ":"dpop+jwt","alg":..,"jwk":<public key>}` and the
//! claims `jti` (128 random bits, never reused), `htm`, `htu` (the URL without query or
//! fragment), `iat` (the system clock, in seconds), and, when they apply, `ath`
//! (base64url(SHA-256(token))) and `nonce`. The header is the same for every proof of a key,
//! so it is encoded once; a proof then costs one signature and a few small strings.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

use super::{KeyError, SigningAlg, SigningKey};

/// The key that tokens are bound to, ready to sign proofs.
pub struct DpopKey {
    key: SigningKey,
    /// base64url of the header, and the dot after it.
    header: String,
    thumbprint: String,
    rng: SystemRandom,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DpopKey({}, {})", self.key.alg(), self.thumbprint)
    }
}

impl DpopKey {
    /// A new ES256 key, in memory only.
    pub fn generate() -> Result<DpopKey, KeyError> {
        DpopKey::new(SigningKey::generate_es256()?)
    }

    /// A key from PEM or JWK text (`dpop_key`); asymmetric only.
    pub fn from_text(text: &str, alg: Option<SigningAlg>) -> Result<DpopKey, KeyError> {
        DpopKey::new(SigningKey::private(text, alg)?)
    }

    fn new(key: SigningKey) -> Result<DpopKey, KeyError> {
        let jwk = key.public_jwk().ok_or(KeyError::Mismatch(
            key.alg(),
            "a DPoP key must be asymmetric",
        ))?;
        let thumbprint = super::thumbprint_of(&jwk);
        let header = json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": jwk});
        Ok(DpopKey {
            header: format!("{}.", B64.encode(header.to_string())),
            key,
            thumbprint,
            rng: SystemRandom::new(),
        })
    }

    /// The RFC 7638 thumbprint of the public key: `cnf.jkt` in the tokens bound to it.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    pub fn alg(&self) -> SigningAlg {
        self.key.alg()
    }

    /// A new proof for a request: `htm` the method, `htu` the URL (query and fragment are
    /// dropped here), `ath` for a request carrying a token, `nonce` when the server gave one.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        ath: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, KeyError> {
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| KeyError::Sign)?;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "jti": B64.encode(jti),
            "htm": htm,
            "htu": without_query(htu),
            "iat": iat,
        });
        if let Some(ath) = ath {
            claims["ath"] = ath.into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let mut jws = self.header.clone();
        B64.encode_string(claims.to_string(), &mut jws);
        let signature = self.key.signature(jws.as_bytes())?;
        jws.push('.');
        B64.encode_string(signature, &mut jws);
        Ok(jws)
    }
}

/// `ath`: base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// A URL without its query and fragment (RFC 9449 §4.2, `htu`).
pub fn without_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// The nonce each server last sent (`DPoP-Nonce`), by origin. A server may send a new one on
/// any answer; the newest is used. Bounded: past [`Nonces::MAX`] origins the oldest entries
/// make way (a url-less upstream can reach many hosts).
#[derive(Debug, Default)]
pub struct Nonces(Mutex<HashMap<String, (u64, String)>>);

impl Nonces {
    pub const MAX: usize = 64;

    pub fn get(&self, origin: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(origin).map(|(_, n)| n.clone())
    }

    /// Keeps `nonce` for `origin` if it is a well-formed one (RFC 9449 §8.1: `NQCHAR`s).
    pub fn set(&self, origin: &str, nonce: &str) {
        let ok = |b: u8| b == b'!' || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        if nonce.is_empty() || nonce.len() > 512 || !nonce.bytes().all(ok) {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let next = map.values().map(|(n, _)| *n).max().unwrap_or(0) + 1;
        if map.len() >= Self::MAX && !map.contains_key(origin) {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(origin.to_owned(), (next, nonce.to_owned()));
    }

    /// Whether any server has sent a nonce (for `/status`).
    pub fn any(&self) -> bool {
        !self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn part(jws: &str, i: usize) -> Value {
        let p = jws.split('.').nth(i).unwrap();
        serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn ath_matches_the_rfc_9449_example() {
        // RFC 9449 §7.1: the access token and the ath of the example proof.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn a_proof_has_the_rfc_9449_header_and_claims_and_verifies() {
        let key = DpopKey::generate().unwrap();
        let jws = key
            .proof(
                "GET",
                "https://api.example/v1/items?secret=1#frag",
                Some("ath-x"),
                Some("n-1"),
            )
            .unwrap();
        let header = part(&jws, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["kty"], "EC");
        assert!(header["jwk"].get("d").is_none(), "no private part");
        assert_eq!(
            super::super::thumbprint_of(&header["jwk"]),
            key.thumbprint()
        );
        let claims = part(&jws, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example/v1/items");
        assert_eq!(
            (claims["ath"].as_str(), claims["nonce"].as_str()),
            (Some("ath-x"), Some("n-1"))
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims["iat"].as_u64().unwrap().abs_diff(now) <= 1);
        assert_eq!(
            B64.decode(claims["jti"].as_str().unwrap()).unwrap().len(),
            16
        );
        // The signature checks out against the public key in the header.
        let jwk = &header["jwk"];
        let point = [
            vec![4u8],
            B64.decode(jwk["x"].as_str().unwrap()).unwrap(),
            B64.decode(jwk["y"].as_str().unwrap()).unwrap(),
        ]
        .concat();
        let (input, sig) = jws.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        let bare = key
            .proof("POST", "https://idp.example/token", None, None)
            .unwrap();
        let bare = part(&bare, 1);
        assert!(bare.get("ath").is_none() && bare.get("nonce").is_none());
    }

    #[test]
    fn every_proof_has_its_own_jti() {
        let key = DpopKey::generate().unwrap();
        let jtis: std::collections::HashSet<String> = (0..200)
            .map(|_| {
                part(&key.proof("GET", "https://a/", None, None).unwrap(), 1)["jti"].to_string()
            })
            .collect();
        assert_eq!(jtis.len(), 200);
    }

    #[test]
    fn a_symmetric_key_is_refused() {
        let err = DpopKey::new(SigningKey::secret(&[7; 32], SigningAlg::HS256).unwrap());
        assert!(err.is_err());
    }

    #[test]
    fn nonces_keep_the_newest_per_origin_and_refuse_junk() {
        let n = Nonces::default();
        assert!(!n.any());
        n.set("https://a", "one");
        n.set("https://a", "two");
        n.set("https://b", "bee");
        assert_eq!(n.get("https://a").as_deref(), Some("two"));
        n.set("https://a", "bad nonce\"with quotes");
        n.set("https://a", "");
        assert_eq!(n.get("https://a").as_deref(), Some("two"));
        for i in 0..Nonces::MAX {
            n.set(&format!("https://h{i}"), "x");
        }
        assert_eq!(n.get("https://b"), None, "the oldest made way");
        assert!(n.get(&format!("https://h{}", Nonces::MAX - 1)).is_some());
    }
}
