//! What a container is and what is enforced on it: the caller's view, and its encoding into the
//! kernel maps' keys.

use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::skel::monitor::types;

/// The container a watch is for: its cgroup v2 id (see [`crate::cgroup::cgroup_id_of_pid`]) and the
/// names events are reported under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRef {
    pub cgroup_id: u64,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub image: String,
    /// The container's unified cgroup directory, needed to attach the connect hooks; when
    /// `None`, it is looked up by `cgroup_id`.
    pub cgroup_dir: Option<PathBuf>,
}

/// Kill any process of the container that executes this file.
///
/// The rule keys on the file's inode and device, taken when the watch is registered: a hard
/// link or a rename of the file is still matched, a copy (a new inode) is not, and neither is a
/// file replaced after registration. `path` must be reachable from the caller (for a container,
/// the path under its root filesystem as the shim sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRule {
    pub name: String,
    pub path: PathBuf,
    /// fromSource: when set, the rule applies only when the exec's parent process runs this
    /// executable (matched by inode and device; checked in the kernel). One rule per `path`.
    pub from_parent: Option<PathBuf>,
    /// 1..=10, KubeArmor's scale.
    pub severity: u8,
    pub message: String,
}

/// What a file deny rule names: one file, a directory and the files directly in it (its
/// whole subtree when `recursive`), or the files a glob matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTarget {
    Path(PathBuf),
    Directory {
        path: PathBuf,
        recursive: bool,
    },
    /// A glob (`*` and `?` within a segment, `**` across, as matchPatterns), `dir` its literal
    /// directory ([`FileTarget::pattern`]). Matched by the kernel on each name below `dir`
    /// where its form allows: its wildcards all in its last segment (one `*` at most), or
    /// after a `**`. For the other forms only the files the caller expanded it to (rules of
    /// the same name) are refused.
    Pattern {
        glob: String,
        dir: PathBuf,
    },
}

impl FileTarget {
    /// The glob `glob` with its literal directory (the segments before the first wildcard).
    pub fn pattern(glob: &str) -> Self {
        let dir: PathBuf = std::iter::once("/")
            .chain(
                glob.split('/')
                    .filter(|s| !s.is_empty())
                    .take_while(|s| !s.contains(['*', '?'])),
            )
            .collect();
        FileTarget::Pattern {
            glob: glob.to_string(),
            dir,
        }
    }

    /// The file or directory named, as the caller gave it (a glob's literal directory).
    pub fn path(&self) -> &Path {
        match self {
            FileTarget::Path(p)
            | FileTarget::Directory { path: p, .. }
            | FileTarget::Pattern { dir: p, .. } => p,
        }
    }
}

/// Refuse opens of a file with EACCES: a file Block rule, checked by the BPF-LSM `file_open`
/// program (and its removal, renames, links, attribute changes and new names in a covered
/// directory by the inode hooks), so only where BPF-LSM is in force ([`crate::Features::bpf_lsm`]); elsewhere
/// registering it fails ([`crate::MonitorError::NoBpfLsm`]).
///
/// The rule keys on the device and inode of its target, resolved at registration with
/// symlinks followed: every path the kernel resolves to that file (`/var/run/x` and `/run/x`
/// when `/var/run` is a link to `/run`, a relative path, a hard link) is refused, and a file
/// created later at the path is not (a directory rule covers new files in it). A directory
/// rule covers the files below it within the directory's own mount. `target` must be
/// reachable from the caller (for a container, under its root as the shim sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    pub name: String,
    pub target: FileTarget,
    /// readOnly: opens for reading pass; opens for writing are refused.
    pub read_only: bool,
    /// ownerOnly: refused only to callers whose filesystem uid does not own the file.
    pub owner_only: bool,
    /// fromSource: when set, the rule applies only to processes running this executable
    /// (matched by inode and device, like exec rules).
    pub from_source: Option<PathBuf>,
    /// When set, `target` and `from_source` are paths inside this root (a container's
    /// `/proc/<pid>/root`), resolved as the container resolves them: symlinks and `..` stay
    /// inside it and its mounts count (openat2 with RESOLVE_IN_ROOT).
    pub root: Option<PathBuf>,
    /// 1..=10, KubeArmor's scale.
    pub severity: u8,
    pub message: String,
}

