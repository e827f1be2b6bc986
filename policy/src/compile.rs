//! The compiled form: all policies selected for one container merged into one rule set, with the
//! resulting posture and, per rule, the enforcers that could carry it out.

use serde::{Deserialize, Serialize};

use crate::model::{
    Action, CapabilityRule, FileRule, FileTarget, NetworkRule, Policy, PolicyId, ProcessRule,
    ProcessTarget, RuleMeta, SyscallRule,
};
use crate::select::select;
use crate::selector::Workload;

/// A mechanism palisade can use to carry out a rule. The sandbox and monitor pick among the
/// candidates per node, depending on what the kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcer {
    /// Landlock filesystem ruleset (allow-list of path hierarchies, with execute and write rights).
    Landlock,
    /// Bind-mount over the path: an empty file or tmpfs to hide it, or a read-only remount.
    BindMountMask,
    /// Seccomp filter on syscall numbers and plain arguments (never on pointed-to paths).
    Seccomp,
    /// Dropping capabilities from the bounding, permitted and inheritable sets.
    CapabilityBoundingSet,
    /// eBPF exec hook that denies or kills a process at `execve`.
    EbpfExecKill,
    /// eBPF cgroup socket hooks that refuse socket creation.
    EbpfCgroupSock,
    /// The monitor's BPF-LSM programs refusing with EACCES: `file_open` for opens, the inode
    /// hooks for removal, renames, hard links, attribute changes (chmod, chown, truncate) and
    /// new names in a covered directory. Only where `bpf` is among the kernel's active LSMs and
    /// the monitor saw its probe program run; elsewhere a rule that needs it refuses the
    /// container (or, with `allow_degraded`, is only audited).
    BpfLsm,
    /// The monitor reports the event; nothing is prevented.
    AuditOnly,
}

/// One way of enforcing a rule, with how it deviates from the rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub enforcer: Enforcer,
    /// Set when this enforcer is coarser or stricter than the rule (such as covering a whole subtree).
    pub caveat: Option<String>,
}

/// How a rule can be enforced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Enforcement {
    /// In order of preference.
    pub candidates: Vec<Candidate>,
    /// What no candidate can enforce as written; empty when the rule is fully enforceable. When
    /// this is not empty the rule's effect degrades to what the candidates can do (often only
    /// `AuditOnly`), and consumers must report it rather than pretend.
    pub unenforceable: Vec<String>,
}

impl Enforcement {
    fn of(candidates: &[Enforcer]) -> Self {
        Self {
            candidates: candidates
                .iter()
                .map(|&enforcer| Candidate {
                    enforcer,
                    caveat: None,
                })
                .collect(),
            unenforceable: Vec::new(),
        }
    }

    fn audit_only(reason: impl Into<String>) -> Self {
        Self {
            unenforceable: vec![reason.into()],
            ..Self::of(&[Enforcer::AuditOnly])
        }
    }

    fn caveat(mut self, enforcers: &[Enforcer], text: &str) -> Self {
        for c in &mut self.candidates {
            if enforcers.contains(&c.enforcer) {
                c.caveat = Some(text.to_string());
            }
        }
        self
    }

    pub fn is_fully_enforceable(&self) -> bool {
        self.unenforceable.is_empty()
    }

    pub fn enforcers(&self) -> impl Iterator<Item = Enforcer> + '_ {
        self.candidates.iter().map(|c| c.enforcer)
    }
}

/// A rule of the merged set, with the policy it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompiledRule<R> {
    pub rule: R,
    pub policy: PolicyId,
    pub enforcement: Enforcement,
}

/// What happens, per kind, to operations that no rule matches: `Allow`, unless the kind has an
/// Allow rule (with or without `fromSource`); then the kind is an allow-list and unmatched
/// operations get the deny posture (`Block`, or `Audit` to try an allow-list out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Posture {
    pub process: Action,
    pub file: Action,
    pub network: Action,
    pub capabilities: Action,
    pub syscalls: Action,
}

