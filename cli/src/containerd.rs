//! containerd's configuration: finding its version, adding and removing palisade's runtime
//! tables while keeping the operator's comments and settings, and listing palisade runtimes.

use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The runtime type containerd maps to `containerd-shim-palisade-v2`.
pub const RUNTIME_TYPE: &str = "io.containerd.palisade.v2";
/// The annotations containerd passes to the shim.
pub const POD_ANNOTATIONS: &str = "palisade.dev/*";
/// The runtime handlers `palisade install` adds, each with its own shim configuration.
pub const RUNTIMES: [&str; 4] = [
    "palisade",
    "palisade-strict",
    "palisade-audit",
    "palisade-compat",
];

/// Something is wrong with containerd's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    #[error("containerd config {path}: version {found}: only versions 2 (containerd 1.6, 1.7) and 3 (containerd 2.x) are supported")]
    Version { path: PathBuf, found: String },
    #[error("containerd config {path}: {key}: expected a table")]
    NotATable { path: PathBuf, key: String },
}

/// containerd's configuration format version, which decides where the CRI runtimes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ConfigVersion {
    /// containerd 1.6 and 1.7.
    V2,
    /// containerd 2.x.
    V3,
}

impl ConfigVersion {
    /// The plugin whose `containerd.runtimes` holds the CRI runtime handlers.
    pub fn cri_plugin(self) -> &'static str {
        match self {
            Self::V2 => "io.containerd.grpc.v1.cri",
            Self::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    pub fn number(self) -> i64 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The config version a containerd release reads, from its major version.
    pub fn for_containerd_major(major: u32) -> Self {
        if major >= 2 {
            Self::V3
        } else {
            Self::V2
        }
    }
}

/// A palisade runtime handler as the configuration declares it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PalisadeRuntime {
    pub name: String,
    pub config_path: Option<PathBuf>,
    pub pod_annotations: Vec<String>,
}

/// A parsed containerd configuration that keeps its formatting.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    path: PathBuf,
    doc: DocumentMut,
    version: ConfigVersion,
}

