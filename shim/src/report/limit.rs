//! De-duplication and per-container rate limiting in front of the sinks, with the clock passed in
//! so that windows and buckets are tested without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use palisade_events::{Event, Workload};

/// Distinct events held for folding at once; past this, new keys pass without de-duplication
/// so that a flood of distinct events cannot grow the shim's memory.
const MAX_PENDING: usize = 16_384;

/// An event seen in the current window and how many identical ones came after it.
#[derive(Debug)]
struct Pending {
    last: Event,
    since: Instant,
    folded: u64,
}

/// A token bucket per container: `rate` tokens a second, bursts of `rate`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Folds identical events within a window and caps each container's events per second.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    rate: u32,
    pending: HashMap<String, Pending>,
    buckets: HashMap<String, Bucket>,
    dropped: BTreeMap<String, Dropped>,
}

/// What the rate limit dropped for one container since it was last asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub node: String,
    pub workload: Workload,
    pub count: u64,
}

fn container_key(w: &Workload) -> String {
    format!("{}/{}/{}", w.namespace, w.pod, w.container)
}

impl Limiter {
    /// `window` zero turns de-duplication off; `rate` zero turns rate limiting off.
    pub fn new(window: Duration, rate: u32) -> Self {
        Limiter {
            window,
            rate,
            pending: HashMap::new(),
            buckets: HashMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// Takes one event: the first of a kind in a window goes out at once (if its container
    /// has budget), the identical ones after it are folded until the window closes.
    pub fn offer(&mut self, event: Event, now: Instant, out: &mut Vec<Event>) {
        if self.window.is_zero() {
            self.admit(event, now, out);
            return;
        }
        let key = event.dedup_key();
        if let Some(p) = self.pending.get_mut(&key) {
            if now.duration_since(p.since) < self.window {
                p.folded += event.count.max(1);
                p.last = event;
                return;
            }
            // The window passed without a tick: close it before opening a new one.
            if let Some(p) = self.pending.remove(&key) {
                self.close(p, now, out);
            }
        }
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(
                key,
                Pending {
                    last: event.clone(),
                    since: now,
                    folded: 0,
                },
            );
        }
        self.admit(event, now, out);
    }

    /// Closes the windows that have passed: each folded run goes out as one event with its count.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Event>) {
        let window = self.window;
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(p) = self.pending.remove(&key) {
                self.close(p, now, out);
            }
        }
        self.buckets
            .retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
    }

    /// Closes every window now (the shim is going away).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Event>) {
        let all: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in all {
            self.close(p, now, out);
        }
    }

    /// What the rate limit dropped since the last call, per container.
    pub fn take_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.dropped).into_values().collect()
    }

    fn close(&mut self, p: Pending, now: Instant, out: &mut Vec<Event>) {
        if p.folded == 0 {
            return;
        }
        let mut e = p.last;
        e.count = p.folded;
        self.admit(e, now, out);
    }

    fn admit(&mut self, event: Event, now: Instant, out: &mut Vec<Event>) {
        if self.rate == 0 {
            out.push(event);
            return;
        }
        let rate = f64::from(self.rate);
        let bucket = self
            .buckets
            .entry(container_key(&event.workload))
            .or_insert(Bucket {
                tokens: rate,
                at: now,
            });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            out.push(event);
        } else {
            let n = event.count.max(1);
            self.dropped
                .entry(container_key(&event.workload))
                .or_insert_with(|| Dropped {
                    node: event.node.clone(),
                    workload: event.workload.clone(),
                    count: 0,
                })
                .count += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_events::{Action, Rule, Severity, Source};

    fn event(container: &str, rule: &str) -> Event {
        Event::new(
            "node",
            Source::Monitor,
            Workload {
                namespace: "ns".into(),
                pod: "p".into(),
                container: container.into(),
                ..Default::default()
            },
            Rule {
                name: rule.into(),
                severity: Severity::clamped(5),
                tags: vec![],
                message: String::new(),
            },
            Action::Audit,
            "test",
        )
    }

    #[test]
    fn identical_events_fold_into_one_with_the_count() {
        let mut l = Limiter::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..10_000u64 {
            l.offer(event("c", "r"), t0 + Duration::from_micros(i), &mut out);
        }
        assert_eq!(out.len(), 1, "the first goes out at once");
        l.tick(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 1, "window still open");
        l.tick(t0 + Duration::from_secs(11), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(|e| e.count).sum::<u64>(), 10_000);
        assert!(l.take_dropped().is_empty());
    }

    #[test]
    fn rate_limit_is_per_container_and_counts_drops() {
        let mut l = Limiter::new(Duration::ZERO, 10);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..50 {
            l.offer(event("a", &format!("r{i}")), t0, &mut out);
            l.offer(event("b", &format!("r{i}")), t0, &mut out);
        }
        assert_eq!(out.len(), 20);
        let dropped = l.take_dropped();
        assert_eq!(dropped.len(), 2);
        assert!(dropped.iter().all(|d| d.count == 40), "{dropped:?}");
        out.clear();
        l.offer(event("a", "later"), t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1, "the bucket refills");
    }

    #[test]
    fn flush_closes_open_windows() {
        let mut l = Limiter::new(Duration::from_secs(10), 0);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for _ in 0..3 {
            l.offer(event("c", "r"), t0, &mut out);
        }
        l.offer(event("c", "other"), t0, &mut out);
        l.flush(t0, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().map(|e| e.count).sum::<u64>(), 4);
    }
}
