//! The recording of one workload: what its containers did, folded (see `fold`) and bounded.
//!
//! Every category has a cap; an observation past it is not kept but counted in `overflow`, and
//! a recording with overflow, dropped events or unrecognized observations is not promotable
//! (`Recording::promotable` says why). Merging (`Recording::merge`) is commutative: the union is
//! rebuilt in a canonical order, so which entries a cap keeps does not depend on the order of
//! the pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_policy::{names, Capability, Protocol};
use serde::{Deserialize, Serialize};

use crate::floor;
use crate::fold::{self, Cidr, FOLD_THRESHOLD, PEER_FOLD_THRESHOLD};
pub use crate::workload::{workload_name, WorkloadId};

/// Executables kept per workload.
pub const MAX_EXECUTABLES: usize = 256;
/// Parent executables kept per executable; past it the executable may run from anywhere.
pub const MAX_PARENTS: usize = 16;
/// File and directory entries kept per workload (after folding).
pub const MAX_FILES: usize = 1024;
/// Listening ports kept per workload.
pub const MAX_LISTENING: usize = 64;
/// Outbound peers kept per workload (after folding).
pub const MAX_PEERS: usize = 256;
/// Pod names kept (informational: the count of the others is kept in `pods_beyond`).
pub const MAX_PODS: usize = 64;
/// The longest pod name kept (a Kubernetes object name).
pub const MAX_POD_NAME: usize = 253;
/// Unrecognized observations kept as examples (`Recording::unrecognized`), each cut to 200 bytes.
pub const MAX_UNRECOGNIZED: usize = 16;
/// CRI exec commands kept (`runtime_commands`).
pub const MAX_COMMANDS: usize = 64;
/// Words of one CRI exec command, and bytes of all its words together.
pub const MAX_COMMAND_WORDS: usize = 64;
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Errors of this module: a workload identity that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Namespace or name empty, too long, or not made of `a-z`, `0-9`, `-` and `.`.
    #[error("workload {namespace:?}/{name:?}: namespace and name must be 1 to 253 characters of a-z, 0-9, - and .")]
    Workload { namespace: String, name: String },
    /// Two recordings of different workloads cannot be merged.
    #[error("recordings of workloads {left} and {right} cannot be merged")]
    Mismatch { left: String, right: String },
}

/// One thing a container did, as the monitor reports it (and as a departure carries it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// `path` was executed by a process running `parent` (`None`: by the runtime, the
    /// container's first process).
    Exec {
        path: String,
        parent: Option<String>,
    },
    /// `path` was opened, for writing if `write`.
    Open { path: String, write: bool },
    /// `executable` created a socket of `protocol`.
    Socket {
        executable: String,
        protocol: Protocol,
    },
    /// Something listened on `port`.
    Listen { port: u16, protocol: Protocol },
    /// Something connected (or sent) to `address`:`port`.
    Connect {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    /// A capability was used.
    Capability { capability: Capability },
    /// A system call was made.
    Syscall { name: String },
    /// A CRI exec ran `argv`, its first word the path name the runtime ran (`argv[0]` resolved
    /// in the container's `PATH`), the others as given.
    RuntimeCommand { argv: Vec<String> },
}

/// The categories that have a cap; overflow in any of them blocks promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Executables,
    Files,
    Sockets,
    Listening,
    Peers,
    RuntimeCommands,
    /// Observations that cannot be expressed in a policy (relative or unnormalized paths, an
    /// unknown system call name): the profile would miss them.
    Unrecognized,
}

impl Category {
    pub fn cap(self) -> Option<usize> {
        match self {
            Self::Executables | Self::Sockets => Some(MAX_EXECUTABLES),
            Self::Files => Some(MAX_FILES),
            Self::Listening => Some(MAX_LISTENING),
            Self::Peers => Some(MAX_PEERS),
            Self::RuntimeCommands => Some(MAX_COMMANDS),
            Self::Unrecognized => None,
        }
    }
}

