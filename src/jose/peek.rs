//! A JWT that someone else signed, read without trusting it: is it whole, and when does it
//! expire. tokenproxy never verifies such a token (the authorization server does, against its
//! issuer's keys); it only refuses to send one that is cut short or already expired, and
//! shows its issuer, subject and expiry in `/status`. Error messages never quote the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;

/// The unverified facts of a JWT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peeked {
    pub alg: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
}

/// Why a text is not a whole JWT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("not a JWT (three base64url parts separated by dots)")]
    Parts,
    #[error("the JWT header is not base64url JSON with an alg")]
    Header,
    #[error("the JWT is unsigned (alg none)")]
    Unsigned,
    #[error("the JWT claims are not base64url JSON")]
    Claims,
    #[error("the JWT signature is {0} bytes, not what {1} makes: the token is cut short")]
    Signature(usize, String),
    #[error("the JWT signature is not base64url: the token is cut short or damaged")]
    SignatureEncoding,
}

/// Reads `text` as a compact JWS with JSON claims. The signature's length must fit the
/// algorithm, which catches a token cut short (a half-written file) that still has 3 parts.
pub fn peek(text: &str) -> Result<Peeked, ShapeError> {
    let mut parts = text.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ShapeError::Parts);
    };
    let json = |part: &str| -> Option<Value> {
        let bytes = B64.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let header = json(h).ok_or(ShapeError::Header)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(ShapeError::Header)?
        .to_string();
    if alg.eq_ignore_ascii_case("none") {
        return Err(ShapeError::Unsigned);
    }
    let claims = json(c).ok_or(ShapeError::Claims)?;
    let sig = B64.decode(s).map_err(|_| ShapeError::SignatureEncoding)?;
    if !signature_fits(&alg, sig.len()) {
        return Err(ShapeError::Signature(sig.len(), alg));
    }
    let text_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Peeked {
        alg,
        iss: text_claim("iss"),
        sub: text_claim("sub"),
        aud,
        exp: claims.get("exp").and_then(Value::as_u64),
    })
}

/// The signature lengths each JWS algorithm makes (RFC 7518 §3); unknown ones are let be.
fn signature_fits(alg: &str, len: usize) -> bool {
    match alg {
        "ES256" | "EdDSA" | "Ed25519" => len == 64,
        "ES384" => len == 96,
        "ES512" => len == 132,
        "HS256" => len == 32,
        "HS384" => len == 48,
        "HS512" => len == 64,
        a if a.starts_with("RS") || a.starts_with("PS") => len >= 256 && len % 128 == 0,
        _ => len > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(alg: &str, claims: Value, sig_len: usize) -> String {
        let h = B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let c = B64.encode(claims.to_string());
        format!("{h}.{c}.{}", B64.encode(vec![7u8; sig_len]))
    }

    #[test]
    fn reads_the_claims_of_a_whole_token() {
        let t = jwt(
            "RS256",
            json!({"iss": "https://k8s", "sub": "system:serviceaccount:ns:sa", "aud": ["a", "b"], "exp": 1_900_000_000u64}),
            256,
        );
        let p = peek(&t).unwrap();
        assert_eq!(p.iss.as_deref(), Some("https://k8s"));
        assert_eq!(p.sub.as_deref(), Some("system:serviceaccount:ns:sa"));
        assert_eq!(p.aud, vec!["a", "b"]);
        assert_eq!(p.exp, Some(1_900_000_000));
        let single = jwt("ES256", json!({"aud": "x"}), 64);
        assert_eq!(peek(&single).unwrap().aud, vec!["x"]);
    }

    #[test]
    fn a_token_cut_anywhere_is_refused() {
        let t = jwt("RS256", json!({"iss": "i", "exp": 1u64}), 256);
        for cut in 1..t.len() {
            assert!(peek(&t[..cut]).is_err(), "cut at {cut} of {}", t.len());
        }
        let es = jwt("ES256", json!({"exp": 1u64}), 64);
        for cut in 1..es.len() {
            assert!(peek(&es[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn odd_shapes_are_refused_without_quoting_the_token() {
        assert_eq!(peek("canary-opaque-token"), Err(ShapeError::Parts));
        assert_eq!(peek("a.b.c.d"), Err(ShapeError::Parts));
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode("{}"));
        assert_eq!(peek(&none), Err(ShapeError::Unsigned));
        let not_json = format!(
            "{}.{}.AAAA",
            B64.encode(r#"{"alg":"RS256"}"#),
            B64.encode("[1]")
        );
        assert_eq!(peek(&not_json), Err(ShapeError::Claims));
        let e = peek(&jwt("ES256", json!({"sub": "canary"}), 63)).unwrap_err();
        assert!(!e.to_string().contains("canary"));
    }
}
