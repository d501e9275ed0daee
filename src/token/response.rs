//! Parsing token endpoint answers (RFC 6749 §5.1 and §5.2). Pure functions, no I/O.
//!
//! Anything odd is refused with a reason that never quotes the token: a body that is not a
//! JSON object, a missing or non-Bearer `token_type`, an `expires_in` that is zero, negative,
//! fractional or absurd, a token with bytes outside RFC 6750's `b64token` or over 8 KiB.
//! The lifetime comes from `expires_in` (number or numeric string), else from the JWT `exp`
//! claim (read for timing only, never trusted for anything else), else from the default.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use http::HeaderValue;
use serde_json::Value;

use super::error::InvalidResponse;
use crate::config::TokenType;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// An `expires_in` above this (ten years) is taken as garbage rather than clamped.
const ABSURD_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// A checked access token, kept as the ready-made `Authorization` header value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    header: HeaderValue,
    /// A DPoP token's `ath` (base64url(SHA-256(token))), computed once for all its proofs.
    ath: Option<String>,
}

impl AccessToken {
    /// Checks the RFC 6750 `b64token` syntax and the size cap, then builds `Bearer <token>`.
    pub fn parse(token: &str) -> Result<Self, InvalidResponse> {
        Self::parse_as(token, TokenType::Bearer)
    }

    /// [`AccessToken::parse`] for a token of `kind`: `DPoP <token>` for a DPoP-bound one.
    pub fn parse_as(token: &str, kind: TokenType) -> Result<Self, InvalidResponse> {
        if token.is_empty() {
            return Err(InvalidResponse::EmptyToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidResponse::TokenTooLong(token.len()));
        }
        let body = token.trim_end_matches('=');
        let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        if body.is_empty() || !body.bytes().all(ok) {
            return Err(InvalidResponse::TokenSyntax);
        }
        let ath = (kind == TokenType::Dpop).then(|| crate::jose::dpop::ath(token));
        let mut header = HeaderValue::try_from(format!("{} {token}", kind.scheme()))
            .map_err(|_| InvalidResponse::TokenSyntax)?;
        header.set_sensitive(true);
        Ok(AccessToken { header, ath })
    }

    /// `ath` for the proofs of a DPoP token; `None` for a bearer token.
    pub fn ath(&self) -> Option<&str> {
        self.ath.as_deref()
    }

    /// The `Authorization` header value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// A token as issued, with the lifetime it will be trusted for.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub token: AccessToken,
    pub lifetime: Duration,
    /// The `scope` the server says it granted (RFC 6749 §5.1), when it says.
    pub scope: Option<String>,
    /// The server granted scopes that were not asked for (set by the endpoint client).
    pub broader: bool,
}

impl Issued {
    /// A token with no word on its scope (from the shared cache, or a test).
    pub fn new(token: AccessToken, lifetime: Duration) -> Issued {
        Issued {
            token,
            lifetime,
            scope: None,
            broader: false,
        }
    }
}

/// True when `granted` names a scope that `requested` does not (scopes are space-separated
/// sets, RFC 6749 §3.3). Nothing asked for, or nothing said, is never broader: the server's
/// defaults then are what the client meant.
pub fn broader_than(requested: &[String], granted: Option<&str>) -> bool {
    match granted {
        Some(g) if !requested.is_empty() => g
            .split(' ')
            .filter(|s| !s.is_empty())
            .any(|s| !requested.iter().any(|r| r == s)),
        _ => false,
    }
}

impl Issued {
    /// True when the server handed back the very token we already hold.
    pub fn same_token_header(&self, header: &HeaderValue) -> bool {
        self.token.header == header
    }
}

/// Parses a 2xx body. `now_unix` is used only to turn a JWT `exp` into a lifetime.
pub fn parse_success(
    body: &[u8],
    default_lifetime: Duration,
    now_unix: u64,
) -> Result<Issued, InvalidResponse> {
    parse_success_as(body, default_lifetime, now_unix, TokenType::Bearer)
}

