//! A connection's spare sleep, for the deadlines of its requests' waits ([`super::deadline`]),
//! lent to the thread while the connection's future is polled.
//!
//! `tokio::time::timeout` makes a new `Sleep` for each request: an allocation, an insert into
//! the runtime's timer wheel when the wait begins and a removal (under the driver's lock) when
//! the answer comes. An HTTP/1 connection serves one request at a time, so it keeps one spare
//! `Sleep` for its life and lends it to the thread around each poll of its future
//! ([`Clocked`]); whoever needs a deadline takes it from the thread ([`take_spare`]), moves it
//! ([`move_to`]) and gives it back when done ([`give_spare`]). Moving a registered sleep to a
//! later deadline is one atomic update and no trip to the wheel (the wheel finds the later
//! deadline when the old one comes round).
//!
//! A sleep is set [`GRAIN`] later than asked, so that on a busy connection the next
//! deadlines, which fall within that, find the sleep already where they need it and leave it:
//! a reused sleep ends at most `GRAIN` after its deadline, never before it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
    /// The spare sleep of the connection being polled on this thread, if any.
    static SPARE: Cell<Slot> = const { Cell::new(None) };
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

/// One connection's spare sleep, made with the connection (a deadline that finds no spare
/// makes its own and leaves it here).
pub struct Spare(Slot);

impl Spare {
    /// Made inside the runtime; registered with the timer wheel only once a deadline waits.
    pub fn new() -> Spare {
        Spare(Some(Box::pin(tokio::time::sleep(Duration::ZERO))))
    }

    /// Runs `poll` (a poll of the connection's future) with this connection's spare lent to
    /// the thread, and takes it back afterwards, even if `poll` unwinds. Whatever was lent
    /// before (a connection polled inside another's poll) is restored.
    pub fn lend<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        struct Return<'a> {
            spare: &'a mut Spare,
            outer: Slot,
        }
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                self.spare.0 = SPARE.replace(self.outer.take());
            }
        }
        let outer = SPARE.replace(self.0.take());
        let _back = Return { spare: self, outer };
        poll()
    }
}

/// A connection's future, polled with its [`Spare`] lent.
pub struct Clocked<C> {
    conn: C,
    spare: Spare,
}

impl<C> Clocked<C> {
    pub fn new(conn: C) -> Clocked<C> {
        Clocked {
            conn,
            spare: Spare::new(),
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
        this.spare.lend(|| Pin::new(conn).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_deadline(spare: &mut Spare) -> Option<tokio::time::Instant> {
        spare.0.as_ref().map(|s| s.deadline())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_within_the_grain_of_the_set_one_leaves_the_sleep_as_it_is() {
        let now = tokio::time::Instant::now();
        let mut sleep = Box::pin(tokio::time::sleep(Duration::ZERO));
        move_to(sleep.as_mut(), now + Duration::from_secs(10));
        let set = sleep.deadline();
        assert_eq!(
            set,
            now + Duration::from_secs(10) + GRAIN,
            "set to the far end"
        );
        move_to(sleep.as_mut(), now + Duration::from_secs(10) + GRAIN / 2);
        assert_eq!(sleep.deadline(), set, "within the grain: left");
        move_to(sleep.as_mut(), now + Duration::from_secs(10) + GRAIN * 2);
        assert!(sleep.deadline() > set, "past it: moved");
        move_to(sleep.as_mut(), now + Duration::from_secs(1));
        assert_eq!(
            sleep.deadline(),
            now + Duration::from_secs(1) + GRAIN,
            "a shorter deadline moves it back: never ends late by more than the grain"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lend_inside_another_gives_the_outer_spare_back() {
        let mut outer = Spare::new();
        let mut inner = Spare::new();
        let marked = tokio::time::Instant::now() + Duration::from_secs(5);
        if let Some(sleep) = outer.0.as_mut() {
            sleep.as_mut().reset(marked);
        }
        outer.lend(|| {
            inner.lend(|| ());
            let lent = take_spare();
            assert_eq!(
                lent.as_ref().map(|s| s.deadline()),
                Some(marked),
                "the outer's"
            );
            give_spare(lent.unwrap());
        });
        assert_eq!(spare_deadline(&mut outer), Some(marked));
        assert!(
            spare_deadline(&mut inner).is_some(),
            "the inner one back too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_unwinds_still_returns_the_spare() {
        let mut spare = Spare::new();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spare.lend(|| panic!("a connection's poll panicked"))
        }));
        assert!(unwound.is_err());
        assert!(spare.0.is_some(), "back with the connection");
        assert!(SPARE.take().is_none(), "nothing left lent on the thread");
    }
}