/// What unmatched operations get in an allow-listed kind (KubeArmor's "default posture").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum DenyPosture {
    #[default]
    Block,
    /// Permit but report: for trying an allow-list out before enforcing it.
    Audit,
}

impl DenyPosture {
    pub fn action(self) -> Action {
        match self {
            Self::Block => Action::Block,
            Self::Audit => Action::Audit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileOptions {
    pub deny_posture: DenyPosture,
}

/// Everything palisade enforces and reports for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    pub workload: Workload,
    /// The merged policies, sorted by namespace and name.
    pub policies: Vec<PolicyId>,
    pub process: Vec<CompiledRule<ProcessRule>>,
    pub file: Vec<CompiledRule<FileRule>>,
    pub network: Vec<CompiledRule<NetworkRule>>,
    pub capabilities: Vec<CompiledRule<CapabilityRule>>,
    pub syscalls: Vec<CompiledRule<SyscallRule>>,
    pub posture: Posture,
    pub deny_posture: DenyPosture,
    /// Policy-level parts that nothing enforces (such as raw AppArmor profiles), prefixed with the policy.
    pub unenforced: Vec<String>,
}

impl CompiledPolicy {
    pub fn rule_count(&self) -> usize {
        self.enforcements().count()
    }

    /// Every rule as `(its policy, its origin, its enforcement)`, kind by kind: process, file,
    /// network, capabilities, syscalls.
    pub fn enforcements(&self) -> impl Iterator<Item = (&PolicyId, &str, &Enforcement)> {
        fn each<'a, R: 'a>(
            rules: &'a [CompiledRule<R>],
            meta: fn(&R) -> &RuleMeta,
        ) -> impl Iterator<Item = (&'a PolicyId, &'a str, &'a Enforcement)> {
            rules
                .iter()
                .map(move |r| (&r.policy, meta(&r.rule).origin.as_str(), &r.enforcement))
        }
        each(&self.process, |r| &r.meta)
            .chain(each(&self.file, |r| &r.meta))
            .chain(each(&self.network, |r| &r.meta))
            .chain(each(&self.capabilities, |r| &r.meta))
            .chain(each(&self.syscalls, |r| &r.meta))
    }

    /// Every rule's origin and unenforceable notes, for reporting at container start.
    pub fn unenforceable(&self) -> Vec<String> {
        let mut out = self.unenforced.clone();
        for (policy, origin, e) in self.enforcements() {
            for note in &e.unenforceable {
                out.push(format!("{policy}: {origin}: {note}"));
            }
        }
        out
    }
}

/// Why a rule limited to source binaries falls to the audit, with `what` the enforcers that
/// apply to the whole container.
fn from_source_note(what: &str) -> String {
    format!(
        "fromSource: {what} applies to every process in the container and cannot tell the source \
         binary; the container is refused unless the runtime allows degrading, then the rule is \
         only audited"
    )
}

/// Where BPF-LSM carries a file Block rule, and what happens elsewhere.
const BPF_LSM_WHERE: &str =
    "opens, removal, renames, hard links, attribute changes and new names in a covered \
     directory refused in the kernel with EACCES where BPF-LSM is in force (bpf among the \
     active LSMs and the monitor's probe seen to run); elsewhere the container is refused, or \
     with allow_degraded the rule is only audited";

fn file_enforcement(r: &FileRule) -> Enforcement {
    let action = r.meta.action;
    if action == Action::Audit {
        return Enforcement::of(&[Enforcer::AuditOnly]);
    }
    let pattern = matches!(r.target, FileTarget::Pattern(_));
    let from_source = !r.from_source.is_empty();
    if action == Action::Block && (pattern || from_source || r.owner_only) {
        // Only the monitor's file_open program sees the opener (its executable and fsuid)
        // and the file the kernel resolved; landlock and mounts do not.
        let mut caveat = BPF_LSM_WHERE.to_string();
        if pattern {
            caveat.push_str(
                "; a glob whose wildcards are all in its last segment (one `*`) or follow a \
                 `**` is matched by the kernel on each name opened or made, files created \
                 later included; another only on the files present when the container starts",
            );
        }
        return Enforcement::of(&[Enforcer::BpfLsm]).caveat(&[Enforcer::BpfLsm], &caveat);
    }
    if pattern {
        return Enforcement::audit_only(
            "matchPatterns on an Allow rule: landlock and mounts cannot express globs, and \
             landlock would have to grant the glob's whole literal prefix; the container is \
             refused unless the runtime allows degrading",
        );
    }
    if from_source {
        return Enforcement::audit_only(from_source_note("landlock's allow-list"));
    }
    if r.owner_only {
        return Enforcement::audit_only(
            "ownerOnly on an Allow rule: landlock cannot compare the caller with the file \
             owner; the container is refused unless the runtime allows degrading, then the rule \
             is only audited",
        );
    }
    let mut e = match action {
        Action::Allow => Enforcement::of(&[Enforcer::Landlock]),
        _ => Enforcement::of(&[
            Enforcer::BpfLsm,
            Enforcer::Landlock,
            Enforcer::BindMountMask,
        ])
        .caveat(
            &[Enforcer::BpfLsm],
            "where BPF-LSM is in force; elsewhere the path is masked",
        ),
    };
    if r.read_only && action == Action::Block {
        e = e.caveat(
            &[Enforcer::BindMountMask],
            "read-only bind mount: writes fail with EROFS rather than EACCES",
        );
    }
    let shallow = matches!(
        r.target,
        FileTarget::Directory {
            recursive: false,
            ..
        }
    );
    subtree_caveat(e, shallow)
}

/// Landlock and bind mounts cover a directory's whole subtree: a non-recursive (`shallow`)
/// directory rule is enforced more strictly than written, and says so.
fn subtree_caveat(e: Enforcement, shallow: bool) -> Enforcement {
    if !shallow {
        return e;
    }
    e.caveat(
        &[Enforcer::Landlock, Enforcer::BindMountMask],
        "covers the whole subtree, stricter than the non-recursive rule",
    )
}

fn process_enforcement(r: &ProcessRule) -> Enforcement {
    let action = r.meta.action;
    if action == Action::Audit {
        return Enforcement::of(&[Enforcer::AuditOnly]);
    }
    // The exec hook sees the parent binary and the file owner, so fromSource and ownerOnly stay
    // enforceable; landlock and mounts do not and drop out.
    if !r.from_source.is_empty() || r.owner_only {
        return Enforcement::of(&[Enforcer::EbpfExecKill]);
    }
    match &r.target {
        ProcessTarget::ExecName(_) => Enforcement::of(&[Enforcer::EbpfExecKill]),
        ProcessTarget::Pattern(_) => Enforcement::of(&[Enforcer::EbpfExecKill]).caveat(
            &[Enforcer::EbpfExecKill],
            "the glob is matched by the monitor at exec",
        ),
        ProcessTarget::Path(_) | ProcessTarget::Directory { .. } => {
            let e = match action {
                Action::Allow => Enforcement::of(&[Enforcer::Landlock, Enforcer::EbpfExecKill]),
                _ => Enforcement::of(&[
                    Enforcer::EbpfExecKill,
                    Enforcer::Landlock,
                    Enforcer::BindMountMask,
                ]),
            };
            let shallow = matches!(
                r.target,
                ProcessTarget::Directory {
                    recursive: false,
                    ..
                }
            );
            subtree_caveat(e, shallow)
        }
    }
}

fn network_enforcement(r: &NetworkRule) -> Enforcement {
    match r.meta.action {
        Action::Audit => Enforcement::of(&[Enforcer::AuditOnly]),
        // The cgroup sock_create hook reads the creating process's executable: an Allow makes
        // a per-protocol allow-list, a Block a list of binaries refused.
        _ if !r.from_source.is_empty() => Enforcement::of(&[Enforcer::EbpfCgroupSock]).caveat(
            &[Enforcer::EbpfCgroupSock],
            "checked on the executable at socket creation (matched by inode); refuses the \
             container where the kernel's cgroup socket hooks cannot read the current task, and \
             for raw sockets (the hook does not see AF_PACKET), unless the runtime allows \
             degrading",
        ),
        _ => Enforcement::of(&[Enforcer::EbpfCgroupSock, Enforcer::Seccomp]),
    }
}

fn capability_enforcement(r: &CapabilityRule) -> Enforcement {
    match r.meta.action {
        Action::Audit => Enforcement::of(&[Enforcer::AuditOnly]),
        _ if !r.from_source.is_empty() => {
            Enforcement::audit_only(from_source_note("the capability bounding set"))
        }
        _ => Enforcement::of(&[Enforcer::CapabilityBoundingSet]),
    }
}

fn syscall_enforcement(r: &SyscallRule) -> Enforcement {
    match r.meta.action {
        Action::Audit => Enforcement::of(&[Enforcer::AuditOnly]),
        _ if r.target.is_some() => Enforcement::audit_only(
            "matchPaths: seccomp cannot read path arguments; the container is refused unless the runtime allows degrading, then the rule is only audited",
        ),
        _ if !r.from_source.is_empty() => {
            Enforcement::audit_only(from_source_note("seccomp"))
        }
        _ => Enforcement::of(&[Enforcer::Seccomp]),
    }
}

fn kind_posture<R>(
    rules: &[CompiledRule<R>],
    action: impl Fn(&R) -> Action,
    deny: Action,
) -> Action {
    if rules.iter().any(|r| action(&r.rule) == Action::Allow) {
        deny
    } else {
        Action::Allow
    }
}

/// Merges the given policies (already selected for `workload`) into one compiled policy.
pub fn compile(
    selected: &[&Policy],
    workload: &Workload,
    options: &CompileOptions,
) -> CompiledPolicy {
    let mut policies: Vec<&Policy> = selected.to_vec();
    policies.sort_by(|a, b| a.id.cmp(&b.id));

    fn collect<R: Clone>(
        policies: &[&Policy],
        rules: impl Fn(&Policy) -> &[R],
        enforce: impl Fn(&R) -> Enforcement,
    ) -> Vec<CompiledRule<R>> {
        policies
            .iter()
            .flat_map(|p| {
                rules(p).iter().map(|r| CompiledRule {
                    rule: r.clone(),
                    policy: p.id.clone(),
                    enforcement: enforce(r),
                })
            })
            .collect()
    }

    let process = collect(&policies, |p| &p.process, process_enforcement);
    let file = collect(&policies, |p| &p.file, file_enforcement);
    let network = collect(&policies, |p| &p.network, network_enforcement);
    let capabilities = collect(&policies, |p| &p.capabilities, capability_enforcement);
    let syscalls = collect(&policies, |p| &p.syscalls, syscall_enforcement);

    let deny = options.deny_posture.action();
    let posture = Posture {
        process: kind_posture(&process, |r| r.meta.action, deny),
        file: kind_posture(&file, |r| r.meta.action, deny),
        network: kind_posture(&network, |r| r.meta.action, deny),
        capabilities: kind_posture(&capabilities, |r| r.meta.action, deny),
        syscalls: kind_posture(&syscalls, |r| r.meta.action, deny),
    };

    let unenforced = policies
        .iter()
        .flat_map(|p| p.unenforced.iter().map(move |n| format!("{}: {n}", p.id)))
        .collect();

    CompiledPolicy {
        workload: workload.clone(),
        policies: policies.iter().map(|p| p.id.clone()).collect(),
        process,
        file,
        network,
        capabilities,
        syscalls,
        posture,
        deny_posture: options.deny_posture,
        unenforced,
    }
}

/// Selects the policies that apply to `workload` and compiles them.
pub fn compile_for(
    policies: &[Policy],
    workload: &Workload,
    options: &CompileOptions,
) -> CompiledPolicy {
    compile(&select(policies, workload), workload, options)
}
