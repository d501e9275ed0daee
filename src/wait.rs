//! `tokenproxy wait`: block until a tokenproxy's `/readyz` answers 200, or give up.
//!
//! For Kubernetes before native sidecars (1.29): a `postStart` hook on the tokenproxy
//! container runs it, and the kubelet starts the app container only after the hook returns,
//! so the app never starts without tokens. Plain HTTP/1.1 to the admin listener, no TLS.

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
    let mut s = TcpStream::connect(admin).await?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    // "HTTP/1.1 200"
    let code = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok());
    code.ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
