//! Tokens: the endpoint client (`endpoint`) and its errors (`error`), where a source's tokens
//! come from (`fetcher`), issuer metadata
//! (`discovery`), answer parsing (`response`), the cache with background refresh (`source`),
//! shared by the upstreams whose token requests are the same (`sharing`), and its timing rules
//! (`timing`).

pub mod credentials;
pub mod discovery;
pub mod dpop;
pub mod endpoint;
pub mod error;
pub mod external;
pub mod fetcher;
pub mod held;
pub mod response;
pub mod sharing;
pub mod source;
pub mod timing;
pub mod wire;

pub use dpop::{client_dpop, dpop_key, ClientDpop};
pub use endpoint::{Endpoint, FetchError};
pub use fetcher::{Ask, Fetcher, Fetching};
pub use response::{AccessToken, InvalidResponse, Issued};
pub use source::{Bound, Status, Token, TokenSource, Unavailable};
