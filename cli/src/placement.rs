//! How each rule of a policy will be enforced on this node: the compiled rule's candidates,
//! narrowed by the kernel's features through the sandbox's own translation (the code the
//! shim runs at container start), on a container spec shaped like CRI's.

use palisade_policy::{compile, Action, CompileOptions, Policy, Workload};
use palisade_sandbox::{
    enforce, harden_spec, EnforceError, Enforcer, HardeningConfig, KernelFeatures, StrictConfig,
};
use serde::Serialize;
use serde_json::{json, Value};

/// The container id the trial translation is reported under.
const TRIAL_CONTAINER: &str = "policy-check";

/// A policy's rules could not be translated at all (not a per-rule refusal).
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("policy {policy}: default hardening of the trial spec: {source}")]
    Harden {
        policy: String,
        #[source]
        source: palisade_sandbox::HardenError,
    },
    #[error("policy {policy}: {source}")]
    Enforce {
        policy: String,
        #[source]
        source: EnforceError,
    },
}

/// How one rule is carried out here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePlacement {
    /// `spec.file.matchDirectories[0]`.
    pub origin: String,
    pub kind: String,
    pub target: String,
    pub action: String,
    /// The compiled rule's candidates, in order of preference.
    pub candidates: Vec<String>,
    /// The mechanism this node gives it (`landlock`, `bind-mount-mask`, ..., `audit-only`).
    pub enforcer: String,
    /// How it reads for an operator (`masked path`, `landlock (ABI 6)`, ...).
    pub summary: String,
    /// Why the node cannot carry the rule as written, when it cannot.
    pub unenforceable: Option<String>,
    pub note: Option<String>,
}

/// How one policy is carried out here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyPlacement {
    pub policy: String,
    pub rules: Vec<RulePlacement>,
    /// Set when a container with this policy is refused by a runtime that does not allow
    /// degrading (the reasons, one per rule).
    pub refused_without_degrade: Vec<String>,
    /// Parts of the policy nothing enforces (such as `apparmor`).
    pub unenforced: Vec<String>,
}

/// A container spec as containerd's CRI plugin writes it, reduced to what the translation
/// reads: the usual mounts, the service account token read-only, a read-write volume.
fn trial_spec() -> Value {
    let bind = |dst: &str, mode: &str| {
        json!({"destination": dst, "type": "bind", "source": format!("/var/lib/trial{dst}"),
               "options": ["rbind", "rprivate", mode]})
    };
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "args": ["/app"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
                             "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
                             "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD",
                             "CAP_AUDIT_WRITE", "CAP_SETFCAP"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"]
            }
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            bind("/etc/hosts", "rw"),
            bind("/etc/resolv.conf", "rw"),
            bind("/dev/shm", "rw"),
            bind("/data", "rw"),
            bind("/var/run/secrets/kubernetes.io/serviceaccount", "ro"),
        ],
        "annotations": {"io.kubernetes.cri.container-type": "container"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]}
    })
}

fn candidate_name(e: palisade_policy::Enforcer) -> &'static str {
    use palisade_policy::Enforcer as E;
    match e {
        E::Landlock => "landlock",
        E::BindMountMask => "bind-mount-mask",
        E::Seccomp => "seccomp",
        E::CapabilityBoundingSet => "capability-bounding-set",
        E::EbpfExecKill => "ebpf-exec-kill",
        E::EbpfCgroupSock => "ebpf-cgroup-sock",
        E::BpfLsm => "bpf-lsm",
        E::AuditOnly => "audit-only",
    }
}

/// What an enforcer means, for the operator.
pub fn describe(enforcer: &Enforcer, kernel: &KernelFeatures, note: Option<&str>) -> String {
    match enforcer {
        Enforcer::Landlock => match kernel.landlock_abi {
            Some(abi) => format!("landlock (ABI {abi})"),
            None => "landlock (not available here)".to_string(),
        },
        Enforcer::BindMountMask => "masked path".to_string(),
        Enforcer::ReadonlyPath => "read-only path".to_string(),
        Enforcer::Seccomp => "seccomp".to_string(),
        Enforcer::CapabilitiesBounding => "dropped capability".to_string(),
        // The shim's monitor keys exec rules on files (a path or a directory's files), not on
        // names, patterns or symlinks; those refuse the container unless it may degrade.
        Enforcer::MonitorExecKill => {
            "monitor: killed at exec (files only; names, patterns and symlinks refused unless degrading)"
                .to_string()
        }
        Enforcer::MonitorBpfLsm => {
            "monitor: refused with EACCES by BPF-LSM file_open (inode keys resolved at start; patterns expanded then)"
                .to_string()
        }
        Enforcer::MonitorSockAddr => "monitor: cgroup socket hooks".to_string(),
        Enforcer::MonitorSockCreate => {
            "monitor: socket creation allow-list per binary (cgroup sock_create)".to_string()
        }
        // The shim reports Audit rules on executing or opening files and directories; the
        // rest (fromSource, ownerOnly, patterns, capabilities) it only logs.
        Enforcer::MonitorAudit => {
            "monitor: reported (exec and open of files and directories; fromSource, ownerOnly, patterns and capabilities only logged)"
                .to_string()
        }
        Enforcer::AuditOnly => format!(
            "unenforceable here: {} (audit only)",
            note.unwrap_or("no mechanism on this node")
        ),
        Enforcer::Unenforceable(why) => format!("unenforceable here: {why}"),
    }
}

