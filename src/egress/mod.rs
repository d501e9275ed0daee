//! How outbound connections leave this process: straight to their destination, or through
//! the parent (corporate) HTTP proxy of `proxy.upstream_proxy`.
//!
//! - `parent`: the parent proxy as configured: which destinations it carries (`no_proxy`,
//!   with curl's `NO_PROXY` rules from hyper-util's matcher) and its `Proxy-Authorization`,
//!   read from its secret source at every new connection;
//! - `tunnel`: a `CONNECT` through the parent, spoken by hyper's HTTP/1.1 client, with the
//!   parent's status kept for the error;
//! - `dial`: the TCP connector under the TLS connectors of `upstream`: direct, a tunnel
//!   through the parent, or a connection to the parent for absolute-form plaintext requests;
//! - `resolve`: name resolution with `proxy.deny_destinations` applied to the result.
//!
//! The token endpoint client (reqwest) reaches the same parent by [`Parent::reqwest_proxy`].
//! Redis connections never go through the parent.

mod dial;
mod parent;
pub mod resolve;
mod tunnel;

pub use dial::{Dial, Plain, Stream};
pub use parent::{Parent, ParentError};
pub use resolve::{allowed, denied_in, refuse_denied, Denied, Resolver};
pub use tunnel::{refused_in, tunnel, Tunnelled};
