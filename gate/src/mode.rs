//! Gate modes and the automatic switch from learning to alerting.

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

/// When learning has seen enough to alert: both a number of requests and a time, so that a
/// burst of one kind of traffic at start-up does not end learning early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoAlert {
    /// Requests learned (by the profile, merged pods included) before switching.
    pub min_requests: u64,
    /// Time in learn mode, counted from the gate's start, before switching.
    pub min_duration: Duration,
}

/// The current mode, switching from learn to alert once `AutoAlert` is met.
#[derive(Clone, Debug)]
pub struct ModeSwitch {
    mode: Mode,
    auto: Option<AutoAlert>,
    started: Instant,
}

impl ModeSwitch {
    /// Starts in `mode` at `now`.
    pub fn new(mode: Mode, auto: Option<AutoAlert>, now: Instant) -> Self {
        ModeSwitch {
            mode,
            auto,
            started: now,
        }
    }

    /// The mode as of `now`, given the requests the profile has learned; switches from learn
    /// to alert (once, never back) when both thresholds are met.
    pub fn current(&mut self, learned: u64, now: Instant) -> Mode {
        if let (Mode::Learn, Some(auto)) = (self.mode, self.auto) {
            if learned >= auto.min_requests
                && now.saturating_duration_since(self.started) >= auto.min_duration
            {
                tracing::info!(learned, "gate: learning done, switching to alert mode");
                self.mode = Mode::Alert;
            }
        }
        self.mode
    }

    /// Sets the mode by hand (the CLI or the shim); an automatic switch no longer applies.
    pub fn set(&mut self, mode: Mode) {
        self.mode = mode;
        self.auto = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_only_when_both_thresholds_are_met() {
        let t0 = Instant::now();
        let auto = AutoAlert {
            min_requests: 100,
            min_duration: Duration::from_secs(60),
        };
        let mut m = ModeSwitch::new(Mode::Learn, Some(auto), t0);
        assert_eq!(
            m.current(500, t0 + Duration::from_secs(10)),
            Mode::Learn,
            "too early"
        );
        assert_eq!(
            m.current(99, t0 + Duration::from_secs(120)),
            Mode::Learn,
            "too few"
        );
        assert_eq!(m.current(100, t0 + Duration::from_secs(60)), Mode::Alert);
        assert_eq!(m.current(0, t0), Mode::Alert, "never switches back");
    }

    #[test]
    fn no_auto_switch_stays_in_learn_and_manual_set_wins() {
        let t0 = Instant::now();
        let mut m = ModeSwitch::new(Mode::Learn, None, t0);
        assert_eq!(
            m.current(u64::MAX, t0 + Duration::from_secs(3600)),
            Mode::Learn
        );
        let auto = AutoAlert {
            min_requests: 1,
            min_duration: Duration::ZERO,
        };
        let mut m = ModeSwitch::new(Mode::Learn, Some(auto), t0);
        m.set(Mode::Learn);
        assert_eq!(
            m.current(10, t0),
            Mode::Learn,
            "manual mode disables the switch"
        );
        m.set(Mode::Block);
        assert_eq!(m.current(10, t0), Mode::Block);
    }
}
