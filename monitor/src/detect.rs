//! Built-in detections and the matching of caller rules against decoded events.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use palisade_events::Action;

use crate::event::{EventKind, Finding, ProcessInfo, Syscall, EACCES, EPERM, O_WRITE_FLAGS};
use crate::rules::{connect_matches, AuditOn, ContainerRules, Enforcer, SockClass};

mod content;
pub(crate) mod credfiles;
mod creds;
mod paths;
pub use paths::normalize as normalize_path;

use creds::{Change, Creds};

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "csh", "tcsh", "fish",
];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt", "apt-get", "aptitude", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm", "zypper", "pip",
    "pip3", "pipx",
];
/// Tools that open arbitrary connections or scan: netcat's variants, socat and nmap. Not curl or
/// wget: images use them for health checks and entrypoints, and a download is judged by what
/// it is followed by (a new file run, a new destination).
const NETWORK_TOOLS: &[&str] = &[
    "nc",
    "ncat",
    "netcat",
    "nc.openbsd",
    "nc.traditional",
    "socat",
    "nmap",
];
const TOKEN_DIRS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
];
/// Ports of common mining pools (stratum).
pub const MINER_PORTS: &[u16] = &[3333, 4444, 5555, 6666, 7777, 14433, 14444, 45560, 45700];
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
/// Connect results that still mean the process tried to reach its peer: in progress,
/// refused by the peer, timed out, unreachable host or network, reset.
const CONNECT_ATTEMPTED: &[i64] = &[115, 111, 110, 113, 101, 104];

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
    /// The registration on the wall clock: files changed later were written by the container.
    pub registered_at: SystemTime,
    pub learned: HashSet<(IpAddr, u16)>,
    /// Processes that run the container's own code: forked inside it by one of these, or
    /// that exec'd a program other than palisade-init. runc init enters the cgroup from
    /// outside, at create and for every exec, and sets ids, capabilities and namespaces
    /// before its exec: that is the runtime's doing, not the container's.
    own: HashSet<u32>,
    /// The ids each process holds, to judge its privilege changes.
    creds: Creds,
    /// The image's shells and package managers by content.
    known: content::Known,
}

