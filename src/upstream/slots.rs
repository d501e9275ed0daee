//! `max_connections` and `max_pending` of one origin: a fair (FIFO) semaphore of connection
//! slots, and a bound on how many requests may wait for one.
//!
//! A slot is held by an HTTP/1.1 request for as long as its connection is busy (until the
//! response body ends and the connection is back in the pool), and by an HTTP/2 request for
//! as long as its stream is open. A connection is only ever made by a request holding a slot,
//! and one is returned to the pool before its slot is released, so the busy and idle HTTP/1.1
//! connections together never outnumber `max_connections`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::PoolError;
use crate::config::OriginLimits;

/// The slots of one origin.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    limits: OriginLimits,
    waiting: AtomicUsize,
}

/// One slot, released when dropped.
pub type Slot = OwnedSemaphorePermit;

impl Slots {
    pub fn new(limits: OriginLimits) -> Slots {
        Slots {
            semaphore: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot now, or after the requests queued before this one; `Overloaded` at once if
    /// `max_pending` are already waiting. The caller's deadline bounds the wait.
    pub async fn take(&self) -> Result<Slot, PoolError> {
        match self.now() {
            Some(slot) => Ok(slot),
            None => self.queue().await,
        }
    }

    /// A free slot, if nobody is queued for one (the semaphore is fair: a slot is free only
    /// then); the whole cost below the cap.
    #[inline]
    pub fn now(&self) -> Option<Slot> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// The slow way: in the queue, or refused if it is full.
    pub async fn queue(&self) -> Result<Slot, PoolError> {
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _leave = Leave(&self.waiting);
        if queued >= self.limits.max_pending {
            return Err(PoolError::Overloaded(self.limits));
        }
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Closed)
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.limits.max_connections - self.semaphore.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Leaves the queue when the wait ends, however it ends (a slot, a timeout, a client gone).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's slot until it ends or is dropped (HTTP/2).
pub struct Holding<B> {
    pub body: B,
    pub slot: Option<Slot>,
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Holding<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.slot = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slots(max_connections: usize, max_pending: usize) -> Arc<Slots> {
        Arc::new(Slots::new(OriginLimits {
            max_connections,
            max_pending,
        }))
    }

    #[tokio::test]
    async fn slots_are_capped_queued_in_order_and_overload_is_immediate() {
        let s = slots(2, 1);
        let a = s.take().await.unwrap();
        let _b = s.take().await.unwrap();
        assert_eq!(s.in_use(), 2);
        let s2 = s.clone();
        let queued = tokio::spawn(async move { s2.take().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.waiting(), 1);
        assert!(matches!(s.take().await, Err(PoolError::Overloaded(_))));
        assert_eq!(s.waiting(), 1, "a refused request does not stay queued");
        drop(a);
        queued.await.unwrap().unwrap();
        assert_eq!(s.waiting(), 0);
    }

    #[tokio::test]
    async fn a_wait_given_up_leaves_the_queue() {
        let s = slots(1, 1);
        let _a = s.take().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), s.take()).await;
        assert!(gave_up.is_err());
        assert_eq!(s.waiting(), 0);
        let s2 = s.clone();
        let queued = tokio::spawn(async move { s2.take().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.waiting(), 1, "the queue has room again");
        queued.abort();
    }

    #[tokio::test]
    async fn waiters_are_served_first_come_first_served() {
        let s = slots(1, 10);
        let first = s.take().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (s, order) = (s.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let slot = s.take().await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(slot);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await; // queue in this order
        }
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!((s.in_use(), s.waiting()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn under_contention_and_cancellation_the_cap_holds_and_nothing_leaks() {
        let s = slots(3, 1000);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..400u64 {
            let (s, now, most) = (s.clone(), now.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                // Every fifth gives up soon, while queued or just after its turn came.
                let micros = if i % 5 == 0 { 50 + i * 7 } else { 1_000_000 };
                let patience = Duration::from_micros(micros);
                let Ok(Ok(slot)) = tokio::time::timeout(patience, s.take()).await else {
                    return;
                };
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
                drop(slot);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 3, "{most} at once");
        assert_eq!((s.in_use(), s.waiting()), (0, 0), "every slot given back");
        assert!(s.take().await.is_ok());
    }
}
