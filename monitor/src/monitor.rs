//! The node monitor handle a shim holds, per-container watches, and the event reader.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBufferBuilder};
use tracing::{debug, info, warn};

use crate::cgroup::find_cgroup_dir;
use crate::detect::{self, DetectState, RuleSet};
use crate::error::MonitorError;
use crate::event::{parse_sockaddr, EventKind, MonitorEvent, ProcessInfo, Syscall};
use crate::kernel::{self, SyscallHook};
use crate::raw::{self, bytes_of, cstr, Record};
use crate::rules::{
    exec_key, file_id, net_key, ContainerRef, ContainerRules, Enforcer, RuleEnforcement, SockClass,
};
use crate::set::holders::{claim_ring, reap, release_index, Claimed};
use crate::set::load::{load_or_open, load_or_open_with, Maps, Opened};
use crate::set::park::{is_parked, park, parked_sets};
use crate::set::pin::{lock_root, remove_pins, version_dir, SOCK_PROG};
use crate::set::{ms, NodeMaps};
use crate::skel::monitor::types;
use crate::sock;

/// How a shim's monitor handle is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Where the node's programs and maps are pinned (one subdirectory per build and mode).
    pub pin_root: PathBuf,
    /// The bpffs mount `pin_root` lives on.
    pub bpffs: PathBuf,
    /// Mount bpffs at `bpffs`, and tracefs at /sys/kernel/tracing, when they are missing.
    pub mount_bpffs: bool,
    /// Size of this handle's ring buffer in bytes (a power of two, at least one page).
    pub ring_size: u32,
    /// Kill and refuse in the kernel; `false` turns every rule into audit only.
    pub enforce: bool,
    /// The syscall program to load. [`SyscallHook::RawSysExit`], the default, is one link on
    /// the raw `sys_exit` tracepoint; [`SyscallHook::ExitTracepoints`] is one link per watched
    /// syscall (and falls back to the raw program on kernels before 5.15). The raw program is
    /// the default because the exit tracepoints' links are perf events, whose release waits
    /// for RCU grace periods under a kernel-wide mutex: a node's first pod after the last one
    /// left waited 450-660 ms for that here (docs/monitor.md). Each choice pins under its own
    /// directory, so handles of the two never share programs.
    pub syscall_hook: SyscallHook,
    /// When the last holder leaves, park the programs (detached, still loaded and pinned)
    /// instead of unloading them, so that the node's next first pod attaches them again
    /// without loading and verifying (docs/monitor.md, "Parked programs"). Their maps keep
    /// their kernel memory meanwhile. The exit-tracepoint variant is always unloaded.
    pub keep_loaded: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            pin_root: PathBuf::from("/sys/fs/bpf/palisade"),
            bpffs: PathBuf::from("/sys/fs/bpf"),
            mount_bpffs: true,
            ring_size: 1 << 20,
            enforce: true,
            syscall_hook: SyscallHook::RawSysExit,
            keep_loaded: true,
        }
    }
}

/// What the kernel offered when the handle was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Watched syscalls without a tracepoint on this kernel: not reported.
    pub missing_syscalls: Vec<String>,
    /// Exec deny rules are enforced through BPF-LSM (the exec fails with EPERM) rather than by
    /// killing the process at exec.
    pub bpf_lsm: bool,
    /// Connect rules' `only_from` is checked in the kernel.
    pub from_source: bool,
    /// Socket creation rules ([`crate::SockRule`]) are checked in the kernel (the cgroup
    /// `sock_create` program loaded).
    pub sock_create: bool,
    /// How the syscalls are watched (which variant the loader chose for this kernel).
    pub syscall_hook: SyscallHook,
    /// This handle loaded the programs (it was the first holder and found no parked set).
    pub loaded: bool,
    /// This handle attached a parked set again (it was the first holder; nothing was loaded).
    pub reattached: bool,
}

