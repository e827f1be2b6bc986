//! The shim configuration files `palisade install` writes, one per runtime handler, each
//! checked with the shim's own parser before it is written.

use std::path::{Path, PathBuf};

use palisade_config::{Config, ConfigError};

/// What the `[strict]` table says when the shim's configuration has one.
const STRICT_TABLE: &str = "\n# palisade-strict: read-only root, writes confined by landlock to the\n# container's writable mounts and these paths, landlock IPC scoping (docs/policies.md).\n[strict]\n# /tmp stays writable (a tmpfs unless a mount covers it), as in\n# runtimeclass/palisade-strict.toml and the strict example pod.\nwritable_paths = [\"/tmp\"]\nscope_signals = true\nscope_abstract_unix = true\n# Run rules this node cannot enforce as audit-only (each named in a warning)\n# instead of refusing the container.\nallow_degraded = false\n";

/// The `[hardening]` table of the default runtimes: every switch at its hardened choice.
const HARDENED_TABLE: &str = "# Default hardening of every container (docs/hardening.md). Every switch defaults\n# to the hardened choice; relax only what your workloads need.\n[hardening]\n# Run privileged containers as they are (reported) instead of refusing them.\nallow_privileged = false\n# Leave containers that ask for no seccomp profile unconfined.\nallow_unconfined_seccomp = false\n# Let the seccomp profile allow 32-bit system calls; by default they kill.\nallow_32bit_syscalls = false\n# Remove CAP_NET_RAW from the default capability set.\ndrop_net_raw = true\n# Capabilities beyond containerd's default set that pods may add (\"ALL\" for every one).\nallowed_added_capabilities = []\n# Leave no_new_privs off where the pod does not set allowPrivilegeEscalation: false.\nallow_privilege_escalation = false\n# Leave /proc and /sys unmasked for procMount: Unmasked.\nallow_unmasked_proc = false\n# The kubelet runs with --seccomp-default (or containerd's unset_seccomp_profile is\n# runtime/default): a missing profile is then an explicit Unconfined, and overriding it\n# is reported as an event (docs/cri-contract.md).\nunset_seccomp_is_runtime_default = false\n";

/// The palisade-compat runtime's `[hardening]` table: the shipped one
/// (`runtimeclass/palisade-compat.toml`, whose last table it is).
fn compat_table() -> &'static str {
    const SHIPPED: &str = include_str!("../../runtimeclass/palisade-compat.toml");
    SHIPPED
        .find("[hardening]")
        .map_or(SHIPPED, |at| &SHIPPED[at..])
}

/// A shim configuration to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfigFile {
    pub path: PathBuf,
    pub text: String,
}

/// Whether this shim's configuration accepts a `[strict]` table: asked of its own parser, so
/// the installer writes the table exactly when the shim it ships can read it.
pub fn shim_supports_strict() -> bool {
    Config::parse(Path::new("probe.toml"), STRICT_TABLE).is_ok()
}

/// Where the written configurations point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The `[gate]` table's `state_dir`.
    pub gate_state_dir: PathBuf,
    /// `policy_dir`: the KubeArmor policies every container of the runtime is checked against.
    pub policy_dir: PathBuf,
    /// `init_binary`: the installed palisade-init.
    pub init_binary: PathBuf,
    /// The `[events]` table's `log_dir`.
    pub log_dir: PathBuf,
}

fn quoted(path: &Path) -> toml_edit::Value {
    toml_edit::Value::from(path.to_string_lossy().as_ref())
}

/// The configuration of runtime `name`, validated with [`Config::parse`].
pub fn render(name: &str, path: &Path, settings: &Settings) -> Result<String, ConfigError> {
    let role = match name {
        "palisade-strict" if shim_supports_strict() => {
            "# The palisade-strict runtime: palisade's hardening, the pod's policies and the\n# [strict] table below.\n".to_string()
        }
        "palisade-strict" => {
            "# The palisade-strict runtime. This shim has no [strict] table yet (read-only root,\n# landlock write confinement: docs/policies.md), so until it has, this runtime runs\n# with the same settings as `palisade`.\n".to_string()
        }
        "palisade-compat" => {
            "# The palisade-compat runtime: every security context a pod asks CRI for is\n# honoured as runc honours it; the monitor, policies, gate, reports and compromise\n# restarts stay on, and each grant beyond the hardened default is a hardening-relaxed\n# event (docs/cri-contract.md).\n".to_string()
        }
        "palisade-audit" => {
            "# The palisade-audit runtime, for trying policies out: the default hardening stays\n# on; policy Block rules, the gate's block mode and compromise kills are reported\n# (action audit) instead of carried out (`mode` below).\n".to_string()
        }
        _ => "# The palisade runtime: palisade's default hardening and the pod's policies.\n"
            .to_string(),
    };
    let mut text = format!(
        "# {path}: the palisade shim's configuration for the `{name}` runtime handler,\n\
         # named by its containerd options (ConfigPath). Written by `palisade install`, which\n\
         # never overwrites it. Unknown keys are rejected.\n\
         {role}\n\
         # runc binary: an absolute path, or a name looked up in containerd's PATH.\n\
         runc_binary = \"runc\"\n\
         # Where runc keeps container state (runc --root).\n\
         runc_root = \"{runc_root}\"\n\
         # Use runc's systemd cgroup driver (match the kubelet's cgroupDriver).\n\
         systemd_cgroup = false\n\
         # The shim's own log level: error, warn, info, debug, trace.\n\
         log_level = \"info\"\n\
         # enforce: policies, the gate and the compromise policy act; audit: they only report.\n\
         mode = \"{mode}\"\n\
         # KubeArmor policies (*.yaml) for this runtime's containers; check them first with\n\
         # `palisade policy check`. A policy that does not parse refuses the containers.\n\
         policy_dir = {policy_dir}\n\
         # The helper that applies landlock in front of every process of a container.\n\
         init_binary = {init_binary}\n\
         \n\
         {hardening}\
         \n\
         # The pods' HTTP gates (pod annotation palisade.dev/gate).\n\
         [gate]\n\
         # Learned profiles, one directory per service (`palisade gate export|import`).\n\
         state_dir = {state_dir}\n\
         \n\
         # The violation log, read with `palisade events` (docs/events.md).\n\
         [events]\n\
         log_dir = {log_dir}\n",
        path = path.display(),
        runc_root = palisade_config::DEFAULT_RUNC_ROOT,
        state_dir = quoted(&settings.gate_state_dir),
        policy_dir = quoted(&settings.policy_dir),
        init_binary = quoted(&settings.init_binary),
        log_dir = quoted(&settings.log_dir),
        hardening = if name == "palisade-compat" {
            compat_table()
        } else {
            HARDENED_TABLE
        },
        mode = if name == "palisade-audit" {
            "audit"
        } else {
            "enforce"
        },
    );
    if name == "palisade-strict" && shim_supports_strict() {
        text.push_str(STRICT_TABLE);
    }
    Config::parse(path, &text)?;
    Ok(text)
}

