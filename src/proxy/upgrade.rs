//! WebSocket through the proxy: the handshake is a request like any other, then two
//! connections spliced.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and `Upgrade: websocket` keeps those two
//! headers (every other hop-by-hop header is still removed), goes upstream over HTTP/1.1 with
//! the token like any request, and, when the upstream answers `101 Switching Protocols`, the
//! app's connection and the upstream's are spliced both ways until either side closes. Any
//! other answer goes back as it is. The splice is tracked with the tunnels: a graceful stop
//! lets it run until the drain deadline, then closes it. No other upgrade (such as `h2c`) is
//! passed on.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;

use super::facts::Facts;
use crate::body::Body;
use crate::serve::stopped;
use crate::snapshot::App;

/// Takes the app side of a WebSocket handshake out of `req`, or `None` for any other request.
pub fn take<B>(req: &mut Request<B>, facts: &Facts) -> Option<OnUpgrade> {
    // `Upgrade` first: almost every request has none.
    if !facts.upgrade() || req.version() != Version::HTTP_11 || !is_websocket(req.headers()) {
        return None;
    }
    req.extensions_mut().remove::<OnUpgrade>()
}

fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

/// Puts back the two headers of a WebSocket handshake, after hop-by-hop removal.
pub fn restore(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Once the upstream has agreed (101), splices the two connections in a tracked task and
/// gives the app the 101; any other answer goes back as it is.
pub fn hand_over(
    app: &App,
    upstream: &str,
    client: OnUpgrade,
    mut resp: Response<Body>,
) -> Response<Body> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let server = hyper::upgrade::on(&mut resp);
    restore(resp.headers_mut());
    app.metrics.upgrades.with_label_values(&[upstream]).inc();
    let draining = app.draining.subscribe();
    let drain = app.snapshot.load().config.proxy.drain_timeout;
    let open = app.metrics.upgraded_open.clone();
    app.tunnels
        .spawn(splice(client, server, draining, drain, open));
    resp
}

async fn splice(
    client: OnUpgrade,
    server: OnUpgrade,
    mut draining: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
    open: IntGauge,
) {
    let (client, server) = match tokio::join!(client, server) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
    open.inc();
    let deadline = async {
        stopped(&mut draining).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        done = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "WebSocket closed with an error");
            }
        }
        () = deadline => tracing::debug!("WebSocket closed at the drain deadline"),
    }
    open.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_are_recognised() {
        let h = |c: &'static str, u: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(CONNECTION, HeaderValue::from_static(c));
            m.insert(UPGRADE, HeaderValue::from_static(u));
            m
        };
        assert!(is_websocket(&h("Upgrade", "websocket")));
        assert!(is_websocket(&h("keep-alive, Upgrade", "WebSocket")));
        assert!(!is_websocket(&h("keep-alive", "websocket")));
        assert!(!is_websocket(&h("Upgrade, HTTP2-Settings", "h2c")));
        assert!(!is_websocket(&HeaderMap::new()));
    }
}