impl DetectState {
    pub fn new(registered: Instant) -> Self {
        DetectState {
            entrypoint_seen: false,
            registered,
            registered_at: SystemTime::now(),
            learned: HashSet::new(),
            own: HashSet::new(),
            creds: Creds::default(),
            known: content::Known::default(),
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
    let change = match kind {
        EventKind::Syscall {
            call,
            args,
            result: 0,
        } => state.creds.set_ids(process.pid, *call, args),
        _ => None,
    };
    if set.rules.builtins {
        builtins(set, state, process, kind, change, now, &mut out);
    }
    follow(set, state, process, kind);
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
            let (action, enforcer) = crate::event::outcome(blocked, set.connect_enforcer);
            return Some(Finding {
                rule: rule.name.clone(),
                severity: rule.severity,
                tags: Vec::new(),
                message: if rule.message.is_empty() {
                    format!("connect to {addr} denied")
                } else {
                    rule.message.clone()
                },
                action,
                enforcer,
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
    let (action, enforcer) = crate::event::outcome(refused, Enforcer::BpfSockCreate);
    Finding {
        rule: name.to_string(),
        severity: rule.map(|r| r.severity).unwrap_or(6),
        tags: vec!["network".to_string()],
        message: match rule {
            Some(r) if !r.message.is_empty() => r.message.clone(),
            _ if refused => format!("{what} socket creation refused"),
            Some(r) if r.block_listed => {
                format!("{what} socket created by a binary the rule lists")
            }
            _ => format!("{what} socket created by a binary the rule does not list"),
        },
        action,
        enforcer,
    }
}

/// Follows the container's own processes (its entrypoint's exec and what it forks) and the
/// ids every process holds.
fn follow(set: &RuleSet, state: &mut DetectState, process: &ProcessInfo, kind: &EventKind) {
    let maps = &set.rules.id_maps;
    match kind {
        EventKind::Exec { .. } => state
            .creds
            .exec(maps, process.pid, process.uid, process.gid),
        EventKind::Fork { child_pid } => {
            state
                .creds
                .fork(maps, process.pid, *child_pid, process.uid, process.gid)
        }
        EventKind::Exit { .. } => state.creds.exit(process.pid),
        _ => {}
    }
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
    change: Option<Change>,
    now: Instant,
    out: &mut Vec<Finding>,
) {
    // Before the entrypoint runs, the container's own runtime (runc init) sets ids,
    // capabilities, namespaces and mounts: nothing it does is suspicious. The same holds for
    // the runc init of every exec, which enters the running container from outside.
    let started = state.entrypoint_seen;
    let own = started && state.own.contains(&process.pid);
    match kind {
        EventKind::Exec { filename, .. } => {
            let name = basename(filename);
            let known = known_names().contains(&name);
            // a file of another name is judged by its content: a copy of apt-get is apt-get
            let alias = match &set.rules.rootfs {
                Some(root) if !known => {
                    state
                        .known
                        .identify(root, &known_names(), process.pid, filename)
                }
                _ => None,
            };
            exec_builtins(filename, alias.as_deref(), started, out);
            // a program written since the start that carries a miner's strings
            if let Some(root) = &set.rules.rootfs {
                let since = state.registered_at;
                if alias.is_none() && state.known.miner(root, process.pid, filename, since) {
                    out.push(builtin(
                        "crypto-miner",
                        8,
                        &["MITRE_T1496"],
                        format!(
                            "{filename}, written since the container started, carries a crypto \
                             miner's strings (a mining pool's URL scheme and a miner's name)"
                        ),
                    ));
                }
            }
        }
        EventKind::Open {
            path,
            flags,
            result,
            secret,
            system_dir,
            credential,
            ..
        } => open_builtins(
            path,
            *flags,
            *result,
            OpenPlace {
                secret: *secret,
                system_dir: *system_dir,
                credential: *credential,
            },
            out,
        ),
        EventKind::Connect {
            addr: Some(addr),
            result,
        } => {
            // An attempt counts whatever the peer or the network answered: a pool that
            // refused the connection, or was not reachable, was still sought.
            let attempted = *result == 0 || CONNECT_ATTEMPTED.contains(&-*result);
            if MINER_PORTS.contains(&addr.port()) {
                let f = builtin(
                    "crypto-miner-pool-port",
                    8,
                    &["MITRE_T1496", "network"],
                    format!("connection to mining pool port {addr} (result {result})"),
                );
                if attempted {
                    out.push(f);
                } else if *result == -EPERM || *result == -EACCES {
                    // refused before it left: by a connect rule in the kernel, or else the
                    // container's seccomp filter or permissions
                    let ruled = set
                        .rules
                        .deny_connect
                        .iter()
                        .any(|r| connect_matches(r, addr.ip(), addr.port()));
                    let by = if ruled {
                        set.connect_enforcer
                    } else {
                        refuser(set, "connect")
                    };
                    out.push(blocked(f, "connect", by));
                }
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
        } if raw_network_socket(*domain, *kind) => {
            let what = format!("raw socket (domain {domain}, type {kind})");
            out.push(attempt(
                set,
                "socket",
                *result,
                builtin(
                    "raw-socket",
                    6,
                    &["MITRE_T1040", "network"],
                    format!("{what} opened"),
                ),
            ));
        }
        EventKind::Mount { target, result, .. } if own => {
            out.push(attempt(
                set,
                "mount",
                *result,
                builtin(
                    "mount-in-container",
                    7,
                    &["MITRE_T1611", "escape"],
                    format!("mount on {target} (result {result})"),
                ),
            ));
        }
        EventKind::Syscall { call, args, result } if own => {
            if let Some(f) = syscall_builtin(*call, args, *result, change, process) {
                out.push(attempt(set, call.name(), *result, f));
            }
        }
        _ => {}
    }
}

/// The names whose files the image's content identifies.
fn known_names() -> Vec<&'static str> {
    SHELLS
        .iter()
        .chain(PACKAGE_MANAGERS)
        .chain(NETWORK_TOOLS)
        .copied()
        .collect()
}

/// Shells and network tools started after the entrypoint, and package managers; `alias` is
/// the known program whose content the file has, when its own name is not one.
fn exec_builtins(filename: &str, alias: Option<&str>, started: bool, out: &mut Vec<Finding>) {
    let name = alias.unwrap_or(basename(filename));
    let what = match alias {
        Some(a) => format!("{filename} (the content of {a})"),
        None => filename.to_string(),
    };
    if started && SHELLS.contains(&name) {
        out.push(builtin(
            "shell-in-container",
            7,
            &["MITRE_T1059.004", "shell"],
            format!("shell {what} spawned in the container"),
        ));
    }
    if PACKAGE_MANAGERS.contains(&name) {
        out.push(builtin(
            "package-manager-in-container",
            5,
            &["MITRE_T1072", "drift"],
            format!("package manager {what} run in the container"),
        ));
    }
    if started && NETWORK_TOOLS.contains(&name) {
        out.push(builtin(
            "network-tool-in-container",
            5,
            &["MITRE_T1095", "network"],
            format!("network tool {what} run in the container"),
        ));
    }
}

/// A socket that reads or forges network packets below the transport layer: a raw IPv4 or
/// IPv6 socket, or any packet socket. Netlink (how programs ask the kernel about their own
/// interfaces: `ip addr`, every server that lists its addresses), unix and the other families
/// are not.
fn raw_network_socket(domain: i32, kind: i32) -> bool {
    domain == AF_PACKET || ((domain == AF_INET || domain == AF_INET6) && kind & 0xf == SOCK_RAW)
}

/// Where the kernel placed an opened file.
#[derive(Debug, Clone, Copy)]
struct OpenPlace {
    /// On one of the container's secret mounts.
    secret: bool,
    /// Below a system directory of its root (write opens only).
    system_dir: bool,
    /// One of the container's credential files (by device and inode).
    credential: bool,
}

/// Opens the kernel refused, writes below system directories, service account token reads
/// and credential file opens.
fn open_builtins(path: &str, flags: u64, result: i64, place: OpenPlace, out: &mut Vec<Finding>) {
    let OpenPlace {
        secret,
        system_dir,
        credential,
    } = place;
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
        if flags & O_WRITE_FLAGS != 0 && paths::system_write(path, system_dir) {
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
        // the kernel knows the file by its inode: every spelling of the path, and every hard
        // link to it, is the file
        if credential {
            let how = if flags & O_WRITE_FLAGS != 0 {
                "opened for writing"
            } else {
                "read"
            };
            out.push(builtin(
                "credential-file-read",
                6,
                &["MITRE_T1552.001", "credentials"],
                format!("credential file {path} {how}"),
            ));
        }
    }
}

fn syscall_builtin(
    call: Syscall,
    args: &[u64; 6],
    result: i64,
    change: Option<Change>,
    process: &ProcessInfo,
) -> Option<Finding> {
    let called = || format!("{} called (result {result})", call.name());
    // (name, severity, tags, message) of the detection.
    let (name, severity, tags, message): (&str, u8, &[&str], String) = match call {
        // A successful set*id call is a gain only when the process now holds root's uid or
        // gid and did not before (`setgid(0)` with gid 0 already is nothing). A successful
        // capset never is: the kernel lets a process raise only what its permitted set
        // already holds.
        Syscall::Setuid
        | Syscall::Setgid
        | Syscall::Setreuid
        | Syscall::Setregid
        | Syscall::Setresuid
        | Syscall::Setresgid
            if result == 0 =>
        {
            return change
                .filter(Change::gains_root)
                .map(|c| privilege_gain(call, &c, process));
        }
        Syscall::Setns | Syscall::Unshare => {
            ("namespace-change", 8, &["MITRE_T1611", "escape"], called())
        }
        Syscall::Ptrace => (
            "ptrace-in-container",
            7,
            &["MITRE_T1055", "injection"],
            format!(
                "ptrace request {} on pid {} (result {result})",
                args[0], args[1]
            ),
        ),
        Syscall::InitModule | Syscall::FinitModule => (
            "kernel-module-load",
            9,
            &["MITRE_T1547.006", "escape"],
            called(),
        ),
        Syscall::Bpf => (
            "bpf-in-container",
            6,
            &["MITRE_T1014"],
            format!("bpf command {} (result {result})", args[0]),
        ),
        _ => return None,
    };
    Some(builtin(name, severity, tags, message))
}

/// The severity of a refused attempt: two below the detection's, and at most 6, so that
/// an attempt the hardening stopped never counts towards a compromise kill by default (a
/// pod's `rules` can still make it decisive by name).
const REFUSED_SEVERITY_MAX: u8 = 6;

/// A detection on syscall `call` with its `result`: as it is when the call ran (or failed
/// for another reason), or, when the kernel refused it (EPERM, EACCES), a `block` naming
/// the enforcer that refused it.
fn attempt(set: &RuleSet, call: &str, result: i64, f: Finding) -> Finding {
    if result != -EPERM && result != -EACCES {
        return f;
    }
    blocked(f, call, refuser(set, call))
}

/// A detection on a call `enforcer` refused: reported as a `block` by it.
fn blocked(mut f: Finding, call: &str, enforcer: Enforcer) -> Finding {
    f.action = Action::Block;
    f.enforcer = enforcer.as_str();
    f.severity = f.severity.saturating_sub(2).clamp(1, REFUSED_SEVERITY_MAX);
    f.message = format!("{call} refused by {enforcer}: {}", f.message);
    f.tags.push("blocked".to_string());
    f
}

/// What refused a syscall with EPERM or EACCES: the container's seccomp filter when it
/// refuses that syscall outright, else the kernel's own permission checks (capabilities,
/// the user namespace).
fn refuser(set: &RuleSet, call: &str) -> Enforcer {
    if set.rules.seccomp_refused.iter().any(|c| c == call) {
        Enforcer::Seccomp
    } else {
        Enforcer::Capabilities
    }
}

fn privilege_gain(call: Syscall, change: &Change, process: &ProcessInfo) -> Finding {
    let ids = |v: [u32; 3]| format!("{}/{}/{}", v[0], v[1], v[2]);
    builtin(
        "privilege-gain",
        8,
        &["MITRE_T1548", "privilege"],
        format!(
            "{} to root by {}: uids {} -> {}, gids {} -> {} (real/effective/saved)",
            call.name(),
            process.comm,
            ids(change.before.uid),
            ids(change.after.uid),
            ids(change.before.gid),
            ids(change.after.gid)
        ),
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
