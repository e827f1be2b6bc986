//! Built-in detections and the matching of caller rules against decoded events.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use palisade_events::Action;

use crate::event::{EventKind, Finding, ProcessInfo, Syscall, EACCES, EPERM, O_WRITE_FLAGS};
use crate::rules::{connect_matches, AuditOn, ContainerRules, Enforcer, SockClass};

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "csh", "tcsh", "fish",
];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt", "apt-get", "aptitude", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm", "zypper", "pip",
    "pip3", "pipx",
];
const SYSTEM_DIRS: &[&str] = &["/etc/", "/bin/", "/sbin/", "/usr/"];
const TOKEN_DIRS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
];
/// Ports of common mining pools (stratum).
pub const MINER_PORTS: &[u16] = &[3333, 4444, 5555, 6666, 7777, 14433, 14444, 45560, 45700];
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
const EINPROGRESS: i64 = 115;

/// Where the shim bind-mounts palisade-init, which runs before the entrypoint.
const RUNTIME_INIT: &str = "/.palisade/palisade-init";

/// Processes tracked per container as running its own code; past this, new ones are not
/// tracked (their privilege and namespace changes go unflagged, never falsely flagged).
const MAX_OWN_PROCESSES: usize = 65_536;

/// Per-container detection state, owned by the event reader.
#[derive(Debug)]
pub(crate) struct DetectState {
    pub entrypoint_seen: bool,
    pub registered: Instant,
    pub learned: HashSet<(IpAddr, u16)>,
    /// Processes that run the container's own code: forked inside it by one of these, or
    /// that exec'd a program other than palisade-init. runc init enters the cgroup from
    /// outside, at create and for every exec, and sets ids, capabilities and namespaces
    /// before its exec: that is the runtime's doing, not the container's.
    own: HashSet<u32>,
}

impl DetectState {
    pub fn new(registered: Instant) -> Self {
        DetectState {
            entrypoint_seen: false,
            registered,
            learned: HashSet::new(),
            own: HashSet::new(),
        }
    }

    fn adopt(&mut self, pid: u32) {
        if self.own.len() < MAX_OWN_PROCESSES {
            self.own.insert(pid);
        }
    }
}

/// What the reader knows about the rules of one container.
#[derive(Debug)]
pub(crate) struct RuleSet {
    pub rules: ContainerRules,
    /// Per connect rule, the (device, inode) of its `only_from` executable.
    pub sources: Vec<Option<(u32, u64)>>,
    /// The kernel refuses connects by other executables itself: a connect that went through
    /// under an `only_from` rule came from the allowed one.
    pub sources_in_kernel: bool,
    pub connect_enforcer: Enforcer,
}

