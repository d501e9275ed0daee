//! Why a request could not be sent to an upstream, or its answer not read.

use crate::body::BoxError;
use crate::config::OriginLimits;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: {0}")]
    Connect(BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("connection closed before the request could be sent")]
    Closed,
    #[error("{} requests are already waiting for one of {} connections", .0.max_pending, .0.max_connections)]
    Overloaded(OriginLimits),
}