/// Whether the shim turns a source-limited network rule into a socket allow-list whatever
/// the image holds (shim/src/monitoring.rs `sock_rule`): an Allow whose sources are files.
fn socket_allow_list(r: &palisade_sandbox::MonitorRule) -> bool {
    r.action == Action::Allow && r.from_source.iter().all(|s| !s.ends_with('/'))
}

/// Places every rule of `policy` on a node with `kernel`.
pub fn place(policy: &Policy, kernel: &KernelFeatures) -> Result<PolicyPlacement, PlacementError> {
    let id = policy.id.to_string();
    let workload = Workload {
        namespace: policy.id.namespace.clone(),
        pod_name: "trial".to_string(),
        container_name: "trial".to_string(),
        image: "trial".to_string(),
        labels: Default::default(),
    };
    let compiled = compile(&[policy], &workload, &CompileOptions::default());
    let mut spec = trial_spec();
    harden_spec(TRIAL_CONTAINER, &mut spec, &HardeningConfig::default()).map_err(|source| {
        PlacementError::Harden {
            policy: id.clone(),
            source,
        }
    })?;

    // As a runtime that refuses what it cannot carry: which rules refuse the container.
    let prefix = format!("{id}: ");
    let policy_prefix = format!("policy {prefix}");
    let refused = match enforce(
        TRIAL_CONTAINER,
        &mut spec.clone(),
        Some(&compiled),
        None,
        kernel,
    ) {
        // The shim's monitor carries exec rules on files and fromSource Allow network rules
        // naming files (socket allow-lists); exec allow-lists with fromSource or ownerOnly,
        // other source-limited network rules and exec rules by name or pattern refuse the
        // container (shim/src/monitoring.rs `rules_for`).
        Ok(out) => {
            let m = &out.monitor;
            let by_file = |r: &&palisade_sandbox::MonitorRule| {
                matches!(
                    r.target,
                    palisade_sandbox::MonitorTarget::Path(_)
                        | palisade_sandbox::MonitorTarget::Directory { .. }
                )
            };
            m.deny_exec
                .iter()
                .filter(|r| !by_file(r))
                .chain(&m.allow_exec)
                .chain(m.network.iter().filter(|r| !socket_allow_list(r)))
                .map(|r| {
                    let rule = r.rule.strip_prefix(&prefix).unwrap_or(&r.rule);
                    format!("{rule}: {} rule the eBPF monitor cannot carry", r.kind)
                })
                .collect()
        }
        Err(EnforceError::Unenforceable { reasons, .. }) => reasons
            .iter()
            .map(|r| r.strip_prefix(&policy_prefix).unwrap_or(r).to_string())
            .collect(),
        Err(EnforceError::LandlockAbi {
            required,
            available,
            missing,
            ..
        }) => vec![format!(
            "landlock: needs abi {required} for {missing}, the kernel has {}",
            available.map_or_else(|| "no landlock".to_owned(), |v| format!("abi {v}"))
        )],
        Err(source) => {
            return Err(PlacementError::Enforce {
                policy: id.clone(),
                source,
            })
        }
    };
    // As one that degrades: what each rule gets. Strict mode itself is switched off as far
    // as it goes (no scoping), so only the policy's rules shape the result.
    let degrade = StrictConfig {
        writable_paths: Vec::new(),
        scope_signals: false,
        scope_abstract_unix: false,
        allow_degraded: true,
    };
    let out = enforce(
        TRIAL_CONTAINER,
        &mut spec,
        Some(&compiled),
        Some(&degrade),
        kernel,
    )
    .map_err(|source| PlacementError::Enforce {
        policy: id.clone(),
        source,
    })?;

    let candidates: Vec<(String, Vec<String>, Vec<String>)> = compiled
        .enforcements()
        .map(|(_, origin, e)| {
            (
                origin.to_string(),
                e.enforcers()
                    .map(|c| candidate_name(c).to_string())
                    .collect(),
                e.unenforceable.clone(),
            )
        })
        .collect();

    let rules = out
        .rules
        .iter()
        .map(|r| {
            let origin = r.rule.strip_prefix(&prefix).unwrap_or(&r.rule).to_string();
            let (cands, notes) = candidates
                .iter()
                .find(|(o, _, _)| *o == origin)
                .map(|(_, c, n)| (c.clone(), n.clone()))
                .unwrap_or_default();
            let unenforceable = match &r.enforcer {
                Enforcer::AuditOnly => r.note.clone().or_else(|| notes.first().cloned()),
                Enforcer::Unenforceable(why) => Some(why.clone()),
                _ => None,
            };
            RulePlacement {
                origin,
                kind: r.kind.to_string(),
                target: r.target.clone(),
                action: r.action.to_string(),
                candidates: cands,
                enforcer: r.enforcer.to_string(),
                summary: match (&r.enforcer, &r.note) {
                    (Enforcer::AuditOnly | Enforcer::Unenforceable(_), _) | (_, None) => {
                        describe(&r.enforcer, kernel, unenforceable.as_deref())
                    }
                    (e, Some(note)) => format!("{}; {note}", describe(e, kernel, None)),
                },
                unenforceable,
                note: r.note.clone(),
            }
        })
        .collect();
    Ok(PolicyPlacement {
        policy: id,
        rules,
        refused_without_degrade: refused,
        unenforced: compiled.unenforced.clone(),
    })
}
