//! Google service-account JSON key files: the PEM key inside, and the facts that configure
//! the JWT-bearer grant (`private_key_id` as `kid`, `client_email` as the issuer,
//! `token_uri` as the endpoint). Other text (PEM, a JWK) is a key as it is.

use serde_json::Value;

use super::key::SigningKey;
use super::{KeyError, SigningAlg};

/// What a key file holds besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    /// `private_key_id`: the assertion's `kid`.
    pub kid: Option<String>,
    /// `client_email`: the assertion's default issuer.
    pub client_email: Option<String>,
    /// `token_uri`: the token endpoint, unless the config names one.
    pub token_uri: Option<String>,
}

/// A signing key and the facts of its file.
pub fn load(text: &str, alg: Option<SigningAlg>) -> Result<(SigningKey, KeyFacts), KeyError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Ok((SigningKey::private(text, alg)?, KeyFacts::default()));
    }
    let json: Value = serde_json::from_str(trimmed).map_err(|_| KeyError::Unreadable)?;
    if json.get("type").and_then(Value::as_str) != Some("service_account") {
        return Ok((SigningKey::private(text, alg)?, KeyFacts::default()));
    }
    let field = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_string);
    let pem = field("private_key").ok_or(KeyError::Unreadable)?;
    let key = SigningKey::private(&pem, alg)?;
    let facts = KeyFacts {
        kid: field("private_key_id"),
        client_email: field("client_email"),
        token_uri: field("token_uri"),
    };
    Ok((key, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key made now, as PKCS#8 PEM (no key is kept in the repository).
    fn pem() -> String {
        use base64::Engine;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn a_service_account_file_gives_its_key_and_facts() {
        let pem = pem();
        let pem = pem.as_str();
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "abc123",
            "private_key": pem,
            "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string();
        let (key, facts) = load(&json, None).unwrap();
        assert_eq!(key.alg(), SigningAlg::ES256);
        assert_eq!(facts.kid.as_deref(), Some("abc123"));
        assert_eq!(
            facts.client_email.as_deref(),
            Some("sa@p.iam.gserviceaccount.com")
        );
        assert_eq!(
            facts.token_uri.as_deref(),
            Some("https://oauth2.googleapis.com/token")
        );
        let (_, none) = load(pem, None).unwrap();
        assert_eq!(none, KeyFacts::default());
        let broken = serde_json::json!({"type": "service_account"}).to_string();
        assert_eq!(load(&broken, None).unwrap_err(), KeyError::Unreadable);
    }
}
