//! The clock behind hyper's `header_read_timeout` on an HTTP/1 connection: one tokio `Sleep`
//! for the connection's life, its deadline moved for each request head.
//!
//! hyper arms a sleep each time it starts reading a request head and drops it once the head is
//! in, so with a plain timer every request pays for a new `Sleep`: an allocation, an insert
//! into the runtime's timer wheel when the read waits, and a removal (under the driver's lock)
//! when it is dropped. Here the connection owns one `Sleep` ([`HeadClock`]) and lends it to
//! the thread while hyper's connection future is polled ([`HeadClock::lend`]). The sleeps hyper
//! gets from [`LentTimer`] are empty (a zero-sized box, no allocation) and act on the lent one:
//! `sleep_until` moves its deadline, which tokio does with one atomic update and no trip to the
//! wheel when the new deadline is later (the wheel finds the later deadline when the old one
//! comes round), and dropping one leaves the `Sleep` registered for the next head. A head that
//! stalls still times out at its own deadline: the sleep fires only when the deadline it was
//! last given has passed.
//!
//! hyper's HTTP/1 server holds at most one sleep at a time, which is what this relies on. If
//! hyper ever asks for a sleep while nothing is lent, it gets an ordinary one of its own.
//!
//! The connection lends a second sleep the same way, for the deadlines of its requests' own
//! waits ([`super::deadline`]): whoever holds that `Sleep` owns it, taking it from the thread
//! and giving it back when done.
//!
//! Both are set [`GRAIN`] later than asked ([`move_to`]), so that on a busy connection the
//! next deadlines, which fall within that, find the sleep already where they need it and
//! leave it: a reused sleep ends at most `GRAIN` after its deadline, never before it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

type Slot = Option<Pin<Box<Sleep>>>;

/// How late a reused sleep may end. Moving a sleep costs a conversion to the wheel's ticks and
/// an atomic update (about a hundred instructions); a deadline that the sleep already ends
/// within `GRAIN` of costs a comparison. A busy connection's requests come well within it of
/// each other, and deadlines here are seconds long.
pub(super) const GRAIN: Duration = Duration::from_millis(10);

/// Sets `sleep` to end no earlier than `deadline` and at most [`GRAIN`] after it, moving it
/// only when it ends outside that (and then to the far end, for the deadlines that follow).
pub(super) fn move_to(sleep: Pin<&mut Sleep>, deadline: tokio::time::Instant) {
    let set = sleep.deadline();
    let latest = deadline.checked_add(GRAIN).unwrap_or(deadline);
    if set < deadline || set > latest {
        sleep.reset(latest);
    }
}

thread_local! {
    /// The head-read sleep of the connection being polled on this thread, if any.
    static LENT: Cell<Slot> = const { Cell::new(None) };
    /// The spare sleep of the connection being polled on this thread, for a deadline.
    static SPARE: Cell<Slot> = const { Cell::new(None) };
}

/// One connection's head-read sleep, and its spare for its requests' deadlines, both made
/// with the connection (a deadline that finds no spare makes its own and leaves it here).
pub struct HeadClock {
    sleep: Slot,
    spare: Slot,
}

/// Takes the spare sleep lent to this thread, if there is one.
pub(super) fn take_spare() -> Slot {
    SPARE.take()
}

/// Gives a sleep back as the thread's spare, unless it already has one.
pub(super) fn give_spare(sleep: Pin<Box<Sleep>>) {
    SPARE.with(|spare| {
        let held = spare.take();
        spare.set(held.or(Some(sleep)));
    });
}

impl HeadClock {
    /// Made inside the runtime; its deadline is set by the first head, and it is registered
    /// with the timer wheel only once a head read waits.
    pub fn new() -> HeadClock {
        HeadClock {
            sleep: Some(Box::pin(tokio::time::sleep(Duration::ZERO))),
            spare: Some(Box::pin(tokio::time::sleep(Duration::ZERO))),
        }
    }

    /// Runs `poll` (a poll of the connection's future) with this connection's sleeps lent to
    /// the thread, and takes them back afterwards, even if `poll` unwinds. Whatever was lent
    /// before (a connection polled inside another's poll) is restored.
    pub fn lend<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        struct Return<'a> {
            clock: &'a mut HeadClock,
            outer: (Slot, Slot),
        }
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                self.clock.sleep = LENT.replace(self.outer.0.take());
                self.clock.spare = SPARE.replace(self.outer.1.take());
            }
        }
        let outer = (
            LENT.replace(self.sleep.take()),
            SPARE.replace(self.spare.take()),
        );
        let _back = Return { clock: self, outer };
        poll()
    }
}

/// A `hyper::rt::Timer` whose sleeps act on the lent [`HeadClock`].
#[derive(Clone, Copy, Default)]
pub struct LentTimer;

impl hyper::rt::Timer for LentTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let lent = LENT.take();
        let Some(mut sleep) = lent else {
            return Box::pin(Own(Box::pin(tokio::time::sleep_until(deadline))));
        };
        move_to(sleep.as_mut(), deadline);
        LENT.set(Some(sleep));
        Box::pin(Lent)
    }

    /// tokio's clock, which is the system's except in tests that pause it.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

/// The lent sleep, as hyper holds it: nothing, pointing at the thread's lent `Sleep`.
struct Lent;

impl Future for Lent {
    type Output = ();

    /// Outside a lend (which hyper's connection never does: every poll of it is lent) the
    /// head has no clock left, and it is over rather than allowed to wait for ever.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(mut sleep) = LENT.take() else {
            return Poll::Ready(());
        };
        let ready = sleep.as_mut().poll(cx);
        LENT.set(Some(sleep));
        ready
    }
}