/// What an Audit rule reports: the execution or the opening of a file, or of anything below a
/// directory. Matched in user space on the container's exec and open events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOn {
    Exec(AuditTarget),
    Open(AuditTarget),
}

/// A file, or a directory (ending with `/`) and, when `recursive`, its whole subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Path(String),
    Directory { dir: String, recursive: bool },
}

impl AuditTarget {
    /// Whether the absolute `path` is the file or lies in the directory.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            AuditTarget::Path(p) => p == path,
            AuditTarget::Directory { dir, recursive } => match path.strip_prefix(dir.as_str()) {
                Some(rest) => !rest.is_empty() && (*recursive || !rest.contains('/')),
                None => false,
            },
        }
    }
}

/// Report (never refuse) what matches `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRule {
    pub name: String,
    pub on: AuditOn,
    /// 1..=10, KubeArmor's scale.
    pub severity: u8,
    pub message: String,
}

/// Refuse connections (TCP connect, UDP sendmsg) to a destination with EPERM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    pub name: String,
    pub addr: IpAddr,
    /// Prefix length of `addr` (32 or 128 for one host).
    pub prefix_len: u8,
    /// `None` for every port.
    pub port: Option<u16>,
    /// fromSource: when set, processes running this executable (matched by inode and device,
    /// like exec rules) may still connect; everyone else is refused. Checked in the kernel on
    /// the current task's executable.
    pub only_from: Option<PathBuf>,
    pub severity: u8,
    pub message: String,
}

/// A protocol class of socket creation, as KubeArmor names them: TCP is `SOCK_STREAM`, UDP
/// `SOCK_DGRAM`, ICMP an ICMP or ICMPv6 protocol (datagram or raw), raw `SOCK_RAW`, all over
/// AF_INET or AF_INET6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SockClass {
    Tcp,
    Udp,
    Icmp,
    Raw,
}

