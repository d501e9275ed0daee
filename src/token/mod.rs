//! Tokens: the endpoint client (`endpoint`), answer parsing (`response`) and the per-upstream
//! cache with background refresh (`source`).

pub mod endpoint;
pub mod response;
pub mod source;

pub use endpoint::{Endpoint, FetchError};
pub use response::{AccessToken, InvalidResponse, Issued};
pub use source::{Fetcher, Status, Token, TokenSource, Unavailable};