/// Read and write access to a file or a folded directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

impl Access {
    fn union(self, other: Access) -> Access {
        Access {
            read: self.read || other.read,
            write: self.write || other.write,
        }
    }
}

/// Where an executable was started from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parents {
    /// Started by the runtime (the container's first process).
    pub runtime: bool,
    /// Parent executables seen.
    pub paths: BTreeSet<String>,
    /// More than `MAX_PARENTS` parents: the executable may run from anywhere.
    pub any: bool,
}

/// An outbound peer: an address or a folded network, a port and a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub net: Cidr,
    pub port: u16,
    pub protocol: Protocol,
}

/// A listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    pub protocol: Protocol,
}

/// Everything learned about one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub workload: WorkloadId,
    /// Pods whose containers contributed (at most `MAX_PODS` names).
    pub pods: BTreeSet<String>,
    /// Pods beyond `MAX_PODS`, counted once per recording they came from.
    pub pods_beyond: u64,
    /// Seconds since the epoch of the first and last observation (passed in by the caller).
    pub first_seen: Option<u64>,
    pub last_seen: Option<u64>,
    /// Observations recorded (kept or not).
    pub observations: u64,
    /// Events the kernel side lost before they reached the recording.
    pub drops: u64,
    pub executables: BTreeMap<String, Parents>,
    /// Files, and folded directories (keys ending with `/`, recursive).
    pub files: BTreeMap<String, Access>,
    /// Socket protocols per executable.
    pub sockets: BTreeMap<String, BTreeSet<Protocol>>,
    pub listening: BTreeSet<Port>,
    pub peers: BTreeSet<Peer>,
    pub capabilities: BTreeSet<Capability>,
    /// Recordings merged in whose node could not observe the capabilities used (no kernel
    /// hook for it there): while non-zero, `capabilities` is incomplete, no export emits
    /// capability rules from it and `palisade profile show` says so. A document written before
    /// this field existed could not observe them either (read as 1).
    #[serde(default = "one")]
    pub capabilities_unobserved: u64,
    /// Recordings merged in whose container's connects and sends were not observed (the
    /// sock_addr hooks could not be attached): `peers` may miss some; not promotable.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sends_unobserved: u64,
    /// Capabilities the runtime used in the workload's containers, never the workload
    /// (`floor::runtime_capability`): shown, not exported.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub runtime_capabilities: BTreeSet<Capability>,
    /// System calls by name (the floor is added by the exports, not stored here).
    pub syscalls: BTreeSet<String>,
    /// The commands CRI execs ran while learning ([`Observation::RuntimeCommand`]), at most
    /// `MAX_COMMANDS`. `None` in a document written before they were recorded, and in any
    /// merge with one: its CRI execs are judged by the path name alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_commands: Option<BTreeSet<Vec<String>>>,
    /// Observations not kept, per category.
    pub overflow: BTreeMap<Category, u64>,
    /// Examples of the unrecognized ones (`open <path>`, `exec <path>`, ...), so that a
    /// recording refused for them says what they were.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unrecognized: BTreeSet<String>,
}

impl Recording {
    pub fn new(workload: WorkloadId) -> Self {
        Self {
            workload,
            pods: BTreeSet::new(),
            pods_beyond: 0,
            first_seen: None,
            last_seen: None,
            observations: 0,
            drops: 0,
            executables: BTreeMap::new(),
            files: BTreeMap::new(),
            sockets: BTreeMap::new(),
            listening: BTreeSet::new(),
            peers: BTreeSet::new(),
            capabilities: BTreeSet::new(),
            capabilities_unobserved: 0,
            sends_unobserved: 0,
            runtime_capabilities: BTreeSet::new(),
            syscalls: BTreeSet::new(),
            runtime_commands: Some(BTreeSet::new()),
            overflow: BTreeMap::new(),
            unrecognized: BTreeSet::new(),
        }
    }

