//! Why a request could not be sent to an upstream, or its answer not read.

use crate::body::BoxError;
use crate::config::OriginLimits;
use crate::egress::ParentError;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect")]
    Connect(#[source] BoxError),
    /// The parent proxy refused an absolute-form request (407).
    #[error(transparent)]
    Parent(#[from] ParentError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("connection closed before the request could be sent")]
    Closed,
    #[error("{} requests are already waiting for one of {} connections", .0.max_pending, .0.max_connections)]
    Overloaded(OriginLimits),
}
