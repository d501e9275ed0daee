//! `max_connections` and `max_pending` of one origin: connection slots, taken at once while
//! any are free and nobody waits, else in a first-come first-served queue, and a bound on how
//! many requests may wait for one.
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
use tokio::sync::Semaphore;

use super::error::PoolError;
use crate::config::OriginLimits;

/// The slots of one origin.
pub struct Slots {
    shared: Arc<Shared>,
    limits: OriginLimits,
}

/// Slots are free to take at once while nobody is queued (`free`, a counter: taking one is a
/// compare-and-swap, giving it back an add). A request that finds none joins the queue (a
/// fair tokio semaphore that starts empty), and a slot given back while anyone is queued is
/// handed to the queue. (tokio's semaphore alone takes its queue's lock on every release,
/// queued or not: about 150 instructions a request.)
struct Shared {
    free: AtomicUsize,
    queue: Semaphore,
    waiting: AtomicUsize,
}

impl Shared {
    fn take_free(&self) -> bool {
        let mut n = self.free.load(Ordering::SeqCst);
        while n > 0 {
            match self
                .free
                .compare_exchange_weak(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    fn release(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.queue.add_permits(1);
            return;
        }
        self.free.fetch_add(1, Ordering::SeqCst);
        // A request that joined the queue after the check above, and looked for a free slot
        // before the add, is waiting: hand it one. (Either it sees the free slot or this sees
        // it queued: both sides write, then read the other's counter.)
        if self.waiting.load(Ordering::SeqCst) > 0 && self.take_free() {
            self.queue.add_permits(1);
        }
    }
}

/// One slot, given back when dropped.
pub struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Slots {
    pub fn new(limits: OriginLimits) -> Slots {
        Slots {
            shared: Arc::new(Shared {
                free: AtomicUsize::new(limits.max_connections),
                queue: Semaphore::new(0),
                waiting: AtomicUsize::new(0),
            }),
            limits,
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

    /// A free slot, if nobody is queued for one; the whole cost below the cap.
    #[inline]
    pub fn now(&self) -> Option<Slot> {
        let shared = &self.shared;
        if shared.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        // A slot handed to a queue whose waiter has gone since is the queue's: take it there.
        let taken = shared.take_free() || shared.queue.try_acquire().map(|p| p.forget()).is_ok();
        taken.then(|| Slot(shared.clone()))
    }

    /// The slow way: in the queue, or refused if it is full.
    pub async fn queue(&self) -> Result<Slot, PoolError> {
        let shared = &self.shared;
        let queued = shared.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&shared.waiting);
        if queued >= self.limits.max_pending {
            return Err(PoolError::Overloaded(self.limits));
        }
        // One given back between `now` and joining the queue is still free.
        if !shared.take_free() {
            let permit = shared.queue.acquire().await;
            permit.map_err(|_| PoolError::Closed)?.forget();
        }
        Ok(Slot(shared.clone()))
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        let free = self.shared.free.load(Ordering::Relaxed);
        let handed = self.shared.queue.available_permits();
        self.limits.max_connections.saturating_sub(free + handed)
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
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
    async fn a_slot_handed_to_a_waiter_that_left_is_taken_at_once_by_the_next() {
        let s = slots(1, 10);
        let a = s.take().await.unwrap();
        let s2 = s.clone();
        let queued = tokio::spawn(async move { s2.take().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.waiting(), 1);
        drop(a); // handed to the queue, to the waiter...
        queued.abort(); // ...which leaves before it runs
        assert!(queued.await.unwrap_err().is_cancelled());
        assert_eq!((s.in_use(), s.waiting()), (0, 0));
        let b = s.now().expect("the handed slot is free again");
        assert!(s.now().is_none(), "one slot");
        drop(b);
        assert_eq!(s.in_use(), 0);
        assert!(s.now().is_some());
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

    /// One slot, taken and given back as fast as threads can: a slot given back just as a
    /// request joins the queue must reach it (or that request, and all behind it, would wait
    /// until they gave up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_slot_given_back_as_a_request_queues_is_not_lost() {
        let s = slots(1, 1000);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5_000 {
                    let taken = tokio::time::timeout(Duration::from_secs(2), s.take()).await;
                    assert!(matches!(taken, Ok(Ok(_))), "take {i} waited for ever");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
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
                    // A patient one left waiting a second: a slot given back was lost.
                    assert!(i % 5 == 0, "request {i} got no slot in a second");
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
