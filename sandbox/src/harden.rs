//! The default hardening of a container's OCI spec, applied before runc creates it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::capabilities::{self, CapabilityError, CapabilityPolicy, PRIVILEGED_MINIMUM};
use crate::config::HardeningConfig;
use crate::contract::{self, Override, COMPAT_RUNTIME_CLASS};
use crate::paths::{self, MASKED_PATHS, READONLY_PATHS};
use crate::seccomp::{self, Arch};
use crate::spec::{self, SpecError};

/// The annotation CRI sets to `sandbox` on the pod's pause container and to `container` on
/// the others.
pub use crate::spec::cri::CONTAINER_TYPE as CONTAINER_TYPE_ANNOTATION;
use crate::spec::cri::{
    SANDBOX_NAME as POD_NAME_ANNOTATION, SANDBOX_NAMESPACE as POD_NAMESPACE_ANNOTATION,
};

/// What [`harden_spec`] did, for the shim's log and the event pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardeningReport {
    /// One line per change made or per decision to keep what the spec had, each starting
    /// with the rule (`seccomp:`, `capabilities:`, `process:`, `maskedPaths:`,
    /// `readonlyPaths:`).
    pub applied: Vec<String>,
    /// What the configuration granted the container beyond the hardened default, one line
    /// each (`privileged: ...`, `capabilities: ...`, `seccomp: ...`, `no_new_privs: ...`,
    /// `procMount: ...`). Empty under the hardened default: a container that asked for
    /// nothing more than the default gets nothing here.
    pub relaxed: Vec<String>,
    /// What the pod asked for that the hardened default replaced with something stricter.
    pub overridden: Vec<Override>,
}

/// Why a container's spec was refused or could not be hardened. Every message names the
/// container.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    /// The container is privileged and the configuration does not allow it.
    #[error(
        "container {container}: privileged containers are refused by this configuration \
         (allow_privileged): securityContext.privileged gives the container every \
         capability, every host device and no seccomp filter, the node's root in all but \
         name; set [hardening] allow_privileged = true or use the \
         RuntimeClass {COMPAT_RUNTIME_CLASS}"
    )]
    Privileged {
        /// The container id.
        container: String,
    },
    /// The container holds capabilities the configuration does not allow, or the
    /// configuration names an unknown capability.
    #[error("container {container}: {source}")]
    Capabilities {
        /// The container id.
        container: String,
        /// Which capabilities.
        #[source]
        source: CapabilityError,
    },
    /// The spec does not have the shape of an OCI runtime spec.
    #[error("container {container}: {source}")]
    Spec {
        /// The container id.
        container: String,
        /// What is wrong with it.
        #[source]
        source: SpecError,
    },
    /// The container needs palisade's profile and there is none for this machine.
    #[error("container {container}: seccomp: no default profile for this architecture")]
    UnsupportedArch {
        /// The container id.
        container: String,
    },
    /// The profile could not be turned into JSON.
    #[error("container {container}: seccomp: serialize profile: {source}")]
    Serialize {
        /// The container id.
        container: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Hardens `spec`, the bundle's config.json as CRI generated it, in place.
///
/// Refuses privileged containers (unless `cfg.allow_privileged`) and containers holding
/// capabilities beyond the default set that `cfg` does not allow; otherwise cuts the
/// capability sets, sets `noNewPrivileges` (unless `cfg.allow_privilege_escalation`), merges
/// the masked and read-only paths (unless the spec has none and `cfg.allow_unmasked_proc`)
/// and, when the spec has no `linux.seccomp`, installs [`seccomp::default_profile`] (unless
/// `cfg.allow_unconfined_seccomp`). A refused spec is left exactly as it was. Fields this
/// function does not rewrite keep their values. What `cfg` granted beyond the hardened
/// default is in [`HardeningReport::relaxed`], what the hardened default overrode in
/// [`HardeningReport::overridden`].
pub fn harden_spec(
    container_id: &str,
    spec: &mut Value,
    cfg: &HardeningConfig,
) -> Result<HardeningReport, HardenError> {
    let spec_err = |source| HardenError::Spec {
        container: container_id.to_owned(),
        source,
    };
    let (labels, report) = spec::edit(spec, spec_err, |root| {
        let labels = Labels::read(root);
        let mut report = HardeningReport::default();

        if is_privileged(root).map_err(spec_err)? {
            if !cfg.allow_privileged {
                return Err(HardenError::Privileged {
                    container: container_id.to_owned(),
                });
            }
            let mut granted = "privileged: every capability, every host device and no seccomp \
                               filter (allow_privileged)"
                .to_owned();
            let shared = contract::shared_mounts(root);
            if !shared.is_empty() {
                granted += &format!("; mount propagation to the host: {}", shared.join(", "));
            }
            report.relaxed.push(granted);
            return Ok((labels, report));
        }

        let process = match root.get_mut("process") {
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(spec_err(SpecError::WrongType {
                    path: "process".to_owned(),
                    expected: "an object",
                }))
            }
            None => return Err(spec_err(SpecError::Missing { path: "process" })),
        };
        let bounding = cut_capabilities(container_id, process, cfg, &mut report)?;
        set_no_new_privileges(process, cfg, &mut report);
        let linux = spec::object_entry(root, "linux", "linux").map_err(spec_err)?;
        merge_paths(linux, cfg, &mut report).map_err(spec_err)?;
        ensure_seccomp(container_id, linux, &bounding, cfg, &mut report)?;

        Ok((labels, report))
    })?;
    labels.log(container_id, &report);
    Ok(report)
}

