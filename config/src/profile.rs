//! The `[profile]` table: whether this configuration's containers are learned into
//! per-workload profiles, where those are kept and the rule that promotes and rolls them back
//! (`[profile.rule]`); and the pod annotation that asks for it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pod annotation that turns learning on (or off) for its containers.
pub const PROFILE_ANNOTATION: &str = "palisade.dev/profile";

/// The shim configuration's `[profile]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileSettings {
    /// Learn every container of this configuration, as if its pod said
    /// `palisade.dev/profile: learn` (a pod's `off` still turns it off).
    pub learn: bool,
    /// Where the learned profiles are kept, one document per workload.
    pub state_dir: PathBuf,
    /// The figures of the rule that promotes a workload and rolls it back by itself.
    pub rule: PromotionRule,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            learn: false,
            state_dir: PathBuf::from("/var/lib/palisade/profiles"),
            rule: PromotionRule::default(),
        }
    }
}

/// The `[profile.rule]` table: the promotion and rollback rule's figures (`docs/profiles.md`,
/// "Promotion and rollback"); times in seconds. The defaults are the rule's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionRule {
    /// learn -> audit: at least this long in learn,
    pub min_learn_secs: u64,
    /// and at least this many observations.
    pub min_observations: u64,
    /// audit -> canary: at least this long in audit, with no departure in the quiet window.
    pub min_audit_secs: u64,
    /// canary -> enforce: at least this long in canary, quiet, and no recent pod restart.
    pub min_canary_secs: u64,
    pub quiet_window_secs: u64,
    /// Rollback to audit: `restart_limit` pod restarts within `restart_window_secs` of the
    /// promotion,
    pub restart_window_secs: u64,
    pub restart_limit: u32,
    /// or `departure_limit` departures within `departure_window_secs`.
    pub departure_window_secs: u64,
    pub departure_limit: u32,
}

impl Default for PromotionRule {
    fn default() -> Self {
        PromotionRule {
            min_learn_secs: 24 * 3600,
            min_observations: 10_000,
            min_audit_secs: 24 * 3600,
            min_canary_secs: 3600,
            quiet_window_secs: 6 * 3600,
            restart_window_secs: 600,
            restart_limit: 1,
            departure_window_secs: 300,
            departure_limit: 5,
        }
    }
}

/// Profile settings or an annotation that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("{field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("pod annotation {PROFILE_ANNOTATION}: {0}")]
    Annotation(String),
}

/// What a container's configuration and pod annotation ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learning {
    Off,
    /// Record its events; `workload` names the workload when the annotation sets it (else it
    /// is derived from the pod's name).
    Learn {
        workload: Option<String>,
    },
}

impl ProfileSettings {
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !self.state_dir.is_absolute() {
            return Err(ProfileError::Setting {
                field: "profile.state_dir",
                reason: "must be an absolute path".into(),
            });
        }
        let r = &self.rule;
        for (field, zero) in [
            (
                "profile.rule.restart_window_secs",
                r.restart_window_secs == 0,
            ),
            ("profile.rule.restart_limit", r.restart_limit == 0),
            (
                "profile.rule.departure_window_secs",
                r.departure_window_secs == 0,
            ),
            ("profile.rule.departure_limit", r.departure_limit == 0),
        ] {
            if zero {
                return Err(ProfileError::Setting {
                    field,
                    reason: "must be at least 1 (a rollback needs a window and a count)".into(),
                });
            }
        }
        Ok(())
    }

    /// What a container gets with the pod annotation `annotation` (absent: the table's
    /// `learn`). The annotation is `off`, `learn`, or `learn,workload=NAME`.
    pub fn learning(&self, annotation: Option<&str>) -> Result<Learning, ProfileError> {
        let Some(value) = annotation else {
            return Ok(if self.learn {
                Learning::Learn { workload: None }
            } else {
                Learning::Off
            });
        };
        let mut parts = value.split(',').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let bad = |why: String| Err(ProfileError::Annotation(why));
        match head {
            "off" => {
                if parts.next().is_some() {
                    return bad(format!("{value:?}: off takes no settings"));
                }
                Ok(Learning::Off)
            }
            "learn" => {
                let mut workload = None;
                for p in parts {
                    match p.split_once('=') {
                        Some(("workload", name)) if !name.is_empty() && workload.is_none() => {
                            workload = Some(name.to_string());
                        }
                        Some(("workload", "")) => return bad("workload= needs a name".into()),
                        Some(("workload", _)) => return bad("workload= given twice".into()),
                        _ => return bad(format!("unknown setting {p:?}: expected workload=NAME")),
                    }
                }
                Ok(Learning::Learn { workload })
            }
            other => bad(format!(
                "{other:?}: expected learn, learn,workload=NAME or off"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_turns_learning_on_or_off_and_bad_values_say_why() {
        let off = ProfileSettings::default();
        let on = ProfileSettings {
            learn: true,
            ..ProfileSettings::default()
        };
        assert_eq!(off.learning(None), Ok(Learning::Off));
        assert_eq!(on.learning(None), Ok(Learning::Learn { workload: None }));
        assert_eq!(on.learning(Some("off")), Ok(Learning::Off));
        assert_eq!(
            off.learning(Some("learn")),
            Ok(Learning::Learn { workload: None })
        );
        assert_eq!(
            off.learning(Some(" learn , workload=cart ")),
            Ok(Learning::Learn {
                workload: Some("cart".into())
            })
        );
        for (v, want) in [
            ("enforce", "pod annotation palisade.dev/profile: \"enforce\": expected learn, learn,workload=NAME or off"),
            ("", "pod annotation palisade.dev/profile: \"\": expected learn, learn,workload=NAME or off"),
            ("learn,workload=", "pod annotation palisade.dev/profile: workload= needs a name"),
            ("learn,workload=a,workload=b", "pod annotation palisade.dev/profile: workload= given twice"),
            ("learn,window=5m", "pod annotation palisade.dev/profile: unknown setting \"window=5m\": expected workload=NAME"),
            ("off,workload=a", "pod annotation palisade.dev/profile: \"off,workload=a\": off takes no settings"),
        ] {
            assert_eq!(off.learning(Some(v)).unwrap_err().to_string(), want, "{v}");
        }
    }

    #[test]
    fn a_relative_state_directory_is_refused() {
        let s = ProfileSettings {
            state_dir: "profiles".into(),
            ..ProfileSettings::default()
        };
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "profile.state_dir: must be an absolute path"
        );
    }

    #[test]
    fn the_rule_table_parses_with_defaults_and_refuses_a_zero_window() {
        let s: ProfileSettings = toml::from_str(
            "state_dir = \"/p\"\n[rule]\ndeparture_window_secs = 60\ndeparture_limit = 2\n",
        )
        .unwrap();
        assert_eq!(s.rule.departure_window_secs, 60);
        assert_eq!(s.rule.departure_limit, 2);
        assert_eq!(
            s.rule.min_learn_secs,
            PromotionRule::default().min_learn_secs
        );
        assert!(s.validate().is_ok());
        let zero = ProfileSettings {
            rule: PromotionRule {
                departure_limit: 0,
                ..PromotionRule::default()
            },
            ..ProfileSettings::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "profile.rule.departure_limit: must be at least 1 (a rollback needs a window and a count)"
        );
        assert!(toml::from_str::<ProfileSettings>("[rule]\nwindow = 1\n").is_err());
    }
}
