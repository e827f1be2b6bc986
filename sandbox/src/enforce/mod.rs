//! Policy and `palisade-strict` to enforcement: changes to a container's OCI spec, a
//! palisade-init plan, the monitor's share, and per rule the mechanism that carries it.

mod caps;
mod fs;
mod landlock;
pub mod monitor;
mod network;
mod profile;
mod syscalls;

use std::fmt;

use palisade_init::plan::Plan;
use palisade_policy::{
    Action, CapabilityRule, CompiledPolicy, CompiledRule, FileRule, NetworkRule, ProcessRule,
    RuleMeta, SyscallRule,
};
use serde::Serialize;
use serde_json::Value;

use crate::kernel::KernelFeatures;
use crate::spec::SpecError;
use crate::strict::StrictConfig;

pub use monitor::{MonitorRule, MonitorRules, MonitorTarget};

/// The kind of a policy rule (the section of a KubeArmor policy it comes from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    File,
    Process,
    Network,
    Capabilities,
    Syscalls,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::Process => "process",
            Self::Network => "network",
            Self::Capabilities => "capabilities",
            Self::Syscalls => "syscalls",
        })
    }
}

/// The mechanism a rule got on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcer {
    /// The landlock ruleset palisade-init applies.
    Landlock,
    /// `linux.maskedPaths`: runc binds /dev/null over a file, an empty read-only tmpfs over
    /// a directory.
    BindMountMask,
    /// `linux.readonlyPaths`: runc remounts the path read-only.
    ReadonlyPath,
    /// A rule in the spec's seccomp profile.
    Seccomp,
    /// Removed from the spec's capability sets.
    CapabilitiesBounding,
    /// The monitor kills the process at `execve`.
    MonitorExecKill,
    /// The monitor's BPF-LSM `file_open` program refuses the open with EACCES.
    MonitorBpfLsm,
    /// The monitor's cgroup socket address hooks.
    MonitorSockAddr,
    /// The monitor's cgroup socket creation hook (an allow-list of binaries per protocol).
    MonitorSockCreate,
    /// The monitor reports it (an Audit rule).
    MonitorAudit,
    /// A Block rule this node cannot enforce, run anyway because the configuration allows
    /// degrading: the monitor only reports it.
    AuditOnly,
    /// Nothing carries it, with why.
    Unenforceable(String),
}

impl fmt::Display for Enforcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Landlock => "landlock",
            Self::BindMountMask => "bind-mount-mask",
            Self::ReadonlyPath => "readonly-path",
            Self::Seccomp => "seccomp",
            Self::CapabilitiesBounding => "capabilities-bounding",
            Self::MonitorExecKill => "monitor-exec-kill",
            Self::MonitorBpfLsm => "monitor-bpf-lsm",
            Self::MonitorSockAddr => "monitor-sock-addr",
            Self::MonitorSockCreate => "monitor-sock-create",
            Self::MonitorAudit => "monitor-audit",
            Self::AuditOnly => "audit-only",
            Self::Unenforceable(why) => return write!(f, "unenforceable: {why}"),
        })
    }
}

/// How one policy rule is enforced on this container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleEnforcement {
    /// `namespace/name: origin`, e.g. `default/block-sa: spec.file.matchDirectories[0]`.
    pub rule: String,
    pub kind: RuleKind,
    /// What the rule matches, as written (`/run/secrets/kubernetes.io/serviceaccount/`,
    /// `raw`, `CAP_NET_RAW`, `unlink,chmod`).
    pub target: String,
    pub action: Action,
    pub enforcer: Enforcer,
    /// How the mechanism differs from the rule as written, when it does.
    pub note: Option<String>,
}

