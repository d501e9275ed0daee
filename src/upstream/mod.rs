//! How requests reach upstreams: the connections, not the policy.
//!
//! - `pool`: connections to an upstream's `url`, driven in the request's own task.
//! - `client`: the TLS connector (rustls), and hyper-util's pooled client for requests whose
//!   destination is not fixed (passthrough and url-less upstreams).
//! - `router`: which upstream a forward-mode target host belongs to.
//!
//! Nothing here knows about tokens or the config snapshot; `snapshot` assembles these parts
//! per upstream and `proxy` decides what to send where.

pub mod client;
pub mod pool;
pub mod router;

use std::sync::Arc;

pub use client::HttpClient;
pub use pool::OriginPool;
pub use router::Router;

/// Where an upstream's requests go.
pub enum Route {
    /// To its `url`, over its own connections.
    Url(Arc<OriginPool>),
    /// No `url` (forward mode only): to the target the app asked for.
    AsAsked(HttpClient),
}
