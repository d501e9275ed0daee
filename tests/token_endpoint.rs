//! The token endpoint client against real HTTP: every kind of bad answer is refused with
//! `invalid_response` (one test each), errors keep their OAuth code and `Retry-After`, and the
//! client follows no redirects and ignores proxy variables.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Answer, FakeIdp, TestConfig};
use tokenproxy::metrics::FetchOutcome;
use tokenproxy::token::{Endpoint, FetchError, InvalidResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn endpoint(token_url: &str) -> Endpoint {
    let c = TestConfig::new()
        .remove("tokens")
        .set("tokens.fetch_timeout", "1s")
        .client("idp", token_url, "s3cret")
        .upstream("u", "http://127.0.0.1:1", "127.0.0.1:1", "idp")
        .set("upstreams.u.scopes", serde_json::json!(["a"]))
        .config();
    let u = c.upstreams[0].clone();
    Endpoint::new(
        Arc::clone(&u.client),
        &u.request,
        &c.tokens,
        &tokenproxy::metrics::Metrics::new().unwrap(),
    )
    .unwrap()
}

async fn fetch_answer(a: Answer) -> Result<tokenproxy::token::Issued, FetchError> {
    let idp = FakeIdp::start().await;
    idp.push(a);
    endpoint(&idp.url()).fetch().await
}

/// A server that writes `head` then `body` one byte every `drip`, for raw-framing cases.
async fn raw_server(head: &'static str, body: Vec<u8>, drip: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(head.as_bytes()).await;
        for chunk in body.chunks(if drip.is_zero() { usize::MAX } else { 1 }) {
            if s.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(drip).await;
        }
    });
    format!("http://{addr}/token")
}

fn assert_invalid(r: Result<tokenproxy::token::Issued, FetchError>, want: InvalidResponse) {
    match r {
        Err(e @ FetchError::Invalid(_)) => {
            assert_eq!(e.outcome(), FetchOutcome::InvalidResponse);
            let FetchError::Invalid(got) = e else {
                unreachable!()
            };
            assert_eq!(got, want);
        }
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

macro_rules! bad_answer {
    ($($name:ident: $body:expr => $want:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            assert_invalid(fetch_answer(Answer::json(200, $body)).await, $want);
        }
    )*};
}

bad_answer! {
    html_with_200: "<html><body>Login</body></html>" => InvalidResponse::NotJson;
    empty_200: "" => InvalidResponse::NotJson;
    json_null: "null" => InvalidResponse::NotJson;
    missing_access_token: r#"{"token_type":"Bearer","expires_in":60}"# => InvalidResponse::MissingToken;
    missing_token_type: r#"{"access_token":"t","expires_in":60}"# => InvalidResponse::MissingTokenType;
    unknown_token_type: r#"{"access_token":"t","token_type":"DPoP","expires_in":60}"# => InvalidResponse::WrongTokenType("DPoP".into(), "Bearer");
    expires_in_zero: r#"{"access_token":"t","token_type":"Bearer","expires_in":0}"# => InvalidResponse::BadExpiresIn;
    expires_in_negative: r#"{"access_token":"t","token_type":"Bearer","expires_in":-60}"# => InvalidResponse::BadExpiresIn;
    expires_in_fractional: r#"{"access_token":"t","token_type":"Bearer","expires_in":59.5}"# => InvalidResponse::BadExpiresIn;
    expires_in_huge: r#"{"access_token":"t","token_type":"Bearer","expires_in":1e300}"# => InvalidResponse::BadExpiresIn;
    token_with_crlf: r#"{"access_token":"t\r\nX-Injected: 1","token_type":"Bearer"}"# => InvalidResponse::TokenSyntax;
    token_with_lf: r#"{"access_token":"t\nx","token_type":"Bearer"}"# => InvalidResponse::TokenSyntax;
    token_with_nul: r#"{"access_token":"t\u0000x","token_type":"Bearer"}"# => InvalidResponse::TokenSyntax;
    token_with_space: r#"{"access_token":"t x","token_type":"Bearer"}"# => InvalidResponse::TokenSyntax;
    token_with_non_b64token_bytes: r#"{"access_token":"t;x,y","token_type":"Bearer"}"# => InvalidResponse::TokenSyntax;
}

#[tokio::test]
async fn token_over_8_kib() {
    let body = format!(
        r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
        "a".repeat(8193)
    );
    assert_invalid(
        fetch_answer(Answer::json(200, &body)).await,
        InvalidResponse::TokenTooLong(8193),
    );
}

#[tokio::test]
async fn oversized_body_with_content_length() {
    let body = format!(
        r#"{{"access_token":"t","token_type":"Bearer","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_invalid(
        fetch_answer(Answer::json(200, &body)).await,
        InvalidResponse::TooLarge(64 * 1024),
    );
}

#[tokio::test]
async fn oversized_chunked_body_is_cut_off() {
    let mut body = Vec::new();
    for _ in 0..40 {
        body.extend_from_slice(format!("1000\r\n{}\r\n", "x".repeat(4096)).as_bytes());
    }
    let url = raw_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        body,
        Duration::ZERO,
    )
    .await;
    assert_invalid(
        endpoint(&url).fetch().await,
        InvalidResponse::TooLarge(64 * 1024),
    );
}