/// Where a handle's reader thread delivers the events of its containers. The reader never
/// waits: an event the sink does not take counts in [`NodeMonitor::lost_in_user_space`].
pub trait EventSink: Send + 'static {
    /// Takes one event; `false` when it could not.
    fn deliver(&mut self, event: MonitorEvent) -> bool;
}

/// A bounded channel: a full or closed channel loses the event. The channel allocates and
/// touches all its slots at creation, a few hundred bytes per slot.
impl EventSink for SyncSender<MonitorEvent> {
    fn deliver(&mut self, event: MonitorEvent) -> bool {
        self.try_send(event).is_ok()
    }
}

/// A function run on the reader thread for every event (no channel, no thread of the caller's
/// own): it must not block, or the ring fills and the kernel drops events.
impl<F> EventSink for F
where
    F: FnMut(MonitorEvent) -> bool + Send + 'static,
{
    fn deliver(&mut self, event: MonitorEvent) -> bool {
        self(event)
    }
}

/// Counters of one watch, from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Events written into the ring buffer.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub drops: u64,
}

struct WatchEntry {
    container: Arc<ContainerRef>,
    set: RuleSet,
    /// Exec rule names by kernel rule id - 1.
    exec_rules: Vec<String>,
    state: Mutex<DetectState>,
    /// When its `Watch` was dropped: records already in the ring are still delivered until the
    /// reader has polled past this.
    closed: Mutex<Option<Instant>>,
}

/// How long a dropped watch's records are still routed (several reader polls).
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Forgets the watches dropped more than `grace` ago.
fn sweep_closed(shared: &Shared, grace: Duration) {
    shared
        .watches
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|_, entry| {
            entry
                .closed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() < grace)
        });
}

struct Shared {
    maps: NodeMaps,
    root: PathBuf,
    dir: PathBuf,
    keep_loaded: bool,
    index: u32,
    next_slot: AtomicU32,
    watches: Mutex<HashMap<u32, Arc<WatchEntry>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _lock = match lock_root(&self.root) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "monitor release: cannot lock the pin root, leaving pins");
                return;
            }
        };
        release_index(&self.maps, self.index);
        if reap(&self.maps) == 0 {
            if self.keep_loaded && self.maps.syscall_hook == SyscallHook::RawSysExit {
                match park(&self.dir) {
                    Ok(true) => {
                        info!(dir = %self.dir.display(), "last holder out: programs parked");
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "monitor release: park, unpinning instead"),
                }
            }
            match remove_pins(&self.dir) {
                Ok(()) => info!(dir = %self.dir.display(), "last holder out: programs unpinned"),
                Err(e) => warn!(error = %e, "monitor release: unpin"),
            }
        }
    }
}

/// A shim's handle on the node's monitor. Events of the containers it watches arrive on the
/// channel given to [`NodeMonitor::open`]; dropping the handle (and its watches) releases its
/// share of the node's programs, and the last holder unloads them.
pub struct NodeMonitor {
    shared: Arc<Shared>,
    features: Features,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    lost: Arc<AtomicU64>,
}

/// Guard of one watched container: dropping it removes the container from the kernel maps
/// and detaches its cgroup hooks.
pub struct Watch {
    shared: Arc<Shared>,
    container: String,
    slot: u32,
    cgroup_id: u64,
    registered: bool,
    exec_keys: Vec<types::exec_key>,
    /// Connect rule index and its trie key.
    net_keys: Vec<(usize, types::net_key)>,
    sock_keys: Vec<types::sock_key>,
    links: Vec<OwnedFd>,
    enforcement: Vec<RuleEnforcement>,
}

