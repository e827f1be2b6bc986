//! The deadline a client connection has to send its next request head (slowloris), kept with
//! one timer per connection that is re-armed from timestamps, not one timer per request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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
pub(crate) async fn within_idle_timeout<F: Future>(
    conn: F,
    activity: &Activity,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(conn);
    let timer = tokio::time::sleep(timeout);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            out = &mut conn => return Some(out),
            () = &mut timer => {
                let now = Instant::now();
                match activity.deadline(timeout) {
                    // Busy: look again one timeout from now, which is before any deadline
                    // that can follow from the answer ending later.
                    None => timer.as_mut().reset(now + timeout),
                    Some(deadline) if deadline > now => timer.as_mut().reset(deadline),
                    Some(_) => return None,
                }
            }
        }
    }
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
}