impl SockClass {
    /// The class as KubeArmor writes it (`tcp`, `udp`, `icmp`, `raw`); case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(SockClass::Tcp),
            "udp" => Some(SockClass::Udp),
            "icmp" => Some(SockClass::Icmp),
            "raw" => Some(SockClass::Raw),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SockClass::Tcp => "tcp",
            SockClass::Udp => "udp",
            SockClass::Icmp => "icmp",
            SockClass::Raw => "raw",
        }
    }

    /// `sock_key.class` (SC_* in events.h).
    pub(crate) fn code(self) -> u32 {
        match self {
            SockClass::Tcp => 1,
            SockClass::Udp => 2,
            SockClass::Icmp => 3,
            SockClass::Raw => 4,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        [
            SockClass::Tcp,
            SockClass::Udp,
            SockClass::Icmp,
            SockClass::Raw,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// Binaries a socket rule may list (`SOCK_MAX_SOURCES` in events.h); a rule listing more is
/// refused rather than cut short.
pub const MAX_SOCK_SOURCES: usize = 4;

/// Who may create sockets of a class in the container, checked in the kernel when the socket
/// is created (cgroup `sock_create`), on the executable of the creating process (matched by
/// inode and device at registration, like exec rules). An allow-list (`block_listed` false):
/// with no `sources`, nobody; otherwise only the processes running one of `sources`. A block
/// list (`block_listed`, KubeArmor's fromSource on a Block rule): the processes running one of
/// `sources`, every other process passes. The processes a rule stops are refused with EPERM,
/// or only reported when `audit`. AF_PACKET sockets are not seen by this hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockRule {
    pub name: String,
    pub class: SockClass,
    pub sources: Vec<PathBuf>,
    pub block_listed: bool,
    pub audit: bool,
    pub severity: u8,
    pub message: String,
}

/// Everything enforced and detected for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRules {
    pub deny_exec: Vec<ExecRule>,
    /// Executions and opens reported, never refused: a policy's Audit rules.
    pub audit: Vec<AuditRule>,
    pub deny_connect: Vec<ConnectRule>,
    /// Socket creation allow-lists and block lists, at most one per class.
    pub sock_create: Vec<SockRule>,
    /// File Block rules, refused in the kernel through BPF-LSM.
    pub deny_file: Vec<FileRule>,
    /// The peers the container may connect and send to, when it has an egress allow-list
    /// (every other destination is refused or reported).
    pub egress: Option<crate::egress::EgressList>,
    /// Without an `egress` list: report each destination the container connects or sends
    /// to (unconnected UDP included) once, refusing none, for a learned profile's peers
    /// ([`crate::Watch::sends_observed`] says whether the hooks could be attached).
    pub learn_egress: bool,
    /// The built-in detections (shell, package manager, system writes, ...).
    pub builtins: bool,
    /// Report every file open, not only writes, denials and secret reads (costly: every open
    /// becomes an event).
    pub report_all_opens: bool,
    /// Destinations contacted during this window after registration are learned; later new
    /// ones are reported. `None` disables the detection.
    pub learning_window: Option<Duration>,
    /// Directories mounted into the container whose files are secrets (service account token
    /// volumes), as host paths: an open of any file on such a mount is reported, whatever path
    /// the process spelled. At most [`MAX_SECRET_MOUNTS`].
    pub secret_mounts: Vec<PathBuf>,
    /// The container's user namespace mappings (empty: none, ids are the host's): the kernel
    /// reports host ids, the set*id calls name ids inside.
    pub id_maps: IdMaps,
    /// The watched syscalls (`WATCHED_SYSCALLS` names) the container's seccomp filter refuses
    /// outright with an errno: a refused attempt of one of them names `seccomp` as its
    /// enforcer, of the others `capabilities`.
    pub seccomp_refused: Vec<String>,
    /// The container's root filesystem as the caller sees it: the image's own shells and
    /// package managers are read there, so that a copy under another name is known by its
    /// content. `None`: by name only.
    pub rootfs: Option<PathBuf>,
    /// The container's root as its processes see it (`/proc/PID/root` of its first process),
    /// its own mounts included: its credential files (`/etc/shadow`, SSH host keys, a mounted
    /// kubeconfig) are found there at registration. `None`: in `rootfs`, without the
    /// container's mounts; neither: no credential files are watched.
    pub process_root: Option<PathBuf>,
    /// Record every system call number the container's processes make and every capability
    /// the kernel checks for them (a learned profile): the node's learning programs are
    /// attached while any container of the node has this, and [`crate::Watch::syscalls_seen`]
    /// and [`crate::Watch::capabilities_seen`] read the table.
    pub record_syscalls: bool,
    /// The container's landlock ruleset handles the execute right (an execute allow-list,
    /// applied by palisade-init): an exec refused with EACCES names `landlock` as its
    /// enforcer, where without one it names `unknown` (a file's mode refuses with EACCES too).
    pub landlock_exec: bool,
}

/// One range of a user namespace's uid or gid map: `count` ids from `inside` in the
/// container are `outside` and on on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A container's uid and gid maps; empty maps mean no user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

impl IdMaps {
    /// The container's view of host uid `host` (the overflow id 65534 when it is not mapped).
    pub fn uid_inside(&self, host: u32) -> u32 {
        inside(&self.uid, host)
    }

    /// The container's view of host gid `host` (the overflow id 65534 when it is not mapped).
    pub fn gid_inside(&self, host: u32) -> u32 {
        inside(&self.gid, host)
    }
}

fn inside(map: &[IdRange], host: u32) -> u32 {
    if map.is_empty() {
        return host;
    }
    map.iter()
        .find(|r| host >= r.outside && u64::from(host) < u64::from(r.outside) + u64::from(r.count))
        .map_or(65534, |r| r.inside + (host - r.outside))
}

/// How many secret mounts the kernel tells apart per container (events.h).
pub const MAX_SECRET_MOUNTS: usize = 4;

impl Default for ContainerRules {
    fn default() -> Self {
        ContainerRules {
            deny_exec: Vec::new(),
            audit: Vec::new(),
            deny_connect: Vec::new(),
            sock_create: Vec::new(),
            deny_file: Vec::new(),
            egress: None,
            learn_egress: false,
            builtins: true,
            report_all_opens: false,
            learning_window: Some(Duration::from_secs(600)),
            secret_mounts: Vec::new(),
            id_maps: IdMaps::default(),
            seccomp_refused: Vec::new(),
            rootfs: None,
            process_root: None,
            record_syscalls: false,
            landlock_exec: false,
        }
    }
}

/// The mechanism that carries out a rule on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enforcer {
    /// SIGKILL sent from the exec tracepoint before the binary runs.
    BpfExecKill,
    /// cgroup sock_addr hooks refusing with EPERM.
    BpfSockAddr,
    /// A BPF-LSM hook returning an errno.
    BpfLsm,
    /// The cgroup sock_create hook refusing the socket with EPERM.
    BpfSockCreate,
    /// The container's seccomp filter returning an errno.
    Seccomp,
    /// The kernel's permission checks: a capability the container lacks.
    Capabilities,
    /// Reported only.
    AuditOnly,
    /// The container's landlock ruleset (applied by palisade-init, not by the monitor).
    Landlock,
    /// Refused by the kernel for a reason the monitor cannot tell apart (a file's mode,
    /// another LSM).
    Unknown,
}