/// What [`enforce`] produced besides its changes to the spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Enforcement {
    /// `Some` when palisade-init must run in front of the container's processes with this
    /// plan (the shim writes it and prefixes `process.args`).
    pub plan: Option<Plan>,
    /// One entry per policy rule: file, process, capabilities, syscalls, then network rules,
    /// each kind in the compiled policy's order.
    pub rules: Vec<RuleEnforcement>,
    /// One line per change made for `palisade-strict` and per degradation accepted.
    pub applied: Vec<String>,
    /// What runs weaker than asked because the configuration allows it.
    pub warnings: Vec<String>,
    /// The monitor's share.
    pub monitor: MonitorRules,
}

/// Why a container cannot be started with its policy or strict configuration. Each message
/// names the container.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The spec does not have the shape of an OCI runtime spec.
    #[error("container {container}: {source}")]
    Spec {
        container: String,
        #[source]
        source: SpecError,
    },
    /// Rules this node cannot enforce as written, and the configuration does not allow
    /// degrading; one line per rule, joined with `; `.
    #[error("container {container}: {}; refused (allow_degraded is off)", .reasons.join("; "))]
    Unenforceable {
        container: String,
        reasons: Vec<String>,
    },
    /// The landlock ruleset needs a newer kernel and the configuration does not allow
    /// degrading.
    #[error(
        "container {container}: landlock: needs abi {required} for {missing}, the kernel has \
         {}; refused (allow_degraded is off)",
        available.map_or_else(|| "no landlock".to_owned(), |v| format!("abi {v}"))
    )]
    LandlockAbi {
        container: String,
        required: u32,
        available: Option<u32>,
        missing: String,
    },
    /// A `writable_paths` entry is not a clean absolute path.
    #[error(
        "container {container}: strict: writable path {path:?}: must be absolute, without .. or //"
    )]
    WritablePath { container: String, path: String },
}

/// Turns a compiled policy and the `palisade-strict` configuration into enforcement for one
/// container: rewrites `spec` (the bundle's config.json, after [`crate::harden_spec`]) and
/// returns the palisade-init plan, per rule the mechanism chosen, and the monitor's share.
///
/// Nothing is weakened silently: a Block rule (or an allow-list entry) that this node
/// cannot carry as written refuses the container, naming the rule and why, unless `strict`
/// allows degrading; then it is reported in [`Enforcement::warnings`] and handed to the
/// monitor. A refused spec is left exactly as it was.
pub fn enforce(
    container_id: &str,
    spec: &mut Value,
    policy: Option<&CompiledPolicy>,
    strict: Option<&StrictConfig>,
    kernel: &KernelFeatures,
) -> Result<Enforcement, EnforceError> {
    let spec_err = |source| EnforceError::Spec {
        container: container_id.to_owned(),
        source,
    };
    let out = crate::spec::edit(spec, spec_err, |root| {
        let mut ctx = Ctx {
            container: container_id,
            kernel,
            degrade: strict.is_some_and(|s| s.allow_degraded),
            out: Enforcement::default(),
            refused: Vec::new(),
        };
        let mut layers = landlock::Layers::default();

        if let Some(strict) = strict {
            let writable = fs::apply_strict(&mut ctx, root, strict)?;
            layers.write = Some(writable);
            layers.scope_signal = strict.scope_signals;
            layers.scope_abstract_unix = strict.scope_abstract_unix;
        }
        if let Some(policy) = policy {
            for part in &policy.unenforced {
                ctx.out
                    .warnings
                    .push(format!("policy {part}: not enforced by palisade"));
            }
            let masks = fs::file_rules(&mut ctx, policy, &mut layers);
            fs::process_rules(&mut ctx, policy, &mut layers);
            fs::apply_masks(root, &masks).map_err(spec_err)?;
            caps::apply(&mut ctx, root, policy).map_err(spec_err)?;
            let linux = crate::spec::object_entry(root, "linux", "linux").map_err(spec_err)?;
            let mut seccomp = profile::Editor::new(linux);
            syscalls::apply(&mut ctx, &mut seccomp, policy);
            network::apply(&mut ctx, &mut seccomp, policy);
            seccomp.finish(&mut ctx);
        }
        // Read from the final filter: the policy's syscall rules (a learned profile's
        // allow-list among them) are in it by now.
        if let Some(Value::Object(linux)) = root.get_mut("linux") {
            layers.truncate_refused_by_seccomp =
                landlock::seccomp_refuses_truncate(&profile::Editor::new(linux));
        }
        let plan = landlock::plan(&mut ctx, &layers)?;

        if !ctx.refused.is_empty() {
            return Err(EnforceError::Unenforceable {
                container: container_id.to_owned(),
                reasons: ctx.refused,
            });
        }
        ctx.out.plan = plan;
        Ok(ctx.out)
    })?;
    tracing::debug!(
        container = container_id,
        plan = out.plan.is_some(),
        rules = out.rules.len(),
        warnings = ?out.warnings,
        "enforcement translated"
    );
    Ok(out)
}

