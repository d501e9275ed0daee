//! When a connection has waited long enough for a request: `header_read_timeout`, for HTTP/1.1
//! and HTTP/2 alike.
//!
//! A connection is busy from a request's head (the handler is called) to the end of its
//! response body, and idle otherwise: while it waits for the first head, between a response
//! and the next head (an idle keep-alive connection, or a head trickling in byte by byte), or
//! with no HTTP/2 stream open. One that has been idle for the timeout is closed.
//!
//! The requests are counted, not timed: [`Activity`] holds how many began and how many ended
//! (each an [`Open`] token, held by the handler's future and then by the response body,
//! [`Tracked`]), and [`IdleTimer`] looks at the two every quarter of the timeout. Idle at
//! five looks in a row with no request begun in between means idle for the whole timeout,
//! so a connection is closed between the timeout and a quarter more after it went idle. A
//! request pays two counter updates and no clock read; the clock wakes a connection four
//! times a timeout (every 7.5 s at the default 30 s), busy or not.
//!
//! (hyper's own `header_read_timeout`, used before for HTTP/1.1, read the clock and moved a
//! sleep at every head, and looped its connection once more after each response to arm it:
//! about 600 instructions a request, docs/performance.md.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How many looks at the counters a timeout spans.
const LOOKS: u32 = 4;

/// The requests begun and ended on one connection.
#[derive(Default)]
pub struct Activity {
    begun: AtomicU32,
    ended: AtomicU32,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Counts a request begun; it ends when the returned token is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.begun.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// How many requests have begun, if none is open now.
    fn idle(&self) -> Option<u32> {
        // `ended` first: a request that ends between the two loads then reads as open.
        let ended = self.ended.load(Ordering::Relaxed);
        let begun = self.begun.load(Ordering::Relaxed);
        (begun == ended).then_some(begun)
    }
}

/// One request, from its head to the end of its response body (or until it is dropped).
pub struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A handler's answer as hyper's service wants it: polled in place (not moved into an
    /// `async` block, which would move the whole request pipeline on its first poll), its
    /// response body holding the request's [`Open`] token.
    pub struct Answered<F> {
        #[pin]
        answer: F,
        open: Option<Open>,
    }
}

impl<F> Answered<F> {
    pub fn new(answer: F, open: Open) -> Self {
        Answered {
            answer,
            open: Some(open),
        }
    }
}

impl<F: Future<Output = Response<B>>, B> Future for Answered<F> {
    type Output = Result<Response<Tracked<B>>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.answer.poll(cx));
        let open = this.open.take();
        Poll::Ready(Ok(resp.map(|body| Tracked { body, _open: open })))
    }
}

/// A response body that keeps its request open until it is finished or dropped.
pub struct Tracked<B> {
    body: B,
    _open: Option<Open>,
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The clock that says when a connection has been idle for its timeout.
pub struct IdleTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    every: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Requests begun at the last look.
    begun: u32,
    /// Looks in a row that found the connection idle with no request begun in between.
    quiet: u32,
    /// The waker the sleep was last polled with, while it waits.
    waiting: Option<Waker>,
}