impl Enforcer {
    /// The name used in events (`enforcer` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcer::BpfExecKill => "bpf-exec-kill",
            Enforcer::BpfSockAddr => "bpf-sock-addr",
            Enforcer::BpfLsm => "bpf-lsm",
            Enforcer::BpfSockCreate => "bpf-sock-create",
            Enforcer::Seccomp => "seccomp",
            Enforcer::Capabilities => "capabilities",
            Enforcer::AuditOnly => "audit-only",
            Enforcer::Landlock => "landlock",
            Enforcer::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Enforcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which enforcer a rule of a watch got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEnforcement {
    pub rule: String,
    pub enforcer: Enforcer,
    /// Why it is weaker than asked, when it is.
    pub note: Option<String>,
}

/// A rule that cannot be put into the kernel maps.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rule {name}: {path}: {source}")]
    ExecPath {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connect rule {name}: prefix length {prefix_len} too long for {addr}")]
    Prefix {
        name: String,
        addr: IpAddr,
        prefix_len: u8,
    },
    #[error("socket rule {name}: {count} allowed binaries, at most {max} fit in the kernel rule")]
    SockSources {
        name: String,
        count: usize,
        max: usize,
    },
    #[error("file rule {name}: more than {max} globs in {dir} for one container")]
    GlobsPerDir {
        name: String,
        dir: PathBuf,
        max: usize,
    },
    #[error("socket rules {first} and {second}: both for {class}, one rule per protocol")]
    SockClassTwice {
        first: String,
        second: String,
        class: &'static str,
    },
    #[error("egress allow-list {name}: raw sockets never pass the connect and sendmsg hooks, a raw peer cannot be listed")]
    EgressRaw { name: String },
    #[error(
        "egress allow-list {name}: container slot {slot:#x} does not fit the allow keys' 24 bits"
    )]
    EgressSlot { name: String, slot: u32 },
}

