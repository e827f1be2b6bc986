//! The monitor's events as user space sees them, and their conversion into the one schema.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use palisade_events::{Action, Event, Parent, Process, Rule, Severity, Source, Workload};
use serde_json::json;

use crate::rules::{ContainerRef, Enforcer, SockClass};

/// The process an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread group id (the process id) in the host pid namespace.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The executable, from the process's last exec event or /proc (empty when unknown).
    pub binary: String,
    /// Device (kernel encoding) and inode of the executable, looked up only where a rule
    /// needs it (connects under a fromSource rule).
    pub exe_id: Option<(u32, u64)>,
}

/// Every syscall the monitor reports (by their order: `enum sys_kind` in events.h, from 1).
pub const WATCHED_SYSCALLS: &[&str] = &[
    "openat",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "socket",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "capset",
    "setns",
    "unshare",
    "ptrace",
    "mount",
    "init_module",
    "finit_module",
    "bpf",
    "execve",
    "execveat",
];

/// The syscalls reported without strings of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    Setuid,
    Setgid,
    Setreuid,
    Setregid,
    Setresuid,
    Setresgid,
    Capset,
    Setns,
    Unshare,
    Ptrace,
    InitModule,
    FinitModule,
    Bpf,
}

impl Syscall {
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Setuid => "setuid",
            Syscall::Setgid => "setgid",
            Syscall::Setreuid => "setreuid",
            Syscall::Setregid => "setregid",
            Syscall::Setresuid => "setresuid",
            Syscall::Setresgid => "setresgid",
            Syscall::Capset => "capset",
            Syscall::Setns => "setns",
            Syscall::Unshare => "unshare",
            Syscall::Ptrace => "ptrace",
            Syscall::InitModule => "init_module",
            Syscall::FinitModule => "finit_module",
            Syscall::Bpf => "bpf",
        }
    }
}

/// What happened. `result` fields are the syscall's return value (negative errno on failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Exec {
        filename: String,
        args: Vec<String>,
        /// The parent's executable: its last exec's path (a forked parent's, that of the
        /// process it was forked from), or else its executable's file name.
        parent: String,
        ino: u64,
        /// Kernel encoding of the device.
        dev: u32,
        /// The process was killed by an exec deny rule.
        killed: bool,
        /// The exec was refused (EPERM, BPF-LSM) by an exec deny rule: the caller's image goes
        /// on running, and `filename` is what it tried to execute.
        refused: bool,
        /// The deny rule that matched, even in audit mode.
        deny_rule: Option<String>,
        /// First exec seen in the container since registration: its entrypoint.
        entrypoint: bool,
    },
    Exit {
        /// The kernel's exit code: status << 8, or the terminating signal in the low 7 bits.
        code: i32,
    },
    Fork {
        child_pid: u32,
    },
    Open {
        /// As the process spelled it: relative to `dirfd` (or its working directory, with
        /// `AT_FDCWD`) when it does not start with `/`.
        path: String,
        /// The directory descriptor the path is relative to (`AT_FDCWD`, -100: the working
        /// directory).
        dirfd: i32,
        flags: u64,
        result: i64,
        /// The file opened is on one of the container's secret mounts (decided in the kernel
        /// on the mount, not on the path).
        secret: bool,
        /// A write open of a file below /etc, /bin, /sbin or /usr of the process's root
        /// filesystem (decided in the kernel on the file's parents, not on the path).
        system_dir: bool,
        /// The file opened is one of the container's credential files found at registration
        /// (decided in the kernel on its device and inode, not on the path).
        credential: bool,
    },
    Connect {
        addr: Option<SocketAddr>,
        result: i64,
    },
    Bind {
        addr: Option<SocketAddr>,
        result: i64,
    },
    Listen {
        fd: i32,
        backlog: i32,
        result: i64,
    },
    Accept {
        peer: Option<SocketAddr>,
        result: i64,
    },
    Socket {
        domain: i32,
        kind: i32,
        protocol: i32,
        result: i64,
    },
    Mount {
        target: String,
        flags: u64,
        result: i64,
    },
    /// A socket creation a socket rule did not let through: refused (EPERM) or, in audit,
    /// reported.
    SockCreate {
        family: u32,
        /// The socket type (`SOCK_STREAM`, ...).
        kind: u32,
        protocol: u32,
        class: Option<SockClass>,
        refused: bool,
        /// The socket rule behind it.
        rule: Option<String>,
        /// Device (kernel encoding) and inode of the creating executable (zero when the
        /// kernel could not read it).
        exe_id: (u32, u64),
    },
    Syscall {
        call: Syscall,
        args: [u64; 6],
        result: i64,
    },
    /// A file open, or a change of a file's name, contents or attributes, that a file deny rule
    /// matched, seen by a BPF-LSM program (`file_open`, `inode_unlink`, ...): refused with
    /// EACCES or, in audit mode, reported.
    FileDenied {
        /// What was attempted.
        op: FileOp,
        /// The file's name, and the file or directory the rule names.
        name: String,
        target: String,
        /// How many parents up the rule's directory is (0: the rule names the file).
        depth: u32,
        /// Device (kernel encoding) and inode of what the rule matched.
        dev: u32,
        ino: u64,
        /// The open asked for writing.
        write: bool,
        /// The file's owner (uid).
        owner: u32,
        refused: bool,
        /// The file rule behind it.
        rule: Option<String>,
    },
    /// An execve or execveat the kernel refused (EACCES or EPERM), seen as the syscall
    /// returned: the caller's image goes on running. A successful exec is an
    /// [`EventKind::Exec`]; other failures are not reported.
    ExecRefused {
        /// As the process asked for it (relative to `dirfd`, or its working directory, when it
        /// does not start with `/`).
        path: String,
        /// execveat's directory descriptor; `None` for execve.
        dirfd: Option<i32>,
        result: i64,
    },
    /// A connect or an unconnected send to a destination the container's egress allow-list
    /// ([`crate::EgressList`]) does not name, seen by the cgroup sock_addr programs: refused
    /// with EPERM or, in audit, reported.
    Egress {
        /// The destination (an IPv4-mapped IPv6 address as its IPv4 address).
        addr: SocketAddr,
        /// The IP protocol number (6 tcp, 17 udp, 1 and 58 icmp).
        protocol: u32,
        /// An unconnected send (UDP sendmsg), not a connect.
        sendmsg: bool,
        refused: bool,
    },
}

