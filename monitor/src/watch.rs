//! A watched container: [`register`] puts its rules and then its entry into the kernel maps
//! (from then on the kernel reports and enforces for its cgroup), and the [`Watch`] guard takes
//! them out again when dropped. [`WatchStats`] and [`Watch::rule_hits`] are the kernel's
//! counters.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use libbpf_rs::{MapCore, MapFlags};
use tracing::{debug, info, warn};

use crate::detect::{DetectState, RuleSet};
use crate::enforce::{self, Installed, Target};
use crate::error::MonitorError;
use crate::raw::{self, bytes_of};
use crate::rules::{file_id, ContainerRef, ContainerRules, Enforcer, RuleEnforcement};
use crate::shared::{Shared, WatchEntry};
use crate::skel::monitor::types;

/// Counters of one watch, from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Events written into the ring buffer.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub drops: u64,
}

/// The capabilities a learning container's processes were checked for, since it was watched:
/// bit N is capability number N (`CAP_NET_RAW` is 13), as in `linux/capability.h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilitiesSeen {
    /// Checked and granted to the workload: the capabilities the container used, the
    /// runtime's own checks left out.
    pub granted: u64,
    /// Checked and refused (not in the process's effective set), the runtime's included.
    pub refused: u64,
    /// Checked and granted to the runtime: a process named as runc's init names itself
    /// (`runc:[...`) or as palisade-init runs (`palisade-init`), which has not executed the
    /// workload's program yet (`bpf/learn.h`).
    pub runtime: u64,
}

impl CapabilitiesSeen {
    /// The capability numbers of a mask, in order.
    pub fn numbers(mask: u64) -> impl Iterator<Item = u8> {
        (0u8..64).filter(move |n| mask & (1u64 << n) != 0)
    }
}

/// A mask of the table's set bytes (byte N set: bit N).
fn bits(table: &[u8]) -> u64 {
    table
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, set)| **set != 0)
        .fold(0, |mask, (n, _)| mask | (1u64 << n))
}

/// Reads one watched container's kernel counters and system call table ([`Watch::reader`]).
#[derive(Clone)]
pub struct WatchReader {
    shared: Arc<Shared>,
    cgroup_id: u64,
    learning: bool,
}

impl std::fmt::Debug for WatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WatchReader(cgroup {})", self.cgroup_id)
    }
}

impl WatchReader {
    /// The kernel's counters for the container (zero once its watch is dropped).
    pub fn stats(&self) -> WatchStats {
        let key = self.cgroup_id.to_ne_bytes();
        raw::lookup::<types::container_info>(&self.shared.maps.containers, &key)
            .map(|i| WatchStats {
                events: i.events,
                drops: i.drops,
            })
            .unwrap_or_default()
    }

    /// The container's learning table, when it learns and the table can be read.
    fn table(&self) -> Option<types::learn_table> {
        if !self.learning {
            return None;
        }
        let key = self.cgroup_id.to_ne_bytes();
        raw::lookup::<types::learn_table>(&self.shared.maps.learn_syscalls, &key)
    }

    /// See [`Watch::syscalls_seen`].
    pub fn syscalls_seen(&self) -> Option<Vec<u32>> {
        let table = self.table()?;
        Some(
            table
                .seen
                .iter()
                .enumerate()
                .filter(|(_, seen)| **seen != 0)
                .filter_map(|(nr, _)| u32::try_from(nr).ok())
                .collect(),
        )
    }

    /// See [`Watch::capabilities_seen`].
    pub fn capabilities_seen(&self) -> Option<CapabilitiesSeen> {
        if !crate::set::learn::capabilities_attached(&self.shared.maps) {
            return None;
        }
        let table = self.table()?;
        Some(CapabilitiesSeen {
            granted: bits(&table.cap_granted),
            refused: bits(&table.cap_refused),
            runtime: bits(&table.cap_runtime),
        })
    }
}

/// Guard of one watched container: dropping it removes the container from the kernel maps
/// and detaches its cgroup hooks.
pub struct Watch {
    shared: Arc<Shared>,
    container: String,
    slot: u32,
    cgroup_id: u64,
    registered: bool,
    /// Its system calls are recorded (a `learn_syscalls` entry, a share of the learning link).
    learning: bool,
    /// With [`ContainerRules::learn_egress`]: the sock_addr hooks were attached, so each
    /// destination it connects or sends to is reported.
    sends_observed: bool,
    installed: Installed,
    enforcement: Vec<RuleEnforcement>,
}

