//! How requests reach upstreams: the connections, not the policy.
//!
//! - `pool`: connections to an upstream's `url`: HTTP/1.1 taken from and given back to the idle
//!   list, and a one-off connection for each WebSocket handshake;
//! - `conn`: one HTTP/1.1 connection of a pool, its I/O on a task of its own;
//! - `h2`: multiplexed HTTP/2 connections to an upstream's `url`;
//! - `client`: the TLS connectors (rustls, over `egress`'s dialer), and hyper-util's pooled
//!   clients for requests whose destination is not fixed (passthrough and url-less upstreams);
//! - `pooled`: response bodies that give back their connection and slot when they end;
//! - `error`: why a send failed;
//! - `reuse`: whether a response came over a new connection or a reused one;
//! - `slots`: `max_connections` and `max_pending`: connection slots, and the queue for them;
//! - `router`: which upstream a forward-mode target belongs to, by host, port and path.
//!
//! Nothing here knows about tokens or the config snapshot; `snapshot` assembles these parts
//! per upstream and `proxy` decides what to send where.

pub mod client;
pub mod conn;
pub mod error;
pub mod h2;
pub mod pool;
pub mod pooled;
pub mod reuse;
pub mod router;
pub mod slots;

use std::sync::Arc;

pub use client::{ClientError, Clients, Connectors, HttpClient};
pub use error::PoolError;
pub use pool::OriginPool;
pub use reuse::{Report, Reuse};
pub use router::{RouteError, Routed, Router, Written};

/// Where an upstream's requests go.
pub enum Route {
    /// To its `url`, over its own connections.
    Url(Arc<OriginPool>),
    /// No `url` (forward mode only): to the target the app asked for.
    AsAsked(Box<Clients>),
}

/// The HTTP version a request needs on the wire, whatever the upstream's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// As the upstream's `protocol` says.
    Default,
    /// A WebSocket handshake: HTTP/1.1, whose connection is then handed over.
    Http1,
    /// gRPC: HTTP/2, which it needs for trailers.
    Http2,
}

impl Wire {
    /// What a call needs: a WebSocket handshake HTTP/1.1, gRPC HTTP/2.
    pub fn of(grpc: bool, websocket: bool) -> Wire {
        match (websocket, grpc) {
            (true, _) => Wire::Http1,
            (false, true) => Wire::Http2,
            (false, false) => Wire::Default,
        }
    }
}