impl ContainerdConfig {
    /// Parses `text` (the content of `path`); an empty text is a new file of `default_version`.
    pub fn parse(
        path: &Path,
        text: &str,
        default_version: ConfigVersion,
    ) -> Result<Self, ContainerdError> {
        let mut doc: DocumentMut = text.parse().map_err(|e| ContainerdError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        let version = match doc.get("version") {
            None if text.trim().is_empty() => {
                doc.insert("version", value(default_version.number()));
                default_version
            }
            None => {
                return Err(ContainerdError::Version {
                    path: path.to_path_buf(),
                    found: "1 (no version key)".to_string(),
                })
            }
            Some(item) => match item.as_integer() {
                Some(2) => ConfigVersion::V2,
                Some(3) => ConfigVersion::V3,
                _ => {
                    return Err(ContainerdError::Version {
                        path: path.to_path_buf(),
                        found: item.to_string().trim().to_string(),
                    })
                }
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            doc,
            version,
        })
    }

    pub fn version(&self) -> ConfigVersion {
        self.version
    }

    /// The configuration text, with every untouched part as it was written.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }

    fn not_a_table(&self, key: &str) -> ContainerdError {
        ContainerdError::NotATable {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    /// `plugins.<cri>.containerd.runtimes`, created (as implicit tables, so no empty headers
    /// appear) when `create`.
    fn runtimes_mut(&mut self, create: bool) -> Result<Option<&mut Table>, ContainerdError> {
        let keys = [
            "plugins",
            self.version.cri_plugin(),
            "containerd",
            "runtimes",
        ];
        let path = self.path.clone();
        let mut table = self.doc.as_table_mut();
        for (depth, key) in keys.iter().enumerate() {
            if !table.contains_key(key) {
                if !create {
                    return Ok(None);
                }
                let mut t = Table::new();
                t.set_implicit(true);
                table.insert(key, Item::Table(t));
            }
            table = match table.get_mut(key) {
                Some(Item::Table(t)) => t,
                // An inline table or a value: editing it in place would rewrite the
                // operator's formatting, so say where it is instead.
                _ => {
                    return Err(ContainerdError::NotATable {
                        path,
                        key: dotted(&keys[..=depth]),
                    })
                }
            };
        }
        Ok(Some(table))
    }

    /// Adds (or brings up to date) the runtime `name` with its shim configuration at
    /// `config_path`. Values already right are left untouched, so a second run changes
    /// nothing; settings the operator added to the table are kept.
    pub fn add_runtime(&mut self, name: &str, config_path: &Path) -> Result<(), ContainerdError> {
        let plugin = self.version.cri_plugin();
        let key = dotted(&["plugins", plugin, "containerd", "runtimes", name]);
        let err = self.not_a_table(&key);
        let err_options = self.not_a_table(&format!("{key}.options"));
        let Some(runtimes) = self.runtimes_mut(true)? else {
            return Err(err);
        };
        if !runtimes.contains_key(name) {
            let mut t = Table::new();
            let role = match name {
                "palisade-strict" => "palisade in strict mode",
                "palisade-audit" => "palisade for trying policies out",
                "palisade-compat" => "palisade honouring every CRI security context as runc does",
                _ => "palisade's hardened runtime",
            };
            t.decor_mut().set_prefix(format!(
                "\n# {name}: {role} (added by `palisade install`)\n"
            ));
            runtimes.insert(name, Item::Table(t));
        }
        let table = match runtimes.get_mut(name) {
            Some(Item::Table(t)) => t,
            _ => return Err(err),
        };
        set_if_different(table, "runtime_type", value(RUNTIME_TYPE));
        let mut annotations = Array::new();
        annotations.push(POD_ANNOTATIONS);
        let has_annotation = table
            .get("pod_annotations")
            .and_then(Item::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(POD_ANNOTATIONS)));
        if !has_annotation {
            match table
                .get_mut("pod_annotations")
                .and_then(Item::as_array_mut)
            {
                Some(existing) => existing.push(POD_ANNOTATIONS),
                None => {
                    table.insert("pod_annotations", value(annotations));
                    indent_key(table, "pod_annotations");
                }
            }
        }
        if !table.contains_key("options") {
            table.insert("options", Item::Table(Table::new()));
        }
        let options = match table.get_mut("options") {
            Some(Item::Table(t)) => t,
            _ => return Err(err_options),
        };
        let config_path = config_path.to_string_lossy();
        set_if_different(options, "ConfigPath", value(config_path.as_ref()));
        Ok(())
    }

    /// Removes the runtime `name` if it is a palisade runtime; returns whether it did. A table
    /// of that name with another runtime type is someone else's and stays.
    pub fn remove_runtime(&mut self, name: &str) -> Result<bool, ContainerdError> {
        let Some(runtimes) = self.runtimes_mut(false)? else {
            return Ok(false);
        };
        let ours = runtimes
            .get(name)
            .and_then(Item::as_table_like)
            .and_then(|t| t.get("runtime_type"))
            .and_then(Item::as_str)
            == Some(RUNTIME_TYPE);
        if ours {
            runtimes.remove(name);
        }
        Ok(ours)
    }

    /// Whether a table named `name` exists among the runtimes with another runtime type.
    pub fn foreign_runtime(&self, name: &str) -> Option<String> {
        let t = self.runtimes()?.get(name)?.as_table_like()?;
        let ty = t.get("runtime_type").and_then(Item::as_str).unwrap_or("");
        (ty != RUNTIME_TYPE).then(|| ty.to_string())
    }

    fn runtimes(&self) -> Option<&dyn toml_edit::TableLike> {
        self.doc
            .get("plugins")?
            .get(self.version.cri_plugin())?
            .get("containerd")?
            .get("runtimes")?
            .as_table_like()
    }

    /// Whether `disabled_plugins` turns the CRI plugin off (Docker's stock containerd config
    /// does), in which case no Kubernetes pod reaches these runtimes.
    pub fn cri_disabled(&self) -> bool {
        let Some(disabled) = self.doc.get("disabled_plugins").and_then(Item::as_array) else {
            return false;
        };
        let names: &[&str] = match self.version {
            ConfigVersion::V2 => &["cri", "io.containerd.grpc.v1.cri"],
            ConfigVersion::V3 => &["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"],
        };
        disabled
            .iter()
            .filter_map(|v| v.as_str())
            .any(|p| names.contains(&p))
    }

    /// Every runtime handler whose runtime type is palisade's.
    pub fn palisade_runtimes(&self) -> Vec<PalisadeRuntime> {
        let Some(runtimes) = self.runtimes() else {
            return Vec::new();
        };
        runtimes
            .iter()
            .filter_map(|(name, item)| {
                let t = item.as_table_like()?;
                if t.get("runtime_type").and_then(Item::as_str) != Some(RUNTIME_TYPE) {
                    return None;
                }
                let config_path = t
                    .get("options")
                    .and_then(Item::as_table_like)
                    .and_then(|o| o.get("ConfigPath"))
                    .and_then(Item::as_str)
                    .map(PathBuf::from);
                let pod_annotations = t
                    .get("pod_annotations")
                    .and_then(Item::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(PalisadeRuntime {
                    name: name.to_string(),
                    config_path,
                    pod_annotations,
                })
            })
            .collect()
    }
}

/// A key path as TOML writes it: `plugins."io.containerd.grpc.v1.cri".containerd`.
fn dotted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| {
            if k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                (*k).to_string()
            } else {
                format!("\"{k}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Sets `key` unless it already holds the same value, keeping the key's indentation and
/// comments when it is replaced.
fn set_if_different(table: &mut Table, key: &str, new: Item) {
    let same = match (table.get(key).and_then(Item::as_value), new.as_value()) {
        // 'x' and "x" are the same string: the operator's quoting stays.
        (Some(old), Some(new)) => match (old.as_str(), new.as_str()) {
            (Some(a), Some(b)) => a == b,
            _ => old.to_string().trim() == new.to_string().trim(),
        },
        _ => false,
    };
    if same {
        return;
    }
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            if let Some(v) = new.as_value() {
                *old = v.clone();
                *old.decor_mut() = decor;
            }
        }
        None => {
            table.insert(key, new);
            indent_key(table, key);
        }
    }
}

/// Indents a key we add the way containerd's own snippets are written.
fn indent_key(table: &mut Table, key: &str) {
    if let Some(mut k) = table.key_mut(key) {
        k.leaf_decor_mut().set_prefix("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"version = 2
# keep me
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
"#;

    fn parse(text: &str) -> ContainerdConfig {
        ContainerdConfig::parse(
            Path::new("/etc/containerd/config.toml"),
            text,
            ConfigVersion::V2,
        )
        .unwrap()
    }

    /// `text` parsed, with the `palisade` runtime added at the default config path.
    fn parse_adding_palisade(text: &str) -> ContainerdConfig {
        let mut c = parse(text);
        c.add_runtime("palisade", Path::new("/etc/palisade/palisade.toml"))
            .unwrap();
        c
    }

    #[test]
    fn adds_runtimes_once_and_keeps_the_rest() {
        let mut c = parse(V2);
        for name in RUNTIMES {
            c.add_runtime(name, &PathBuf::from(format!("/etc/palisade/{name}.toml")))
                .unwrap();
        }
        let once = c.render();
        assert!(once.starts_with(V2), "{once}");
        assert!(
            once.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.palisade-strict.options]"),
            "{once}"
        );
        let mut again = parse(&once);
        for name in RUNTIMES {
            again
                .add_runtime(name, &PathBuf::from(format!("/etc/palisade/{name}.toml")))
                .unwrap();
        }
        assert_eq!(again.render(), once);
        let found = again.palisade_runtimes();
        assert_eq!(found.len(), 4);
        assert_eq!(
            found[0].config_path,
            Some(PathBuf::from("/etc/palisade/palisade.toml"))
        );
        for name in RUNTIMES {
            assert!(again.remove_runtime(name).unwrap());
        }
        assert_eq!(again.render(), V2);
    }

    #[test]
    fn versions() {
        let p = Path::new("c.toml");
        let v3 = ContainerdConfig::parse(p, "version = 3\n", ConfigVersion::V2).unwrap();
        assert_eq!(v3.version(), ConfigVersion::V3);
        let new = ContainerdConfig::parse(p, "", ConfigVersion::V3).unwrap();
        assert_eq!(new.render(), "version = 3\n");
        let err = ContainerdConfig::parse(p, "root = \"/x\"\n", ConfigVersion::V2)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "containerd config c.toml: version 1 (no version key): only versions 2 (containerd 1.6, 1.7) and 3 (containerd 2.x) are supported");
    }

    #[test]
    fn dotted_keys_work_and_inline_tables_are_named() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes.runc.runtime_type = \"io.containerd.runc.v2\"\n";
        let mut c = parse_adding_palisade(text);
        assert_eq!(c.palisade_runtimes().len(), 1);
        assert!(c.render().starts_with(text));
        assert!(c.remove_runtime("palisade").unwrap());
        assert_eq!(c.render(), text);

        let mut c = parse("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n");
        let err = c
            .add_runtime("palisade", Path::new("/x.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "containerd config /etc/containerd/config.toml: plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes: expected a table");
    }

    #[test]
    fn sees_a_disabled_cri_plugin() {
        assert!(parse("version = 2\ndisabled_plugins = [\"cri\"]\n").cri_disabled());
        assert!(!parse(
            "version = 2\ndisabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\"]\n"
        )
        .cri_disabled());
        assert!(!parse(V2).cri_disabled());
    }

    #[test]
    fn keeps_the_operators_quoting() {
        let text = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.palisade]\n  runtime_type = 'io.containerd.palisade.v2' # ours\n  pod_annotations = ['palisade.dev/*']\n  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.palisade.options]\n    ConfigPath = '/etc/palisade/palisade.toml'\n";
        let mut c = parse_adding_palisade(text);
        assert_eq!(c.render(), text);
        c.add_runtime("palisade", Path::new("/srv/palisade.toml"))
            .unwrap();
        assert!(
            c.render()
                .contains("    ConfigPath = \"/srv/palisade.toml\"\n"),
            "{}",
            c.render()
        );
    }

    #[test]
    fn leaves_a_foreign_table_of_the_same_name() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.palisade]\n  runtime_type = \"io.containerd.kata.v2\"\n";
        let mut c = parse(text);
        assert_eq!(
            c.foreign_runtime("palisade").as_deref(),
            Some("io.containerd.kata.v2")
        );
        assert!(!c.remove_runtime("palisade").unwrap());
        assert_eq!(c.render(), text);
    }
}