/// Starts watching a container for the holder of `shared`: its rules are installed, then the
/// reader learns it, then (last) the kernel. A failure at any step leaves nothing behind (the
/// half-made [`Watch`] is dropped).
pub(crate) fn register(
    shared: &Arc<Shared>,
    container: ContainerRef,
    rules: ContainerRules,
) -> Result<Watch, MonitorError> {
    let name = format!(
        "{}/{}/{}",
        container.namespace, container.pod, container.container
    );
    check_severities(&name, &rules)?;
    let local = shared.next_slot.fetch_add(1, Ordering::Relaxed);
    if local > 0xffff {
        return Err(MonitorError::Slots { container: name });
    }
    let slot = (shared.index << 16) | local;
    let mut watch = Watch {
        shared: shared.clone(),
        container: name.clone(),
        slot,
        cgroup_id: container.cgroup_id,
        registered: false,
        learning: false,
        sends_observed: false,
        installed: Installed::default(),
        enforcement: Vec::new(),
    };
    let maps = &shared.maps;
    let target = Target {
        maps,
        container: &container,
        name: &name,
        slot,
    };
    let installed = &mut watch.installed;
    let exec = enforce::exec::install(&target, &rules.deny_exec, installed)?;
    watch.enforcement.extend(exec);
    let connect = enforce::connect::install(&target, &rules.deny_connect, installed)?;
    watch.enforcement.extend(connect);
    let (mut egress_flags, egress) = enforce::egress::install(
        &target,
        rules.egress.as_ref(),
        rules.learn_egress,
        installed,
    )?;
    watch.enforcement.extend(egress);
    let learning_only =
        egress_flags == enforce::egress::LEARN_FLAGS && installed.net_keys.is_empty();
    match enforce::connect::attach(&target, installed) {
        Ok(()) => watch.sends_observed = learning_only,
        // Only learning asked for the hooks: the container is watched without them, and
        // `sends_observed` tells its recorder that its sends were not seen.
        Err(e) if learning_only => {
            warn!(container = %name, error = %e, "learning: connects and sends not observed");
            egress_flags = 0;
            installed.egress = false;
        }
        Err(e) => return Err(e),
    }
    let sock = enforce::sock::install(&target, &rules.sock_create, installed)?;
    watch.enforcement.extend(sock);
    let file = enforce::file::install(&target, &rules.deny_file, installed)?;
    watch.enforcement.extend(file);
    let connect_enforcer = enforce::connect::enforcer(&target, installed);
    let cred_root = rules.process_root.as_ref().or(rules.rootfs.as_ref());
    let credentials = match cred_root {
        Some(root) if rules.builtins => {
            crate::detect::credfiles::install(maps, &name, slot, root, installed)
        }
        _ => 0,
    };
    let mut flags = egress_flags;
    if rules.report_all_opens {
        flags |= raw::CF_ALL_OPENS;
    }
    if credentials > 0 {
        flags |= raw::CF_CREDENTIALS;
    }
    // Without file rules the file_open program has nothing to look up: it returns after the
    // container lookup instead of walking the opened file's parents on every open.
    if !rules.deny_file.is_empty() {
        flags |= raw::CF_FILE_RULES;
    }
    let info = types::container_info {
        slot,
        ring: shared.index,
        flags,
        cred_bits: crate::detect::credfiles::cred_bits(&installed.cred_keys),
        events: 0,
        drops: 0,
        secrets: secret_mounts(&name, &rules.secret_mounts),
    };
    // Before the container's `containers` entry, so that no call of its start-up path after
    // the watch began is missed; nothing is left behind on failure.
    if rules.record_syscalls {
        shared.learn_start(&name, container.cgroup_id)?;
        watch.learning = true;
    }
    let entry = watch_entry(&maps.config, &container, rules, connect_enforcer);
    shared.watches().insert(slot, Arc::new(entry));
    // Last: from here on the kernel reports and enforces for this cgroup.
    maps.containers
        .update(
            &container.cgroup_id.to_ne_bytes(),
            bytes_of(&info),
            MapFlags::NO_EXIST,
        )
        .map_err(|source| {
            if source.kind() == libbpf_rs::ErrorKind::AlreadyExists {
                MonitorError::AlreadyWatched {
                    container: name.clone(),
                    cgroup_id: container.cgroup_id,
                }
            } else {
                MonitorError::Map {
                    container: name.clone(),
                    what: "containers",
                    source,
                }
            }
        })?;
    watch.registered = true;
    info!(
        container = %name,
        container_id = %container.container_id,
        pod = %container.pod,
        cgroup_id = container.cgroup_id,
        slot,
        "watching"
    );
    Ok(watch)
}

