//! One HTTP/1.1 connection of an origin pool, driven by whichever task is using it.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::Body;

pub type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

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
