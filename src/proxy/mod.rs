//! The request path: listeners, routing, header rewriting, token injection, forwarding.
//!
//! - `server`: accept loop and per-connection HTTP/1 serving with graceful drain.
//! - `forward`: the `HTTP_PROXY` listener (absolute-form requests and `CONNECT`).
//! - `reverse`: one listener per upstream with `listen`, for apps that take a base URL.
//! - `dispatch`: the shared step that adds the token, sends upstream, replays after a 401.
//! - `route`, `headers`, `answer`: matching, header rules, and the error-to-status mapping.
//! - `pool`: connections to an upstream's `url`, driven in the request's own task.
//! - `client`: hyper-util's pooled client, for passthrough and url-less upstreams; the TLS
//!   connector (rustls) both use.

pub mod answer;
pub mod client;
pub mod dispatch;
pub mod forward;
pub mod headers;
pub mod pool;
pub mod reverse;
pub mod route;
pub mod server;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used for everything tokenproxy sends or answers.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}