impl EventKind {
    /// Short name of the kind, as put in evidence.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Exec { .. } => "exec",
            EventKind::Exit { .. } => "exit",
            EventKind::Fork { .. } => "fork",
            EventKind::Open { .. } => "open",
            EventKind::Connect { .. } => "connect",
            EventKind::Bind { .. } => "bind",
            EventKind::Listen { .. } => "listen",
            EventKind::Accept { .. } => "accept",
            EventKind::Socket { .. } => "socket",
            EventKind::Mount { .. } => "mount",
            EventKind::SockCreate { .. } => "socket-create",
            EventKind::Syscall { call, .. } => call.name(),
            EventKind::FileDenied { op, .. } => op.kind_name(),
            EventKind::Egress { .. } => "egress",
            EventKind::ExecRefused { .. } => "exec-refused",
        }
    }
}

/// What a file deny rule saw attempted on a file it covers (`file_event.op`, FOP_* in
/// lsm_files.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    Open,
    Unlink,
    Rmdir,
    Rename,
    /// A hard link to the file, or a new name made in a covered directory by a link.
    Link,
    Create,
    Mkdir,
    Mknod,
    Symlink,
    /// A change of mode, owner, size (truncate) or times.
    Setattr,
}

impl FileOp {
    const ALL: [FileOp; 10] = [
        FileOp::Open,
        FileOp::Unlink,
        FileOp::Rmdir,
        FileOp::Rename,
        FileOp::Link,
        FileOp::Create,
        FileOp::Mkdir,
        FileOp::Mknod,
        FileOp::Symlink,
        FileOp::Setattr,
    ];

    /// The kernel's code for it (FOP_*); an unknown code reads as an open.
    pub(crate) fn from_code(code: u32) -> Self {
        Self::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(FileOp::Open)
    }

    /// The operation's name, as in events (`op`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Open => "open",
            FileOp::Unlink => "unlink",
            FileOp::Rmdir => "rmdir",
            FileOp::Rename => "rename",
            FileOp::Link => "link",
            FileOp::Create => "create",
            FileOp::Mkdir => "mkdir",
            FileOp::Mknod => "mknod",
            FileOp::Symlink => "symlink",
            FileOp::Setattr => "setattr",
        }
    }

    /// [`EventKind::name`] of a [`EventKind::FileDenied`] with this operation.
    fn kind_name(self) -> &'static str {
        match self {
            FileOp::Open => "file-open",
            FileOp::Unlink => "file-unlink",
            FileOp::Rmdir => "file-rmdir",
            FileOp::Rename => "file-rename",
            FileOp::Link => "file-link",
            FileOp::Create => "file-create",
            FileOp::Mkdir => "file-mkdir",
            FileOp::Mknod => "file-mknod",
            FileOp::Symlink => "file-symlink",
            FileOp::Setattr => "file-setattr",
        }
    }
}

