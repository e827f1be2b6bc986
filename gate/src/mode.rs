//! Stages of a gate (learn, alert, block) and the rule that promotes a service from one to the
//! next; an operator can hold a service at any stage instead.
//!
//! Promotion rule:
//! - learn → alert once the profile has learned `AutoAlert::min_requests` requests (merged pods
//!   included), the gate has been in learn for `AutoAlert::min_duration`, and the fields are
//!   varied enough: at most `Promotion::thin_share` of the fields learned (query keys, headers,
//!   form fields, JSON leaves, path parameters) have fewer than `Promotion::field_values`
//!   values;
//! - alert → block once the gate has been in alert for `Promotion::quiet` with no alert at all
//!   in that window (each alert restarts it: an alert nobody explained keeps the service in
//!   alert), and at least `Promotion::quiet_requests` requests were decided in it;
//! - never back on its own; `Gate::set_mode` holds a service at a stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the gate does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Learn every request and response; decide nothing.
    Learn,
    /// Decide, report requests that break the rules, forward them anyway.
    Alert,
    /// Decide, refuse requests that break the rules with 403 and a request id.
    Block,
}

impl Mode {
    /// `learn`, `alert`, `block`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Alert => "alert",
            Mode::Block => "block",
        }
    }
}

/// When learning has seen enough to alert: both a number of requests and a time, so that a
/// burst of one kind of traffic at start-up does not end learning early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoAlert {
    /// Requests learned (by the profile, merged pods included) before switching.
    pub min_requests: u64,
    /// Time in learn mode, counted from the gate's start, before switching.
    pub min_duration: Duration,
}

/// The rest of the promotion rule: variety before alerting, a quiet window before blocking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Promotion {
    /// Values a field must have learned to count as varied enough.
    pub field_values: u32,
    /// Share of fields (0..=1) allowed to have fewer values: rare optional fields.
    pub thin_share: f64,
    /// Time in alert with no alert before blocking; `None` never promotes to block.
    pub quiet: Option<Duration>,
    /// Requests decided in that window before blocking.
    pub quiet_requests: u64,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            field_values: 20,
            thin_share: 0.1,
            quiet: Some(Duration::from_secs(3600)),
            quiet_requests: 1000,
        }
    }
}

/// Fields of a profile and how many of them learned fewer values than asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variety {
    pub fields: usize,
    pub thin: usize,
}

/// The stage of one gate and what moves it on.
#[derive(Debug)]
pub struct Stages {
    mode: Mode,
    auto: Option<AutoAlert>,
    promotion: Promotion,
    since: Instant,
    started: Instant,
    /// Milliseconds from `started` to the start of the quiet window (the last alert).
    quiet_from_ms: AtomicU64,
    /// Requests decided since then.
    quiet_decided: AtomicU64,
    /// Learned-request count at which learn → alert is looked at again.
    next_look: u64,
}

impl Stages {
    /// Starts in `mode` at `now`; with `auto` it is promoted by the rule, without it held.
    pub fn new(mode: Mode, auto: Option<AutoAlert>, promotion: Promotion, now: Instant) -> Self {
        Stages {
            mode,
            auto,
            promotion,
            since: now,
            started: now,
            quiet_from_ms: AtomicU64::new(0),
            quiet_decided: AtomicU64::new(0),
            next_look: 0,
        }
    }

    /// The stage now. When the rule promotes the service, returns the new stage with the
    /// reason (one line) for the event that reports it. `variety` is asked only when the
    /// other conditions of learn → alert hold, and then at most every 256 requests.
    pub fn current(
        &mut self,
        learned: u64,
        variety: impl FnOnce(u32) -> Variety,
        now: Instant,
    ) -> (Mode, Option<String>) {
        let Some(auto) = self.auto else {
            return (self.mode, None);
        };
        let in_stage = now.saturating_duration_since(self.since);
        match self.mode {
            Mode::Learn
                if learned >= auto.min_requests
                    && learned >= self.next_look
                    && in_stage >= auto.min_duration =>
            {
                self.next_look = learned + 256;
                let v = variety(self.promotion.field_values);
                if (v.thin as f64) > self.promotion.thin_share * v.fields as f64 {
                    return (self.mode, None);
                }
                let why = format!(
                    "stage: learn -> alert: {learned} requests learned in {}s; {} of {} fields with {} or more values",
                    in_stage.as_secs(),
                    v.fields - v.thin,
                    v.fields,
                    self.promotion.field_values
                );
                self.enter(Mode::Alert, now);
                (Mode::Alert, Some(why))
            }
            Mode::Alert => {
                let Some(quiet) = self.promotion.quiet else {
                    return (self.mode, None);
                };
                let from = self.started
                    + Duration::from_millis(self.quiet_from_ms.load(Ordering::Relaxed));
                let quiet_for = now.saturating_duration_since(from.max(self.since));
                let decided = self.quiet_decided.load(Ordering::Relaxed);
                if quiet_for >= quiet && decided >= self.promotion.quiet_requests {
                    let why = format!(
                        "stage: alert -> block: no alert for {}s over {decided} requests decided",
                        quiet_for.as_secs()
                    );
                    self.enter(Mode::Block, now);
                    return (Mode::Block, Some(why));
                }
                (self.mode, None)
            }
            _ => (self.mode, None),
        }
    }