/// Cuts the capability sets; returns the bounding set the container keeps.
fn cut_capabilities(
    container_id: &str,
    process: &mut Map<String, Value>,
    cfg: &HardeningConfig,
    report: &mut HardeningReport,
) -> Result<BTreeSet<String>, HardenError> {
    let capabilities_err = |source| HardenError::Capabilities {
        container: container_id.to_owned(),
        source,
    };
    let policy = CapabilityPolicy::new(cfg.drop_net_raw, &cfg.allowed_added_capabilities)
        .map_err(capabilities_err)?;
    let change = capabilities::restrict(process, &policy).map_err(capabilities_err)?;
    if !change.dropped.is_empty() {
        let dropped: Vec<&str> = change.dropped.iter().map(String::as_str).collect();
        report
            .applied
            .push(format!("capabilities: dropped {}", dropped.join(", ")));
    }
    let granted = capabilities::beyond_hardened_default(&change.bounding);
    if !granted.is_empty() {
        report.relaxed.push(format!(
            "capabilities: {} beyond palisade's default set (allowed_added_capabilities{})",
            granted.join(", "),
            if granted.iter().any(|c| c == "CAP_NET_RAW") && !cfg.drop_net_raw {
                ", drop_net_raw = false"
            } else {
                ""
            }
        ));
    }
    Ok(change.bounding)
}

fn set_no_new_privileges(
    process: &mut Map<String, Value>,
    cfg: &HardeningConfig,
    report: &mut HardeningReport,
) {
    if process.get("noNewPrivileges") == Some(&Value::Bool(true)) {
        return;
    }
    if cfg.allow_privilege_escalation {
        report.relaxed.push(
            "no_new_privs: left off as the spec has it (allowPrivilegeEscalation is not \
             false; allow_privilege_escalation)"
                .to_owned(),
        );
        return;
    }
    report.applied.push(
        "process: noNewPrivileges set (the spec left it off: allowPrivilegeEscalation is \
         not false)"
            .to_owned(),
    );
    report.overridden.push(Override::no_new_privileges());
    process.insert("noNewPrivileges".to_owned(), Value::Bool(true));
}

fn merge_paths(
    linux: &mut Map<String, Value>,
    cfg: &HardeningConfig,
    report: &mut HardeningReport,
) -> Result<(), SpecError> {
    let unmasked = spec::string_list(linux, "maskedPaths", "linux.maskedPaths")?.is_empty()
        && spec::string_list(linux, "readonlyPaths", "linux.readonlyPaths")?.is_empty();
    if unmasked && cfg.allow_unmasked_proc {
        report.relaxed.push(
            "procMount: /proc and /sys left unmasked as the spec has them (procMount: \
             Unmasked; allow_unmasked_proc)"
                .to_owned(),
        );
        return Ok(());
    }
    if unmasked {
        report.overridden.push(Override::unmasked_proc());
    }
    for (key, required) in [
        ("maskedPaths", &MASKED_PATHS[..]),
        ("readonlyPaths", &READONLY_PATHS[..]),
    ] {
        let added = paths::merge(linux, key, required)?;
        if !added.is_empty() {
            report
                .applied
                .push(format!("{key}: added {}", added.join(", ")));
        }
    }
    Ok(())
}

