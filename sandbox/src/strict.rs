//! The `palisade-strict` switches: a read-only root, writes confined by landlock to the
//! container's writable mounts, and landlock IPC scoping.

use serde::{Deserialize, Serialize};

/// The `[strict]` table of the shim configuration, used for containers of the
/// `palisade-strict` RuntimeClass. Every field defaults to the hardened choice; unknown keys
/// are refused so that a misspelt switch does not silently keep the default.
///
/// ```toml
/// writable_paths = ["/tmp"]
/// scope_signals = true
/// scope_abstract_unix = true
/// allow_degraded = false
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrictConfig {
    /// Absolute paths the container may write besides its read-write mounts (volumes,
    /// /dev, /dev/shm, /etc/hosts, the termination log, ...). A path that no read-write
    /// mount covers gets a fresh tmpfs (`nosuid,nodev,noexec`), since the root is
    /// read-only.
    pub writable_paths: Vec<String>,
    /// Landlock signal scoping (ABI 6): the container's processes cannot signal
    /// processes outside their landlock domain.
    pub scope_signals: bool,
    /// Landlock abstract unix socket scoping (ABI 6): no connecting to abstract sockets
    /// created outside the domain.
    pub scope_abstract_unix: bool,
    /// Run with what the kernel offers (landlock `best_effort`, rules the node cannot
    /// enforce left to the monitor's report), each loss named in a warning, instead of
    /// refusing the container.
    pub allow_degraded: bool,
}

impl Default for StrictConfig {
    fn default() -> Self {
        Self {
            writable_paths: Vec::new(),
            scope_signals: true,
            scope_abstract_unix: true,
            allow_degraded: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_hardened_default() {
        let cfg: StrictConfig = parse("{}");
        assert_eq!(cfg, StrictConfig::default());
        assert!(cfg.scope_signals && cfg.scope_abstract_unix);
        assert!(!cfg.allow_degraded);
        assert!(cfg.writable_paths.is_empty());
    }

    #[test]
    fn misspelt_switch_is_refused() {
        let err = serde_json::from_str::<StrictConfig>(r#"{"allow_degrade": true}"#).unwrap_err();
        assert!(err.to_string().contains("allow_degrade"), "{err}");
    }

    #[test]
    fn fields_are_read() {
        let cfg: StrictConfig = parse(
            r#"{"writable_paths": ["/tmp", "/var/cache"], "scope_signals": false,
                "allow_degraded": true}"#,
        );
        assert_eq!(cfg.writable_paths, ["/tmp", "/var/cache"]);
        assert!(!cfg.scope_signals && cfg.scope_abstract_unix && cfg.allow_degraded);
    }

    fn parse(json: &str) -> StrictConfig {
        serde_json::from_str(json).unwrap()
    }
}
