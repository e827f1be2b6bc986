//! What only the eBPF monitor can carry out, handed over as plain data: the sandbox does
//! not depend on the monitor crate, the shim passes these on.

use palisade_policy::{Action, FileTarget, PathMatch, ProcessTarget};
use std::collections::BTreeMap;

use serde::Serialize;

use super::{RuleId, RuleKind};

/// What a monitor rule matches, as the policy wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorTarget {
    /// One file (for exec rules, the binary).
    Path(String),
    /// A directory, `dir` ending with `/`; its whole subtree when `recursive`.
    Directory { dir: String, recursive: bool },
    /// A glob (`*` and `?` within a segment, `**` across).
    Pattern(String),
    /// A process name (`comm`, 15 bytes).
    ExecName(String),
    /// `tcp`, `udp`, `icmp` or `raw`.
    Protocol(String),
    /// A capability, `CAP_NET_RAW`.
    Capability(String),
    /// System calls, optionally only on a path.
    Syscalls {
        names: Vec<String>,
        path: Option<PathMatch>,
    },
}

/// One rule for the monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorRule {
    /// `namespace/name: origin`, the same as in [`super::RuleEnforcement::rule`].
    pub rule: String,
    pub kind: RuleKind,
    /// The rule's action: `Block` for the monitor to prevent (exec kill), `Allow` for an
    /// allow-list entry, `Audit` to report.
    pub action: Action,
    pub target: MonitorTarget,
    /// Binaries (`/bin/sh`) or directories (`/usr/bin/`) the rule is limited to; empty for
    /// every process.
    pub from_source: Vec<String>,
    /// The rule concerns callers that do not own the file (Block, Audit) or only the owner
    /// (Allow).
    pub owner_only: bool,
    /// readOnly (file rules): only writes are concerned.
    pub read_only: bool,
    pub severity: u8,
    pub message: Option<String>,
}

/// Everything the monitor must do for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonitorRules {
    /// Executions to kill at `execve`: process Block rules no sandbox mechanism carries.
    pub deny_exec: Vec<MonitorRule>,
    /// An exec allow-list (or the `fromSource`/`ownerOnly` part of one) that the monitor
    /// enforces: executions of a listed target by a process the rule does not name, or,
    /// when [`MonitorRules::exec_allow_list`] is set, of anything unlisted, are killed.
    pub allow_exec: Vec<MonitorRule>,
    /// Whether [`MonitorRules::allow_exec`] is the container's whole exec allow-list
    /// (landlock could not carry it), so unlisted binaries get
    /// [`MonitorRules::exec_posture`].
    pub exec_allow_list: bool,
    /// What an unlisted execution gets when `exec_allow_list` is set (`Block` or `Audit`).
    pub exec_posture: Option<Action>,
    /// File Block rules the monitor refuses with EACCES through BPF-LSM (set only where the
    /// caller said BPF-LSM is in force, [`crate::KernelFeatures::bpf_lsm`]).
    pub deny_file: Vec<MonitorRule>,
    /// Operations to report: Audit rules, Block rules degraded to a report, allow-lists in
    /// audit posture.
    pub audit: Vec<MonitorRule>,
    /// Network rules limited to source binaries (`fromSource`), which socket filters
    /// cannot tell apart. Allow rules among them are socket allow-lists the monitor checks at
    /// socket creation, with [`MonitorRules::socket_unlisted`] for the other binaries.
    pub network: Vec<MonitorRule>,
    /// Per protocol (`tcp`, `udp`, `icmp`) with a fromSource allow-list in
    /// [`MonitorRules::network`]: what binaries the list does not name get (`Block` or
    /// `Audit`). Seccomp lets these sockets through; the monitor decides per binary.
    pub socket_unlisted: BTreeMap<String, Action>,
}

impl MonitorRules {
    /// Whether there is anything for the monitor to do.
    pub fn is_empty(&self) -> bool {
        self.deny_exec.is_empty()
            && self.deny_file.is_empty()
            && self.allow_exec.is_empty()
            && self.audit.is_empty()
            && self.network.is_empty()
    }
}

pub(super) fn sources(from: &[PathMatch]) -> Vec<String> {
    from.iter()
        .map(|s| match s {
            PathMatch::Path(p) => p.clone(),
            PathMatch::Directory { dir, .. } => dir.clone(),
        })
        .collect()
}

pub(super) fn file_target(t: &FileTarget) -> MonitorTarget {
    match t {
        FileTarget::Path(p) => MonitorTarget::Path(p.clone()),
        FileTarget::Directory { dir, recursive } => MonitorTarget::Directory {
            dir: dir.clone(),
            recursive: *recursive,
        },
        FileTarget::Pattern(p) => MonitorTarget::Pattern(p.clone()),
    }
}

pub(super) fn process_target(t: &ProcessTarget) -> MonitorTarget {
    match t {
        ProcessTarget::Path(p) => MonitorTarget::Path(p.clone()),
        ProcessTarget::ExecName(n) => MonitorTarget::ExecName(n.clone()),
        ProcessTarget::Directory { dir, recursive } => MonitorTarget::Directory {
            dir: dir.clone(),
            recursive: *recursive,
        },
        ProcessTarget::Pattern(p) => MonitorTarget::Pattern(p.clone()),
    }
}

impl RuleId {
    /// The monitor's share of this rule, by action: on `target`, for the processes of
    /// `from_source` (every process when empty), for owners only or not.
    pub(super) fn monitor<'a>(
        &'a self,
        target: MonitorTarget,
        from_source: &'a [PathMatch],
        owner_only: bool,
    ) -> impl Fn(Action) -> MonitorRule + 'a {
        move |action| MonitorRule {
            rule: self.rule.clone(),
            kind: self.kind,
            action,
            target: target.clone(),
            from_source: sources(from_source),
            owner_only,
            read_only: false,
            severity: self.severity,
            message: self.message.clone(),
        }
    }
}