/// Releases the programs of dead holders and unpins them when no live holder is left, parked
/// ones included (a node cleanup: `palisade-monitor cleanup`). Returns whether the pins were
/// removed.
pub fn cleanup_stale(config: &MonitorConfig) -> Result<bool, MonitorError> {
    kernel::ensure_bpffs(&config.bpffs, config.mount_bpffs)?;
    let dir = mode_dir(config);
    let _lock = lock_root(&config.pin_root)?;
    if is_parked(&dir) {
        remove_pins(&dir)?;
        return Ok(true);
    }
    if !dir.join("maps/config").exists() {
        if dir.exists() {
            remove_pins(&dir)?;
            return Ok(true);
        }
        return Ok(false);
    }
    let (maps, _) = load_or_open(
        &dir,
        config.enforce,
        config.mount_bpffs,
        config.syscall_hook,
    )?;
    if reap(&maps) == 0 {
        remove_pins(&dir)?;
        return Ok(true);
    }
    Ok(false)
}

/// The parked sets under `pin_root`, of every build and mode, and unloads them unless
/// `dry_run`: what a node's uninstall does, so that no palisade program stays loaded after it.
/// Sets with a live holder (pods still running) are left alone. Returns the directories.
pub fn unload_parked(pin_root: &Path, dry_run: bool) -> Result<Vec<PathBuf>, MonitorError> {
    if !pin_root.is_dir() {
        return Ok(Vec::new());
    }
    let _lock = lock_root(pin_root)?;
    let parked = parked_sets(pin_root)?;
    if !dry_run {
        for dir in &parked {
            remove_pins(dir)?;
            info!(dir = %dir.display(), "parked monitor programs unloaded");
        }
    }
    Ok(parked)
}

fn mode_dir(config: &MonitorConfig) -> PathBuf {
    let base = version_dir(&config.pin_root);
    let mode = if config.enforce { "enforce" } else { "audit" };
    let mut name = base
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!("-{mode}"));
    name.push(match config.syscall_hook {
        SyscallHook::RawSysExit => "-raw",
        SyscallHook::ExitTracepoints => "-tp",
    });
    base.with_file_name(name)
}

