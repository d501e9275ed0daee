//! One HTTP/1.1 connection of an origin pool, its I/O on a task of its own, and the pool's
//! idle ones.
//!
//! Each connection's hyper `Connection` future runs in a task spawned when it is made, so it is
//! polled only when its own socket or its request channel wakes it. (It used to be polled by the
//! task serving the request, beside that task's server connection: every wake-up of either
//! polled both, about 3,600 more instructions per request; docs/performance.md.) Dropping a
//! [`Conn`] aborts that task and so closes the connection, as dropping the future did; one that
//! is put back in the pool keeps its task, which also notices an upstream close while idle.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::slots::Slot;
use crate::body::Body;
use crate::egress::Stream;

pub type Io = MaybeHttpsStream<Stream>;

/// One HTTP/1.1 connection: the handle to send on, and the task that does its I/O.
pub struct Conn {
    pub sender: SendRequest<Body>,
    task: AbortHandle,
    pub idle_since: Instant,
}

impl Conn {
    /// Starts the connection's I/O task.
    pub fn spawn<I>(sender: SendRequest<Body>, connection: Connection<I, Body>) -> Conn
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        })
        .abort_handle();
        Conn {
            sender,
            task,
            idle_since: Instant::now(),
        }
    }

    /// Whether the connection may still carry a request (its task has not ended).
    pub fn alive(&self) -> bool {
        !self.sender.is_closed()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Idle connections kept per origin.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection whose answer has ended may take to be ready for the next request.
const SETTLE: Duration = Duration::from_millis(100);

/// The idle HTTP/1.1 connections of one origin, newest last.
#[derive(Default)]
pub struct IdleConns(Mutex<Vec<Conn>>);

impl IdleConns {
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |idle| idle.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest idle connection that is still open and not too old.
    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.alive() && conn.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection for reuse if it is open and idle, then releases `slot` (in that order,
    /// so that the next request finds the connection idle). One whose task has not yet taken in
    /// the end of its last exchange (on another worker thread, say) gets [`SETTLE`] to become
    /// ready, holding the slot meanwhile; one still busy after that (sending a request body the
    /// upstream answered without reading) is closed.
    pub fn put(self: &Arc<Self>, conn: Conn, slot: Option<Slot>) {
        if !conn.alive() {
            return;
        }
        if conn.sender.is_ready() {
            self.keep(conn);
            drop(slot);
            return;
        }
        // Dropped outside any runtime (a body outliving it): close rather than wait.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            let mut conn = conn;
            let ready = poll_fn(|cx| conn.sender.poll_ready(cx));
            if let Ok(Ok(())) = tokio::time::timeout(SETTLE, ready).await {
                pool.keep(conn);
            }
            drop(slot);
        });
    }

    fn keep(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}