impl hyper::rt::Sleep for Lent {}

/// A sleep asked for while nothing was lent.
struct Own(Pin<Box<Sleep>>);

impl Future for Own {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Own {}

/// A connection's future, polled with its [`HeadClock`] lent.
pub struct Clocked<C> {
    conn: C,
    clock: HeadClock,
}

impl<C> Clocked<C> {
    pub fn new(conn: C) -> Clocked<C> {
        Clocked {
            conn,
            clock: HeadClock::new(),
        }
    }
}

impl<C: Unpin> Clocked<C> {
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        Pin::new(&mut self.get_mut().conn)
    }
}

impl<C: Future + Unpin> Future for Clocked<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        let conn = &mut this.conn;
        this.clock.lend(|| Pin::new(conn).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use std::task::Waker;

    type HyperSleep = Pin<Box<dyn hyper::rt::Sleep>>;

    fn after(millis: u64) -> Instant {
        (tokio::time::Instant::now() + Duration::from_millis(millis)).into_std()
    }

    fn is_ready(sleep: &mut HyperSleep) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        sleep.as_mut().poll(&mut cx).is_ready()
    }

    fn lent_ready(clock: &mut HeadClock, sleep: &mut HyperSleep) -> bool {
        clock.lend(|| is_ready(sleep))
    }

    async fn wait(millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    /// From a millisecond before a deadline to the latest a reused sleep ends: the
    /// millisecond and [`GRAIN`].
    fn grain() -> u64 {
        GRAIN.as_millis() as u64 + 1
    }

    #[tokio::test(start_paused = true)]
    async fn a_lent_sleep_ends_at_its_deadline_and_costs_no_allocation() {
        let mut clock = HeadClock::new();
        let mut sleep = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        assert_eq!(std::mem::size_of_val(&*sleep), 0, "a zero-sized box");
        assert!(!lent_ready(&mut clock, &mut sleep));
        wait(9_999).await;
        assert!(!lent_ready(&mut clock, &mut sleep));
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut sleep));
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_gets_its_own_deadline_from_the_one_sleep() {
        let mut clock = HeadClock::new();
        let mut first = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        assert!(
            !lent_ready(&mut clock, &mut first),
            "registered in the wheel"
        );
        drop(first);
        wait(6_000).await;
        // Later than the first: moved in place; the first's tick at 10 s must not end it.
        let mut second = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        wait(9_999).await;
        assert!(!lent_ready(&mut clock, &mut second), "just before its 10 s");
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut second));
        drop(second);
        // After it fired, and shorter than any before.
        let mut third = clock.lend(|| LentTimer.sleep(Duration::from_secs(2)));
        assert!(!lent_ready(&mut clock, &mut third));
        wait(1_999).await;
        assert!(!lent_ready(&mut clock, &mut third));
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut third));
        // hyper's reset moves it too.
        clock.lend(|| LentTimer.reset(&mut third, after(3_000)));
        wait(2_999).await;
        assert!(!lent_ready(&mut clock, &mut third));
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut third));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_within_the_grain_of_the_set_one_leaves_the_sleep_as_it_is() {
        let mut clock = HeadClock::new();
        let first = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        let set = clock.sleep.as_ref().map(|s| s.deadline());
        drop(first);
        wait(grain() / 2).await;
        let second = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        assert_eq!(clock.sleep.as_ref().map(|s| s.deadline()), set, "not moved");
        drop(second);
        wait(grain()).await;
        let mut third = clock.lend(|| LentTimer.sleep_until(after(10_000)));
        let moved = clock.sleep.as_ref().map(|s| s.deadline());
        assert!(moved > set, "moved once its deadline is past the set one");
        // Never before its own deadline, whichever deadline it was set by.
        wait(9_999).await;
        assert!(!lent_ready(&mut clock, &mut third));
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut third));
        // A shorter deadline than the one set moves it back.
        drop(third);
        let mut short = clock.lend(|| LentTimer.sleep_until(after(1_000)));
        wait(999).await;
        assert!(!lent_ready(&mut clock, &mut short));
        wait(grain()).await;
        assert!(lent_ready(&mut clock, &mut short));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lend_a_sleep_is_its_own_and_a_lent_one_is_over() {
        let mut own = LentTimer.sleep_until(after(1_000));
        assert!(!is_ready(&mut own));
        wait(1_000).await;
        assert!(is_ready(&mut own));
        let mut clock = HeadClock::new();
        let mut lent = clock.lend(|| LentTimer.sleep_until(after(60_000)));
        assert!(
            is_ready(&mut lent),
            "polled outside its lend: no clock, over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lend_inside_another_gives_the_outer_sleep_back() {
        let mut outer = HeadClock::new();
        let mut inner = HeadClock::new();
        let mut outer_sleep = outer.lend(|| {
            let s = LentTimer.sleep_until(after(5_000));
            drop(inner.lend(|| LentTimer.sleep_until(after(1_000))));
            s
        });
        wait(1_000 + grain()).await;
        assert!(
            !lent_ready(&mut outer, &mut outer_sleep),
            "the outer deadline is 5 s"
        );
        wait(4_000).await;
        assert!(lent_ready(&mut outer, &mut outer_sleep));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_unwinds_still_returns_the_sleep() {
        let mut clock = HeadClock::new();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            clock.lend(|| panic!("a connection's poll panicked"))
        }));
        assert!(unwound.is_err());
        assert!(clock.sleep.is_some(), "back with the connection");
        assert!(LENT.take().is_none(), "nothing left lent on the thread");
    }
}