impl IdleTimer {
    /// Counts from now, as if a look had just found the connection idle (a new connection
    /// waits for its first head).
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> IdleTimer {
        let every = (timeout / LOOKS).max(Duration::from_millis(1));
        IdleTimer {
            activity,
            timeout,
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
            begun: 0,
            quiet: 1,
            waiting: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ready once the connection has been idle for the timeout.
    ///
    /// Called on every wake-up of the connection's task, so a sleep that is waiting in the
    /// timer wheel with this task's waker is not polled again (tokio's poll of a `Sleep` is
    /// about a hundred instructions); it wakes the task when it fires.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let same_waker = self
            .waiting
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if same_waker && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            // Out of the task's budget a sleep says `Pending` without waiting in the wheel;
            // this one must have waited once polled, or the skip above would never end.
            let fired = Pin::new(&mut tokio::task::unconstrained(&mut self.sleep)).poll(cx);
            if fired.is_pending() {
                if !same_waker {
                    self.waiting = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            self.quiet = match self.activity.idle() {
                None => 0,
                Some(begun) if begun == self.begun => self.quiet + 1,
                Some(begun) => {
                    self.begun = begun;
                    1
                }
            };
            if self.quiet > LOOKS {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(Instant::now() + self.every);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use std::future::poll_fn;

    /// Drives the timer as a connection's task does (woken at each look); whether it expired
    /// within `millis`.
    async fn expires_within(timer: &mut IdleTimer, millis: u64) -> bool {
        let expiry = poll_fn(|cx| timer.poll_expired(cx));
        tokio::time::timeout(Duration::from_millis(millis), expiry)
            .await
            .is_ok()
    }

    async fn idle_until_expired(timer: &mut IdleTimer, since: Instant) -> Duration {
        let expiry = poll_fn(|cx| timer.poll_expired(cx));
        let expired = tokio::time::timeout(Duration::from_secs(100), expiry).await;
        assert!(expired.is_ok(), "never expired");
        since.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_with_no_request_expires_at_the_timeout() {
        let mut timer = IdleTimer::new(Activity::new(), Duration::from_secs(8));
        let started = Instant::now();
        assert!(!expires_within(&mut timer, 7_999).await);
        let idle = idle_until_expired(&mut timer, started).await;
        assert!(idle < Duration::from_millis(8_010), "{idle:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn woken_in_between_by_other_things_or_by_another_waker_it_still_expires_on_time() {
        let mut timer = IdleTimer::new(Activity::new(), Duration::from_secs(8));
        let started = Instant::now();
        // First polled with a waker that wakes nobody: the task's must replace it.
        let mut noop = Context::from_waker(Waker::noop());
        assert!(timer.poll_expired(&mut noop).is_pending());
        // Then woken every 300 ms by something else (a connection's socket, say), when
        // the sleep, waiting with this task's waker, is not polled again.
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        let mut wakes = 0;
        let expiry = poll_fn(|cx| {
            while tick.poll_tick(cx).is_ready() {
                wakes += 1;
            }
            timer.poll_expired(cx)
        });
        let expired = tokio::time::timeout(Duration::from_secs(20), expiry).await;
        assert!(expired.is_ok(), "never expired");
        let idle = started.elapsed();
        assert!(wakes > 20, "{wakes}");
        assert!(
            idle >= Duration::from_secs(8) && idle < Duration::from_millis(8_010),
            "{idle:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_request_keeps_it_and_the_timeout_counts_from_its_end() {
        let activity = Activity::new();
        let mut timer = IdleTimer::new(activity.clone(), Duration::from_secs(8));
        let open = activity.open();
        assert!(
            !expires_within(&mut timer, 26_500).await,
            "a request is open"
        );
        drop(open);
        let idle = idle_until_expired(&mut timer, Instant::now()).await;
        assert!(
            idle >= Duration::from_secs(8) && idle <= Duration::from_secs(10),
            "closed {idle:?} after the request ended: between the timeout and a quarter more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_between_looks_keep_it() {
        let activity = Activity::new();
        let mut timer = IdleTimer::new(activity.clone(), Duration::from_secs(8));
        let started = Instant::now();
        // Short requests, each begun and ended between two looks (every 2 s), for 30 s.
        let client = tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                drop(activity.open());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let idle = idle_until_expired(&mut timer, started).await;
        assert!(client.is_finished());
        // The last request ended at 29.5 s.
        assert!(
            idle >= Duration::from_millis(37_500) && idle <= Duration::from_millis(39_500),
            "{idle:?}"
        );
    }

    #[tokio::test]
    async fn a_response_body_holds_its_request_open_until_it_is_dropped() {
        let activity = Activity::new();
        let answer = std::future::ready(Response::new(crate::body::empty()));
        let answered = Answered::new(answer, activity.open());
        let resp = answered.await.unwrap_or_else(|never| match never {});
        assert_eq!(activity.idle(), None, "the body is still held");
        drop(resp);
        assert_eq!(activity.idle(), Some(1));
        let dropped = Answered::new(std::future::pending::<Response<Body>>(), activity.open());
        assert_eq!(activity.idle(), None);
        drop(dropped);
        assert_eq!(
            activity.idle(),
            Some(2),
            "a handler dropped before its answer"
        );
    }
}
