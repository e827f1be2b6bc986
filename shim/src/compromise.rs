//! Compromise decisions: which evidence marks a container compromised, and how the restarts
//! of a compromised container are held back (a backoff, then a terminal quarantine).
//!
//! The judge is pure: it takes events and gate indicators with the time they were seen and
//! returns a verdict; the service carries the verdict out (kill, exit code, reports).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use palisade_events::{Event, Source};
use serde::{Deserialize, Serialize};

/// The exit status a container killed as compromised reports, instead of 137 (SIGKILL).
pub const COMPROMISED_EXIT_CODE: u32 = 173;
/// The pod annotation that overrides the configuration's compromise policy for its containers.
pub use palisade_config::COMPROMISE_ANNOTATION as ANNOTATION;
/// Evidence kept per container: the events that led to the verdict, newest last.
const EVIDENCE_KEPT: usize = 16;

pub use palisade_config::{CompromiseError, CompromiseSettings};

/// One piece of evidence: a violation, summarised for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub time: String,
    pub source: Source,
    pub rule: String,
    pub severity: u8,
    pub action: palisade_events::Action,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

impl Evidence {
    fn of(e: &Event) -> Self {
        Evidence {
            time: e.time.clone(),
            source: e.source,
            rule: e.rule.name.clone(),
            severity: e.rule.severity.level(),
            action: e.action,
            message: e.rule.message.clone(),
            process: e.process.as_ref().map(|p| p.binary.clone()),
        }
    }
}

/// Why a container was judged compromised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// One line naming the decisive evidence (`rule namespace-change is decisive`).
    pub reason: String,
    /// The events that led to it, oldest first.
    pub evidence: Vec<Evidence>,
}

/// Whether an event is a violation that counts as evidence (runtime notices and the compromise
/// policy's own events do not).
pub fn is_violation(e: &Event) -> bool {
    matches!(e.source, Source::Sandbox | Source::Monitor | Source::Gate)
}

/// The evidence gathered about one running container.
#[derive(Debug)]
pub struct Tracker {
    settings: CompromiseSettings,
    /// Counted violations within the window.
    counted: VecDeque<Instant>,
    /// Gate indicators within the window: (when, violations, new peers).
    gate: VecDeque<(Instant, u64, u64)>,
    evidence: VecDeque<Evidence>,
    judged: bool,
}

impl Tracker {
    pub fn new(settings: CompromiseSettings) -> Self {
        Tracker {
            settings,
            counted: VecDeque::new(),
            gate: VecDeque::new(),
            evidence: VecDeque::new(),
            judged: false,
        }
    }

    /// Takes a violation of this container into account; a verdict at most once.
    pub fn observe(&mut self, e: &Event, now: Instant) -> Option<Verdict> {
        if !self.settings.enabled || self.judged || !is_violation(e) {
            return None;
        }
        self.keep(Evidence::of(e));
        let s = &self.settings;
        let severity = e.rule.severity.level();
        let reason = if s.rules.contains(&e.rule.name) {
            Some(format!("rule {} is decisive", e.rule.name))
        } else if s.severity > 0 && severity >= s.severity {
            Some(format!(
                "rule {} has severity {severity}, decisive from {}",
                e.rule.name, s.severity
            ))
        } else if s.violations > 0 && severity >= s.count_severity {
            let window = s.window();
            for _ in 0..e.count.max(1) {
                self.counted.push_back(now);
            }
            while self
                .counted
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                self.counted.pop_front();
            }
            (self.counted.len() >= s.violations as usize).then(|| {
                format!(
                    "{} violations of severity {} or more within {}s (threshold {})",
                    self.counted.len(),
                    s.count_severity,
                    s.window_secs,
                    s.violations
                )
            })
        } else {
            None
        };
        reason.map(|r| self.verdict(r))
    }

    /// Takes the pod gate's indicators since the last poll into account.
    pub fn observe_gate(
        &mut self,
        violations: u64,
        new_peers: u64,
        now: Instant,
    ) -> Option<Verdict> {
        let s = &self.settings;
        if !s.enabled || self.judged || (s.gate_violations == 0 && s.gate_new_peers == 0) {
            return None;
        }
        if violations == 0 && new_peers == 0 {
            return None;
        }
        let window = s.window();
        self.gate.push_back((now, violations, new_peers));
        while self
            .gate
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > window)
        {
            self.gate.pop_front();
        }
        let v: u64 = self.gate.iter().map(|g| g.1).sum();
        let p: u64 = self.gate.iter().map(|g| g.2).sum();
        let reason = if s.gate_violations > 0 && v >= s.gate_violations {
            Some(format!(
                "gate: {v} requests broke the learned rules within {}s (threshold {})",
                s.window_secs, s.gate_violations
            ))
        } else if s.gate_new_peers > 0 && p >= s.gate_new_peers {
            Some(format!(
                "gate: {p} clients never seen while learning within {}s (threshold {})",
                s.window_secs, s.gate_new_peers
            ))
        } else {
            None
        };
        reason.map(|r| self.verdict(r))
    }

    fn keep(&mut self, e: Evidence) {
        if self.evidence.len() == EVIDENCE_KEPT {
            self.evidence.pop_front();
        }
        self.evidence.push_back(e);
    }

    fn verdict(&mut self, reason: String) -> Verdict {
        self.judged = true;
        Verdict {
            reason,
            evidence: self.evidence.iter().cloned().collect(),
        }
    }
}

