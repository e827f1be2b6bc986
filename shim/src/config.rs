//! The shim's configuration: palisade's own TOML file, located through the runtime options containerd passes.
//!
//! containerd's CRI hands a non-runc runtime only `runtimeoptions.v1.Options` (a `ConfigPath`), so every
//! setting lives in palisade's file; runc-style options (`BinaryName`, `Root`) are honoured when a
//! RuntimeClass passes those instead.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};

/// Where the configuration is read from when the runtime options name none.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/palisade/palisade.toml";
/// runc's state root used when the configuration names none.
pub const DEFAULT_RUNC_ROOT: &str = "/run/palisade/runc";

const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
const RUNC_OPTIONS_TYPES: [&str; 2] = [
    "containerd.runc.v1.Options",
    "io.containerd.runc.v2.options",
];

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
    pub gate: crate::gate::GateSettings,
    /// The node's name in reported events; the host name when empty.
    pub node_name: String,
    /// Directory of KubeArmor policies for this configuration (`*.yaml`); none when unset.
    pub policy_dir: Option<PathBuf>,
    /// The `[strict]` table: read-only root and a landlock ruleset (palisade-strict).
    pub strict: Option<palisade_sandbox::StrictConfig>,
    /// palisade-init; by default the file of that name beside the shim binary.
    pub init_binary: Option<PathBuf>,
    /// The violation log (the `[events]` table).
    pub events: crate::report::EventSettings,
    /// The eBPF monitor (the `[monitor]` table).
    pub monitor: crate::monitoring::MonitorSettings,
    /// `enforce`, or `audit`: policy Block rules, gate blocking and compromise kills are
    /// reported instead of carried out (the default hardening stays on).
    pub mode: Mode,
    /// What marks a container compromised and how its restarts are limited.
    pub compromise: crate::compromise::CompromiseSettings,
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
            gate: crate::gate::GateSettings::default(),
            node_name: String::new(),
            policy_dir: None,
            strict: None,
            init_binary: None,
            events: crate::report::EventSettings::default(),
            monitor: crate::monitoring::MonitorSettings::default(),
            mode: Mode::Enforce,
            compromise: crate::compromise::CompromiseSettings::default(),
        }
    }
}

/// What containerd passed as runtime options, decoded from either options type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub config_path: Option<PathBuf>,
    pub binary_name: Option<String>,
    pub root: Option<String>,
    pub shim_cgroup: Option<String>,
    pub systemd_cgroup: bool,
}

impl RuntimeOptions {
    /// Decodes the `Any` containerd passes on the shim's stdin or in `CreateTaskRequest.options`.
    pub fn from_any(any: &Any) -> Result<Self, ConfigError> {
        let type_url = any.type_url.as_str();
        let short = type_url.rsplit('/').next().unwrap_or(type_url);
        if short == RUNTIME_OPTIONS_TYPE {
            return decode_runtime_options(&any.value);
        }
        if RUNC_OPTIONS_TYPES.contains(&short) {
            let o = RuncOptions::parse_from_bytes(&any.value)
                .map_err(|e| ConfigError::Options(format!("{type_url}: {e}")))?;
            return Ok(RuntimeOptions {
                config_path: None,
                binary_name: non_empty(o.binary_name),
                root: non_empty(o.root),
                shim_cgroup: non_empty(o.shim_cgroup),
                systemd_cgroup: o.systemd_cgroup,
            });
        }
        if type_url.is_empty() && any.value.is_empty() {
            return Ok(RuntimeOptions::default());
        }
        Err(ConfigError::Options(format!(
            "unsupported options type {type_url:?}: expected {RUNTIME_OPTIONS_TYPE} or {}",
            RUNC_OPTIONS_TYPES[0]
        )))
    }

