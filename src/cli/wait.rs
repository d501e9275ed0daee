//! `tokenproxy wait`: block until a tokenproxy's `/readyz` answers 200, or give up.
//!
//! For Kubernetes before native sidecars (1.29): a `postStart` hook on the tokenproxy
//! container runs it, and the kubelet starts the app container only after the hook returns,
//! so the app never starts without tokens. Plain HTTP/1.1 to the admin listener, no TLS;
//! [`admin_get`] serves `tokenproxy status` too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("not ready after {}s (last: {last})", .waited.as_secs())]
    Timeout { waited: Duration, last: String },
}

/// Polls `http://{admin}/readyz` every `interval` until it answers 200 or `timeout` passes.
pub async fn wait_ready(
    admin: SocketAddr,
    timeout: Duration,
    interval: Duration,
) -> Result<(), WaitError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        let attempt = tokio::time::timeout_at(deadline, readyz(admin)).await;
        match attempt {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => {}
        }
        if Instant::now() + interval > deadline {
            return Err(WaitError::Timeout {
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

async fn readyz(admin: SocketAddr) -> std::io::Result<u16> {
    admin_get(admin, "/readyz").await.map(|(code, _)| code)
}

/// `GET path` on the admin listener: the status code and the body (read to the close; the
/// admin answers are small, whole bodies).
pub async fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(admin).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // "HTTP/1.1 200 OK"
    let code = head.get(9..12).and_then(|c| c.parse().ok());
    let code = code.ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    Ok((code, body.to_string()))
}