#[tokio::test]
async fn slow_drip_body_hits_the_total_timeout() {
    let body = br#"{"access_token":"t","token_type":"Bearer"}"#.to_vec();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n";
    let url = raw_server(head, body, Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match endpoint(&url).fetch().await {
        Err(FetchError::Invalid(InvalidResponse::BodyUnreadable(msg))) => {
            assert!(msg.contains("timed out"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by fetch_timeout (1s)"
    );
}

#[tokio::test]
async fn redirect_is_refused_not_followed() {
    let idp = FakeIdp::start().await;
    let mut a = Answer::json(302, "");
    a.headers.push(("location".into(), idp.url()));
    idp.push(a);
    assert_invalid(
        endpoint(&idp.url()).fetch().await,
        InvalidResponse::Redirect(302),
    );
    assert_eq!(idp.calls(), 1, "the redirect was not followed");
}

#[tokio::test]
async fn errors_keep_the_oauth_code_and_retry_after() {
    let mut a = Answer::json(
        503,
        r#"{"error":"temporarily_unavailable","error_description":"secret detail"}"#,
    );
    a.headers.push(("retry-after".into(), "7".into()));
    let err = fetch_answer(a).await.unwrap_err();
    assert_eq!(err.outcome(), FetchOutcome::HttpError);
    assert_eq!(err.oauth_code(), Some("temporarily_unavailable"));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        !err.to_string().contains("secret detail"),
        "bodies are never shown: {err}"
    );
    let err = fetch_answer(Answer::json(401, r#"{"error":"invalid_client"}"#))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "token endpoint answered HTTP 401 (invalid_client)"
    );
}

#[tokio::test]
async fn accepts_numeric_string_expires_in_and_any_case_bearer() {
    let ok = fetch_answer(Answer::json(
        200,
        r#"{"access_token":"abc","token_type":"bEaReR","expires_in":"120"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(ok.lifetime, Duration::from_secs(120));
}

#[tokio::test]
async fn ignores_proxy_environment_variables() {
    // A proxy that does not exist: the token request must go straight to the server anyway.
    std::env::set_var("HTTP_PROXY", "http://127.0.0.1:9");
    std::env::set_var("http_proxy", "http://127.0.0.1:9");
    std::env::set_var("ALL_PROXY", "http://127.0.0.1:9");
    let idp = FakeIdp::start().await;
    let ok = endpoint(&idp.url()).fetch().await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = endpoint(&format!("http://{closed}/token"))
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.outcome(), FetchOutcome::TransportError);
    assert!(err.to_string().contains("onnection refused"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_file_is_secret_unavailable_and_rotation_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "old\n").unwrap();
    let idp = FakeIdp::start().await;
    let yaml = format!(
        "clients:\n  idp:\n    token_endpoint: {}\n    client_id: orders\n    client_secret: {{ file: {} }}\nupstreams:\n  u:\n    url: http://127.0.0.1:1\n    client: idp\n",
        idp.url(),
        secret.display()
    );
    let c = tokenproxy::Config::from_yaml(&yaml).unwrap();
    let u = c.upstreams[0].clone();
    let ep = Endpoint::new(
        Arc::clone(&u.client),
        &u.request,
        &c.tokens,
        &tokenproxy::metrics::Metrics::new().unwrap(),
    )
    .unwrap();
    ep.fetch().await.unwrap();
    std::fs::write(&secret, "new\n").unwrap();
    ep.fetch().await.unwrap();
    let seen: Vec<_> = idp
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.authorization.clone().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["Basic b3JkZXJzOm9sZA==", "Basic b3JkZXJzOm5ldw=="],
        "orders:old then orders:new"
    );
    std::fs::remove_file(&secret).unwrap();
    let err = ep.fetch().await.unwrap_err();
    assert_eq!(err.outcome(), FetchOutcome::SecretUnavailable);
    assert_eq!(idp.calls(), 2, "no request is made without a secret");
}