    /// Counts a request decided in alert; an alert restarts the quiet window.
    pub fn decided(&self, alerted: bool, now: Instant) {
        if alerted {
            let ms = now.saturating_duration_since(self.started).as_millis() as u64;
            self.quiet_from_ms.store(ms, Ordering::Relaxed);
            self.quiet_decided.store(0, Ordering::Relaxed);
        } else {
            self.quiet_decided.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&mut self, mode: Mode, now: Instant) {
        tracing::info!(mode = mode.name(), "gate: stage promoted");
        self.mode = mode;
        self.since = now;
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.quiet_from_ms.store(ms, Ordering::Relaxed);
        self.quiet_decided.store(0, Ordering::Relaxed);
    }

    /// Holds the service at `mode` (the operator); the rule no longer applies.
    pub fn set(&mut self, mode: Mode, now: Instant) {
        self.auto = None;
        self.mode = mode;
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: AutoAlert = AutoAlert {
        min_requests: 100,
        min_duration: Duration::from_secs(60),
    };

    fn varied(_: u32) -> Variety {
        Variety {
            fields: 10,
            thin: 1,
        }
    }

    #[test]
    fn learn_to_alert_needs_requests_time_and_variety() {
        let t0 = Instant::now();
        let mut s = Stages::new(Mode::Learn, Some(AUTO), Promotion::default(), t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(s.current(500, varied, at(10)).0, Mode::Learn, "too early");
        assert_eq!(s.current(99, varied, at(120)).0, Mode::Learn, "too few");
        let thin = |_| Variety {
            fields: 10,
            thin: 5,
        };
        assert_eq!(
            s.current(100, thin, at(120)).0,
            Mode::Learn,
            "fields too thin"
        );
        assert_eq!(
            s.current(200, varied, at(120)).0,
            Mode::Learn,
            "looked again only 256 later"
        );
        let (mode, why) = s.current(400, varied, at(121));
        assert_eq!(mode, Mode::Alert);
        assert_eq!(
            why.unwrap(),
            "stage: learn -> alert: 400 requests learned in 121s; 9 of 10 fields with 20 or more values"
        );
        assert_eq!(s.current(0, varied, at(122)).0, Mode::Alert, "never back");
    }

    #[test]
    fn alert_to_block_needs_a_quiet_window() {
        let t0 = Instant::now();
        let promotion = Promotion {
            quiet: Some(Duration::from_secs(100)),
            quiet_requests: 3,
            ..Promotion::default()
        };
        let mut s = Stages::new(Mode::Alert, Some(AUTO), promotion, t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        for _ in 0..5 {
            s.decided(false, at(10));
        }
        s.decided(true, at(50));
        s.decided(false, at(60));
        assert_eq!(
            s.current(0, varied, at(120)).0,
            Mode::Alert,
            "alert at 50 restarted the window"
        );
        s.decided(false, at(130));
        s.decided(false, at(140));
        let (mode, why) = s.current(0, varied, at(151));
        assert_eq!(mode, Mode::Block);
        assert_eq!(
            why.unwrap(),
            "stage: alert -> block: no alert for 101s over 3 requests decided"
        );
    }

    #[test]
    fn a_held_stage_never_moves() {
        let t0 = Instant::now();
        let mut s = Stages::new(Mode::Learn, Some(AUTO), Promotion::default(), t0);
        s.set(Mode::Alert, t0);
        let late = t0 + Duration::from_secs(1 << 20);
        assert_eq!(s.current(u64::MAX, varied, late).0, Mode::Alert);
        let mut s = Stages::new(Mode::Learn, None, Promotion::default(), t0);
        assert_eq!(s.current(u64::MAX, varied, late).0, Mode::Learn);
        let never = Promotion {
            quiet: None,
            ..Promotion::default()
        };
        let mut s = Stages::new(Mode::Alert, Some(AUTO), never, t0);
        assert_eq!(s.current(u64::MAX, varied, late).0, Mode::Alert);
    }
}
