//! One HTTP/1.1 connection of an origin pool, driven by whichever task is using it, and the
//! pool's idle ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Context;
use std::time::Duration;

use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use tokio::time::Instant;

use crate::body::Body;
use crate::egress::Stream;

pub type Io = MaybeHttpsStream<Stream>;

/// One HTTP/1.1 connection: the handle to send on and the future that does its I/O.
pub struct Conn {
    pub sender: SendRequest<Body>,
    /// `None` once the connection has ended (a finished future must not be polled again).
    pub driver: Option<Pin<Box<Connection<Io, Body>>>>,
    pub idle_since: Instant,
}

impl Conn {
    /// Lets the connection do its I/O; notes when it has ended.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            if driver.as_mut().poll(cx).is_ready() {
                self.driver = None;
            }
        }
    }

    pub fn alive(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// Idle connections kept per origin.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// Keeps a connection for reuse if it is open and idle; one still busy (say, sending a
    /// request body the upstream answered without reading) is closed instead.
    pub fn put(&self, mut conn: Conn) {
        if !conn.alive() || !conn.sender.is_ready() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}