/// The configurations of `names`, for the files of `config_dir`.
pub fn files(
    config_dir: &Path,
    settings: &Settings,
    names: &[&str],
) -> Result<Vec<ShimConfigFile>, ConfigError> {
    names
        .iter()
        .map(|name| {
            let path = config_dir.join(format!("{name}.toml"));
            let text = render(name, &path, settings)?;
            Ok(ShimConfigFile { path, text })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_accepted_by_the_shim() {
        let dir = Path::new("/etc/palisade");
        let settings = Settings {
            gate_state_dir: PathBuf::from("/srv/palisade state/gate"),
            policy_dir: PathBuf::from("/etc/palisade/policies"),
            init_binary: PathBuf::from("/opt/bin/palisade-init"),
            log_dir: PathBuf::from("/srv/log/palisade"),
        };
        let files = files(dir, &settings, &crate::containerd::RUNTIMES).unwrap();
        assert_eq!(files.len(), 4);
        for f in &files {
            let c = Config::parse(&f.path, &f.text).unwrap();
            assert_eq!(c.gate.state_dir, settings.gate_state_dir);
            assert_eq!(c.policy_dir.as_ref(), Some(&settings.policy_dir));
            assert_eq!(c.init_binary.as_ref(), Some(&settings.init_binary));
            let want = if f.path.ends_with("palisade-compat.toml") {
                palisade_sandbox::HardeningConfig::compat()
            } else {
                palisade_sandbox::HardeningConfig::default()
            };
            assert_eq!(c.hardening, want, "{}", f.path.display());
            assert_eq!(c.events.log_dir, settings.log_dir);
            assert_eq!(
                c.audit(),
                f.path.ends_with("palisade-audit.toml"),
                "{}: only palisade-audit is in audit mode",
                f.path.display()
            );
            let strict = f.path.ends_with("palisade-strict.toml");
            assert_eq!(
                c.strict.is_some(),
                strict && shim_supports_strict(),
                "{}",
                f.path.display()
            );
        }
        assert_eq!(
            files[1].path,
            Path::new("/etc/palisade/palisade-strict.toml")
        );
        assert!(shim_supports_strict(), "the shim has a [strict] table");
        let strict = Config::parse(&files[1].path, &files[1].text).unwrap();
        assert_eq!(
            strict.strict.as_ref().map(|s| s.writable_paths.clone()),
            Some(vec!["/tmp".to_string()])
        );
    }

    /// What `palisade install` writes is what `runtimeclass/` documents: each file parsed, the
    /// installer's node paths set on the documented one, and the two compared whole.
    #[test]
    fn installed_configurations_are_the_documented_ones() {
        let documented = [
            ("palisade", include_str!("../../runtimeclass/palisade.toml")),
            (
                "palisade-strict",
                include_str!("../../runtimeclass/palisade-strict.toml"),
            ),
            (
                "palisade-audit",
                include_str!("../../runtimeclass/palisade-audit.toml"),
            ),
            (
                "palisade-compat",
                include_str!("../../runtimeclass/palisade-compat.toml"),
            ),
        ];
        let settings = Settings {
            gate_state_dir: PathBuf::from("/var/lib/palisade/gate"),
            policy_dir: PathBuf::from("/etc/palisade/policies"),
            init_binary: PathBuf::from("/usr/local/bin/palisade-init"),
            log_dir: PathBuf::from("/var/log/palisade"),
        };
        for (name, text) in documented {
            let path = PathBuf::from(format!("/etc/palisade/{name}.toml"));
            let installed = Config::parse(&path, &render(name, &path, &settings).unwrap()).unwrap();
            let mut doc = Config::parse(&path, text).unwrap();
            doc.gate.state_dir = settings.gate_state_dir.clone();
            doc.policy_dir = Some(settings.policy_dir.clone());
            doc.init_binary = Some(settings.init_binary.clone());
            doc.events.log_dir = settings.log_dir.clone();
            assert_eq!(
                installed, doc,
                "runtimeclass/{name}.toml and what palisade install writes differ"
            );
        }
    }
}