/// [`parse_success`] for a client that asked for tokens of `kind`: a DPoP client must get
/// `token_type: DPoP`, never a silent downgrade to a bearer token (RFC 9449 §5).
pub fn parse_success_as(
    body: &[u8],
    default_lifetime: Duration,
    now_unix: u64,
    kind: TokenType,
) -> Result<Issued, InvalidResponse> {
    let json: Value = serde_json::from_slice(body).map_err(|_| InvalidResponse::NotJson)?;
    let obj = json.as_object().ok_or(InvalidResponse::NotJson)?;
    let raw_token = obj
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or(InvalidResponse::MissingToken)?;
    let token = AccessToken::parse_as(raw_token, kind)?;
    let wanted = kind.scheme();
    match obj.get("token_type").and_then(Value::as_str) {
        None => return Err(InvalidResponse::MissingTokenType),
        Some(t) if t.eq_ignore_ascii_case(wanted) => {}
        Some(t) => return Err(InvalidResponse::WrongTokenType(printable(t, 32), wanted)),
    }
    let lifetime = match obj.get("expires_in") {
        Some(v) => expires_in(v)?,
        None => match jwt_exp(raw_token) {
            Some(exp) if exp <= now_unix => return Err(InvalidResponse::ExpiredJwt),
            Some(exp) => Duration::from_secs(exp - now_unix),
            None => default_lifetime,
        },
    };
    let scope = obj
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| printable_scope(s, 1024));
    Ok(Issued {
        token,
        lifetime,
        scope,
        broader: false,
    })
}

