//! What is stored in Redis: a token sealed with AES-256-GCM (ring), readable only with the
//! configured key, and only under the Redis key it was written for.
//!
//! A value is the text `1:<expires_ms>:<base64url(nonce ‖ ciphertext ‖ tag)>`. The expiry is
//! in the clear so that a write can refuse to replace a token with one that expires sooner
//! (a Lua script compares them without the key), and it is authenticated with the Redis key
//! as associated data: a value moved to another key, an edited expiry, or any flipped byte
//! fails to open. The plaintext is JSON: the token, its type, and when it was issued and
//! expires (milliseconds since the Unix epoch).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The format's version, the value's first field.
const VERSION: &str = "1";
/// Longest value read back; a token is at most 8 KiB.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// A token as the fleet shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "access_token")]
    pub token: String,
    pub token_type: String,
    /// When the authorization server issued it (ms since the epoch, by the fetching replica).
    pub iat: u64,
    /// When it expires (ms since the epoch).
    pub exp: u64,
}

/// Why a value could not be opened. Never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the value is not in the cache's format")]
    Format,
    #[error("the value failed authentication (another key, another Redis key, or tampered)")]
    Authentication,
    #[error("the sealed content is not a token entry")]
    Content,
    #[error("no random bytes for a nonce")]
    Random,
}

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Result<Sealer, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::Format)?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// The value to store under `redis_key`.
    pub fn seal(&self, redis_key: &str, entry: &Entry) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = serde_json::to_vec(entry).map_err(|_| SealError::Content)?;
        let aad = aad(redis_key, entry.exp);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Format)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Ok(format!(
            "{VERSION}:{}:{}",
            entry.exp,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Opens a value read from `redis_key`.
    pub fn open(&self, redis_key: &str, value: &[u8]) -> Result<Entry, SealError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(SealError::Format);
        }
        let text = std::str::from_utf8(value).map_err(|_| SealError::Format)?;
        let mut parts = text.splitn(3, ':');
        let (Some(VERSION), Some(exp), Some(blob)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Format);
        };
        let exp: u64 = exp.parse().map_err(|_| SealError::Format)?;
        let mut blob = URL_SAFE_NO_PAD
            .decode(blob)
            .map_err(|_| SealError::Format)?;
        if blob.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Format);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let aad = aad(redis_key, exp);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| SealError::Authentication)?;
        let entry: Entry = serde_json::from_slice(plain).map_err(|_| SealError::Content)?;
        if entry.exp != exp {
            return Err(SealError::Content);
        }
        Ok(entry)
    }
}

/// The expiry in a value's clear prefix, as the Lua script reads it.
fn aad(redis_key: &str, exp: u64) -> String {
    format!("{redis_key}\n{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            token: "CANARY-TOKEN-aa11".into(),
            token_type: "Bearer".into(),
            iat: 1_800_000_000_000,
            exp: 1_800_000_060_000,
        }
    }

    #[test]
    fn a_sealed_value_opens_under_its_own_key_only() {
        let s = Sealer::new(&[7; 32]).unwrap();
        let v = s.seal("{tp:ab}:token", &entry()).unwrap();
        assert!(v.starts_with("1:1800000060000:"), "{v}");
        assert!(!v.contains("CANARY"), "the token is not in the clear");
        assert_eq!(s.open("{tp:ab}:token", v.as_bytes()).unwrap(), entry());
        assert_eq!(
            s.open("{tp:cd}:token", v.as_bytes()),
            Err(SealError::Authentication),
            "moved to another client's key"
        );
        let other = Sealer::new(&[8; 32]).unwrap();
        assert_eq!(
            other.open("{tp:ab}:token", v.as_bytes()),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn two_seals_of_one_entry_differ() {
        let s = Sealer::new(&[7; 32]).unwrap();
        assert_ne!(
            s.seal("k", &entry()).unwrap(),
            s.seal("k", &entry()).unwrap()
        );
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let s = Sealer::new(&[7; 32]).unwrap();
        let v = s.seal("k", &entry()).unwrap();
        let later = v.replacen("1800000060000", "1900000060000", 1);
        assert_eq!(
            s.open("k", later.as_bytes()),
            Err(SealError::Authentication)
        );
        let mut flipped = v.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open("k", &flipped), Err(SealError::Authentication));
        for junk in [
            "",
            "1:2:",
            "1:x:AAAA",
            "2:1800000060000:AAAA",
            "1:1800000060000:AAAA",
            "1:1800000060000:!!!",
        ] {
            assert_eq!(
                s.open("k", junk.as_bytes()),
                Err(SealError::Format),
                "{junk}"
            );
        }
        assert_eq!(
            s.open("k", &vec![b'1'; MAX_VALUE_LEN + 1]),
            Err(SealError::Format)
        );
        assert_eq!(s.open("k", &[0xff, 0xfe]), Err(SealError::Format));
    }
}