/// Keeps the spec's profile (reporting what it lets through) or installs palisade's.
fn ensure_seccomp(
    container_id: &str,
    linux: &mut Map<String, Value>,
    bounding: &BTreeSet<String>,
    cfg: &HardeningConfig,
    report: &mut HardeningReport,
) -> Result<(), HardenError> {
    match linux.get("seccomp") {
        Some(Value::Object(existing)) => {
            let default_action = existing
                .get("defaultAction")
                .and_then(Value::as_str)
                .unwrap_or("unset");
            // The pod's own profile (RuntimeDefault or Localhost) is what it asked for and
            // what the hardened default keeps: logged, not raised as a relaxation.
            report.applied.push(format!(
                "seccomp: kept the profile in the spec (defaultAction {default_action})"
            ));
            if matches!(default_action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG") {
                report.applied.push(format!(
                    "seccomp: the spec's profile lets through every syscall it does not \
                     name (defaultAction {default_action})"
                ));
            }
            let risky = seccomp::never_allowed_in(existing);
            if !risky.is_empty() {
                report.applied.push(format!(
                    "seccomp: the spec's profile allows what palisade's never does: {}",
                    risky.join(", ")
                ));
            }
        }
        Some(Value::Null) | None if cfg.allow_unconfined_seccomp => report.relaxed.push(
            "seccomp: no filter, as the spec asks (Unconfined, or unset on a node whose \
             default is unconfined; allow_unconfined_seccomp)"
                .to_owned(),
        ),
        Some(Value::Null) | None => {
            report.overridden.push(Override::seccomp_unconfined(
                cfg.unset_seccomp_is_runtime_default,
            ));
            let arch = Arch::host().ok_or_else(|| HardenError::UnsupportedArch {
                container: container_id.to_owned(),
            })?;
            let profile = seccomp::default_profile(arch, bounding, cfg.allow_32bit_syscalls);
            let rules = profile.syscalls.len();
            let value =
                serde_json::to_value(&profile).map_err(|source| HardenError::Serialize {
                    container: container_id.to_owned(),
                    source,
                })?;
            linux.insert("seccomp".to_owned(), value);
            report.applied.push(format!(
                "seccomp: installed palisade's default profile ({arch:?}, {rules} rules, {})",
                if cfg.allow_32bit_syscalls {
                    "32-bit entries allowed"
                } else {
                    "32-bit entries kill"
                }
            ));
        }
        Some(_) => {
            return Err(HardenError::Spec {
                container: container_id.to_owned(),
                source: SpecError::WrongType {
                    path: "linux.seccomp".to_owned(),
                    expected: "an object",
                },
            })
        }
    }
    Ok(())
}

/// CRI's spec for a privileged container holds every capability the runtime can give and
/// allows every device in the device cgroup; containerd 2.x also empties the masked and
/// read-only path lists, 1.6 keeps its defaults there. A spec is privileged when its bounding
/// set holds `CAP_SYS_ADMIN` and its device cgroup allows every device (nothing else in CRI
/// asks for that), or when it holds every capability up to `CAP_AUDIT_READ` and masks
/// nothing (what a pod that adds `ALL` and asks for an unmasked /proc gets, which is just as
/// privileged). The capability test does not ask for every capability the kernel knows: a
/// containerd running under a reduced bounding set (in a container, or a systemd unit with
/// `CapabilityBoundingSet`) gives its privileged containers that set.
fn is_privileged(root: &Map<String, Value>) -> Result<bool, SpecError> {
    let bounding = match root.get("process") {
        Some(Value::Object(process)) => capabilities::bounding(process)?,
        _ => return Ok(false),
    };
    let Some(Value::Object(linux)) = root.get("linux") else {
        return Ok(PRIVILEGED_MINIMUM.iter().all(|c| bounding.contains(*c)));
    };
    if bounding.contains("CAP_SYS_ADMIN") && allows_every_device(linux) {
        return Ok(true);
    }
    if !PRIVILEGED_MINIMUM.iter().all(|c| bounding.contains(*c)) {
        return Ok(false);
    }
    let masked = spec::string_list(linux, "maskedPaths", "linux.maskedPaths")?;
    let readonly = spec::string_list(linux, "readonlyPaths", "linux.readonlyPaths")?;
    Ok(masked.is_empty() && readonly.is_empty())
}

/// Whether `linux.resources.devices` has a rule allowing read, write and mknod of every
/// device (no type, or type `a`, and no major or minor number), as containerd writes for a
/// privileged container.
fn allows_every_device(linux: &Map<String, Value>) -> bool {
    let Some(Value::Array(rules)) = linux.get("resources").and_then(|r| r.get("devices")) else {
        return false;
    };
    rules.iter().any(|rule| {
        let any_type = match rule.get("type") {
            None | Some(Value::Null) => true,
            Some(t) => t.as_str() == Some("a"),
        };
        let any_number = ["major", "minor"].iter().all(|k| {
            rule.get(*k)
                .is_none_or(|v| v.is_null() || v.as_i64() == Some(-1))
        });
        let access = rule.get("access").and_then(Value::as_str).unwrap_or("");
        rule.get("allow").and_then(Value::as_bool) == Some(true)
            && any_type
            && any_number
            && ["r", "w", "m"].iter().all(|a| access.contains(a))
    })
}

/// The CRI annotations that identify the container in logs.
struct Labels {
    kind: String,
    pod: String,
}

impl Labels {
    fn read(root: &Map<String, Value>) -> Self {
        let annotation = |key: &str| {
            root.get("annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let namespace = annotation(POD_NAMESPACE_ANNOTATION);
        let name = annotation(POD_NAME_ANNOTATION);
        Self {
            kind: annotation(CONTAINER_TYPE_ANNOTATION),
            pod: if namespace.is_empty() {
                name
            } else {
                format!("{namespace}/{name}")
            },
        }
    }

    /// At debug level: the caller (the shim) logs the outcome itself; this adds the pod.
    fn log(&self, container: &str, report: &HardeningReport) {
        tracing::debug!(
            container,
            pod = %self.pod,
            kind = %self.kind,
            applied = ?report.applied,
            relaxed = ?report.relaxed,
            overridden = ?report.overridden,
            "spec hardened"
        );
    }
}