/// A scope string kept for `/status`: its printable characters and spaces, capped.
fn printable_scope(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

fn expires_in(v: &Value) -> Result<Duration, InvalidResponse> {
    let secs = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    match secs {
        Some(s) if s > 0 && s <= ABSURD_LIFETIME_SECS => Ok(Duration::from_secs(s)),
        _ => Err(InvalidResponse::BadExpiresIn),
    }
}

/// The `exp` claim of a JWT-shaped token, without verifying anything.
fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// A token exchange answer (RFC 8693 §2.2.1) must say what it issued, and it must be a
/// token an upstream takes as an access token: `access_token`, or a `jwt` used as one.
pub fn check_issued_token_type(body: &[u8]) -> Result<(), InvalidResponse> {
    let json: Value = serde_json::from_slice(body).map_err(|_| InvalidResponse::NotJson)?;
    match json.get("issued_token_type").and_then(Value::as_str) {
        None => Err(InvalidResponse::MissingIssuedTokenType),
        Some(crate::config::token_types::ACCESS_TOKEN | crate::config::token_types::JWT) => Ok(()),
        Some(other) => Err(InvalidResponse::NotAnAccessToken(printable(other, 64))),
    }
}

/// The RFC 6749 §5.2 `error` code of an error body, if it has a well-formed one.
pub fn parse_error_code(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let code = json.get("error")?.as_str()?;
    // §5.2: error codes are %x20-21 / %x23-5B / %x5D-7E; keep them short for logs.
    let ok = |c: char| c == ' ' || c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c);
    (code.len() <= 64 && !code.is_empty() && code.chars().all(ok)).then(|| code.to_string())
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(300);

    fn parse(body: &str) -> Result<Issued, InvalidResponse> {
        parse_success(body.as_bytes(), DEFAULT, 1_000_000)
    }

    #[test]
    fn a_dpop_client_takes_only_dpop_tokens() {
        let dpop =
            |body: &str| parse_success_as(body.as_bytes(), DEFAULT, 1_000_000, TokenType::Dpop);
        let ok = dpop(r#"{"access_token":"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU","token_type":"DPoP","expires_in":60}"#).unwrap();
        assert_eq!(
            ok.token.header().to_str().unwrap(),
            "DPoP Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        );
        assert_eq!(
            ok.token.ath(),
            Some("fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo")
        );
        assert_eq!(
            dpop(r#"{"access_token":"t","token_type":"Bearer","expires_in":60}"#).err(),
            Some(InvalidResponse::WrongTokenType("Bearer".into(), "DPoP")),
            "a bearer answer to a DPoP request is an error, not a downgrade"
        );
        assert!(dpop(r#"{"access_token":"t","token_type":"dpop"}"#).is_ok());
        assert_eq!(
            parse(r#"{"access_token":"t","token_type":"Bearer"}"#)
                .unwrap()
                .token
                .ath(),
            None
        );
    }

    #[test]
    fn accepts_rfc_answers() {
        let ok = parse(r#"{"access_token":"abc.DEF-_~+/==","token_type":"Bearer","expires_in":3600,"scope":"a b"}"#).unwrap();
        assert_eq!(ok.lifetime, Duration::from_secs(3600));
        assert_eq!(ok.token.header().to_str().unwrap(), "Bearer abc.DEF-_~+/==");
        assert!(ok.token.header().is_sensitive());
        let s = parse(r#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(60));
        let d = parse(r#"{"access_token":"t","token_type":"BEARER"}"#).unwrap();
        assert_eq!(d.lifetime, DEFAULT);
    }

    #[test]
    fn lifetime_from_jwt_exp_when_no_expires_in() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1000120}"#);
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let body = format!(r#"{{"access_token":"{jwt}","token_type":"Bearer"}}"#);
        assert_eq!(parse(&body).unwrap().lifetime, Duration::from_secs(120));
        let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":5}"#);
        let body = format!(r#"{{"access_token":"h.{old}.s","token_type":"Bearer"}}"#);
        assert_eq!(parse(&body), Err(InvalidResponse::ExpiredJwt));
    }

    #[test]
    fn refuses_bad_answers() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let cases: Vec<(String, InvalidResponse)> = vec![
            ("<html>hi</html>".into(), InvalidResponse::NotJson),
            ("".into(), InvalidResponse::NotJson),
            ("null".into(), InvalidResponse::NotJson),
            ("[]".into(), InvalidResponse::NotJson),
            (
                r#"{"token_type":"Bearer"}"#.into(),
                InvalidResponse::MissingToken,
            ),
            (
                r#"{"access_token":5,"token_type":"Bearer"}"#.into(),
                InvalidResponse::MissingToken,
            ),
            (
                r#"{"access_token":"","token_type":"Bearer"}"#.into(),
                InvalidResponse::EmptyToken,
            ),
            (
                r#"{"access_token":"t"}"#.into(),
                InvalidResponse::MissingTokenType,
            ),
            (
                r#"{"access_token":"t","token_type":"mac"}"#.into(),
                InvalidResponse::WrongTokenType("mac".into(), "Bearer"),
            ),
            (
                format!(r#"{{"access_token":"{long}","token_type":"Bearer"}}"#),
                InvalidResponse::TokenTooLong(MAX_TOKEN_LEN + 1),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(&body), Err(want), "{body:.60}");
        }
        for tok in [
            "a\\r\\nX-Evil: 1",
            "a b",
            "a\\u0000b",
            "é",
            "a=b",
            "=",
            "a\\\"b",
            "a\\tb",
        ] {
            let body = format!(r#"{{"access_token":"{tok}","token_type":"Bearer"}}"#);
            assert_eq!(parse(&body), Err(InvalidResponse::TokenSyntax), "{tok}");
        }
        for exp in [
            "0",
            "-5",
            "1.5",
            "1e40",
            "\"\"",
            "\"12x\"",
            "null",
            "99999999999999",
        ] {
            let body =
                format!(r#"{{"access_token":"t","token_type":"Bearer","expires_in":{exp}}}"#);
            assert_eq!(parse(&body), Err(InvalidResponse::BadExpiresIn), "{exp}");
        }
    }

    #[test]
    fn error_codes_are_kept_only_when_well_formed() {
        assert_eq!(
            parse_error_code(br#"{"error":"invalid_client","error_description":"x"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(parse_error_code(br#"{"error":"bad\"quote"}"#), None);
        assert_eq!(parse_error_code(b"<html>"), None);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = AccessToken::parse("canary-token-123").unwrap();
        assert_eq!(format!("{t:?}"), "AccessToken(***)");
    }
}
