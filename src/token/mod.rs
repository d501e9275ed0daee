//! Tokens: the endpoint client (`endpoint`), what proves the client and the grant
//! (`credentials`, with the tokens presented but not made in `external`), why a fetch failed
//! (`error`), where a source's tokens come from (`fetcher`), issuer metadata (`discovery`),
//! the parent proxy's part in them (`parent`), answer parsing (`response`), the cache with background refresh (`source`), what it reports
//! after each fetch (`report`) and the token it holds (`current`), shared by the upstreams whose token requests are the same (`sharing`),
//! and its timing rules (`timing`). Each name has one home; this file re-exports the ones
//! the rest of the crate uses.

pub mod credentials;
pub mod current;
pub mod discovery;
pub mod dpop;
pub mod endpoint;
pub mod error;
pub mod external;
pub mod fetcher;
pub mod parent;
mod report;
pub mod response;
pub mod sharing;
pub mod source;
pub mod timing;
pub mod wire;

pub use current::{Bound, Status, Token, Unavailable};
pub use dpop::{client_dpop, dpop_key, ClientDpop};
pub use endpoint::Endpoint;
pub use error::FetchError;
pub use error::InvalidResponse;
pub use fetcher::{Ask, Fetcher, Fetching};
pub use response::{AccessToken, Issued};
pub use source::TokenSource;
