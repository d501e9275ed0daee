//! Token requests through the parent proxy (`proxy.upstream_proxy`): reqwest's proxy for a
//! client, and the parent's own status when reqwest could only say that a CONNECT failed.

use std::sync::Arc;
use std::time::Duration;

use super::error::FetchError;
use crate::config::ClientConfig;
use crate::egress::{tunnel, Parent};

/// The proxy a client's token requests go through, unless it says `upstream_proxy: false`.
pub fn reqwest_proxy(client: &ClientConfig) -> Option<reqwest::Proxy> {
    let config = client.upstream_proxy.as_deref()?;
    Some(Arc::new(Parent::new(config)).reqwest_proxy())
}

/// After a transport error on an `https` URL the parent carries: whether the parent refuses
/// the CONNECT, and with which status. reqwest's error cannot say (hyper-util's tunnel keeps
/// no status and its error type is private), so a CONNECT of our own asks. `None` if the
/// parent does not refuse it (or says nothing within `wait`): the failure was elsewhere.
pub async fn refusal(
    client: &ClientConfig,
    url: &reqwest::Url,
    wait: Duration,
) -> Option<FetchError> {
    let parent = Parent::new(client.upstream_proxy.as_deref()?);
    let uri: http::Uri = url.as_str().parse().ok()?;
    if url.scheme() != "https" || !parent.carries(&uri) {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let asked = tokio::time::timeout(wait, tunnel(&parent, host, port)).await;
    match asked {
        Ok(Err(e)) => e.status().map(|status| FetchError::UpstreamProxy {
            status,
            message: e.to_string(),
        }),
        _ => None,
    }
}
