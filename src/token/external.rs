//! Tokens tokenproxy presents but did not make: a client assertion issued by the platform (a
//! Kubernetes projected service-account token, a SPIFFE JWT-SVID, a GitHub Actions OIDC
//! token), and the subject and actor tokens of a token exchange.
//!
//! Each is read afresh at every token request, never cached, never logged. A file is read
//! whole in one `read` of the path: kubelet writes a new directory and swaps the `..data`
//! symlink, so the read sees the old token or the new one. What can be checked without
//! trusting the token is checked before it is sent: that it is a whole JWT (a token cut short
//! fails the shape or the signature length) and that its `exp` is far enough ahead. A token
//! that fails is never sent; the fetch fails with `assertion_unavailable`, and the next
//! attempt reads again, so a fresh token written later is picked up with no restart.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error::{read_capped, transport};
pub use super::error::{AssertionError, Problem, Role};
use crate::config::{token_types, ExternalToken, JwtSource, Secret, ACTIONS_TOKEN, ACTIONS_URL};
use crate::host::credential_safe;
use crate::jose::{peek, Peeked};

/// A token is not sent when it expires sooner than this: it must outlive the round trip and
/// the server's clock skew.
pub const SEND_MARGIN_SECS: u64 = 10;

/// A token ready to send, and what could be read of it.
pub struct Presented {
    pub value: Secret,
    pub facts: Option<Peeked>,
}

/// Reads and checks one presented token. `client` is what the token source of a
/// `{client: NAME}` subject gave (its token, or why it has none); `http` asks the GitHub
/// Actions runner.
pub async fn present(
    token: &ExternalToken,
    role: Role,
    http: &reqwest::Client,
    client: Option<Result<String, String>>,
) -> Result<Presented, AssertionError> {
    let fail = |problem| AssertionError { role, problem };
    let value = match &token.source {
        JwtSource::File(path) => read_file(path),
        JwtSource::Env(name) => std::env::var(name).map_err(|_| Problem::EnvUnset(name.clone())),
        JwtSource::GithubActions { audience } => github_actions(http, audience.as_deref()).await,
        JwtSource::Client { name, .. } => match client {
            Some(got) => got.map_err(|reason| Problem::Client(name.clone(), reason)),
            None => Err(Problem::Client(name.clone(), "not started".into())),
        },
    }
    .map_err(fail)?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(fail(Problem::Empty));
    }
    let facts = check(&value, must_be_jwt(token, role), now_unix()).map_err(fail)?;
    Ok(Presented {
        value: Secret::new(value),
        facts,
    })
}

/// A client assertion and a JWT or ID token must be JWTs; another token type (an opaque
/// access token) is checked only if it looks like one.
fn must_be_jwt(token: &ExternalToken, role: Role) -> bool {
    role == Role::ClientAssertion
        || token.token_type == token_types::JWT
        || token.token_type == token_types::ID_TOKEN
}

/// The shape and expiry checks, at `now` (Unix seconds).
pub fn check(value: &str, must_be_jwt: bool, now: u64) -> Result<Option<Peeked>, Problem> {
    let peeked = match peek(value) {
        Ok(p) => p,
        Err(e) if must_be_jwt => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    match peeked.exp {
        None if must_be_jwt => return Err(Problem::NoExp),
        None => {}
        Some(exp) if exp <= now => return Err(Problem::Expired(now - exp)),
        Some(exp) if exp < now + SEND_MARGIN_SECS => return Err(Problem::ExpiresSoon(exp - now)),
        Some(_) => {}
    }
    Ok(Some(peeked))
}

/// The whole file, in one read of the path (the symlink is followed at open).
fn read_file(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path)
        .map_err(|e| Problem::File(path.to_path_buf(), e.kind().to_string()))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new OIDC token from the runner: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…` with
/// `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answered `{"value": "<jwt>"}`.
async fn github_actions(http: &reqwest::Client, audience: Option<&str>) -> Result<String, Problem> {
    let gh = Problem::Github;
    let url = std::env::var(ACTIONS_URL).map_err(|_| {
        gh(format!(
            "{ACTIONS_URL} is not set (the job needs `permissions: id-token: write`)"
        ))
    })?;
    let request_token = Secret::new(
        std::env::var(ACTIONS_TOKEN).map_err(|_| gh(format!("{ACTIONS_TOKEN} is not set")))?,
    );
    let mut url =
        reqwest::Url::parse(&url).map_err(|_| gh(format!("{ACTIONS_URL} is not a URL")))?;
    if !credential_safe(url.scheme(), url.host_str()) {
        return Err(gh(format!(
            "{ACTIONS_URL} must be https (or http on loopback)"
        )));
    }
    if let Some(aud) = audience {
        url.query_pairs_mut().append_pair("audience", aud);
    }
    let mut auth = http::HeaderValue::try_from(format!("bearer {}", request_token.expose()))
        .map_err(|_| gh(format!("{ACTIONS_TOKEN} is not a header value")))?;
    auth.set_sensitive(true);
    let resp = http
        .get(url)
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| gh(transport(e).to_string()))?;
    let status = resp.status();
    let body = read_capped(resp).await.map_err(|e| gh(e.to_string()))?;
    if !status.is_success() {
        return Err(gh(format!("the runner answered HTTP {}", status.as_u16())));
    }
    let json: Value =
        serde_json::from_slice(&body).map_err(|_| gh("the answer is not JSON".into()))?;
    json.get("value")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| gh("the answer has no value".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    fn jwt(exp: Option<u64>) -> String {
        let h = B64.encode(r#"{"alg":"ES256"}"#);
        let claims = match exp {
            Some(e) => format!(r#"{{"iss":"k8s","sub":"sa","exp":{e}}}"#),
            None => r#"{"iss":"k8s"}"#.to_string(),
        };
        format!("{h}.{}.{}", B64.encode(claims), B64.encode([1u8; 64]))
    }

    #[test]
    fn expiry_is_checked_with_a_margin() {
        let now = 1_800_000_000;
        assert!(check(&jwt(Some(now + 600)), true, now).unwrap().is_some());
        assert_eq!(
            check(&jwt(Some(now - 5)), true, now),
            Err(Problem::Expired(5))
        );
        assert_eq!(
            check(&jwt(Some(now + 3)), true, now),
            Err(Problem::ExpiresSoon(3))
        );
        assert_eq!(check(&jwt(None), true, now), Err(Problem::NoExp));
        // An opaque access token as a subject is sent as it is.
        assert_eq!(check("opaque-token", false, now), Ok(None));
        assert!(matches!(
            check("opaque-token", true, now),
            Err(Problem::Shape(_))
        ));
        // A JWT-shaped subject token is still not sent once expired.
        assert_eq!(
            check(&jwt(Some(now - 1)), false, now),
            Err(Problem::Expired(1))
        );
    }

    #[test]
    fn a_file_swapped_kubelet_style_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let write = |n: u32, token: &str| {
            let d = dir.path().join(format!("..2026_12_04_{n}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("token"), token).unwrap();
            let tmp = dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(d.file_name().unwrap(), &tmp).unwrap();
            std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
        };
        write(1, "first.token.a");
        std::os::unix::fs::symlink("..data/token", dir.path().join("token")).unwrap();
        let path = dir.path().join("token");
        assert_eq!(read_file(&path).unwrap(), "first.token.a");
        write(2, "second.token.b");
        assert_eq!(read_file(&path).unwrap(), "second.token.b");
        let missing = dir.path().join("nope");
        assert!(matches!(read_file(&missing), Err(Problem::File(..))));
    }
}
