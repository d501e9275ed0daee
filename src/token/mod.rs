//! Tokens: the endpoint client (`endpoint`) and its errors (`error`), issuer metadata
//! (`discovery`), answer parsing (`response`), the cache with background refresh (`source`),
//! shared by the upstreams whose token requests are the same (`sharing`), and its timing rules
//! (`timing`).

pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod response;
pub mod sharing;
pub mod source;
pub mod timing;

pub use endpoint::{Endpoint, FetchError};
pub use response::{AccessToken, InvalidResponse, Issued};
pub use source::{Fetcher, Status, Token, TokenSource, Unavailable};
