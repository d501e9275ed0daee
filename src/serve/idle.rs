//! When an HTTP/2 connection has been idle long enough to close.
//!
//! HTTP/1 connections are closed when idle by hyper (`header_read_timeout` runs while it waits
//! for the next request); HTTP/2 has no such clock, so a client could hold a connection (and
//! one of `max_connections`) forever. Each stream is counted from its request to the end of
//! its response body; a connection with no open stream for `timeout` is shut down gracefully
//! (GOAWAY), which a client simply answers by opening a new one when it next needs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};

/// The streams open on one connection and when the last one ended.
pub struct Activity {
    open: AtomicUsize,
    /// Milliseconds after `origin` at which the connection was last busy.
    last_busy: AtomicU64,
    origin: Instant,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            last_busy: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// Marks a stream open until the returned guard is dropped.
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let ms = self.last_busy.load(Ordering::Relaxed);
        Some(self.origin + Duration::from_millis(ms))
    }
}

/// One open stream; its end is the connection's latest activity.
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_busy.fetch_max(ms, Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its stream open until it is finished or dropped.
pub fn tracked(body: Body, guard: StreamGuard) -> Body {
    http_body_util::BodyExt::boxed_unsync(Tracked {
        body,
        _guard: guard,
    })
}

struct Tracked {
    body: Body,
    _guard: StreamGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The clock that says when the connection has been idle for `timeout`.
pub struct IdleTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> IdleTimer {
        IdleTimer {
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ready once no stream has been open for `timeout`.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = match self.activity.idle_since() {
                Some(since) if since + self.timeout <= Instant::now() => return Poll::Ready(()),
                Some(since) => since + self.timeout,
                None => Instant::now() + self.timeout,
            };
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_the_last_stream_has_been_closed_for_the_timeout() {
        let activity = Activity::new();
        let mut timer = IdleTimer::new(activity.clone(), Duration::from_secs(10));
        let guard = activity.stream();
        tokio::time::sleep(Duration::from_secs(25)).await;
        let expired = poll_fn(|cx| Poll::Ready(timer.poll_expired(cx).is_ready())).await;
        assert!(!expired, "a stream is open");
        drop(guard);
        tokio::time::sleep(Duration::from_secs(9)).await;
        let expired = poll_fn(|cx| Poll::Ready(timer.poll_expired(cx).is_ready())).await;
        assert!(!expired, "idle for 9s of 10");
        let started = Instant::now();
        poll_fn(|cx| timer.poll_expired(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
