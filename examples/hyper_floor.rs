//! The floor under tokenproxy's plain path: the least a reverse proxy built on hyper does per
//! request, for `tests/e2e/bench.py --floor` and `tests/e2e/instructions.py --floor`.
//!
//! `hyper_floor [--same-task] LISTEN ORIGIN` serves HTTP/1.1 on LISTEN on tokio's
//! current-thread runtime (as tokenproxy does with one worker). Each client connection gets one
//! keep-alive HTTP/1.1 connection to ORIGIN, opened when the client connects and driven by its
//! own task (hyper's documented client pattern); every request goes there unchanged but for a
//! static `Authorization` header and, when it came in absolute form (as `HTTP_PROXY` clients
//! send it), its target in origin form; the answer comes back as it is. No routing, no header
//! rules, no token source, no metrics, no timeouts: whatever tokenproxy spends above this is its
//! own, and whatever this spends above nginx is hyper's and tokio's. With `--same-task` the
//! upstream connection is polled by the client connection's task instead, beside the server
//! connection, on every wake-up (as tokenproxy's pool did until this was measured), to see what
//! that choice costs alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, AUTHORIZATION};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let same_task = argv.iter().any(|a| a == "--same-task");
    argv.retain(|a| a != "--same-task");
    let [listen, origin] = &argv[..] else {
        eprintln!("usage: hyper_floor [--same-task] LISTEN ORIGIN");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let origin: SocketAddr = origin.parse().expect("ORIGIN is host:port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = serve(client, origin, same_task).await {
                    eprintln!("connection: {e}");
                }
            });
        }
    });
}

async fn serve(
    client: TcpStream,
    origin: SocketAddr,
    same_task: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let _ = client.set_nodelay(true);
    let upstream = TcpStream::connect(origin).await?;
    let _ = upstream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    let mut connection = if same_task {
        Some(connection)
    } else {
        tokio::spawn(connection);
        None
    };
    let sender: Arc<Mutex<SendRequest<Incoming>>> = Arc::new(Mutex::new(sender));
    let token = HeaderValue::from_static("Bearer bench-token-0123456789");
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.headers_mut().insert(AUTHORIZATION, token.clone());
        // An absolute-form target (a forward proxy's request) goes out in origin form.
        if req.uri().scheme().is_some() {
            if let Some(pq) = req.uri().path_and_query() {
                *req.uri_mut() = Uri::from(pq.clone());
            }
        }
        let answer = sender.lock().expect("sender").send_request(req);
        async move { answer.await.map(|res: Response<Incoming>| res) }
    });
    let server =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service);
    let mut server = std::pin::pin!(server);
    std::future::poll_fn(|cx| {
        if let Some(conn) = &mut connection {
            if std::pin::Pin::new(conn).poll(cx).is_ready() {
                connection = None;
            }
        }
        server.as_mut().poll(cx)
    })
    .await?;
    Ok(())
}
