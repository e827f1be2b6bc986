//! The `[detection]` table: the per-container settings of the monitor's built-in detections,
//! and the pod annotation that overrides it.

use crate::annotation::applied;
use serde::{Deserialize, Serialize};

/// The pod annotation that overrides the configuration's detection settings for its containers.
pub const DETECTION_ANNOTATION: &str = "palisade.dev/detection";
/// The longest learning window accepted (a week): a longer one is a typo, and would leave
/// the detection of new outbound destinations off for the container's whole life.
pub const MAX_LEARNING_WINDOW_SECS: u64 = 7 * 24 * 3600;

/// The `[detection]` table: what the monitor's built-in detections do for each container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionSettings {
    /// The built-in detections (`docs/monitor.md`); off leaves only the policies' rules.
    pub builtins: bool,
    /// Seconds after a container starts during which the destinations it connects to are
    /// learned; a new destination later raises `new-outbound-destination`. 0 turns that
    /// detection off.
    pub learning_window_secs: u64,
}

impl Default for DetectionSettings {
    fn default() -> Self {
        DetectionSettings {
            builtins: true,
            learning_window_secs: 600,
        }
    }
}

/// Detection settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectionError {
    #[error("{field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("pod annotation {DETECTION_ANNOTATION}: {0}")]
    Annotation(String),
}

impl DetectionSettings {
    /// Checks the values a typo would turn into a detection that never fires.
    pub fn validate(&self) -> Result<(), DetectionError> {
        if self.learning_window_secs > MAX_LEARNING_WINDOW_SECS {
            return Err(DetectionError::Setting {
                field: "detection.learning_window_secs",
                reason: format!(
                    "{} is more than a week ({MAX_LEARNING_WINDOW_SECS}); 0 turns the detection off",
                    self.learning_window_secs
                ),
            });
        }
        Ok(())
    }

    /// These settings with a pod's annotation applied: `off` (no built-in detection), or
    /// comma-separated `key=value` pairs: `builtins=on|off`, `learning-window=SECONDSs|off`.
    pub fn with_annotation(&self, value: &str) -> Result<Self, DetectionError> {
        applied(self, value, |s| &mut s.builtins, Self::set, Self::validate)
            .map_err(DetectionError::Annotation)
    }

    /// One `key=value` pair of the annotation applied.
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "builtins" => {
                self.builtins = match v {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => return Err(format!("builtins: {v:?} is not on or off")),
                }
            }
            "learning-window" => {
                self.learning_window_secs = if v == "off" {
                    0
                } else {
                    v.strip_suffix('s').unwrap_or(v).parse().map_err(|_| {
                        format!("learning-window: {v:?} is not a number of seconds (600s) or off")
                    })?
                }
            }
            other => {
                return Err(format!(
                    "unknown key {other:?}: expected builtins or learning-window"
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_overrides_and_rejects_with_reasons() {
        let d = DetectionSettings::default();
        let s = d.with_annotation("learning-window=120s").unwrap();
        assert_eq!((s.builtins, s.learning_window_secs), (true, 120));
        let s = d
            .with_annotation(" builtins=off , learning-window=off ")
            .unwrap();
        assert_eq!((s.builtins, s.learning_window_secs), (false, 0));
        assert!(!d.with_annotation("off").unwrap().builtins);
        let err = |v: &str| d.with_annotation(v).unwrap_err().to_string();
        assert_eq!(
            err("learning-window=ten"),
            "pod annotation palisade.dev/detection: learning-window: \"ten\" is not a number of seconds (600s) or off"
        );
        crate::annotation::assert_refused(
            err,
            &[
                ("learnig-window=3s", "unknown key \"learnig-window\""),
                ("builtins=maybe", "is not on or off"),
                ("learning-window=99999999s", "more than a week"),
                ("on", "expected key=value"),
            ],
        );
    }
}