/// The watched syscalls an OCI seccomp filter (`linux.seccomp` of a runtime spec) refuses
/// outright with an errno: named by a rule without argument conditions whose action is
/// `SCMP_ACT_ERRNO`, or left to a default action of `SCMP_ACT_ERRNO`. A syscall refused only
/// for some arguments is not listed.
pub fn seccomp_refused(seccomp: &serde_json::Value) -> Vec<String> {
    const ERRNO: &str = "SCMP_ACT_ERRNO";
    let Some(default) = seccomp["defaultAction"].as_str() else {
        return Vec::new();
    };
    let rules = seccomp["syscalls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    crate::event::WATCHED_SYSCALLS
        .iter()
        .filter(|name| {
            let named: Vec<&serde_json::Value> = rules
                .iter()
                .filter(|r| {
                    r["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(**name)))
                })
                .collect();
            let unconditional = named
                .iter()
                .find(|r| r["args"].as_array().is_none_or(Vec::is_empty));
            match unconditional {
                Some(r) => r["action"].as_str() == Some(ERRNO),
                None => named.is_empty() && default == ERRNO,
            }
        })
        .map(|n| n.to_string())
        .collect()
}

/// The kernel's internal dev_t encoding (MKDEV: 12-bit major, 20-bit minor), which is what
/// `super_block.s_dev` holds; stat(2) returns the user-space encoding.
pub(crate) fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev as libc::dev_t);
    let minor = libc::minor(st_dev as libc::dev_t);
    (major << 20) | (minor & 0xfffff)
}

