//! The configuration file: its top-level keys, where it is read from, and the checks run on it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration is read from when the runtime options name none.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/palisade/palisade.toml";
/// runc's state root used when the configuration names none.
pub const DEFAULT_RUNC_ROOT: &str = "/run/palisade/runc";

/// Reading or understanding the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("runtime options: {0}")]
    Options(String),
    #[error("config {path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

/// palisade's configuration file, one per RuntimeClass configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// runc binary: an absolute path, or a name looked up in PATH.
    pub runc_binary: String,
    /// runc's `--root`, where it keeps container state.
    pub runc_root: PathBuf,
    /// Use runc's systemd cgroup driver.
    pub systemd_cgroup: bool,
    /// Log level of the shim's own log (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// The default hardening every container gets (the `[hardening]` table).
    pub hardening: palisade_sandbox::HardeningConfig,
    /// The pods' HTTP gates (the `[gate]` table).
    pub gate: crate::GateSettings,
    /// The node's name in reported events; the host name when empty.
    pub node_name: String,
    /// Directory of KubeArmor policies for this configuration (`*.yaml`); none when unset.
    pub policy_dir: Option<PathBuf>,
    /// The `[strict]` table: read-only root and a landlock ruleset (palisade-strict).
    pub strict: Option<palisade_sandbox::StrictConfig>,
    /// palisade-init; by default the file of that name beside the shim binary.
    pub init_binary: Option<PathBuf>,
    /// The violation log (the `[events]` table).
    pub events: crate::EventSettings,
    /// The eBPF monitor (the `[monitor]` table).
    pub monitor: crate::MonitorSettings,
    /// `enforce`, or `audit`: policy Block rules, gate blocking and compromise kills are
    /// reported instead of carried out (the default hardening stays on).
    pub mode: Mode,
    /// What marks a container compromised and how its restarts are limited.
    pub compromise: crate::CompromiseSettings,
    /// The monitor's built-in detections per container (the `[detection]` table).
    pub detection: crate::DetectionSettings,
    /// Learned per-workload profiles (the `[profile]` table).
    pub profile: crate::ProfileSettings,
}

/// Whether this configuration enforces its policies or only reports what they would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runc_binary: "runc".to_string(),
            runc_root: PathBuf::from(DEFAULT_RUNC_ROOT),
            systemd_cgroup: false,
            log_level: "info".to_string(),
            hardening: palisade_sandbox::HardeningConfig::default(),
            gate: crate::GateSettings::default(),
            node_name: String::new(),
            policy_dir: None,
            strict: None,
            init_binary: None,
            events: crate::EventSettings::default(),
            monitor: crate::MonitorSettings::default(),
            mode: Mode::Enforce,
            compromise: crate::CompromiseSettings::default(),
            detection: crate::DetectionSettings::default(),
            profile: crate::ProfileSettings::default(),
        }
    }
}

impl Config {
    /// Whether this configuration only reports what its policies would deny.
    pub fn audit(&self) -> bool {
        self.mode == Mode::Audit
    }

    /// Where palisade-init is: as configured, else beside the running shim.
    pub fn init_binary_path(&self) -> PathBuf {
        if let Some(p) = &self.init_binary {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("palisade-init")))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/palisade-init"))
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types alone do not; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason: reason.to_string(),
        };
        if self.runc_binary.is_empty() {
            return Err(invalid("runc_binary", "must not be empty"));
        }
        if !self.runc_root.is_absolute() {
            return Err(invalid("runc_root", "must be an absolute path"));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(invalid(
                "log_level",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        if let Err(e) = self.events.validate() {
            return Err(invalid(e.field, &e.reason));
        }
        if let Err(crate::CompromiseError::Setting { field, reason }) = self.compromise.validate() {
            return Err(invalid(field, &reason));
        }
        if let Err(crate::DetectionError::Setting { field, reason }) = self.detection.validate() {
            return Err(invalid(field, &reason));
        }
        if let Err(crate::ProfileError::Setting { field, reason }) = self.profile.validate() {
            return Err(invalid(field, &reason));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_runtimeclass_configurations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass");
        let load = |name: &str| {
            let path = dir.join(name);
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let default = load("palisade.toml");
        assert_eq!(default.mode, Mode::Enforce);
        assert_eq!(
            default.compromise,
            crate::CompromiseSettings::default(),
            "palisade.toml spells out the defaults"
        );
        assert_eq!(
            default.detection,
            crate::DetectionSettings::default(),
            "palisade.toml spells out the defaults"
        );
        assert!(load("palisade-strict.toml").strict.is_some());
        assert!(load("palisade-audit.toml").audit());
    }

    #[test]
    fn config_file_defaults_and_errors() {
        let p = Path::new("/etc/palisade/palisade.toml");
        let c = Config::parse(
            p,
            "runc_binary = \"/usr/sbin/runc\"\nrunc_root = \"/run/x\"\n",
        )
        .unwrap();
        assert_eq!(c.runc_binary, "/usr/sbin/runc");
        assert_eq!(c.log_level, "info");
        let refused = |text: &str| Config::parse(p, text).unwrap_err().to_string();
        let err = refused("runc_bianry = \"x\"\n");
        assert!(
            err.starts_with("config /etc/palisade/palisade.toml: "),
            "{err}"
        );
        assert!(err.contains("unknown field `runc_bianry`"), "{err}");
        let c = Config::parse(
            p,
            "[hardening]\nallowed_added_capabilities = [\"NET_ADMIN\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.hardening.allowed_added_capabilities,
            vec!["NET_ADMIN".to_string()]
        );
        assert!(
            c.hardening.drop_net_raw,
            "unset switches keep the hardened default"
        );
        let err = refused("[hardening]\nallow_priviledged = true\n");
        assert!(err.contains("allow_priviledged"), "{err}");
        assert_eq!(
            refused("runc_root = \"relative\"\n"),
            "config /etc/palisade/palisade.toml: runc_root: must be an absolute path"
        );
        let err = Config::load(Path::new("/nonexistent/palisade.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config /nonexistent/palisade.toml: "),
            "{err}"
        );
    }
}