fn builtin(rule: &str, severity: u8, tags: &[&str], message: String) -> Finding {
    Finding {
        rule: rule.to_string(),
        severity,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        message,
        action: Action::Audit,
        enforcer: Enforcer::AuditOnly.as_str(),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Matches an event against the container's rules and the built-in detections. The
/// container's first exec is its entrypoint: it never counts as a spawned shell, and what
/// happens before it is the runtime's set-up.
pub(crate) fn findings(
    set: &RuleSet,
    state: &mut DetectState,
    process: &ProcessInfo,
    kind: &EventKind,
    now: Instant,
) -> Vec<Finding> {
    let mut out = Vec::new();
    match kind {
        EventKind::Exec {
            filename,
            killed,
            refused,
            deny_rule: Some(name),
            ..
        } => out.push(exec_denied(set, name, filename, *killed, *refused)),
        EventKind::Connect {
            addr: Some(addr),
            result,
        } => out.extend(connect_denied(set, process, addr, *result)),
        EventKind::SockCreate {
            class,
            refused,
            rule: Some(name),
            ..
        } => out.push(sock_denied(set, name, *class, *refused)),
        _ => {}
    }
    audits(set, kind, &mut out);
    if set.rules.builtins {
        builtins(set, state, process, kind, now, &mut out);
    }
    follow(state, process, kind);
    out
}

/// An exec the kernel matched with the deny rule `name`: killed, refused or (audit) let run.
fn exec_denied(set: &RuleSet, name: &str, filename: &str, killed: bool, refused: bool) -> Finding {
    let rule = set.rules.deny_exec.iter().find(|r| r.name == name);
    Finding {
        rule: name.to_string(),
        severity: rule.map(|r| r.severity).unwrap_or(8),
        tags: Vec::new(),
        message: rule
            .map(|r| r.message.clone())
            .unwrap_or_else(|| format!("exec of {filename} denied")),
        action: match (killed, refused) {
            (true, _) => Action::Kill,
            (_, true) => Action::Block,
            _ => Action::Audit,
        },
        enforcer: match (killed, refused) {
            (true, _) => Enforcer::BpfExecKill.as_str(),
            (_, true) => Enforcer::BpfLsm.as_str(),
            _ => Enforcer::AuditOnly.as_str(),
        },
    }
}

/// The first connect deny rule a connect to `addr` matches, unless it came from the one
/// executable the rule lets through.
fn connect_denied(
    set: &RuleSet,
    process: &ProcessInfo,
    addr: &SocketAddr,
    result: i64,
) -> Option<Finding> {
    for (i, rule) in set.rules.deny_connect.iter().enumerate() {
        if connect_matches(rule, addr.ip(), addr.port()) {
            let blocked = result == -EPERM;
            let source = set.sources.get(i).copied().flatten();
            let allowed_source = if set.sources_in_kernel {
                true
            } else {
                source.is_some() && process.exe_id == source
            };
            if !blocked && rule.only_from.is_some() && allowed_source {
                // The one executable this rule lets through; another may still match.
                continue;
            }
            return Some(Finding {
                rule: rule.name.clone(),
                severity: rule.severity,
                tags: Vec::new(),
                message: if rule.message.is_empty() {
                    format!("connect to {addr} denied")
                } else {
                    rule.message.clone()
                },
                action: if blocked {
                    Action::Block
                } else {
                    Action::Audit
                },
                enforcer: if blocked {
                    set.connect_enforcer.as_str()
                } else {
                    Enforcer::AuditOnly.as_str()
                },
            });
        }
    }
    None
}

/// A socket creation the kernel matched with the socket rule `name`: refused, or (audit)
/// reported.
fn sock_denied(set: &RuleSet, name: &str, class: Option<SockClass>, refused: bool) -> Finding {
    let rule = set.rules.sock_create.iter().find(|r| r.name == name);
    let what = class.map_or("socket", |c| c.as_str());
    Finding {
        rule: name.to_string(),
        severity: rule.map(|r| r.severity).unwrap_or(6),
        tags: vec!["network".to_string()],
        message: match rule {
            Some(r) if !r.message.is_empty() => r.message.clone(),
            _ if refused => format!("{what} socket creation refused"),
            _ => format!("{what} socket created by a binary the rule does not list"),
        },
        action: if refused {
            Action::Block
        } else {
            Action::Audit
        },
        enforcer: if refused {
            Enforcer::BpfSockCreate.as_str()
        } else {
            Enforcer::AuditOnly.as_str()
        },
    }
}

/// Follows the container's own processes: its entrypoint's exec and what it forks.
fn follow(state: &mut DetectState, process: &ProcessInfo, kind: &EventKind) {
    match kind {
        // palisade-init is the runtime's too: it sets ids and capabilities, then execs the
        // entrypoint (or the exec'd command), whose exec starts the container's own code.
        EventKind::Exec { filename, .. } if filename != RUNTIME_INIT => {
            state.entrypoint_seen = true;
            state.adopt(process.pid);
        }
        EventKind::Fork { child_pid } if state.own.contains(&process.pid) => {
            state.adopt(*child_pid);
        }
        EventKind::Exit { .. } => {
            state.own.remove(&process.pid);
        }
        _ => {}
    }
}

/// The policy's Audit rules that match an exec or an open: reported, never refused.
fn audits(set: &RuleSet, kind: &EventKind, out: &mut Vec<Finding>) {
    let (path, exec) = match kind {
        EventKind::Exec {
            filename,
            killed: false,
            refused: false,
            ..
        } => (filename.as_str(), true),
        EventKind::Open { path, .. } => (path.as_str(), false),
        _ => return,
    };
    for r in &set.rules.audit {
        let hit = match (&r.on, exec) {
            (AuditOn::Exec(t), true) | (AuditOn::Open(t), false) => t.matches(path),
            _ => false,
        };
        if hit {
            out.push(Finding {
                rule: r.name.clone(),
                severity: r.severity,
                tags: vec!["audit".to_string()],
                message: if r.message.is_empty() {
                    format!(
                        "{} {path} (audit rule)",
                        if exec { "exec of" } else { "open of" }
                    )
                } else {
                    r.message.clone()
                },
                action: Action::Audit,
                enforcer: Enforcer::AuditOnly.as_str(),
            });
        }
    }
}

fn builtins(
    set: &RuleSet,
    state: &mut DetectState,
    process: &ProcessInfo,
    kind: &EventKind,
    now: Instant,
    out: &mut Vec<Finding>,
) {
    // Before the entrypoint runs, the container's own runtime (runc init) sets ids,
    // capabilities, namespaces and mounts: nothing it does is suspicious. The same holds for
    // the runc init of every exec, which enters the running container from outside.
    let started = state.entrypoint_seen;
    let own = started && state.own.contains(&process.pid);
    match kind {
        EventKind::Exec { filename, .. } => exec_builtins(filename, started, out),
        EventKind::Open {
            path,
            flags,
            result,
            secret,
            system_dir,
        } => open_builtins(path, *flags, *result, *secret, *system_dir, out),
        EventKind::Connect {
            addr: Some(addr),
            result,
        } => {
            let attempted = *result == 0 || *result == -EINPROGRESS;
            if attempted && MINER_PORTS.contains(&addr.port()) {
                out.push(builtin(
                    "crypto-miner-pool-port",
                    8,
                    &["MITRE_T1496", "network"],
                    format!("connection to mining pool port {addr}"),
                ));
            }
            if attempted {
                learn_or_flag(set.rules.learning_window, state, *addr, now, out);
            }
        }
        EventKind::Socket {
            domain,
            kind,
            result,
            ..
        } if *result >= 0 && (*domain == AF_PACKET || kind & 0xf == SOCK_RAW) => {
            out.push(builtin(
                "raw-socket",
                6,
                &["MITRE_T1040", "network"],
                format!("raw socket opened (domain {domain}, type {kind})"),
            ));
        }
        EventKind::Mount { target, result, .. } if own => {
            out.push(builtin(
                "mount-in-container",
                7,
                &["MITRE_T1611", "escape"],
                format!("mount on {target} (result {result})"),
            ));
        }
        EventKind::Syscall { call, args, result } if own => {
            syscall_builtin(*call, args, *result, process, out);
        }
        _ => {}
    }
}

/// Shells started after the entrypoint, and package managers.
fn exec_builtins(filename: &str, started: bool, out: &mut Vec<Finding>) {
    let name = basename(filename);
    if started && SHELLS.contains(&name) {
        out.push(builtin(
            "shell-in-container",
            7,
            &["MITRE_T1059.004", "shell"],
            format!("shell {filename} spawned in the container"),
        ));
    }
    if PACKAGE_MANAGERS.contains(&name) {
        out.push(builtin(
            "package-manager-in-container",
            5,
            &["MITRE_T1072", "drift"],
            format!("package manager {filename} run in the container"),
        ));
    }
}

/// Opens the kernel refused, writes below system directories, and service account token
/// reads.
fn open_builtins(
    path: &str,
    flags: u64,
    result: i64,
    secret: bool,
    system_dir: bool,
    out: &mut Vec<Finding>,
) {
    if result == -EACCES || result == -EPERM {
        out.push(builtin(
            "file-access-denied",
            3,
            &["file"],
            format!("open of {path} refused by the kernel ({})", -result),
        ));
    } else if result >= 0 {
        // the kernel judges files on the root filesystem by their parents; the
        // prefix still catches files bind-mounted there (/etc/hosts)
        if flags & O_WRITE_FLAGS != 0
            && (system_dir || SYSTEM_DIRS.iter().any(|d| path.starts_with(d)))
        {
            out.push(builtin(
                "write-below-system-dir",
                6,
                &["MITRE_T1543", "file"],
                format!("{path} opened for writing"),
            ));
        }
        // the kernel's mount test catches every spelling of the path; the prefix only
        // serves when the container's secret mounts were not given
        let token_file = std::path::Path::new(path)
            .file_name()
            .is_some_and(|n| n == "token");
        if token_file && (secret || TOKEN_DIRS.iter().any(|d| path.starts_with(d))) {
            out.push(builtin(
                "service-account-token-read",
                6,
                &["MITRE_T1528", "credentials"],
                format!("service account token {path} read"),
            ));
        }
    }
}

fn syscall_builtin(
    call: Syscall,
    args: &[u64; 6],
    result: i64,
    process: &ProcessInfo,
    out: &mut Vec<Finding>,
) {
    let to_root = |n: usize| args[..n].iter().any(|&a| a as u32 == 0);
    match call {
        Syscall::Setuid | Syscall::Setgid if result == 0 && to_root(1) => {
            out.push(privilege_gain(call, process));
        }
        Syscall::Setreuid | Syscall::Setregid if result == 0 && to_root(2) => {
            out.push(privilege_gain(call, process));
        }
        Syscall::Setresuid | Syscall::Setresgid if result == 0 && to_root(3) => {
            out.push(privilege_gain(call, process));
        }
        Syscall::Capset if result == 0 => out.push(builtin(
            "capability-change",
            5,
            &["MITRE_T1548", "privilege"],
            "capabilities changed by capset".to_string(),
        )),
        Syscall::Setns | Syscall::Unshare => out.push(builtin(
            "namespace-change",
            8,
            &["MITRE_T1611", "escape"],
            format!("{} called (result {result})", call.name()),
        )),
        Syscall::Ptrace => out.push(builtin(
            "ptrace-in-container",
            7,
            &["MITRE_T1055", "injection"],
            format!(
                "ptrace request {} on pid {} (result {result})",
                args[0], args[1]
            ),
        )),
        Syscall::InitModule | Syscall::FinitModule => out.push(builtin(
            "kernel-module-load",
            9,
            &["MITRE_T1547.006", "escape"],
            format!("{} called (result {result})", call.name()),
        )),
        Syscall::Bpf => out.push(builtin(
            "bpf-in-container",
            6,
            &["MITRE_T1014"],
            format!("bpf command {} (result {result})", args[0]),
        )),
        _ => {}
    }
}

fn privilege_gain(call: Syscall, process: &ProcessInfo) -> Finding {
    builtin(
        "privilege-gain",
        8,
        &["MITRE_T1548", "privilege"],
        format!("{} to root by {}", call.name(), process.comm),
    )
}

fn learn_or_flag(
    window: Option<Duration>,
    state: &mut DetectState,
    addr: SocketAddr,
    now: Instant,
    out: &mut Vec<Finding>,
) {
    let Some(window) = window else {
        return;
    };
    let key = (addr.ip(), addr.port());
    let learning = now.duration_since(state.registered) < window;
    if state.learned.insert(key) && !learning {
        out.push(builtin(
            "new-outbound-destination",
            4,
            &["MITRE_T1071", "network"],
            format!("first connection to {addr} after the learning window"),
        ));
    }
}

#[cfg(test)]
mod tests;