/// The (kernel device, inode) of a file named by a rule.
pub(crate) fn file_id(name: &str, path: &Path) -> Result<(u32, u64), RuleError> {
    let meta = std::fs::metadata(path).map_err(|source| RuleError::ExecPath {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok((kernel_dev(meta.dev()), meta.ino()))
}

/// The (kernel device, inode) of `path` inside `root` when given (see [`FileRule::root`]),
/// else of `path` itself.
pub(crate) fn file_id_in(
    name: &str,
    root: Option<&Path>,
    path: &Path,
) -> Result<(u32, u64), RuleError> {
    let Some(root) = root else {
        return file_id(name, path);
    };
    let err = |source| RuleError::ExecPath {
        name: name.to_string(),
        path: root.join(path.strip_prefix("/").unwrap_or(path)),
        source,
    };
    let file = open_in_root(root, path, libc::O_PATH).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    Ok((kernel_dev(meta.dev()), meta.ino()))
}

/// Opens `path` with `flags` (and `O_CLOEXEC`) inside `root`, resolved as if `root` were the
/// filesystem's root (`RESOLVE_IN_ROOT`: absolute symbolic links and `..` stay inside it).
pub fn open_in_root(root: &Path, path: &Path, flags: i32) -> std::io::Result<std::fs::File> {
    let dir = std::fs::File::open(root)?;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // struct open_how (linux/openat2.h); libc's own cannot be built outside the crate.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT,
    };
    // SAFETY: a valid directory fd, a NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new fd owned here.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

pub(crate) fn exec_key(slot: u32, name: &str, path: &Path) -> Result<types::exec_key, RuleError> {
    let (dev, ino) = file_id(name, path)?;
    Ok(types::exec_key { slot, dev, ino })
}

/// Encodes a connect rule as an LPM trie key: slot (32 bits, exact), port (16 bits, network
/// order; 0 = any) then the address as IPv6 with IPv4 mapped into ::ffff:0:0/96.
pub(crate) fn net_key(slot: u32, rule: &ConnectRule) -> Result<types::net_key, RuleError> {
    let (addr, prefix) = match rule.addr {
        IpAddr::V4(a) if rule.prefix_len <= 32 => {
            (a.to_ipv6_mapped().octets(), 96 + u32::from(rule.prefix_len))
        }
        IpAddr::V6(a) if rule.prefix_len <= 128 => (a.octets(), u32::from(rule.prefix_len)),
        _ => {
            return Err(RuleError::Prefix {
                name: rule.name.clone(),
                addr: rule.addr,
                prefix_len: rule.prefix_len,
            })
        }
    };
    Ok(encode_net_key(
        slot,
        rule.port.unwrap_or(0),
        &addr,
        48 + prefix,
    ))
}

pub(crate) fn encode_net_key(
    slot: u32,
    port: u16,
    addr: &[u8; 16],
    prefixlen: u32,
) -> types::net_key {
    let mut data = [0u8; 24];
    data[0..4].copy_from_slice(&slot.to_ne_bytes());
    data[4..6].copy_from_slice(&port.to_be_bytes());
    data[6..22].copy_from_slice(addr);
    types::net_key { prefixlen, data }
}

/// Whether a destination falls under a connect rule, with the kernel's semantics (used to name
/// the rule behind an EPERM the kernel returned).
pub(crate) fn connect_matches(rule: &ConnectRule, addr: IpAddr, port: u16) -> bool {
    if rule.port.is_some_and(|p| p != port) {
        return false;
    }
    let (want, have, bits) = match (rule.addr, addr) {
        (IpAddr::V4(r), IpAddr::V4(a)) => (
            u128::from(r.to_ipv6_mapped()),
            u128::from(a.to_ipv6_mapped()),
            96 + u32::from(rule.prefix_len),
        ),
        (IpAddr::V4(r), IpAddr::V6(a)) => (
            u128::from(r.to_ipv6_mapped()),
            u128::from(a),
            96 + u32::from(rule.prefix_len),
        ),
        (IpAddr::V6(r), IpAddr::V4(a)) => (
            u128::from(r),
            u128::from(a.to_ipv6_mapped()),
            u32::from(rule.prefix_len),
        ),
        (IpAddr::V6(r), IpAddr::V6(a)) => {
            (u128::from(r), u128::from(a), u32::from(rule.prefix_len))
        }
    };
    if bits == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - bits.min(128));
    want & mask == have & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rule(addr: IpAddr, prefix_len: u8, port: Option<u16>) -> ConnectRule {
        ConnectRule {
            name: "r".into(),
            addr,
            prefix_len,
            port,
            only_from: None,
            severity: 5,
            message: String::new(),
        }
    }

    #[test]
    fn net_keys_put_v4_in_the_mapped_range() {
        let r = rule(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 24, Some(443));
        let k = net_key(7, &r).unwrap();
        assert_eq!(k.prefixlen, 48 + 96 + 24);
        assert_eq!(&k.data[0..4], &7u32.to_ne_bytes());
        assert_eq!(&k.data[4..6], &[1, 187]);
        assert_eq!(&k.data[16..22], &[0xff, 0xff, 10, 1, 2, 3]);
        assert_eq!(&k.data[22..], &[0, 0]);
        assert!(net_key(7, &rule(IpAddr::V4(Ipv4Addr::LOCALHOST), 33, None)).is_err());
    }

    #[test]
    fn connect_matching_follows_prefix_and_port() {
        let r = rule(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0)), 24, Some(443));
        assert!(connect_matches(
            &r,
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 77)),
            443
        ));
        assert!(!connect_matches(
            &r,
            IpAddr::V4(Ipv4Addr::new(10, 1, 3, 77)),
            443
        ));
        assert!(!connect_matches(
            &r,
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 77)),
            80
        ));
        let any = rule(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, None);
        assert!(connect_matches(&any, IpAddr::V4(Ipv4Addr::LOCALHOST), 1));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 9).to_ipv6_mapped());
        assert!(connect_matches(&r, mapped, 443));
    }

    #[test]
    fn seccomp_refusals_are_the_unconditional_errno_ones() {
        let refused = seccomp_refused(&serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["openat", "connect", "socket"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["setns"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
            ]
        }));
        assert!(refused.iter().any(|s| s == "ptrace"));
        assert!(
            refused.iter().any(|s| s == "unshare"),
            "left to the default"
        );
        assert!(!refused.iter().any(|s| s == "socket" || s == "openat"));
        assert!(
            !refused.iter().any(|s| s == "setns"),
            "only for some arguments"
        );
        assert!(seccomp_refused(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn kernel_dev_matches_mkdev() {
        let dev = libc::makedev(8, 1);
        assert_eq!(kernel_dev(dev as u64), (8 << 20) | 1);
        let dev = libc::makedev(259, 300);
        assert_eq!(kernel_dev(dev as u64), (259 << 20) | 300);
    }
}