/// The state of one translation.
struct Ctx<'a> {
    container: &'a str,
    kernel: &'a KernelFeatures,
    degrade: bool,
    out: Enforcement,
    refused: Vec<String>,
}

/// A rule's identity for the report.
struct RuleId {
    rule: String,
    kind: RuleKind,
    target: String,
    action: Action,
    /// The rule's severity and message, for the monitor's share of it.
    severity: u8,
    message: Option<String>,
}

/// A compiled policy's rule of any kind: its meta is what [`RuleId::of`] reads.
trait PolicyRule {
    fn meta(&self) -> &RuleMeta;
}

macro_rules! policy_rules {
    ($($rule:ty),*) => {$(
        impl PolicyRule for $rule {
            fn meta(&self) -> &RuleMeta {
                &self.meta
            }
        }
    )*};
}

policy_rules!(
    FileRule,
    ProcessRule,
    NetworkRule,
    CapabilityRule,
    SyscallRule
);

impl RuleId {
    fn of<R: PolicyRule>(kind: RuleKind, compiled: &CompiledRule<R>, target: String) -> Self {
        let meta = compiled.rule.meta();
        Self {
            rule: format!("{}: {}", compiled.policy, meta.origin),
            kind,
            target,
            action: meta.action,
            severity: meta.severity,
            message: meta.message.clone(),
        }
    }
}

impl Ctx<'_> {
    fn record(&mut self, id: &RuleId, enforcer: Enforcer, note: Option<String>) {
        self.out.rules.push(RuleEnforcement {
            rule: id.rule.clone(),
            kind: id.kind,
            target: id.target.clone(),
            action: id.action,
            enforcer,
            note,
        });
    }

    /// A rule this node cannot carry as written: refuses the container unless degrading is
    /// allowed, in which case the rule gets `fallback` and a warning. Returns whether the
    /// caller should apply the fallback.
    fn cannot(&mut self, id: &RuleId, why: &str, fallback: Enforcer) -> bool {
        let degrade = self.refuse_or_warn(id, why, &fallback);
        if degrade {
            self.record(id, fallback, Some(why.to_owned()));
        }
        degrade
    }

    /// A rule no enforcer here can carry out: refused, or (`allow_degraded`) recorded as
    /// audit-only and handed to the monitor as `rule`, to report.
    fn audit_instead(&mut self, id: &RuleId, why: &str, rule: monitor::MonitorRule) {
        if self.cannot(id, why, Enforcer::AuditOnly) {
            self.out.monitor.audit.push(rule);
        }
    }

    /// [`Ctx::cannot`] without recording the rule (the caller records it its own way).
    fn refuse_or_warn(&mut self, id: &RuleId, why: &str, fallback: &Enforcer) -> bool {
        let line = format!("policy {}: {} rule {}: {why}", id.rule, id.kind, id.target);
        if self.degrade {
            self.out
                .warnings
                .push(format!("{line}; degraded to {fallback} (allow_degraded)"));
        } else {
            self.refused.push(line);
        }
        self.degrade
    }
}
