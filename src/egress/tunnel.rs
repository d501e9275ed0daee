//! A `CONNECT` through the parent proxy. hyper's HTTP/1.1 client writes the request and
//! reads the answer (no framing parsed by hand here); a `2xx` hands the connection over, and
//! anything else is a refusal that keeps the parent's status.

use bytes::Bytes;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::parent::{Parent, ParentError};

/// A tunnel through the parent: the TCP connection to it, and the bytes that came with its
/// `200` from the far side (a server that speaks first may already have).
pub struct Tunnelled {
    pub tcp: TcpStream,
    pub early: Bytes,
}

/// Connects to the parent and asks it for a tunnel to `host:port` (`host` as in a URI, IPv6
/// in brackets).
pub async fn tunnel(parent: &Parent, host: &str, port: u16) -> Result<Tunnelled, ParentError> {
    let authorization = parent.authorization()?;
    let tcp = parent.connect().await?;
    let target = format!("{host}:{port}");
    let broken = |e: hyper::Error| ParentError::Unreachable {
        parent: parent.authority().to_string(),
        reason: format!("CONNECT {target}: {e}"),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(broken)?;
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = target.parse().map_err(|_| ParentError::Unreachable {
        parent: parent.authority().to_string(),
        reason: format!("{target:?} is not a CONNECT target"),
    })?;
    let headers = req.headers_mut();
    if let Ok(value) = target.parse() {
        headers.insert(HOST, value);
    }
    if let Some(value) = authorization {
        headers.insert(PROXY_AUTHORIZATION, value);
    }
    // The connection is driven here, beside the request: once the parent has said 2xx it
    // ends by handing its socket over to the upgrade, maybe before the answer is read.
    let conn = conn.with_upgrades();
    tokio::pin!(conn);
    let send = sender.send_request(req);
    tokio::pin!(send);
    let mut ended = None;
    let resp = tokio::select! {
        biased;
        resp = &mut send => resp.map_err(broken)?,
        done = &mut conn => {
            ended = Some(done);
            send.await.map_err(broken)?
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(parent.refused(format!("CONNECT {target}"), status.as_u16()));
    }
    let upgraded = match ended {
        Some(done) => {
            done.map_err(broken)?;
            hyper::upgrade::on(resp).await
        }
        None => {
            let (done, upgraded) = tokio::join!(conn, hyper::upgrade::on(resp));
            done.map_err(broken)?;
            upgraded
        }
    };
    let parts = upgraded
        .map_err(broken)?
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| ParentError::Unreachable {
            parent: parent.authority().to_string(),
            reason: "the tunnel is not the TCP connection it was opened on".into(),
        })?;
    Ok(Tunnelled {
        tcp: parts.io.into_inner(),
        early: parts.read_buf,
    })
}

/// The parent's refusal (or failure) under `e`, if that is why `e` happened.
pub fn refused_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ParentError> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<ParentError>() {
            return Some(p);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ParentProxyConfig, Secret, SecretSource};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A parent that reads one request head, records it, and answers `answer`.
    async fn parent_answering(answer: &'static [u8]) -> (Parent, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            if answer.is_empty() {
                return String::from_utf8(head).unwrap(); // closes without a word
            }
            s.write_all(answer).await.unwrap();
            // Echo one read back, to show the tunnel carries bytes both ways.
            let n = s.read(&mut buf).await.unwrap_or(0);
            let _ = s.write_all(&buf[..n]).await;
            String::from_utf8(head).unwrap()
        });
        let parent = Parent::new(&ParentProxyConfig {
            host: "127.0.0.1".into(),
            port,
            username: Some("tp".into()),
            password: Some(SecretSource::Literal(Secret::new("s3cret"))),
            no_proxy: vec![],
        });
        (parent, seen)
    }

    #[tokio::test]
    async fn a_2xx_hands_over_the_socket_with_the_early_bytes() {
        let (parent, seen) =
            parent_answering(b"HTTP/1.1 200 Connection established\r\n\r\nHELLO").await;
        let mut t = tunnel(&parent, "api.example.com", 443).await.unwrap();
        assert_eq!(&t.early[..], b"HELLO");
        t.tcp.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        t.tcp.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("connect api.example.com:443 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("host: api.example.com:443\r\n"), "{head}");
        assert!(
            head.contains("proxy-authorization: basic dha6cznjcmv0\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_refusal_keeps_the_parents_status() {
        let (parent, _seen) = parent_answering(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let Err(e) = tunnel(&parent, "[::1]", 8443).await else {
            panic!("a 407 opened a tunnel");
        };
        assert_eq!(e.status(), Some(407));
        assert!(e.to_string().contains("CONNECT [::1]:8443"), "{e}");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        assert_eq!(
            refused_in(boxed.as_ref()).and_then(|p| p.status()),
            Some(407)
        );
    }

    #[tokio::test]
    async fn a_parent_that_closes_is_unreachable_not_refused() {
        let (parent, _seen) = parent_answering(b"").await;
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tunnel(&parent, "api.example.com", 443),
        )
        .await
        .unwrap();
        assert!(matches!(e, Err(ParentError::Unreachable { .. })));
    }
}
