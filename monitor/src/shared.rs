//! What a handle, its watches and its reader thread share ([`Shared`]): the node's maps, this
//! holder's index and container slots, and the watched containers by slot. The last of them to
//! go releases the holder's share of the node's programs. Also where the reader delivers
//! events ([`EventSink`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::detect::{DetectState, RuleSet};
use crate::event::MonitorEvent;
use crate::kernel::SyscallHook;
use crate::rules::ContainerRef;
use crate::set::holders::{reap, release_index};
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
    /// This holder's learning containers and, while there is one, its link of the learning
    /// program (`bpf/learn.h`) on the sys_enter tracepoint.
    pub learners: Mutex<Learners>,
}

/// A holder's learning containers: how many, and the learning program's link while any.
#[derive(Default)]
pub(crate) struct Learners {
    pub count: usize,
    pub link: Option<OwnedFd>,
}

impl Shared {
    /// The watched containers by slot (a poisoned lock is taken over: the map stays valid).
    pub fn watches(&self) -> MutexGuard<'_, HashMap<u32, Arc<WatchEntry>>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more learning container: the first attaches the learning program (its link is this
    /// holder's own; other holders' learners have theirs).
    pub fn learn_acquire(&self) -> io::Result<()> {
        let mut l = self.learners.lock().unwrap_or_else(PoisonError::into_inner);
        if l.link.is_none() {
            let prog = self
                .maps
                .learn_prog
                .as_ref()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            // SAFETY: a valid program fd and a null name: the BTF-typed program names its
            // tracepoint itself.
            let fd = unsafe {
                libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), prog.as_raw_fd())
            };
            if fd < 0 {
                return Err(io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: the kernel just returned this link fd, owned by nobody else.
            l.link = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            info!("learning program attached (sys_enter)");
        }
        l.count += 1;
        Ok(())
    }

    /// One learning container fewer: the last one detaches the learning program.
    pub fn learn_release(&self) {
        let mut l = self.learners.lock().unwrap_or_else(PoisonError::into_inner);
        l.count = l.count.saturating_sub(1);
        if l.count == 0 && l.link.take().is_some() {
            info!("learning program detached: no learning container left in this holder");
        }
    }

    /// Whether this holder has the learning program attached.
    pub fn learning(&self) -> bool {
        self.learners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .link
            .is_some()
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
