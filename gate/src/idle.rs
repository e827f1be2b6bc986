//! The deadline a client connection has to send its next request head (slowloris), kept with
//! one timer per connection that is re-armed from timestamps, not one timer per request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// What a client connection is doing: how many of its requests are being answered (from the
/// request head until the response body is written) and since when it has been idle.
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Microseconds from `started` to the end of the last answer.
    idle_since_us: AtomicU64,
}

/// One request being answered; dropped with the response body once it is written (or when the
/// request is abandoned), which makes the connection idle again.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    /// A connection accepted now: idle, waiting for its first request head.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_us: AtomicU64::new(0),
        })
    }

    /// Marks a request head received.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection must have sent a request head, counting from the end of its last
    /// answer; `None` while a request is being answered (reading a request body or writing a
    /// response is not waiting for a head).
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle_since = Duration::from_micros(self.idle_since_us.load(Ordering::Relaxed));
        Some(self.started + idle_since + timeout)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let now = a.started.elapsed().as_micros() as u64;
        a.idle_since_us.store(now, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `conn` until it ends (`Some` of its output), or until it has been idle without a
/// complete request head for `timeout` (`None`; `conn` is dropped, which closes it). The timer
/// fires at most once per `timeout` while requests flow, and is then re-armed from `activity`.
///
/// The timer is polled once after each arming, which registers this task to be woken when it
/// fires; until then, the many wake-ups of the connection only look whether it has fired,
/// instead of polling it again each time (the connection runs in one task, whose waker the
/// timer keeps).
pub(crate) async fn within_idle_timeout<F: Future>(
    conn: F,
    activity: &Activity,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(conn);
    let timer = tokio::time::sleep(timeout);
    tokio::pin!(timer);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while !armed || timer.is_elapsed() {
            // A poll refused for want of the task's budget registers nothing (and wakes the
            // task to poll again): the timer counts as armed only after a poll with budget.
            let registers = tokio::task::coop::has_budget_remaining();
            if timer.as_mut().poll(cx).is_pending() {
                armed = registers;
                break;
            }
            let now = Instant::now();
            match activity.deadline(timeout) {
                // Busy: look again one timeout from now, which is before any deadline
                // that can follow from the answer ending later.
                None => timer.as_mut().reset(now + timeout),
                Some(deadline) if deadline > now => timer.as_mut().reset(deadline),
                Some(_) => return Poll::Ready(None),
            }
            armed = false;
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end_and_busy_ones_do_not() {
        let timeout = Duration::from_secs(10);
        let activity = Activity::new();
        // Idle from the start: ends one timeout after accept.
        let t0 = Instant::now();
        let out = within_idle_timeout(std::future::pending::<()>(), &activity, timeout).await;
        assert_eq!(out, None);
        assert_eq!(t0.elapsed(), timeout);

        // A request answered for 25 s (longer than the timeout), then idle: ends one timeout
        // after the answer, not before.
        let activity = Activity::new();
        let busy = activity.begin();
        let t0 = Instant::now();
        let answer = async move {
            tokio::time::sleep(Duration::from_secs(25)).await;
            drop(busy);
            std::future::pending::<()>().await
        };
        let out = within_idle_timeout(answer, &activity, timeout).await;
        assert_eq!(out, None);
        assert_eq!(t0.elapsed(), Duration::from_secs(35));

        // A connection that finishes on its own returns what it returned.
        let activity = Activity::new();
        let out = within_idle_timeout(async { 7 }, &activity, timeout).await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_is_armed_when_the_connection_spends_the_task_budget() {
        let timeout = Duration::from_secs(10);
        let activity = Activity::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        // Receives until the task's budget is spent (the first polls) or nothing is left.
        let conn = std::future::poll_fn(move |cx| {
            while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
            Poll::<()>::Pending
        });
        let t0 = Instant::now();
        let out =
            tokio::time::timeout(3 * timeout, within_idle_timeout(conn, &activity, timeout)).await;
        assert_eq!(out, Ok(None), "the idle timeout must fire");
        assert_eq!(t0.elapsed(), timeout);
        drop(tx);
    }
}