/// A rule that matched an event: a caller's deny rule or a built-in detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub severity: u8,
    pub tags: Vec<String>,
    pub message: String,
    pub action: Action,
    pub enforcer: &'static str,
}

/// One event of a watched container.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorEvent {
    /// When user space read it.
    pub time: SystemTime,
    /// The container's slot (unique on the node while it is watched).
    pub slot: u32,
    pub container: Arc<ContainerRef>,
    pub process: ProcessInfo,
    /// Parent's executable when known (exec events carry it).
    pub parent_binary: String,
    pub kind: EventKind,
    /// Rules that matched; empty for plain telemetry.
    pub findings: Vec<Finding>,
}

pub(crate) const EACCES: i64 = 13;
pub(crate) const EPERM: i64 = 1;

/// Open flags that make an open a write.
pub(crate) const O_WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000;

impl MonitorEvent {
    /// One event in the common schema per finding (none for plain telemetry).
    pub fn to_events(&self, node: &str) -> Vec<Event> {
        self.findings
            .iter()
            .filter_map(|f| self.to_event(node, f))
            .collect()
    }

    fn to_event(&self, node: &str, f: &Finding) -> Option<Event> {
        let c = &self.container;
        let workload = Workload {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
            container_id: c.container_id.clone(),
            image: c.image.clone(),
        };
        // Severities are validated when rules are registered; clamping keeps this total.
        let severity = Severity::new(f.severity.clamp(1, 10)).ok()?;
        let rule = Rule {
            name: f.rule.clone(),
            severity,
            tags: f.tags.clone(),
            message: f.message.clone(),
        };
        let mut event = Event::new(node, Source::Monitor, workload, rule, f.action, f.enforcer);
        event.time = palisade_events::rfc3339(self.time);
        let (binary, args) = match &self.kind {
            EventKind::Exec { filename, args, .. } => (filename.clone(), args.clone()),
            _ => (self.process.binary.clone(), Vec::new()),
        };
        event.process = Some(Process {
            pid: self.process.pid,
            binary,
            args,
            uid: Some(self.process.uid),
            parent: Some(Parent {
                pid: self.process.ppid,
                binary: self.parent_binary.clone(),
            }),
        });
        event = event.with_evidence("event", self.kind.name());
        Some(self.kind.add_evidence(event))
    }
}

impl EventKind {
    /// The kind's own fields as evidence on `event`.
    fn add_evidence(&self, event: Event) -> Event {
        let fields = match self {
            EventKind::Exec {
                filename,
                ino,
                dev,
                killed,
                refused,
                ..
            } => json!({
                "refused": refused, "path": filename, "inode": ino, "dev": dev, "killed": killed,
            }),
            EventKind::Exit { code } => json!({ "exit_code": code }),
            EventKind::Fork { child_pid } => json!({ "child_pid": child_pid }),
            EventKind::Open {
                path,
                flags,
                result,
                secret: secret_mount,
                system_dir,
                credential: credential_file,
                ..
            } => json!({
                "path": path, "flags": flags, "result": result, "secret_mount": secret_mount,
                "system_dir": system_dir, "credential_file": credential_file,
                "denied": *result == -EACCES || *result == -EPERM,
            }),
            EventKind::Connect { addr, result }
            | EventKind::Bind { addr, result }
            | EventKind::Accept { peer: addr, result } => match addr {
                Some(a) => {
                    json!({ "address": a.ip().to_string(), "port": a.port(), "result": result })
                }
                None => json!({ "result": result }),
            },
            EventKind::Listen { fd, result, .. } => json!({ "fd": fd, "result": result }),
            EventKind::Socket {
                domain,
                kind,
                protocol,
                result,
            } => json!({ "domain": domain, "type": kind, "protocol": protocol, "result": result }),
            EventKind::Mount {
                target,
                flags,
                result,
            } => json!({ "target": target, "flags": flags, "result": result }),
            EventKind::SockCreate {
                family,
                kind,
                protocol,
                class,
                refused,
                exe_id,
                ..
            } => json!({
                "domain": family, "type": kind, "protocol": protocol,
                "class": class.map_or("", |c| c.as_str()), "refused": refused,
                "dev": exe_id.0, "inode": exe_id.1,
            }),
            EventKind::Syscall { call, args, result } => {
                json!({ "syscall": call.name(), "args": args, "result": result })
            }
            EventKind::FileDenied {
                op,
                name,
                target,
                depth,
                dev,
                ino,
                write,
                owner,
                refused,
                ..
            } => json!({
                "op": op.as_str(), "path": file_path(target, name, *depth), "rule_target": target,
                "dev": dev, "inode": ino, "write": write, "owner": owner, "refused": refused,
                "result": if *refused { -EACCES } else { 0 },
            }),
            EventKind::ExecRefused {
                path,
                dirfd,
                result,
            } => json!({ "path": path, "dirfd": dirfd, "result": result, "refused": true }),
            EventKind::Egress {
                addr,
                protocol,
                sendmsg,
                refused,
            } => json!({
                "peer": addr.to_string(), "protocol": protocol,
                "call": if *sendmsg { "sendmsg" } else { "connect" }, "refused": refused,
                "result": if *refused { -1 } else { 0 },
            }),
        };
        let mut event = event;
        if let serde_json::Value::Object(fields) = fields {
            for (key, value) in fields {
                event = event.with_evidence(&key, value);
            }
        }
        event
    }
}