/// Every exec, connect, socket, file and egress rule's severity is between 1 and 10.
fn check_severities(name: &str, rules: &ContainerRules) -> Result<(), MonitorError> {
    for (rule, severity) in rules
        .deny_exec
        .iter()
        .map(|r| (&r.name, r.severity))
        .chain(rules.deny_connect.iter().map(|r| (&r.name, r.severity)))
        .chain(rules.sock_create.iter().map(|r| (&r.name, r.severity)))
        .chain(rules.deny_file.iter().map(|r| (&r.name, r.severity)))
        .chain(rules.egress.iter().map(|r| (&r.name, r.severity)))
    {
        if !(1..=10).contains(&severity) {
            return Err(MonitorError::Severity {
                container: name.to_string(),
                rule: rule.clone(),
                severity,
            });
        }
    }
    Ok(())
}

/// The reader's view of a container being registered: its rules and what the kernel checks of
/// them (`config` is what the programs were loaded with).
fn watch_entry(
    config: &types::rodata,
    container: &ContainerRef,
    rules: ContainerRules,
    connect_enforcer: Enforcer,
) -> WatchEntry {
    let sources = rules
        .deny_connect
        .iter()
        .map(|r| r.only_from.as_ref().and_then(|p| file_id(&r.name, p).ok()))
        .collect();
    WatchEntry {
        container: Arc::new(container.clone()),
        exec_rules: rules.deny_exec.iter().map(|r| r.name.clone()).collect(),
        set: RuleSet {
            sources,
            sources_in_kernel: config.enforce != 0 && config.source_check != 0,
            rules,
            connect_enforcer,
        },
        state: Mutex::new(DetectState::new(Instant::now())),
        closed: Mutex::new(None),
    }
}

/// The kernel's table of a container's secret mounts: the device and inode of each mounted
/// directory. One that cannot be read is left out, with a warning: its reads then go
/// unreported, the container still runs.
fn secret_mounts(
    container: &str,
    dirs: &[PathBuf],
) -> [types::secret_mount; crate::rules::MAX_SECRET_MOUNTS] {
    let mut table = [types::secret_mount::default(); crate::rules::MAX_SECRET_MOUNTS];
    if dirs.len() > table.len() {
        warn!(
            container,
            count = dirs.len(),
            "more secret mounts than the monitor tells apart, only the first {} are watched",
            table.len()
        );
    }
    for (slot, dir) in table.iter_mut().zip(dirs) {
        match crate::rules::file_id("service-account-token-read", dir) {
            Ok((dev, ino)) => {
                slot.dev = dev;
                slot.ino = ino;
            }
            Err(e) => warn!(container, error = %e, "secret mount not watched"),
        }
    }
    table
}

impl Watch {
    /// The container's slot, as carried by its events.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Which enforcer each rule got.
    pub fn enforcement(&self) -> &[RuleEnforcement] {
        &self.enforcement
    }

    /// The kernel's counters for this container.
    pub fn stats(&self) -> WatchStats {
        self.reader().stats()
    }

    /// The system call numbers (of this architecture's native table) the container's
    /// processes made since it was watched, when it records them
    /// ([`ContainerRules::record_syscalls`]); `None` when it does not, or the table cannot be
    /// read.
    pub fn syscalls_seen(&self) -> Option<Vec<u32>> {
        self.reader().syscalls_seen()
    }

    /// The capabilities the container's processes were checked for since it was watched,
    /// granted and refused, when it learns ([`ContainerRules::record_syscalls`]) and this
    /// kernel offers a capability hook ([`crate::Features::capability_hook`]) whose program
    /// is attached; `None` otherwise: then the capabilities it used are not known (never an
    /// empty set that would look recorded).
    pub fn capabilities_seen(&self) -> Option<CapabilitiesSeen> {
        self.reader().capabilities_seen()
    }

    /// Whether this learning container's connects and unconnected sends are observed
    /// ([`ContainerRules::learn_egress`] and the sock_addr hooks attached): when not, a
    /// recording of its peers is incomplete.
    pub fn sends_observed(&self) -> bool {
        self.sends_observed
    }

    /// A reader of this container's counters and system call table that others may keep (a
    /// learning container's recorder reads them at each merge); once the watch is dropped it
    /// reads nothing.
    pub fn reader(&self) -> WatchReader {
        WatchReader {
            shared: self.shared.clone(),
            cgroup_id: self.cgroup_id,
            learning: self.learning,
        }
    }

    /// How many times the kernel matched each exec and connect deny rule, by rule name.
    pub fn rule_hits(&self) -> Vec<(String, u64)> {
        match self.shared.entry(self.slot) {
            Some(entry) => self.installed.hits(&self.shared.maps, &entry.set.rules),
            None => Vec::new(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let maps = &self.shared.maps;
        if self.registered {
            let _ = maps.containers.delete(&self.cgroup_id.to_ne_bytes());
        }
        if self.learning {
            self.shared.learn_stop(self.cgroup_id);
        }
        self.installed.remove(maps);
        if let Some(entry) = self.shared.watches().get(&self.slot) {
            *entry.closed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        debug!(container = %self.container, slot = self.slot, "watch removed");
    }
}
