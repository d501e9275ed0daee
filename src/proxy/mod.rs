//! The request path, as one pipeline: every request through a proxy listener goes
//! `plan::resolve` → one executor → `dispatch::finish`.
//!
//! - `plan`: decides, before any I/O, what a request is: a matched upstream (with the URI to
//!   send), a passthrough, a CONNECT tunnel, or a refusal with a typed reason. The forward
//!   listener routes by the request target; a reverse listener names its upstream.
//! - `attempt`: a matched request: wait for the token, inject it, send.
//! - `retry`: after a send, the one decision: answer, or send once more (a 401 that blames
//!   the token, a stream refused unprocessed, a DPoP nonce asked for), each at most once.
//! - `send`: how a request reaches the upstream (its pool or the shared client), the timeout,
//!   response checks, and passthrough without a token.
//! - `connect`: CONNECT tunnels to unmatched hosts.
//! - `intercept`: CONNECT to matched hosts: TLS terminated with a minted certificate (or a
//!   plaintext tunnel), each request inside served through this same pipeline.
//! - `upgrade`: WebSocket handshakes, and the splice once the upstream has said 101.
//! - `grpc`: tokenproxy's own errors as gRPC status; upstream `UNAUTHENTICATED` as a 401.
//! - `dpop`: a DPoP proof with each request carrying a DPoP-bound token, and upstream nonces.
//! - `dispatch`: runs the plan, then records metrics and turns errors into answers, once, at
//!   the edge (as gRPC status for a gRPC call, as JSON otherwise).
//! - `target`, `facts`, `headers`, `error`: parsing absolute-form targets, what one pass over
//!   a request's headers finds (for its checks, routing and stripping), header rules, and the
//!   one error-to-status table.
//! - `trail`, `access`: what happened to a request on its way, and the access-log line
//!   written from it when the response ends.
//!
//! A new step (interception, HTTP/2, proofs) is a new [`plan::Plan`] variant or a step in
//! `attempt`, and leaves the others alone.

pub mod access;
pub mod attempt;
pub mod connect;
pub mod dispatch;
pub mod dpop;
pub mod error;
pub mod facts;
pub mod grpc;
pub mod headers;
pub mod intercept;
pub mod plan;
pub mod retry;
pub mod send;
pub mod target;
pub mod trail;
pub mod upgrade;

pub use dispatch::handle;
pub use error::ProxyError;
pub use plan::Entry;