    /// Whether the capabilities used were observed by every recording merged in (so that
    /// `capabilities` is the complete set).
    pub fn capabilities_observed(&self) -> bool {
        self.capabilities_unobserved == 0
    }

    /// Notes that `pod` contributes to this recording.
    pub fn add_pod(&mut self, pod: &str) {
        if self.pods.contains(pod) {
            return;
        }
        if self.pods.len() < MAX_PODS && pod.len() <= MAX_POD_NAME {
            self.pods.insert(pod.to_string());
        } else {
            self.pods_beyond += 1;
        }
    }

    /// Counts `n` events lost between the kernel and the recording: the recording is lossy.
    pub fn add_drops(&mut self, n: u64) {
        self.drops = self.drops.saturating_add(n);
    }

    /// Whether events were lost before they reached the recording (it then cannot be promoted).
    pub fn lossy(&self) -> bool {
        self.drops > 0
    }

    /// Records one observation made at `now` (seconds since the epoch).
    pub fn observe(&mut self, now: u64, obs: &Observation) {
        self.observations = self.observations.saturating_add(1);
        self.first_seen = Some(self.first_seen.map_or(now, |f| f.min(now)));
        self.last_seen = Some(self.last_seen.map_or(now, |l| l.max(now)));
        self.apply(obs);
    }

    /// Whether `obs` is small enough to keep as it is (every path within the path limit).
    pub fn bounded(obs: &Observation) -> bool {
        let path_ok = |p: &str| p.len() <= fold::MAX_PATH_BYTES;
        match obs {
            Observation::Exec { path, parent } => {
                path_ok(path) && parent.as_deref().is_none_or(path_ok)
            }
            Observation::Open { path, .. } => path_ok(path),
            Observation::Socket { executable, .. } => path_ok(executable),
            Observation::Syscall { name } => name.len() <= 64,
            Observation::RuntimeCommand { argv } => crate::commands::bounded(argv),
            Observation::Listen { .. }
            | Observation::Connect { .. }
            | Observation::Capability { .. } => true,
        }
    }

    /// Whether the recording already covers `obs` (so it is no departure from the profile).
    pub fn covers(&self, obs: &Observation) -> bool {
        match obs {
            Observation::Exec { path, parent } => self.executables.get(path).is_some_and(|p| {
                p.any
                    || match parent {
                        None => p.runtime,
                        Some(parent) => p.paths.contains(parent),
                    }
            }),
            Observation::Open { path, write } => {
                let need = |a: &Access| !*write || a.write;
                self.files.get(path).is_some_and(need)
                    || fold::ancestors(path).any(|dir| self.files.get(dir).is_some_and(need))
            }
            Observation::Socket {
                executable,
                protocol,
            } => self
                .sockets
                .get(executable)
                .is_some_and(|s| s.contains(protocol)),
            Observation::Listen { port, protocol } => self.listening.contains(&Port {
                port: *port,
                protocol: *protocol,
            }),
            Observation::Connect {
                address,
                port,
                protocol,
            } => {
                let host = Cidr::host(*address);
                self.peers
                    .iter()
                    .any(|p| p.port == *port && p.protocol == *protocol && p.net.contains(&host))
            }
            Observation::Capability { capability } => self.capabilities.contains(capability),
            Observation::Syscall { name } => {
                self.syscalls.contains(name.as_str())
                    || floor::SYSCALL_FLOOR.contains(&name.as_str())
            }
            Observation::RuntimeCommand { argv } => self
                .runtime_commands
                .as_ref()
                .is_none_or(|c| c.contains(argv)),
        }
    }