    /// Decodes the bytes of a marshalled `Any` (the shim's stdin at `start`); empty means none.
    pub fn from_any_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() {
            return Ok(RuntimeOptions::default());
        }
        let any = Any::parse_from_bytes(bytes).map_err(|e| ConfigError::Options(e.to_string()))?;
        Self::from_any(&any)
    }

    /// Loads the configuration these options point at, then applies the options' overrides.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config_path {
            Some(path) => Config::load(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Config::load(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Config::default(),
        };
        if let Some(binary) = &self.binary_name {
            config.runc_binary = binary.clone();
        }
        if let Some(root) = &self.root {
            config.runc_root = PathBuf::from(root);
        }
        config.systemd_cgroup |= self.systemd_cgroup;
        if config.node_name.is_empty() {
            config.node_name = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(config)
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

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
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
        if let Err(crate::compromise::CompromiseError::Setting { field, reason }) =
            self.compromise.validate()
        {
            return Err(invalid(field, &reason));
        }
        Ok(())
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `runtimeoptions.v1.Options` is three strings; decoding it by hand spares a generated type.
fn decode_runtime_options(bytes: &[u8]) -> Result<RuntimeOptions, ConfigError> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut out = RuntimeOptions::default();
    let err = |e: containerd_shim::protos::protobuf::Error| {
        ConfigError::Options(format!("{RUNTIME_OPTIONS_TYPE}: {e}"))
    };
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(err)? {
        match tag {
            // field 2, length-delimited: config_path
            18 => {
                let path = input.read_string().map_err(err)?;
                if !path.is_empty() {
                    out.config_path = Some(PathBuf::from(path));
                }
            }
            // field 1 type_url, field 3 config_body: read and ignored
            10 | 26 => {
                input.read_bytes().map_err(err)?;
            }
            other => {
                let wire = other & 7;
                let field = other >> 3;
                return Err(ConfigError::Options(format!(
                    "{RUNTIME_OPTIONS_TYPE}: unexpected field {field} (wire type {wire})"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;

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
            crate::compromise::CompromiseSettings::default(),
            "palisade.toml spells out the defaults"
        );
        assert!(load("palisade-strict.toml").strict.is_some());
        assert!(load("palisade-audit.toml").audit());
    }

    fn runtime_options_any(config_path: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "palisade").unwrap();
            out.write_string(2, config_path).unwrap();
            out.flush().unwrap();
        }
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_cri_runtime_options() {
        let opts =
            RuntimeOptions::from_any(&runtime_options_any("/etc/palisade/strict.toml")).unwrap();
        assert_eq!(
            opts.config_path,
            Some(PathBuf::from("/etc/palisade/strict.toml"))
        );
        assert_eq!(opts.binary_name, None);
        let bytes = runtime_options_any("/x.toml").write_to_bytes().unwrap();
        let again = RuntimeOptions::from_any_bytes(&bytes).unwrap();
        assert_eq!(again.config_path, Some(PathBuf::from("/x.toml")));
    }

    #[test]
    fn decodes_runc_options() {
        let mut o = RuncOptions::new();
        o.binary_name = "/opt/runc".into();
        o.root = "/run/other".into();
        o.systemd_cgroup = true;
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let opts = RuntimeOptions::from_any(&any).unwrap();
        assert_eq!(opts.binary_name.as_deref(), Some("/opt/runc"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "runc_binary = \"runc\"\n").unwrap();
        let opts = RuntimeOptions {
            config_path: Some(path),
            ..opts
        };
        let config = opts.load_config().unwrap();
        assert_eq!(config.runc_binary, "/opt/runc");
        assert_eq!(config.runc_root, PathBuf::from("/run/other"));
        assert!(config.systemd_cgroup);
    }

    #[test]
    fn rejects_unknown_options_type() {
        let any = Any {
            type_url: "example.com/Other".into(),
            value: vec![1],
            ..Default::default()
        };
        let err = RuntimeOptions::from_any(&any).unwrap_err().to_string();
        assert!(
            err.contains("unsupported options type \"example.com/Other\""),
            "{err}"
        );
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
        let err = Config::parse(p, "runc_bianry = \"x\"\n")
            .unwrap_err()
            .to_string();
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
        let err = Config::parse(p, "[hardening]\nallow_priviledged = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_priviledged"), "{err}");
        let err = Config::parse(p, "runc_root = \"relative\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
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
