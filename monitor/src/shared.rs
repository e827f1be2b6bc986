//! What a handle, its watches and its reader thread share ([`Shared`]): the node's maps, this
//! holder's index and container slots, and the watched containers by slot. The last of them to
//! go releases the holder's share of the node's programs. Also where the reader delivers
//! events ([`EventSink`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use libbpf_rs::MapCore;
use tracing::{info, warn};

use crate::detect::{DetectState, RuleSet};
use crate::error::MonitorError;
use crate::event::MonitorEvent;
use crate::kernel::SyscallHook;
use crate::rules::ContainerRef;
use crate::set::holders::{reap, release_index};
use crate::set::learn::{self, LearnError};
use crate::set::park::park;
use crate::set::pin::{lock_root, remove_pins};
use crate::set::NodeMaps;

/// Where a handle's reader thread delivers the events of its containers. The reader never
/// waits: an event the sink does not take counts in [`crate::NodeMonitor::lost_in_user_space`].
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

/// A watched container as the reader sees it: its names, its rules and detection state.
pub(crate) struct WatchEntry {
    pub container: Arc<ContainerRef>,
    pub set: RuleSet,
    /// Exec rule names by kernel rule id - 1.
    pub exec_rules: Vec<String>,
    pub state: Mutex<DetectState>,
    /// When its `Watch` was dropped: records already in the ring are still delivered until the
    /// reader has polled past this.
    pub closed: Mutex<Option<Instant>>,
}

/// How long a dropped watch's records are still routed (several reader polls).
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Forgets the watches dropped more than `grace` ago.
pub(crate) fn sweep_closed(shared: &Shared, grace: Duration) {
    shared.watches().retain(|_, entry| {
        entry
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() < grace)
    });
}

/// One holder's share of the node's programs.
pub(crate) struct Shared {
    pub maps: NodeMaps,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub keep_loaded: bool,
    pub index: u32,
    pub next_slot: AtomicU32,
    pub watches: Mutex<HashMap<u32, Arc<WatchEntry>>>,
}

impl Shared {
    /// The watched containers by slot (a poisoned lock is taken over: the map stays valid).
    pub fn watches(&self) -> MutexGuard<'_, HashMap<u32, Arc<WatchEntry>>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cgroup `cgroup_id` of this holder starts learning: its table, and the node's learning
    /// programs attached when they were not (under the root lock: one attachment for the
    /// node, whichever holder asks first).
    pub fn learn_start(&self, container: &str, cgroup_id: u64) -> Result<(), MonitorError> {
        let _lock = lock_root(&self.root)?;
        learn::start(&self.maps, self.index, cgroup_id).map_err(|e| match e {
            LearnError::Table(source) => MonitorError::Map {
                container: container.to_string(),
                what: "learn_syscalls",
                source,
            },
            LearnError::Attach { program, source } => MonitorError::Attach {
                container: container.to_string(),
                program,
                path: self.dir.join("progs").join(program),
                source,
            },
            LearnError::Pin(e) => MonitorError::Pin(e),
        })
    }

    /// Cgroup `cgroup_id` stops learning: the node's last learner detaches the programs.
    pub fn learn_stop(&self, cgroup_id: u64) {
        match lock_root(&self.root) {
            Ok(_lock) => learn::stop(&self.maps, cgroup_id),
            Err(e) => {
                // Its table goes anyway; the programs stay until the next release.
                let _ = self.maps.learn_syscalls.delete(&cgroup_id.to_ne_bytes());
                warn!(error = %e, "learning stop: cannot lock the pin root");
            }
        }
    }

    /// Whether the node's learning program is attached (some container on the node learns).
    pub fn learning(&self) -> bool {
        learn::attached(&self.maps)
    }

    /// The watched container of `slot`.
    pub fn entry(&self, slot: u32) -> Option<Arc<WatchEntry>> {
        self.watches().get(&slot).cloned()
    }
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
            // The exit-tracepoint program's perf links cannot be attached again from a pin.
            if self.keep_loaded && self.maps.syscall_hook != SyscallHook::ExitTracepoints {
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