    /// Merges `other` (another pod's recording of the same workload) into this one.
    /// Commutative: `a.merge(b)` and `b.merge(a)` give the same recording.
    pub fn merge(&self, other: &Recording) -> Result<Recording, RecordError> {
        if self.workload != other.workload {
            return Err(RecordError::Mismatch {
                left: self.workload.to_string(),
                right: other.workload.to_string(),
            });
        }
        let mut out = Recording::new(self.workload.clone());
        out.observations = self.observations.saturating_add(other.observations);
        out.drops = self.drops.saturating_add(other.drops);
        out.capabilities_unobserved = self
            .capabilities_unobserved
            .saturating_add(other.capabilities_unobserved);
        out.sends_unobserved = self.sends_unobserved.saturating_add(other.sends_unobserved);
        out.first_seen = min_opt(self.first_seen, other.first_seen);
        out.last_seen = self.last_seen.max(other.last_seen);
        out.pods_beyond = self.pods_beyond.saturating_add(other.pods_beyond);
        for pod in self.pods.union(&other.pods) {
            out.add_pod(pod);
        }
        for (category, n) in self.overflow.iter().chain(&other.overflow) {
            out.count_overflow(*category, *n);
        }
        out.runtime_commands = None;
        if let (Some(a), Some(b)) = (&self.runtime_commands, &other.runtime_commands) {
            out.runtime_commands = Some(a.union(b).cloned().collect());
        }
        out.absorb(self);
        out.absorb(other);
        out.canonicalize();
        Ok(out)
    }