impl NodeMonitor {
    /// Joins (or loads) the node's monitor and starts this handle's event reader, which hands
    /// every event to `sink`.
    pub fn open(config: MonitorConfig, sink: impl EventSink) -> Result<Self, MonitorError> {
        let started = Instant::now();
        kernel::ensure_bpffs(&config.bpffs, config.mount_bpffs)?;
        let dir = mode_dir(&config);
        let lock = lock_root(&config.pin_root)?;
        let locked = started.elapsed();
        // A loader claims its index and sets up its ring while its programs are attached.
        let ring_size = config.ring_size;
        let (maps, how, early) = load_or_open_with(
            &dir,
            config.enforce,
            config.mount_bpffs,
            config.syscall_hook,
            |m: &Maps| claim_ring(&m.holders, &m.rings, ring_size),
        )?;
        let opened = started.elapsed();
        let claimed = match early {
            Some(claimed) => claimed,
            None => {
                reap(&maps);
                claim_ring(&maps.holders, &maps.rings, ring_size)
            }
        };
        let Claimed { index, ring } = claimed?;
        let (ring, ring_time) = match ring {
            Ok(r) => r,
            Err(e) => {
                release_index(&maps, index);
                return Err(e);
            }
        };
        drop(lock);
        let shared = Arc::new(Shared {
            maps,
            root: config.pin_root.clone(),
            dir,
            keep_loaded: config.keep_loaded,
            index,
            next_slot: AtomicU32::new(1),
            watches: Mutex::new(HashMap::new()),
        });
        let features = Features {
            missing_syscalls: kernel::missing_syscalls(shared.maps.syscall_hook),
            bpf_lsm: shared.maps.lsm,
            syscall_hook: shared.maps.syscall_hook,
            from_source: shared.maps.config.source_check != 0,
            sock_create: shared.maps.sock_create.is_some(),
            loaded: how == Opened::Loaded,
            reattached: how == Opened::Reattached,
        };
        info!(
            index,
            opened = how.name(),
            bpf_lsm = features.bpf_lsm,
            sock_create = features.sock_create,
            syscall_hook = %features.syscall_hook,
            missing = ?features.missing_syscalls,
            lock_ms = ms(locked),
            load_or_open_ms = ms(opened - locked),
            ring_ms = ms(ring_time.total),
            ring_insert_ms = ms(ring_time.insert),
            ring_beside_load = features.loaded,
            "monitor handle open"
        );

        let lost = Arc::new(AtomicU64::new(0));
        let mut reader = Reader {
            shared: shared.clone(),
            sink: Box::new(sink),
            lost: lost.clone(),
            binaries: HashMap::new(),
        };
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&ring, move |data| {
                reader.handle(data);
                0
            })
            .map_err(|source| MonitorError::Ring {
                size: config.ring_size,
                source,
            })?;
        let rb = builder.build().map_err(|source| MonitorError::Ring {
            size: config.ring_size,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = stop.clone();
        let drops_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("palisade-ring".into())
            .spawn(move || {
                let _ring = ring;
                let mut drops = HashMap::new();
                let mut checked = Instant::now();
                while !stop_reader.load(Ordering::Relaxed) {
                    if let Err(e) = rb.poll(Duration::from_millis(50)) {
                        debug!(error = %e, "ring buffer poll");
                    }
                    // poll only reads rings that woke it; records submitted without a wake-up
                    // are read here.
                    if let Err(e) = rb.consume() {
                        debug!(error = %e, "ring buffer consume");
                    }
                    sweep_closed(&drops_shared, CLOSE_GRACE);
                    if checked.elapsed() >= Duration::from_secs(1) {
                        report_drops(&drops_shared, &mut drops);
                        checked = Instant::now();
                    }
                }
                // Whatever is still in the ring is delivered before the reader stops.
                let _ = rb.consume();
                sweep_closed(&drops_shared, Duration::ZERO);
            })
            .map_err(MonitorError::Thread)?;
        Ok(NodeMonitor {
            shared,
            features,
            stop,
            reader: Some(thread),
            lost,
        })
    }

    /// What the kernel offered.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Where this handle's programs are pinned.
    pub fn pin_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Events decoded but not delivered because the channel was full or closed.
    pub fn lost_in_user_space(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Starts watching a container: its events reach this handle's channel and its rules are
    /// enforced until the returned [`Watch`] is dropped.
    pub fn watch(
        &self,
        container: ContainerRef,
        rules: ContainerRules,
    ) -> Result<Watch, MonitorError> {
        let name = format!(
            "{}/{}/{}",
            container.namespace, container.pod, container.container
        );
        for (rule, severity) in rules
            .deny_exec
            .iter()
            .map(|r| (&r.name, r.severity))
            .chain(rules.deny_connect.iter().map(|r| (&r.name, r.severity)))
            .chain(rules.sock_create.iter().map(|r| (&r.name, r.severity)))
        {
            if !(1..=10).contains(&severity) {
                return Err(MonitorError::Severity {
                    container: name,
                    rule: rule.clone(),
                    severity,
                });
            }
        }
        let local = self.shared.next_slot.fetch_add(1, Ordering::Relaxed);
        if local > 0xffff {
            return Err(MonitorError::Slots { container: name });
        }
        let slot = (self.shared.index << 16) | local;
        let mut watch = Watch {
            shared: self.shared.clone(),
            container: name.clone(),
            slot,
            cgroup_id: container.cgroup_id,
            registered: false,
            exec_keys: Vec::new(),
            net_keys: Vec::new(),
            sock_keys: Vec::new(),
            links: Vec::new(),
            enforcement: Vec::new(),
        };
        let maps = &self.shared.maps;
        let map_err = |what| {
            let container = name.clone();
            move |source| MonitorError::Map {
                container,
                what,
                source,
            }
        };
        // What the loaded programs do, whatever this handle asked for.
        let enforce = self.shared.maps.config.enforce != 0;
        let exec_enforcer = match (enforce, self.shared.maps.lsm) {
            (false, _) => Enforcer::AuditOnly,
            (true, true) => Enforcer::BpfLsm,
            (true, false) => Enforcer::BpfExecKill,
        };
        for (i, rule) in rules.deny_exec.iter().enumerate() {
            let key = exec_key(slot, &rule.name, &rule.path)?;
            let (src_dev, src_ino) = match &rule.from_parent {
                Some(path) => file_id(&rule.name, path)?,
                None => (0, 0),
            };
            let value = types::deny_value {
                rule: i as u32 + 1,
                src_dev,
                src_ino,
                hits: 0,
            };
            maps.deny_exec
                .update(bytes_of(&key), bytes_of(&value), MapFlags::ANY)
                .map_err(map_err("deny_exec"))?;
            watch.exec_keys.push(key);
            watch.enforcement.push(RuleEnforcement {
                rule: rule.name.clone(),
                enforcer: exec_enforcer,
                note: Some(match exec_enforcer {
                    Enforcer::BpfLsm => "matched on inode and device at registration; \
                                        the exec fails with EPERM"
                        .to_string(),
                    _ => "matched on inode and device at registration; the process is \
                          killed at exec (bpf-lsm unavailable)"
                        .to_string(),
                }),
            });
        }
        let source_check = maps.config.source_check != 0;
        let mut connect_notes = Vec::new();
        for (i, rule) in rules.deny_connect.iter().enumerate() {
            let (src_dev, src_ino) = match &rule.only_from {
                Some(path) => file_id(&rule.name, path)?,
                None => (0, 0),
            };
            if rule.only_from.is_some() && !source_check {
                // Refusing everyone would break the allowed binary; report instead.
                connect_notes.push((
                    Enforcer::AuditOnly,
                    Some("this kernel's sock_addr hooks cannot read the current task".to_string()),
                ));
                continue;
            }
            let key = net_key(slot, rule)?;
            let value = types::deny_value {
                rule: i as u32 + 1,
                src_dev,
                src_ino,
                hits: 0,
            };
            maps.deny_connect
                .update(bytes_of(&key), bytes_of(&value), MapFlags::ANY)
                .map_err(map_err("deny_connect"))?;
            watch.net_keys.push((i, key));
            connect_notes.push((
                if enforce {
                    Enforcer::BpfSockAddr
                } else {
                    Enforcer::AuditOnly
                },
                rule.only_from
                    .as_ref()
                    .map(|p| format!("{} may still connect (checked in the kernel)", p.display())),
            ));
        }
        let mut connect_enforcer = Enforcer::AuditOnly;
        if !watch.net_keys.is_empty() {
            let dir = match &container.cgroup_dir {
                Some(d) => d.clone(),
                None => find_cgroup_dir(container.cgroup_id)?,
            };
            watch.links = attach_cgroup(&name, &dir, &maps.cgroup_progs)?;
            if enforce {
                connect_enforcer = Enforcer::BpfSockAddr;
            }
        }
        for (rule, (enforcer, note)) in rules.deny_connect.iter().zip(connect_notes) {
            watch.enforcement.push(RuleEnforcement {
                rule: rule.name.clone(),
                enforcer,
                note,
            });
        }
        let sock_notes =
            sock::install(maps, &name, slot, &rules.sock_create, &mut watch.sock_keys)?;
        if let (false, Some(prog)) = (watch.sock_keys.is_empty(), &maps.sock_create) {
            let dir = match &container.cgroup_dir {
                Some(d) => d.clone(),
                None => find_cgroup_dir(container.cgroup_id)?,
            };
            let prog = prog.try_clone().map_err(|source| MonitorError::Attach {
                container: name.clone(),
                program: SOCK_PROG.0,
                path: dir.clone(),
                source,
            })?;
            let links = attach_cgroup(&name, &dir, &[(SOCK_PROG.0, SOCK_PROG.1, prog)])?;
            watch.links.extend(links);
        }
        watch.enforcement.extend(sock_notes);
        let info = types::container_info {
            slot,
            ring: self.shared.index,
            flags: if rules.report_all_opens {
                raw::CF_ALL_OPENS
            } else {
                0
            },
            pad: 0,
            events: 0,
            drops: 0,
            secrets: secret_mounts(&name, &rules.secret_mounts),
        };
        let sources = rules
            .deny_connect
            .iter()
            .map(|r| r.only_from.as_ref().and_then(|p| file_id(&r.name, p).ok()))
            .collect();
        let entry = Arc::new(WatchEntry {
            container: Arc::new(container.clone()),
            exec_rules: rules.deny_exec.iter().map(|r| r.name.clone()).collect(),
            set: RuleSet {
                sources,
                sources_in_kernel: enforce && source_check,
                rules,
                connect_enforcer,
            },
            state: Mutex::new(DetectState::new(Instant::now())),
            closed: Mutex::new(None),
        });
        self.shared
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, entry);
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
}

impl Drop for NodeMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// Logs, once a second at most, the containers whose events the kernel dropped since the last
/// look (the ring buffer was full): the counters themselves are in [`Watch::stats`].
fn report_drops(shared: &Shared, last: &mut HashMap<u32, u64>) {
    let watches: Vec<(u32, Arc<WatchEntry>)> = shared
        .watches
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(slot, entry)| (*slot, entry.clone()))
        .collect();
    last.retain(|slot, _| watches.iter().any(|(s, _)| s == slot));
    for (slot, entry) in watches {
        let Some(info) = shared
            .maps
            .containers
            .lookup(&entry.container.cgroup_id.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| raw::read::<types::container_info>(&v))
        else {
            continue;
        };
        let before = last.insert(slot, info.drops).unwrap_or(0);
        if info.drops > before {
            warn!(
                container_id = %entry.container.container_id,
                pod = %entry.container.pod,
                dropped = info.drops - before,
                total = info.drops,
                "ring buffer full: events dropped in the kernel"
            );
        }
    }
}

fn attach_cgroup(
    container: &str,
    dir: &Path,
    progs: &[(
        &'static str,
        libbpf_rs::libbpf_sys::bpf_attach_type,
        OwnedFd,
    )],
) -> Result<Vec<OwnedFd>, MonitorError> {
    let err = |program, source| MonitorError::Attach {
        container: container.to_string(),
        program,
        path: dir.to_path_buf(),
        source,
    };
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| err("cgroup", io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: valid NUL-terminated path; the fd is checked.
    let cg = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if cg < 0 {
        return Err(err("cgroup", io::Error::last_os_error()));
    }
    // SAFETY: freshly opened fd, owned here.
    let cg = unsafe { OwnedFd::from_raw_fd(cg) };
    let mut links = Vec::new();
    for (name, attach, prog) in progs {
        // SAFETY: both fds are valid; a null opts pointer means defaults.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_create(
                prog.as_raw_fd(),
                cg.as_raw_fd(),
                *attach,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(err(name, io::Error::from_raw_os_error(-fd)));
        }
        // SAFETY: bpf_link_create returned a new fd we own.
        links.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(links)
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
        self.shared
            .maps
            .containers
            .lookup(&self.cgroup_id.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| raw::read::<types::container_info>(&v))
            .map(|i| WatchStats {
                events: i.events,
                drops: i.drops,
            })
            .unwrap_or_default()
    }

    /// How many times the kernel matched each exec and connect deny rule, by rule name.
    pub fn rule_hits(&self) -> Vec<(String, u64)> {
        let maps = &self.shared.maps;
        let entry = self
            .shared
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.slot)
            .cloned();
        let Some(entry) = entry else {
            return Vec::new();
        };
        let hits = |map: &MapHandle, key: &[u8]| {
            map.lookup(key, MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| raw::read::<types::deny_value>(&v))
                .map(|v| v.hits)
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for (rule, key) in entry.set.rules.deny_exec.iter().zip(&self.exec_keys) {
            out.push((rule.name.clone(), hits(&maps.deny_exec, bytes_of(key))));
        }
        for (i, key) in &self.net_keys {
            if let Some(rule) = entry.set.rules.deny_connect.get(*i) {
                out.push((rule.name.clone(), hits(&maps.deny_connect, bytes_of(key))));
            }
        }
        for (rule, key) in entry.set.rules.sock_create.iter().zip(&self.sock_keys) {
            let n = maps
                .sock_rules
                .lookup(bytes_of(key), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| raw::read::<types::sock_rule>(&v))
                .map(|v| v.hits)
                .unwrap_or(0);
            out.push((rule.name.clone(), n));
        }
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let maps = &self.shared.maps;
        if self.registered {
            let _ = maps.containers.delete(&self.cgroup_id.to_ne_bytes());
        }
        for key in &self.exec_keys {
            let _ = maps.deny_exec.delete(bytes_of(key));
        }
        for (_, key) in &self.net_keys {
            let _ = maps.deny_connect.delete(bytes_of(key));
        }
        for key in &self.sock_keys {
            let _ = maps.sock_rules.delete(bytes_of(key));
        }
        self.links.clear();
        if let Some(entry) = self
            .shared
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.slot)
        {
            *entry.closed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        debug!(container = %self.container, slot = self.slot, "watch removed");
    }
}

/// Decodes ring records, routes them to their container and runs the detections.
struct Reader {
    shared: Arc<Shared>,
    sink: Box<dyn EventSink>,
    lost: Arc<AtomicU64>,
    /// Executable of each watched process, from its last exec.
    binaries: HashMap<u32, String>,
}

impl Reader {
    fn handle(&mut self, data: &[u8]) {
        let Some(record) = raw::decode(data) else {
            return;
        };
        let h = match &record {
            Record::Exec(e) => e.h,
            Record::Exit(e) => e.h,
            Record::Fork(e) => e.h,
            Record::Syscall(e) => e.h,
            Record::Sock(e) => e.h,
        };
        let entry = self
            .shared
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&h.slot)
            .cloned();
        let Some(entry) = entry else {
            return;
        };
        let mut process = ProcessInfo {
            pid: h.pid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            comm: cstr(&h.comm),
            binary: String::new(),
            exe_id: None,
        };
        let mut state = entry.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut parent_binary = self.binaries.get(&h.ppid).cloned().unwrap_or_default();
        let kind = match record {
            Record::Exec(e) => {
                let filename = cstr(&e.filename);
                let parent = cstr(&e.parent);
                if !parent.is_empty() {
                    parent_binary = parent.clone();
                }
                let len = (e.args_len as usize).min(e.args.len());
                let args = e.args[..len]
                    .split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        String::from_utf8_lossy(&a.iter().map(|&c| c as u8).collect::<Vec<_>>())
                            .into_owned()
                    })
                    .collect();
                self.binaries.insert(h.pid, filename.clone());
                process.binary = filename.clone();
                let deny_rule = (e.rule > 0)
                    .then(|| entry.exec_rules.get(e.rule as usize - 1).cloned())
                    .flatten();
                EventKind::Exec {
                    filename,
                    args,
                    parent,
                    ino: e.ino,
                    dev: e.dev,
                    killed: e.flags & raw::EXEC_KILLED != 0,
                    refused: e.flags & raw::EXEC_REFUSED != 0,
                    deny_rule,
                    entrypoint: !state.entrypoint_seen,
                }
            }
            Record::Exit(e) => {
                process.binary = self.binaries.remove(&h.pid).unwrap_or_default();
                EventKind::Exit { code: e.exit_code }
            }
            Record::Fork(e) => {
                process.binary = self.binary_of(h.pid);
                if !process.binary.is_empty() {
                    self.binaries.insert(e.child_pid, process.binary.clone());
                }
                EventKind::Fork {
                    child_pid: e.child_pid,
                }
            }
            Record::Syscall(e) => {
                process.binary = self.binary_of(h.pid);
                let kind = syscall_kind(&e);
                let sourced =
                    !entry.set.sources_in_kernel && entry.set.sources.iter().any(Option::is_some);
                if sourced && matches!(kind, EventKind::Connect { .. }) {
                    process.exe_id = exe_id(h.pid);
                }
                kind
            }
            Record::Sock(e) => {
                process.binary = self.binary_of(h.pid);
                let rule = (e.rule > 0)
                    .then(|| entry.set.rules.sock_create.get(e.rule as usize - 1))
                    .flatten()
                    .map(|r| r.name.clone());
                EventKind::SockCreate {
                    family: e.family,
                    kind: e.r#type,
                    protocol: e.protocol,
                    class: SockClass::from_code(e.class),
                    refused: e.flags & raw::SOCK_REFUSED != 0,
                    rule,
                    exe_id: (e.dev, e.ino),
                }
            }
        };
        let findings = detect::findings(&entry.set, &mut state, &process, &kind, Instant::now());
        drop(state);
        let event = MonitorEvent {
            time: SystemTime::now(),
            slot: h.slot,
            container: entry.container.clone(),
            process,
            parent_binary,
            kind,
            findings,
        };
        if !self.sink.deliver(event) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn binary_of(&mut self, pid: u32) -> String {
        if let Some(b) = self.binaries.get(&pid) {
            return b.clone();
        }
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Device (kernel encoding) and inode of a live process's executable.
fn exe_id(pid: u32) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((crate::rules::kernel_dev(meta.dev()), meta.ino()))
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

fn syscall_kind(e: &types::syscall_event) -> EventKind {
    let addr = || -> Option<SocketAddr> { parse_sockaddr(&e.addr, e.addr_len as usize) };
    let result = e.ret;
    let a = e.args;
    let call = |call| EventKind::Syscall {
        call,
        args: a,
        result,
    };
    match e.sys {
        1 => EventKind::Open {
            path: cstr(&e.path),
            flags: a[2],
            result,
            secret: e.flags & raw::SE_SECRET != 0,
            system_dir: e.flags & raw::SE_SYSTEM_DIR != 0,
        },
        2 => EventKind::Connect {
            addr: addr(),
            result,
        },
        3 => EventKind::Bind {
            addr: addr(),
            result,
        },
        4 => EventKind::Listen {
            fd: a[0] as i32,
            backlog: a[1] as i32,
            result,
        },
        5 | 6 => EventKind::Accept {
            peer: addr(),
            result,
        },
        7 => EventKind::Socket {
            domain: a[0] as i32,
            kind: a[1] as i32,
            protocol: a[2] as i32,
            result,
        },
        8 => call(Syscall::Setuid),
        9 => call(Syscall::Setgid),
        10 => call(Syscall::Setreuid),
        11 => call(Syscall::Setregid),
        12 => call(Syscall::Setresuid),
        13 => call(Syscall::Setresgid),
        14 => call(Syscall::Capset),
        15 => call(Syscall::Setns),
        16 => call(Syscall::Unshare),
        17 => call(Syscall::Ptrace),
        18 => EventKind::Mount {
            target: cstr(&e.path),
            flags: a[3],
            result,
        },
        19 => call(Syscall::InitModule),
        20 => call(Syscall::FinitModule),
        _ => call(Syscall::Bpf),
    }
}

// The shim holds these across threads and tasks: keep them Send and Sync.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<NodeMonitor>();
    send_sync::<Watch>();
};
