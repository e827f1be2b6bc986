//! The shim's configuration: palisade's own TOML file, located through the runtime options containerd passes.
//!
//! containerd's CRI hands a non-runc runtime only `runtimeoptions.v1.Options` (a `ConfigPath`), so every
//! setting lives in palisade's file; runc-style options (`BinaryName`, `Root`) are honoured when a
//! RuntimeClass passes those instead.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::shim::oci::Options as RuncOptions;

pub use palisade_config::{Config, ConfigError, Mode, DEFAULT_CONFIG_PATH, DEFAULT_RUNC_ROOT};

const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
const RUNC_OPTIONS_TYPES: [&str; 2] = [
    "containerd.runc.v1.Options",
    "io.containerd.runc.v2.options",
];

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
}
