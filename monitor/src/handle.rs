//! A shim's handle on the node's monitor ([`NodeMonitor`]): it joins (or loads) the node's
//! program set, claims its ring, starts its reader thread and registers containers; and the
//! node-wide clean-ups ([`cleanup_stale`], [`unload_parked`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::MapHandle;
use tracing::info;

use crate::error::MonitorError;
use crate::kernel::{self, CapabilityHook, SyscallHook};
use crate::reader;
use crate::rules::{ContainerRef, ContainerRules};
use crate::set::holders::{claim_ring, reap, release_index, Claimed, RingTime};
use crate::set::load::{load_or_open, load_or_open_with, Maps, Opened};
use crate::set::park::{is_parked, parked_sets};
use crate::set::pin::{lock_root, remove_pins, version_dir};
use crate::set::{ms, NodeMaps};
use crate::shared::{EventSink, Shared};
use crate::watch::{self, Watch};

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
    /// Where to watch syscalls. [`SyscallHook::Fexit`], the default, puts fexit programs on
    /// the watched syscalls' entry points where this kernel's BPF trampolines work (a probe
    /// decides, once per boot) and falls back to [`SyscallHook::RawSysExit`] (one link on the
    /// raw `sys_exit` tracepoint) where they do not; [`SyscallHook::ExitTracepoints`] is one
    /// link per watched syscall (and falls back to the raw program on kernels before 5.15),
    /// whose perf-event links' release waits for RCU grace periods under a kernel-wide mutex:
    /// a node's first pod after the last one left waited 450-660 ms for that here
    /// (docs/monitor.md). Each choice pins under its own directory, so handles asking for
    /// different hooks never share programs; [`Features::syscall_hook`] tells what runs.
    pub syscall_hook: SyscallHook,
    /// When the last holder leaves, park the programs (detached, still loaded and pinned)
    /// instead of unloading them, so that the node's next first pod attaches them again
    /// without loading and verifying (docs/monitor.md, "Parked programs"). Their maps keep
    /// their kernel memory meanwhile. The exit-tracepoint variant is always unloaded, and so
    /// is a set with trampoline programs (fexit, BPF-LSM) before 5.13, which attaches those
    /// once only.
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
            syscall_hook: SyscallHook::Fexit,
            keep_loaded: true,
        }
    }
}

/// What the kernel offered when the handle was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Watched syscalls the chosen hook cannot see on this kernel (no exit tracepoint, no
    /// entry point in the kernel's BTF): not reported.
    pub missing_syscalls: Vec<String>,
    /// Exec deny rules are enforced through BPF-LSM (the exec fails with EPERM) rather than by
    /// killing the process at exec. Only where `bpf` is an active LSM
    /// (`/sys/kernel/security/lsm`) and a probe program, attached to `file_open`, was seen to
    /// run on an open of the loader's own: a kernel may attach BPF-LSM programs it never calls.
    pub bpf_lsm: bool,
    /// Connect rules' `only_from` is checked in the kernel.
    pub from_source: bool,
    /// Socket creation rules ([`crate::rules::SockRule`]) are checked in the kernel (the cgroup
    /// `sock_create` program loaded).
    pub sock_create: bool,
    /// How the syscalls are watched (which variant the loader chose for this kernel).
    pub syscall_hook: SyscallHook,
    /// Where a learning container's capability checks are seen, if anywhere on this kernel
    /// ([`crate::WatchReader::capabilities_seen`] is `None` without one).
    pub capability_hook: Option<CapabilityHook>,
    /// This handle loaded the programs (it was the first holder and found no parked set).
    pub loaded: bool,
    /// This handle attached a parked set again (it was the first holder; nothing was loaded).
    pub reattached: bool,
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
        SyscallHook::Fexit => "-fx",
    });
    base.with_file_name(name)
}

/// The node's set joined (or loaded) under the root lock, and this holder's ring.
struct Joined {
    shared: Shared,
    ring: MapHandle,
    how: Opened,
    /// How long the root lock took, and then the load or open.
    lock: Duration,
    load_or_open: Duration,
    ring_time: RingTime,
}

/// Takes the root lock, loads or opens the node's set and claims this holder's index and
/// ring (a loader does that while its programs are attached).
fn join(config: &MonitorConfig) -> Result<Joined, MonitorError> {
    let started = Instant::now();
    kernel::ensure_bpffs(&config.bpffs, config.mount_bpffs)?;
    let dir = mode_dir(config);
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
    let shared = Shared {
        maps,
        root: config.pin_root.clone(),
        dir,
        keep_loaded: config.keep_loaded,
        index,
        next_slot: AtomicU32::new(1),
        watches: Mutex::new(HashMap::new()),
    };
    Ok(Joined {
        shared,
        ring,
        how,
        lock: locked,
        load_or_open: opened - locked,
        ring_time,
    })
}

/// What the kernel offered, as the joined set tells.
fn features(maps: &NodeMaps, how: Opened) -> Features {
    Features {
        missing_syscalls: maps.missing_syscalls.clone(),
        bpf_lsm: maps.lsm,
        syscall_hook: maps.syscall_hook,
        capability_hook: maps.learn_cap.as_ref().map(|(h, _)| *h),
        from_source: maps.config.source_check != 0,
        sock_create: maps.sock_create.is_some(),
        loaded: how == Opened::Loaded,
        reattached: how == Opened::Reattached,
    }
}

impl NodeMonitor {
    /// Joins (or loads) the node's monitor and starts this handle's event reader, which hands
    /// every event to `sink`.
    pub fn open(config: MonitorConfig, sink: impl EventSink) -> Result<Self, MonitorError> {
        let joined = join(&config)?;
        let shared = Arc::new(joined.shared);
        let features = features(&shared.maps, joined.how);
        info!(
            index = shared.index,
            opened = joined.how.name(),
            bpf_lsm = features.bpf_lsm,
            sock_create = features.sock_create,
            syscall_hook = %features.syscall_hook,
            capability_hook = features.capability_hook.map_or("none", CapabilityHook::name),
            missing = ?features.missing_syscalls,
            lock_ms = ms(joined.lock),
            load_or_open_ms = ms(joined.load_or_open),
            ring_ms = ms(joined.ring_time.total),
            ring_insert_ms = ms(joined.ring_time.insert),
            ring_beside_load = features.loaded,
            "monitor handle open"
        );
        let lost = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = reader::spawn(
            shared.clone(),
            Box::new(sink),
            lost.clone(),
            stop.clone(),
            joined.ring,
            config.ring_size,
        )?;
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

    /// Whether the node's learning programs are attached: some container of this or another
    /// holder on the node has [`ContainerRules::record_syscalls`] (one attachment for the
    /// node, removed with its last learning container).
    pub fn learning(&self) -> bool {
        self.shared.learning()
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
        watch::register(&self.shared, container, rules)
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

// The shim holds these across threads and tasks: keep them Send and Sync.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<NodeMonitor>();
    send_sync::<Watch>();
};
