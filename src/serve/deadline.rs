//! A deadline for a request's wait (its upstream's answer), on the serving connection's spare
//! sleep where one is lent ([`super::timer`]).
//!
//! `tokio::time::timeout` makes a new timer for each request: inserted into the runtime's
//! timer wheel when the wait begins and removed again (each under the driver's lock) when the
//! answer comes, a few hundred instructions on every request. An HTTP/1 connection serves one
//! request at a time and lends its poll a spare `Sleep`; a [`Within`] takes that sleep, moves
//! its deadline (a later one is one atomic update, no trip to the wheel), and gives it back
//! when it is done, answered, timed out or dropped (the spare ends at most
//! [`super::timer::GRAIN`] after the deadline). Where none is lent (an HTTP/2 stream, or two
//! deadlines at once) it makes one, as `timeout` would, and leaves it as the spare.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::timer::{give_spare, move_to, take_spare};

/// The wait did not end in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// `fut`, or [`Elapsed`] once `limit` has passed (counted from this call; a limit beyond
/// the clock's range is about thirty years).
pub fn within<F: Future + Unpin>(limit: Duration, fut: F) -> Within<F> {
    let now = Instant::now();
    let deadline = now
        .checked_add(limit)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
    Within {
        fut,
        deadline,
        sleep: None,
    }
}

/// The future of [`within`].
pub struct Within<F> {
    fut: F,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<F> Within<F> {
    fn give_back(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            give_spare(sleep);
        }
    }
}

impl<F: Future + Unpin> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = Pin::new(&mut this.fut).poll(cx) {
            this.give_back();
            return Poll::Ready(Ok(out));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| match take_spare() {
            Some(mut spare) => {
                move_to(spare.as_mut(), deadline);
                spare
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        });
        if sleep.as_mut().poll(cx).is_ready() {
            this.give_back();
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

impl<F> Drop for Within<F> {
    fn drop(&mut self) {
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::super::timer::{Spare, GRAIN};
    use super::*;
    use std::future::{pending, ready, Pending};
    use std::task::Waker;

    type Forever = Within<Pending<()>>;

    fn poll_in(clock: &mut Spare, w: &mut Forever) -> Poll<Result<(), Elapsed>> {
        let mut cx = Context::from_waker(Waker::noop());
        clock.lend(|| Pin::new(w).poll(&mut cx))
    }

    async fn wait(millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    fn has_spare(clock: &mut Spare) -> bool {
        clock.lend(|| match take_spare() {
            Some(sleep) => {
                give_spare(sleep);
                true
            }
            None => false,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_on_the_reused_spare_ends_at_its_own_time_not_the_last_ones() {
        let mut clock = Spare::new();
        let mut first = within(Duration::from_millis(300), pending());
        assert!(poll_in(&mut clock, &mut first).is_pending());
        wait(100).await;
        // Answered, say (hyper drops a finished request's future inside the connection's
        // poll): its sleep, due at 300 ms, is the connection's spare now.
        clock.lend(|| drop(first));
        assert!(has_spare(&mut clock));
        wait(100).await;
        let mut second = within(Duration::from_millis(300), pending());
        assert!(poll_in(&mut clock, &mut second).is_pending());
        wait(299).await; // past the first deadline (300 ms), not the second (500 ms)
        assert!(poll_in(&mut clock, &mut second).is_pending());
        wait(GRAIN.as_millis() as u64 + 1).await;
        assert_eq!(poll_in(&mut clock, &mut second), Poll::Ready(Err(Elapsed)));
        assert!(has_spare(&mut clock), "given back when it fired");
    }

    #[tokio::test(start_paused = true)]
    async fn two_deadlines_at_once_keep_their_own() {
        let mut clock = Spare::new();
        let mut short = within(Duration::from_millis(100), pending());
        let mut long = within(Duration::from_millis(300), pending());
        assert!(poll_in(&mut clock, &mut long).is_pending());
        assert!(poll_in(&mut clock, &mut short).is_pending());
        wait(100).await;
        assert_eq!(poll_in(&mut clock, &mut short), Poll::Ready(Err(Elapsed)));
        assert!(poll_in(&mut clock, &mut long).is_pending());
        wait(199).await;
        assert!(poll_in(&mut clock, &mut long).is_pending());
        wait(GRAIN.as_millis() as u64 + 1).await;
        assert_eq!(poll_in(&mut clock, &mut long), Poll::Ready(Err(Elapsed)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_returned_and_works_without_a_lent_spare() {
        assert_eq!(within(Duration::from_secs(1), ready(7)).await, Ok(7));
        let slow = Box::pin(async {
            wait(2_000).await;
            7
        });
        assert_eq!(within(Duration::from_secs(1), slow).await, Err(Elapsed));
        let huge = within(Duration::MAX, ready(1));
        assert_eq!(huge.await, Ok(1), "a limit beyond the clock's range");
    }
}
