//! The default hardening of a container's OCI spec, applied before runc creates it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::capabilities::{self, CapabilityError, CapabilityPolicy, PRIVILEGED_MINIMUM};
use crate::config::HardeningConfig;
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
    /// Hardening the configuration let the container skip.
    pub warnings: Vec<String>,
}

/// Why a container's spec was refused or could not be hardened. Every message names the
/// container.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    /// The container is privileged and the configuration does not allow it.
    #[error(
        "container {container}: privileged containers are refused by this configuration \
         (allow_privileged)"
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
/// capability sets, sets `noNewPrivileges`, merges the masked and read-only paths and, when
/// the spec has no `linux.seccomp`, installs [`seccomp::default_profile`]. A refused spec
/// is left exactly as it was. Fields this function does not rewrite keep their values.
pub fn harden_spec(
    container_id: &str,
    spec: &mut Value,
    cfg: &HardeningConfig,
) -> Result<HardeningReport, HardenError> {
    let spec_err = |source| HardenError::Spec {
        container: container_id.to_owned(),
        source,
    };
    let mut work = spec.clone();
    let root = work
        .as_object_mut()
        .ok_or(SpecError::NotAnObject)
        .map_err(spec_err)?;
    let labels = Labels::read(root);
    let mut report = HardeningReport::default();

    if is_privileged(root).map_err(spec_err)? {
        if !cfg.allow_privileged {
            return Err(HardenError::Privileged {
                container: container_id.to_owned(),
            });
        }
        report.warnings.push(
            "privileged: the container holds every capability and nothing is masked; \
             allow_privileged is set, so its spec is left as it is"
                .to_owned(),
        );
        labels.log(container_id, &report);
        return Ok(report);
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
    set_no_new_privileges(process, &mut report);
    let linux = spec::object_entry(root, "linux", "linux").map_err(spec_err)?;
    merge_paths(linux, &mut report).map_err(spec_err)?;
    ensure_seccomp(container_id, linux, &bounding, cfg, &mut report)?;

    *spec = work;
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
    Ok(change.bounding)
}

fn set_no_new_privileges(process: &mut Map<String, Value>, report: &mut HardeningReport) {
    match process.get("noNewPrivileges") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => report.applied.push(
            "process: noNewPrivileges set (the spec had false: privilege escalation is \
             never allowed)"
                .to_owned(),
        ),
        _ => report
            .applied
            .push("process: noNewPrivileges set".to_owned()),
    }
    process.insert("noNewPrivileges".to_owned(), Value::Bool(true));
}

fn merge_paths(
    linux: &mut Map<String, Value>,
    report: &mut HardeningReport,
) -> Result<(), SpecError> {
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
            report.applied.push(format!(
                "seccomp: kept the profile in the spec (defaultAction {default_action})"
            ));
            if matches!(default_action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG") {
                report.warnings.push(format!(
                    "seccomp: the spec's profile lets through every syscall it does not \
                     name (defaultAction {default_action})"
                ));
            }
            let risky = seccomp::never_allowed_in(existing);
            if !risky.is_empty() {
                report.warnings.push(format!(
                    "seccomp: the spec's profile allows what palisade's never does: {}",
                    risky.join(", ")
                ));
            }
        }
        Some(Value::Null) | None if cfg.allow_unconfined_seccomp => report.warnings.push(
            "seccomp: the spec has no profile and allow_unconfined_seccomp is set: the \
             container runs without a filter"
                .to_owned(),
        ),
        Some(Value::Null) | None => {
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

/// CRI's spec for a privileged container holds every capability and masks nothing (and a
/// pod that adds `ALL` with an unmasked /proc gets the same spec, which is just as
/// privileged). Only capabilities every supported kernel has are required, so that the
/// check holds on kernels older than the list of capabilities palisade knows.
fn is_privileged(root: &Map<String, Value>) -> Result<bool, SpecError> {
    let bounding = match root.get("process") {
        Some(Value::Object(process)) => capabilities::bounding(process)?,
        _ => return Ok(false),
    };
    if !PRIVILEGED_MINIMUM.iter().all(|c| bounding.contains(*c)) {
        return Ok(false);
    }
    let Some(Value::Object(linux)) = root.get("linux") else {
        return Ok(true);
    };
    let masked = spec::string_list(linux, "maskedPaths", "linux.maskedPaths")?;
    let readonly = spec::string_list(linux, "readonlyPaths", "linux.readonlyPaths")?;
    Ok(masked.is_empty() && readonly.is_empty())
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
            warnings = ?report.warnings,
            "spec hardened"
        );
    }
}