/// What a rule's hit did, as a finding says it: refused by `enforcer`, or (audit) reported.
pub(crate) fn outcome(refused: bool, enforcer: Enforcer) -> (Action, &'static str) {
    if refused {
        (Action::Block, enforcer.as_str())
    } else {
        (Action::Audit, Enforcer::AuditOnly.as_str())
    }
}

/// The path of a file a file rule matched, as far as the kernel's record tells it: the rule's
/// own file, the file in the rule's directory, or deeper (`dir/.../name`).
pub(crate) fn file_path(target: &str, name: &str, depth: u32) -> String {
    let dir = target.trim_end_matches('/');
    match depth {
        0 => target.to_string(),
        1 => format!("{dir}/{name}"),
        _ => format!("{dir}/.../{name}"),
    }
}

/// Parses a raw `struct sockaddr` (AF_INET or AF_INET6) as copied by the kernel hooks.
pub(crate) fn parse_sockaddr(raw: &[u8], len: usize) -> Option<SocketAddr> {
    let raw = raw.get(..len.min(raw.len()))?;
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inet_and_inet6_sockaddrs() {
        let mut v4 = [0u8; 28];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            parse_sockaddr(&v4, 16),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_sockaddr(&v4, 6), None, "truncated address");
        let mut v6 = [0u8; 28];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(parse_sockaddr(&v6, 28), Some("[::1]:443".parse().unwrap()));
        let mut unix = [0u8; 28];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_sockaddr(&unix, 28), None);
    }

    #[test]
    fn findings_become_schema_events_with_process_and_evidence() {
        let ev = MonitorEvent {
            time: SystemTime::UNIX_EPOCH,
            slot: 3,
            container: Arc::new(ContainerRef {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: "app".into(),
                container_id: "abc".into(),
                image: "nginx".into(),
                ..Default::default()
            }),
            process: ProcessInfo {
                pid: 10,
                ppid: 1,
                uid: 0,
                ..Default::default()
            },
            parent_binary: "/usr/sbin/nginx".into(),
            kind: EventKind::Exec {
                filename: "/bin/sh".into(),
                args: vec!["sh".into(), "-c".into(), "id".into()],
                parent: "/usr/sbin/nginx".into(),
                ino: 5,
                dev: 8,
                killed: false,
                refused: false,
                deny_rule: None,
                entrypoint: false,
            },
            findings: vec![Finding {
                rule: "shell-in-container".into(),
                severity: 7,
                tags: vec!["MITRE_T1059.004".into()],
                message: "shell spawned".into(),
                action: Action::Audit,
                enforcer: "audit-only",
            }],
        };
        let events = ev.to_events("node-a");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.source, Source::Monitor);
        assert_eq!(e.workload.pod, "web-0");
        assert_eq!(e.rule.name, "shell-in-container");
        assert_eq!(e.rule.severity.level(), 7);
        assert_eq!(e.time, "1970-01-01T00:00:00.000000000Z");
        let p = e.process.as_ref().unwrap();
        assert_eq!(p.binary, "/bin/sh");
        assert_eq!(p.args, vec!["sh", "-c", "id"]);
        assert_eq!(p.parent.as_ref().unwrap().binary, "/usr/sbin/nginx");
        assert_eq!(e.evidence["path"], "/bin/sh");
        assert_eq!(e.evidence["event"], "exec");
        let mut plain = ev.clone();
        plain.findings.clear();
        assert!(plain.to_events("node-a").is_empty());
    }
}
