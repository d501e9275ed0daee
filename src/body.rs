//! The one body type tokenproxy sends and answers with, and its constructors.
//!
//! Every layer that makes or forwards a message (the upstream pool, the request pipeline, the
//! admin endpoints, the demo) speaks this type, so it sits at the bottom of the layering.

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
