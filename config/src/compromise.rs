//! The `[compromise]` table and the pod annotation that overrides it.

use crate::annotation::applied;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The pod annotation that overrides the configuration's compromise policy for its containers.
pub const COMPROMISE_ANNOTATION: &str = "palisade.dev/compromise";
/// The longest a restart is held back, however often the container was compromised.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The `[compromise]` table: what marks a container compromised and how restarts are limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompromiseSettings {
    /// Judge containers at all; when false every violation is only reported.
    pub enabled: bool,
    /// Rules that are decisive on their own (monitor detections, policy rule names, gate rules).
    pub rules: Vec<String>,
    /// A violation of at least this severity (1-10) is decisive on its own; 0 turns it off.
    pub severity: u8,
    /// This many violations of at least `count_severity` within `window_secs`; 0 turns it off.
    pub violations: u32,
    /// The least severity a violation needs to be counted towards `violations`.
    pub count_severity: u8,
    /// The window of `violations` and of the gate thresholds.
    pub window_secs: u64,
    /// Requests refused or alerted by the pod's gate within the window; 0 turns it off.
    pub gate_violations: u64,
    /// Clients the gate never saw while learning, within the window; 0 turns it off.
    pub gate_new_peers: u64,
    /// A compromised container may start again this long after its kill, doubled each time.
    pub backoff_secs: u64,
    /// Restarts after a compromise before the container is quarantined (never started again
    /// in this pod).
    pub max_restarts: u32,
}

impl Default for CompromiseSettings {
    fn default() -> Self {
        CompromiseSettings {
            enabled: true,
            // No rule is decisive by name: a successful module load (severity 9) is decisive
            // by its severity, and a refused attempt (severity 7) is only reported.
            rules: Vec::new(),
            severity: 9,
            violations: 3,
            count_severity: 8,
            window_secs: 60,
            gate_violations: 0,
            gate_new_peers: 0,
            backoff_secs: 10,
            max_restarts: 3,
        }
    }
}

/// A compromise policy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompromiseError {
    #[error("{field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("pod annotation {COMPROMISE_ANNOTATION}: {0}")]
    Annotation(String),
}

impl CompromiseSettings {
    /// Checks the values a typo would turn into a policy that never or always fires.
    pub fn validate(&self) -> Result<(), CompromiseError> {
        let bad = |field: &'static str, reason: &str| {
            Err(CompromiseError::Setting {
                field,
                reason: reason.into(),
            })
        };
        if self.severity > 10 {
            return bad("compromise.severity", "must be 0 (off) or between 1 and 10");
        }
        if self.count_severity > 10 {
            return bad("compromise.count_severity", "must be between 0 and 10");
        }
        if self.window_secs == 0 {
            return bad("compromise.window_secs", "must be at least 1");
        }
        if self.rules.iter().any(|r| r.trim().is_empty()) {
            return bad("compromise.rules", "rule names must not be empty");
        }
        Ok(())
    }

    /// These settings with a pod's annotation applied: `off`, or comma-separated `key=value`
    /// pairs: `rules=a|b`, `severity=N`, `violations=N/SECONDSs`, `count-severity=N`,
    /// `gate-violations=N`, `gate-new-peers=N`, `backoff=SECONDSs`, `max-restarts=N`.
    pub fn with_annotation(&self, value: &str) -> Result<Self, CompromiseError> {
        applied(self, value, |s| &mut s.enabled, Self::set, Self::validate)
            .map_err(CompromiseError::Annotation)
    }

    /// One `key=value` pair of the annotation applied.
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{key}: {v:?} is not a whole number"))
        };
        let seconds = |v: &str| -> Result<u64, String> {
            let digits = v.strip_suffix('s').unwrap_or(v);
            number(digits)
        };
        let level = |v: &str| -> Result<u8, String> {
            match number(v)? {
                n @ 0..=10 => Ok(n as u8),
                _ => Err(format!("{key}: {v} is not between 0 and 10")),
            }
        };
        match key {
            "rules" => {
                self.rules = v
                    .split('|')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(String::from)
                    .collect()
            }
            "severity" => self.severity = level(v)?,
            "count-severity" => self.count_severity = level(v)?,
            "violations" => {
                let (n, window) = match v.split_once('/') {
                    Some((n, w)) => (n, Some(w)),
                    None => (v, None),
                };
                self.violations = u32::try_from(number(n)?)
                    .map_err(|_| format!("violations: {n} is too large"))?;
                if let Some(w) = window {
                    self.window_secs = seconds(w)?;
                }
            }
            "gate-violations" => self.gate_violations = number(v)?,
            "gate-new-peers" => self.gate_new_peers = number(v)?,
            "backoff" => self.backoff_secs = seconds(v)?,
            "max-restarts" => {
                self.max_restarts = u32::try_from(number(v)?)
                    .map_err(|_| format!("max-restarts: {v} is too large"))?
            }
            other => {
                return Err(format!(
                    "unknown key {other:?}: expected rules, severity, violations, count-severity, gate-violations, gate-new-peers, backoff or max-restarts"
                ))
            }
        }
        Ok(())
    }

    /// The window of `violations` and of the gate thresholds.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    /// How long the `n`th restart (1-based) after a compromise is held back.
    pub fn backoff(&self, n: u32) -> Duration {
        let base = Duration::from_secs(self.backoff_secs);
        let factor = 1u32 << n.saturating_sub(1).min(16);
        base.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_overrides_and_rejects_with_reasons() {
        let s = CompromiseSettings::default()
            .with_annotation(
                "rules=a|b, severity=0, violations=5/30s, count-severity=6, gate-violations=20, backoff=2s, max-restarts=1",
            )
            .unwrap();
        assert_eq!(s.rules, ["a", "b"]);
        assert_eq!(
            (
                s.severity,
                s.violations,
                s.window_secs,
                s.count_severity,
                s.gate_violations,
                s.backoff_secs,
                s.max_restarts
            ),
            (0, 5, 30, 6, 20, 2, 1)
        );
        let err = |v: &str| {
            CompromiseSettings::default()
                .with_annotation(v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("severity=11"),
            "pod annotation palisade.dev/compromise: severity: 11 is not between 0 and 10"
        );
        crate::annotation::assert_refused(
            err,
            &[
                ("sevrity=3", "unknown key \"sevrity\""),
                ("violations=x/10s", "\"x\" is not a whole number"),
                ("violations=3/0s", "window_secs: must be at least 1"),
                ("restart", "expected key=value"),
            ],
        );
    }
}