    /// Re-imposes every bound and folding rule (after loading a document that may have been
    /// edited, or after a merge), in a canonical order.
    pub fn canonicalize(&mut self) {
        let executables = std::mem::take(&mut self.executables);
        self.overflow.retain(|_, n| *n > 0);
        let mut unrecognized = Vec::new();
        for (path, parents) in executables {
            if !fold::valid_file_path(&path) {
                unrecognized.push(format!("exec {path}"));
                continue;
            }
            if self.executables.len() >= MAX_EXECUTABLES {
                self.count_overflow(Category::Executables, 1);
                continue;
            }
            let mut kept = Parents {
                runtime: parents.runtime,
                paths: BTreeSet::new(),
                any: parents.any,
            };
            for parent in parents.paths {
                if !fold::valid_file_path(&parent) {
                    unrecognized.push(format!("parent {parent}"));
                } else if kept.paths.len() < MAX_PARENTS {
                    kept.paths.insert(parent);
                } else {
                    kept.any = true;
                }
            }
            if kept.any {
                kept.paths.clear();
            }
            self.executables.insert(path, kept);
        }
        for what in unrecognized {
            self.unrecognized(what);
        }
        let files = std::mem::take(&mut self.files);
        // Directories first, shortest first, so that files land in them.
        let (dirs, plain): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(k, _)| k.ends_with('/'));
        let mut dirs = dirs;
        dirs.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(&b.0)));
        for (dir, access) in dirs {
            let as_file = dir.trim_end_matches('/');
            if !fold::valid_file_path(as_file) || !fold::foldable_dir(&dir) {
                self.unrecognized(format!("directory {dir}"));
                continue;
            }
            self.add_dir(&dir, access);
        }
        for (path, access) in plain {
            if fold::valid_file_path(&path) {
                self.add_file(&path, access);
            } else {
                self.unrecognized(format!("open {path}"));
            }
        }
        let sockets = std::mem::take(&mut self.sockets);
        for (exe, protocols) in sockets {
            if !fold::valid_file_path(&exe) {
                self.unrecognized(format!("socket of {exe:?}"));
                continue;
            }
            for protocol in protocols {
                self.add_socket(&exe, protocol);
            }
        }
        let listening = std::mem::take(&mut self.listening);
        for port in listening {
            self.add_listen(port);
        }
        let peers = std::mem::take(&mut self.peers);
        for peer in peers {
            self.add_peer(peer);
        }
        let syscalls = std::mem::take(&mut self.syscalls);
        for name in syscalls {
            self.add_syscall(&name);
        }
        let pods = std::mem::take(&mut self.pods);
        for pod in pods {
            self.add_pod(&pod);
        }
        self.canonical_commands();
    }

    fn absorb(&mut self, other: &Recording) {
        for (path, parents) in &other.executables {
            let e = self.executables.entry(path.clone()).or_default();
            e.runtime |= parents.runtime;
            e.any |= parents.any;
            e.paths.extend(parents.paths.iter().cloned());
        }
        for (path, access) in &other.files {
            let e = self.files.entry(path.clone()).or_default();
            *e = e.union(*access);
        }
        for (exe, protocols) in &other.sockets {
            self.sockets
                .entry(exe.clone())
                .or_default()
                .extend(protocols.iter().copied());
        }
        self.listening.extend(other.listening.iter().copied());
        self.peers.extend(other.peers.iter().copied());
        self.capabilities.extend(other.capabilities.iter().copied());
        self.runtime_capabilities
            .extend(other.runtime_capabilities.iter().copied());
        self.syscalls.extend(other.syscalls.iter().cloned());
        for what in &other.unrecognized {
            if self.unrecognized.len() < MAX_UNRECOGNIZED {
                self.unrecognized.insert(what.clone());
            }
        }
    }

    fn apply(&mut self, obs: &Observation) {
        match obs {
            Observation::Exec { path, parent } => {
                let parent_ok = parent.as_deref().is_none_or(fold::valid_file_path);
                if fold::valid_file_path(path) && parent_ok {
                    self.add_exec(path, parent.as_deref());
                } else {
                    self.unrecognized(format!("exec {path:?} from {parent:?}"));
                }
            }
            Observation::Open { path, write } => {
                if fold::valid_file_path(path) {
                    let access = Access {
                        read: !*write,
                        write: *write,
                    };
                    self.add_file(path, access);
                } else {
                    self.unrecognized(format!("open {path:?}"));
                }
            }
            Observation::Socket {
                executable,
                protocol,
            } => {
                if fold::valid_file_path(executable) {
                    self.add_socket(executable, *protocol);
                } else {
                    self.unrecognized(format!("socket of {executable:?}"));
                }
            }
            Observation::Listen { port, protocol } => self.add_listen(Port {
                port: *port,
                protocol: *protocol,
            }),
            Observation::Connect {
                address,
                port,
                protocol,
            } => self.add_peer(Peer {
                net: Cidr::host(*address),
                port: *port,
                protocol: *protocol,
            }),
            Observation::Capability { capability } => {
                self.capabilities.insert(*capability);
            }
            Observation::Syscall { name } => self.add_syscall(name),
            Observation::RuntimeCommand { argv } => self.add_command(argv),
        }
    }

    /// Counts one unrecognized observation and keeps `what` as an example (bounded).
    pub(crate) fn unrecognized(&mut self, mut what: String) {
        self.count_overflow(Category::Unrecognized, 1);
        if self.unrecognized.len() < MAX_UNRECOGNIZED {
            let mut cut = what.len().min(200);
            while !what.is_char_boundary(cut) {
                cut -= 1;
            }
            what.truncate(cut);
            self.unrecognized.insert(what);
        }
    }

    pub(crate) fn count_overflow(&mut self, category: Category, n: u64) {
        if n == 0 {
            return;
        }
        let e = self.overflow.entry(category).or_insert(0);
        *e = e.saturating_add(n);
    }

    fn add_exec(&mut self, path: &str, parent: Option<&str>) {
        if !self.executables.contains_key(path) {
            if self.executables.len() >= MAX_EXECUTABLES {
                self.count_overflow(Category::Executables, 1);
                return;
            }
            self.executables
                .insert(path.to_string(), Parents::default());
        }
        let Some(p) = self.executables.get_mut(path) else {
            return;
        };
        match parent {
            None => p.runtime = true,
            Some(_) if p.any => {}
            Some(parent) => {
                if p.paths.len() >= MAX_PARENTS && !p.paths.contains(parent) {
                    p.any = true;
                    p.paths.clear();
                } else {
                    p.paths.insert(parent.to_string());
                }
            }
        }
    }

    /// A folded directory covering `path`, if any.
    fn covering_dir(&self, path: &str) -> Option<String> {
        fold::ancestors(path)
            .find(|d| self.files.contains_key(*d))
            .map(str::to_string)
    }

    fn add_dir(&mut self, dir: &str, access: Access) {
        if let Some(cover) = self.covering_dir(dir) {
            if let Some(a) = self.files.get_mut(&cover) {
                *a = a.union(access);
            }
            return;
        }
        // Absorb what lies below.
        let below: Vec<String> = self
            .files
            .range(dir.to_string()..)
            .take_while(|(k, _)| k.starts_with(dir))
            .map(|(k, _)| k.clone())
            .collect();
        let mut merged = self
            .files
            .get(dir)
            .copied()
            .unwrap_or_default()
            .union(access);
        for k in below {
            if let Some(a) = self.files.remove(&k) {
                merged = merged.union(a);
            }
        }
        if self.files.len() >= MAX_FILES {
            self.count_overflow(Category::Files, 1);
            return;
        }
        self.files.insert(dir.to_string(), merged);
    }

    fn add_file(&mut self, path: &str, access: Access) {
        if let Some(cover) = self.covering_dir(path) {
            if let Some(a) = self.files.get_mut(&cover) {
                *a = a.union(access);
            }
            return;
        }
        if let Some(dir) = fold::generated_fold(path) {
            self.add_dir(&dir, access);
            return;
        }
        if let Some(a) = self.files.get_mut(path) {
            *a = a.union(access);
            return;
        }
        let parent = fold::parent_dir(path).to_string();
        let siblings = self
            .files
            .range(parent.clone()..)
            .take_while(|(k, _)| k.starts_with(&parent))
            .filter(|(k, _)| !k[parent.len()..].contains('/'))
            .count();
        if siblings >= FOLD_THRESHOLD && fold::foldable_dir(&parent) {
            self.add_dir(&parent, access);
            return;
        }
        if self.files.len() >= MAX_FILES {
            self.count_overflow(Category::Files, 1);
            return;
        }
        self.files.insert(path.to_string(), access);
    }

    fn add_socket(&mut self, exe: &str, protocol: Protocol) {
        if !self.sockets.contains_key(exe) && self.sockets.len() >= MAX_EXECUTABLES {
            self.count_overflow(Category::Sockets, 1);
            return;
        }
        self.sockets
            .entry(exe.to_string())
            .or_default()
            .insert(protocol);
    }

    fn add_listen(&mut self, port: Port) {
        if !self.listening.contains(&port) && self.listening.len() >= MAX_LISTENING {
            self.count_overflow(Category::Listening, 1);
            return;
        }
        self.listening.insert(port);
    }

    fn add_peer(&mut self, peer: Peer) {
        let covered = |p: &Peer| {
            p.port == peer.port && p.protocol == peer.protocol && p.net.contains(&peer.net)
        };
        if self.peers.iter().any(covered) {
            return;
        }
        let network = peer.net.fold_network();
        let same_net: Vec<Peer> = self
            .peers
            .iter()
            .filter(|p| {
                p.port == peer.port && p.protocol == peer.protocol && network.contains(&p.net)
            })
            .copied()
            .collect();
        if peer.net != network && same_net.len() >= PEER_FOLD_THRESHOLD {
            for p in &same_net {
                self.peers.remove(p);
            }
            self.peers.insert(Peer {
                net: network,
                ..peer
            });
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            self.count_overflow(Category::Peers, 1);
            return;
        }
        if !peer.net.is_host() {
            // A network absorbs the narrower entries it contains.
            self.peers.retain(|p| {
                !(p.port == peer.port && p.protocol == peer.protocol && peer.net.contains(&p.net))
            });
        }
        self.peers.insert(peer);
    }

    fn add_syscall(&mut self, name: &str) {
        match names::syscall(name) {
            Some(canonical) => {
                self.syscalls.insert(canonical.to_string());
            }
            None => self.unrecognized(format!("system call {name:?}")),
        }
    }
}

fn one() -> u64 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