/// Whether a container may start, given what happened to its predecessors in this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Never compromised in this pod.
    Fresh,
    /// A restart after `count` compromises; the last verdict is the evidence.
    Restart { count: u32, previous: Verdict },
    /// Too soon after the last kill: not before `wait` has passed.
    BackingOff {
        count: u32,
        wait: Duration,
        previous: Verdict,
    },
    /// Compromised more often than `max_restarts` allows: never started again in this pod.
    Quarantined { count: u32, previous: Verdict },
}

#[derive(Debug, Clone)]
struct Record {
    count: u32,
    last_kill: Instant,
    last: Verdict,
}

/// The compromises of one pod's containers, by container name; lives as long as the pod's shim.
#[derive(Debug, Default)]
pub struct History {
    by_name: HashMap<String, Record>,
}

impl History {
    /// Notes that container `name` was killed as compromised at `now`.
    pub fn killed(&mut self, name: &str, verdict: &Verdict, now: Instant) -> u32 {
        let r = self.by_name.entry(name.to_string()).or_insert(Record {
            count: 0,
            last_kill: now,
            last: verdict.clone(),
        });
        r.count += 1;
        r.last_kill = now;
        r.last = verdict.clone();
        r.count
    }

    /// Whether container `name` may start now under `settings`.
    pub fn admit(&self, name: &str, settings: &CompromiseSettings, now: Instant) -> Admission {
        let Some(r) = self.by_name.get(name) else {
            return Admission::Fresh;
        };
        let previous = r.last.clone();
        if r.count > settings.max_restarts {
            return Admission::Quarantined {
                count: r.count,
                previous,
            };
        }
        let hold = settings.backoff(r.count);
        let since = now.duration_since(r.last_kill);
        if since < hold {
            return Admission::BackingOff {
                count: r.count,
                wait: hold - since,
                previous,
            };
        }
        Admission::Restart {
            count: r.count,
            previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_events::{Action, Rule, Severity, Workload};

    fn event(rule: &str, severity: u8, source: Source) -> Event {
        let mut e = Event::new(
            "node",
            source,
            Workload::default(),
            Rule {
                name: rule.into(),
                severity: Severity::clamped(severity),
                tags: vec![],
                message: format!("{rule} happened"),
            },
            Action::Audit,
            "test",
        );
        e.count = 1;
        e
    }

    #[test]
    fn a_decisive_rule_or_severity_decides_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(CompromiseSettings::default());
        assert_eq!(
            t.observe(&event("shell-in-container", 7, Source::Monitor), t0),
            None
        );
        let v = t
            .observe(&event("kernel-module-load", 9, Source::Monitor), t0)
            .expect("decisive severity");
        assert_eq!(
            v.reason,
            "rule kernel-module-load has severity 9, decisive from 9"
        );
        assert_eq!(
            v.evidence
                .iter()
                .map(|e| e.rule.as_str())
                .collect::<Vec<_>>(),
            ["shell-in-container", "kernel-module-load"]
        );
        assert_eq!(
            t.observe(&event("kernel-module-load", 9, Source::Monitor), t0),
            None,
            "one verdict per container"
        );

        let mut t = Tracker::new(CompromiseSettings::default());
        let v = t
            .observe(&event("my-policy-rule", 10, Source::Monitor), t0)
            .expect("severity 10 is decisive from 9");
        assert!(v.reason.contains("severity 10"), "{}", v.reason);
    }

    #[test]
    fn counted_violations_decide_within_the_window_only() {
        let t0 = Instant::now();
        let s = CompromiseSettings {
            severity: 0,
            rules: vec![],
            violations: 3,
            count_severity: 5,
            window_secs: 10,
            ..CompromiseSettings::default()
        };
        let mut t = Tracker::new(s);
        let e = event("namespace-change", 8, Source::Monitor);
        assert_eq!(t.observe(&e, t0), None);
        assert_eq!(t.observe(&e, t0 + Duration::from_secs(5)), None);
        // At 12 s the first one has left the window, and these do not count.
        let t12 = t0 + Duration::from_secs(12);
        for (e, why) in [
            (e.clone(), "the first one has left the window"),
            (event("low", 2, Source::Monitor), "below count_severity"),
            (
                event("hardening-relaxed", 9, Source::Runtime),
                "runtime notices are not violations",
            ),
        ] {
            assert_eq!(t.observe(&e, t12), None, "{why}");
        }
        let v = t
            .observe(&e, t0 + Duration::from_secs(13))
            .expect("three within 10 s");
        assert!(v.reason.starts_with("3 violations"), "{}", v.reason);
    }

    #[test]
    fn gate_indicators_decide_when_configured() {
        let t0 = Instant::now();
        let mut off = Tracker::new(CompromiseSettings::default());
        assert_eq!(off.observe_gate(1000, 1000, t0), None);
        let s = CompromiseSettings {
            gate_violations: 10,
            window_secs: 30,
            ..CompromiseSettings::default()
        };
        let mut t = Tracker::new(s);
        assert_eq!(t.observe_gate(6, 0, t0), None);
        assert_eq!(t.observe_gate(3, 0, t0 + Duration::from_secs(40)), None);
        let v = t
            .observe_gate(7, 0, t0 + Duration::from_secs(41))
            .expect("10 within the window");
        assert!(v.reason.starts_with("gate: 10 requests"), "{}", v.reason);
    }

    #[test]
    fn disabled_policy_never_decides() {
        let s = CompromiseSettings::default()
            .with_annotation("off")
            .unwrap();
        let mut t = Tracker::new(s);
        assert_eq!(
            t.observe(
                &event("kernel-module-load", 10, Source::Monitor),
                Instant::now()
            ),
            None
        );
    }

    #[test]
    fn restarts_back_off_then_quarantine() {
        let s = CompromiseSettings::default()
            .with_annotation("backoff=10s, max-restarts=2")
            .unwrap();
        let v = Verdict {
            reason: "rule x is decisive".into(),
            evidence: vec![],
        };
        let t0 = Instant::now();
        let mut h = History::default();
        assert_eq!(h.admit("web", &s, t0), Admission::Fresh);
        assert_eq!(h.killed("web", &v, t0), 1);
        match h.admit("web", &s, t0 + Duration::from_secs(4)) {
            Admission::BackingOff { count: 1, wait, .. } => {
                assert_eq!(wait, Duration::from_secs(6))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.admit("web", &s, t0 + Duration::from_secs(10)),
            Admission::Restart { count: 1, .. }
        ));
        assert_eq!(h.admit("other", &s, t0), Admission::Fresh);
        // Second compromise: the backoff doubles.
        let t1 = t0 + Duration::from_secs(11);
        h.killed("web", &v, t1);
        assert!(matches!(
            h.admit("web", &s, t1 + Duration::from_secs(19)),
            Admission::BackingOff { count: 2, .. }
        ));
        assert!(matches!(
            h.admit("web", &s, t1 + Duration::from_secs(20)),
            Admission::Restart { count: 2, .. }
        ));
        h.killed("web", &v, t1 + Duration::from_secs(21));
        assert!(matches!(
            h.admit("web", &s, t1 + Duration::from_secs(1000)),
            Admission::Quarantined { count: 3, .. }
        ));
        assert_eq!(s.backoff(30), Duration::from_secs(300), "capped");
    }
}
