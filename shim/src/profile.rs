//! Learned profiles in the shim: a learning container's monitor events recorded into its
//! workload's `palisade_profile::Recording` and merged into the node's document for it.
//!
//! A container learns when its pod says `palisade.dev/profile: learn` or its configuration's
//! `[profile] learn` is on. Its events are taken from the monitor's reader (before the
//! reporter, which may drop under load) and turned into observations here; what was recorded
//! is merged into `<state_dir>/<namespace>_<workload>.learned.json` every [`FLUSH_EVERY`] and
//! when the container is detached, with the kernel's count of the container's dropped events,
//! so that a lossy recording cannot be promoted. Each merge also reads the kernel's side
//! directly ([`Learning::attach_kernel`]): the container's drop count so far (so `palisade
//! profile show` and promotion see a lossy recording while it still runs), and its table of
//! every system call number its processes made (`palisade_monitor::Watch::syscalls_seen`,
//! the runtime's start-up path after the watch began included), added by name, and the
//! capabilities the kernel checked and granted it (`Watch::capabilities_seen`); where the
//! kernel offers no capability hook, each merge says the capabilities were not observed. Only a
//! workload still in learn takes new observations; the later stages are not changed by
//! recording. Each merge in learn also runs the rule's promotion check
//! (`StageState::tick`, with the configuration's `[profile.rule]`): a workload that learned
//! long enough moves to audit, one whose recording cannot be promoted (drops, overflow) stays
//! in learn with a `promotion_refused` event naming why; each transition goes to
//! [`Promotion::report`].

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use palisade_monitor::{CapabilitiesSeen, EventKind, MonitorEvent, WatchReader};
use palisade_policy::{Capability, Protocol};
use palisade_profile::{persist, Event, Observation, Recording, Rule, Stage, WorkloadId};

use crate::profile_runtime::{Lineage, RUNTIME_INIT};

/// How often a learning container's recording is merged into its workload's document.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Processes whose last socket and bound port are remembered, per container (a connect or a
/// listen names neither its socket's protocol nor, for a listen, its port).
const MAX_TRACKED_PIDS: usize = 4096;

/// Errors of this module: a learning request that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("container {container}: {source}")]
    Annotation {
        container: String,
        #[source]
        source: palisade_config::ProfileError,
    },
    #[error("container {container}: profile workload: {source}")]
    Workload {
        container: String,
        #[source]
        source: palisade_profile::RecordError,
    },
    #[error("learned profile state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("learned profile of {workload}: {reason}")]
    Merge { workload: String, reason: String },
    #[error(transparent)]
    Persist(#[from] palisade_profile::PersistError),
}

/// The workload a container learns into, when it learns: from the pod's annotation and the
/// configuration's `[profile]` table. A malformed annotation or workload name refuses the
/// container.
pub fn requested(
    id: &str,
    spec: &serde_json::Value,
    cri: &crate::cri::CriContainer,
    settings: &palisade_config::ProfileSettings,
) -> Result<Option<WorkloadId>, ProfileError> {
    let annotation = spec["annotations"][palisade_config::PROFILE_ANNOTATION].as_str();
    let learning = settings
        .learning(annotation)
        .map_err(|source| ProfileError::Annotation {
            container: id.to_string(),
            source,
        })?;
    let palisade_config::Learning::Learn { workload } = learning else {
        return Ok(None);
    };
    if cri.is_sandbox() {
        // The pause container does nothing of the workload's.
        return Ok(None);
    }
    let namespace = if cri.namespace.is_empty() {
        "default"
    } else {
        cri.namespace.as_str()
    };
    let pod = if cri.pod.is_empty() { id } else { &cri.pod };
    let workload = match workload {
        Some(name) => WorkloadId::new(namespace, &name),
        None => WorkloadId::from_pod(namespace, pod),
    };
    workload.map(Some).map_err(|source| ProfileError::Workload {
        container: id.to_string(),
        source,
    })
}

/// The learning containers of this shim, by container id: the monitor's sink hands every
/// event to [`Recorders::observe`].
#[derive(Clone, Default)]
pub struct Recorders(Arc<Mutex<HashMap<String, Arc<Learner>>>>);

impl std::fmt::Debug for Recorders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorders")
    }
}

/// The entry of `ev`'s container in a per-container table of the reader thread (the learners,
/// the governors), cloned out so that the table's lock is not held while it is used.
pub(crate) fn of_container<T>(
    table: &Mutex<HashMap<String, Arc<T>>>,
    ev: &MonitorEvent,
) -> Option<Arc<T>> {
    by_id(table, &ev.container.container_id)
}

/// The entry of container `id` in such a table, cloned out.
fn by_id<T>(table: &Mutex<HashMap<String, Arc<T>>>, id: &str) -> Option<Arc<T>> {
    let map = table.lock().unwrap_or_else(PoisonError::into_inner);
    if map.is_empty() {
        return None;
    }
    map.get(id).cloned()
}

impl Recorders {
    /// Records `ev` if its container is learning. Called on the monitor's reader thread: only
    /// memory work, except for reading a process's working directory for a relative path.
    pub fn observe(&self, ev: &MonitorEvent) {
        let Some(learner) = of_container(&self.0, ev) else {
            return;
        };
        let now = epoch_secs(ev.time);
        let mut state = learner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        let observations = attributed(ev, &mut state.lineage, &mut state.net, &dir_of);
        for o in &observations {
            state.delta.observe(now, o);
        }
    }

    /// Whether container `id` is learning.
    pub fn learns(&self, id: &str) -> bool {
        by_id(&self.0, id).is_some()
    }

    /// Records `obs`, made by the shim itself (a CRI exec's command), if container `id` is
    /// learning.
    pub fn record(&self, id: &str, obs: &Observation) {
        if let Some(learner) = by_id(&self.0, id) {
            let now = epoch_secs(SystemTime::now());
            let mut state = learner.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.delta.observe(now, obs);
        }
    }

    /// Waits, at most `limit`, until no container learns any more (their last recordings are
    /// merged when their watches are dropped, shortly after their delete).
    pub async fn wait_idle(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while !self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            && start.elapsed() < limit
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts recording container `id` of `pod` into `workload`'s document in `state_dir`
    /// (created if missing), each merge followed by `promotion`'s check. Call before the
    /// container is watched, so that its first exec is recorded.
    pub fn start(
        &self,
        id: &str,
        pod: &str,
        workload: WorkloadId,
        state_dir: &Path,
        promotion: Promotion,
    ) -> Result<Learning, ProfileError> {
        std::fs::create_dir_all(state_dir).map_err(|source| ProfileError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let learner = Arc::new(Learner {
            pod: pod.to_string(),
            state_dir: state_dir.to_path_buf(),
            state: Mutex::new(LearnState {
                delta: Recording::new(workload.clone()),
                net: NetState::default(),
                lineage: Lineage::default(),
            }),
            workload,
            flush: Mutex::new(()),
            kernel: Mutex::new(KernelSide::default()),
            promotion,
        });
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), learner.clone());
        let flusher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let l = learner.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(FLUSH_EVERY).await;
                    let l = l.clone();
                    let _ = tokio::task::spawn_blocking(move || l.flush_logged(None)).await;
                }
            })
        });
        tracing::info!(container = %id, workload = %learner.workload, "learning a profile");
        Ok(Learning {
            id: id.to_string(),
            learner,
            recorders: self.clone(),
            flusher,
            closed: false,
        })
    }
}

/// The rule a learning workload's promotion is checked against at each merge, and where the
/// transitions (a promotion, a refused promotion) go.
pub struct Promotion {
    pub rule: Rule,
    pub report: Box<dyn Fn(&Event) + Send + Sync>,
}

/// The monitor's hold on one container, and its recording when it learns: dropping it
/// detaches the container and, first, merges the rest of the recording with the kernel's count
/// of the container's dropped events.
pub struct Watched(
    pub palisade_monitor::Watch,
    pub Option<Learning>,
    /// The container's applied learned profile, judged for departures (`profile_govern`).
    pub Option<crate::profile_govern::Governing>,
);

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watched")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(learning) = self.1.take() {
            learning.finish(self.0.stats().drops);
        }
    }
}

/// One learning container's hold on its recorder; [`Learning::finish`] merges what is left.
pub struct Learning {
    id: String,
    learner: Arc<Learner>,
    recorders: Recorders,
    flusher: Option<tokio::task::JoinHandle<()>>,
    closed: bool,
}

impl std::fmt::Debug for Learning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Learning({})", self.id)
    }
}

impl Learning {
    /// From now on each merge reads the container's kernel side through `reader`: its drop
    /// count, its system call table and its capabilities, those the runtime used alone and
    /// those outside `held` (the container's own sets, [`held_capabilities`]) recorded as the
    /// runtime's (`profile_caps`). Call once the container is watched. `sends_observed`: the
    /// sock_addr hooks report its connects and sends (`Watch::sends_observed`); when not, each
    /// merge says its peers may be missing.
    pub fn attach_kernel(
        &self,
        reader: WatchReader,
        held: BTreeSet<Capability>,
        sends_observed: bool,
    ) {
        let mut kernel = self
            .learner
            .kernel
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        kernel.reader = Some(reader);
        kernel.held = held;
        kernel.sends_observed = sends_observed;
    }

    /// Stops recording and merges the rest, with the `drops` the kernel counted for the
    /// container over its life (events lost before they were recorded). Call while the watch
    /// is still registered, so that its system call table is read a last time.
    pub fn finish(mut self, drops: u64) {
        self.close(Some(drops));
    }

    fn close(&mut self, drops: Option<u64>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        // Flushed before it leaves the map: a shim ending waits for the map to empty.
        self.learner.flush_logged(drops);
        self.recorders
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Drop for Learning {
    /// A container refused after its recording started: what it did is merged, with what its
    /// kernel side says, if it was watched.
    fn drop(&mut self) {
        self.close(None);
    }
}

/// The recorder of one container.
struct Learner {
    pod: String,
    workload: WorkloadId,
    state_dir: PathBuf,
    state: Mutex<LearnState>,
    /// One flush at a time within this shim (`persist::update` locks out other processes).
    flush: Mutex<()>,
    kernel: Mutex<KernelSide>,
    promotion: Promotion,
}

/// What a recorder reads from the kernel at each merge, and how much of it it has merged.
#[derive(Default)]
struct KernelSide {
    reader: Option<WatchReader>,
    /// The kernel's drop count already added to the document.
    drops_merged: u64,
    /// System call numbers already added.
    syscalls: BTreeSet<u32>,
    /// The workload's capabilities (by bit) already added.
    capabilities: u64,
    /// The runtime's capabilities (by bit) already added.
    runtime_capabilities: u64,
    /// The capabilities the container's own sets hold: a granted one outside them was the
    /// runtime's (`profile_caps::split`).
    held: BTreeSet<Capability>,
    /// The sock_addr hooks report its connects and sends (`Watch::sends_observed`).
    sends_observed: bool,
}

/// What a merge takes from the kernel side.
struct Taken {
    /// Drops not yet merged.
    drops: u64,
    /// System calls and capabilities not yet recorded.
    observations: Vec<Observation>,
    /// The kernel told the capabilities the container used (a capability hook runs).
    capabilities_observed: bool,
    /// Capabilities granted to the runtime, not to the workload.
    runtime_capabilities: Vec<Capability>,
    /// Watched without the sock_addr hooks: its peers may be missing.
    sends_unobserved: bool,
}

impl KernelSide {
    /// The drops not yet merged, given the kernel's total (`total`, or the reader's count), and
    /// the observations of the system calls not yet recorded.
    fn take(&mut self, total: Option<u64>) -> Taken {
        let Some(reader) = &self.reader else {
            return Taken {
                drops: total.unwrap_or(0).saturating_sub(self.drops_merged),
                observations: Vec::new(),
                capabilities_observed: false,
                runtime_capabilities: Vec::new(),
                sends_unobserved: false,
            };
        };
        let total = total.unwrap_or_else(|| reader.stats().drops);
        let new_drops = total.saturating_sub(self.drops_merged);
        self.drops_merged = self.drops_merged.max(total);
        let mut calls = Vec::new();
        for nr in reader.syscalls_seen().unwrap_or_default() {
            if self.syscalls.insert(nr) {
                calls.push(syscall_observation(nr));
            }
        }
        let caps = reader.capabilities_seen();
        let mut runtime_capabilities = Vec::new();
        if let Some(caps) = caps {
            let (workload, runtime) = crate::profile_caps::split(&caps, &self.held);
            for nr in CapabilitiesSeen::numbers(workload & !self.capabilities) {
                if let Some(capability) = crate::profile_caps::capability(nr) {
                    calls.push(Observation::Capability { capability });
                }
            }
            for nr in CapabilitiesSeen::numbers(runtime & !self.runtime_capabilities) {
                runtime_capabilities.extend(crate::profile_caps::capability(nr));
            }
            self.capabilities |= workload;
            self.runtime_capabilities |= runtime;
        }
        Taken {
            drops: new_drops,
            observations: calls,
            capabilities_observed: caps.is_some(),
            runtime_capabilities,
            sends_unobserved: !self.sends_observed,
        }
    }
}

/// The capabilities a container's own sets hold (the union of `process.capabilities`' five
/// sets of its spec, after hardening): only these can be granted to its workload.
pub fn held_capabilities(spec: &serde_json::Value) -> BTreeSet<Capability> {
    let sets = &spec["process"]["capabilities"];
    palisade_sandbox::capabilities::CAPABILITY_SETS
        .iter()
        .filter_map(|set| sets[set].as_array())
        .flatten()
        .filter_map(|name| name.as_str().and_then(Capability::parse))
        .collect()
}

/// A system call number of this architecture's native table, by name; a number the table does
/// not name is kept as `syscall_<nr>`, which the recording counts as unrecognized (a profile
/// could not allow it).
pub(crate) fn syscall_observation(nr: u32) -> Observation {
    let name = usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map_or_else(|| format!("syscall_{nr}"), |s| s.name().to_string());
    Observation::Syscall { name }
}

struct LearnState {
    /// What was recorded since the last flush.
    delta: Recording,
    net: NetState,
    /// Which processes are the runtime's (`profile_runtime`).
    lineage: Lineage,
}

impl Learner {
    fn flush_logged(&self, drops: Option<u64>) {
        match self.flush(drops) {
            Ok(Some(stage)) if stage != Stage::Learn => tracing::info!(
                workload = %self.workload,
                stage = ?stage,
                "learned profile: the workload is past learn, its recording is left unchanged"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(workload = %self.workload, "learned profile not saved: {e}"),
        }
    }

    /// Merges the delta into the document, with what the kernel side adds: the drops not yet
    /// counted (`drops`, the kernel's total for the container, or its count read now) and the
    /// system calls not yet recorded. `None` when there was nothing to merge.
    fn flush(&self, drops: Option<u64>) -> Result<Option<Stage>, ProfileError> {
        let _one = self.flush.lock().unwrap_or_else(PoisonError::into_inner);
        let Taken {
            drops,
            observations: calls,
            capabilities_observed,
            runtime_capabilities,
            sends_unobserved,
        } = self
            .kernel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(drops);
        let mut delta = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut state.delta, Recording::new(self.workload.clone()))
        };
        let now = epoch_secs(SystemTime::now());
        for c in &calls {
            delta.observe(now, c);
        }
        delta.runtime_capabilities.extend(runtime_capabilities);
        if delta.observations == 0 && drops == 0 && delta.runtime_capabilities.is_empty() {
            return Ok(None);
        }
        delta.add_pod(&self.pod);
        delta.add_drops(drops);
        // Without a capability hook on this kernel (or before the container is watched) the
        // capabilities it used are not known: the merged recording says so.
        if !capabilities_observed {
            delta.capabilities_unobserved = 1;
        }
        if sends_unobserved {
            delta.sends_unobserved = 1;
        }
        let mut merged = Ok(());
        let mut events = Vec::new();
        let updated = persist::update(&self.state_dir, &self.workload, now, |doc| {
            if doc.stage.stage != Stage::Learn {
                return;
            }
            match doc.recording.merge(&delta) {
                Ok(r) => doc.recording = r,
                Err(e) => merged = Err(e),
            }
            events.extend(doc.stage.tick(now, &doc.recording, &self.promotion.rule));
        })?;
        for e in &events {
            tracing::warn!(workload = %self.workload, "{}", crate::profile_stage::event_line(&self.workload, e));
            (self.promotion.report)(e);
        }
        if let Some(e) = &updated.replaced_unusable {
            tracing::warn!(workload = %self.workload, "learned profile set aside, learning again: {e}");
        }
        merged.map_err(|e| ProfileError::Merge {
            workload: self.workload.to_string(),
            reason: e.to_string(),
        })?;
        if drops > 0 {
            tracing::warn!(workload = %self.workload, drops, "learned profile is lossy: events were dropped");
        }
        Ok(Some(updated.document.stage.stage))
    }
}

/// Per process: the protocols of the network sockets it created and the port it last bound.
/// A connect names neither its socket nor its protocol: it is recorded for every protocol the
/// process's sockets have (one when it made sockets of one kind, the usual case; more is
/// wider than what happened, never narrower).
#[derive(Default)]
pub(crate) struct NetState {
    socket: HashMap<u32, BTreeSet<Protocol>>,
    bound: HashMap<u32, u16>,
}

impl NetState {
    fn remember<T>(map: &mut HashMap<u32, T>, pid: u32, v: T) {
        if map.len() >= MAX_TRACKED_PIDS && !map.contains_key(&pid) {
            map.clear();
        }
        map.insert(pid, v);
    }
}

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;
pub(crate) const O_WRITE_FLAGS: u64 =
    (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;

/// The observations of one monitor event that are the workload's: the runtime's own work
/// (`profile_runtime`: runc's init and palisade-init before they run the workload's program)
/// keeps only its system calls, which the container's filter must let through whoever makes
/// them; its files and sockets are not the workload's.
pub(crate) fn attributed(
    ev: &MonitorEvent,
    lineage: &mut Lineage,
    net: &mut NetState,
    dir: &dyn Fn(u32, i32) -> Option<String>,
) -> Vec<Observation> {
    let runtime = lineage.runtime(ev);
    let mut out = observations(ev, net, dir);
    if runtime {
        out.retain(|o| matches!(o, Observation::Syscall { .. }));
    }
    out
}

/// The exec of `path` by a process running `parent`: started by the runtime (no parent) when
/// it is the container's first process, when palisade-init started it, or when the parent is
/// named without a path: that was never executed inside the container, it is runc's init,
/// which enters the container from outside (a CRI exec started by runc directly).
pub(crate) fn exec_of(path: String, parent: &str, entrypoint: bool) -> Observation {
    let by_runtime = entrypoint || parent == RUNTIME_INIT || !parent.starts_with('/');
    Observation::Exec {
        path,
        parent: (!by_runtime).then(|| parent.to_string()),
    }
}

/// The observations in one monitor event. Only what succeeded is recorded (a refused or failed
/// operation is no part of the workload's normal behaviour). `dir(pid, dirfd)` gives the
/// directory a relative path starts from: the process's working directory for `AT_FDCWD`, the
/// directory its descriptor `dirfd` names otherwise (`None` when it is not known any more: the
/// path then stays relative and the recording counts it as unrecognized, never as a wrong
/// path).
pub(crate) fn observations(
    ev: &MonitorEvent,
    net: &mut NetState,
    dir: &dyn Fn(u32, i32) -> Option<String>,
) -> Vec<Observation> {
    let pid = ev.process.pid;
    let path = |p: &str| absolute(p, || dir(pid, libc::AT_FDCWD));
    let call = |name: &str| Observation::Syscall { name: name.into() };
    let mut out = Vec::new();
    match &ev.kind {
        EventKind::Exec {
            filename,
            parent,
            killed,
            refused,
            entrypoint,
            ..
        } => {
            if *killed || *refused {
                return out;
            }
            out.push(call("execve"));
            // palisade-init is the runtime's: it is not learned, and what it starts (the
            // entrypoint, each CRI exec) is started by the runtime, as is the first exec.
            if filename == RUNTIME_INIT {
                return out;
            }
            out.insert(0, exec_of(path(filename), parent, *entrypoint));
        }
        EventKind::Open {
            path: p,
            dirfd,
            flags,
            result,
            ..
        } if *result >= 0 => {
            let path = absolute(p, || dir(pid, *dirfd));
            // The root directory itself (opened to list it, or as a directory descriptor to
            // start a lookup from: runc's init does) is no file a policy names: not recorded.
            if path != "/" {
                out.push(Observation::Open {
                    path,
                    write: flags & O_WRITE_FLAGS != 0,
                });
            }
            out.push(call("openat"));
        }
        EventKind::Socket {
            domain,
            kind,
            protocol,
            result,
        } if *result >= 0 => {
            out.push(call("socket"));
            for p in protocols(*domain, *kind, *protocol) {
                let mut seen = net.socket.get(&pid).cloned().unwrap_or_default();
                seen.insert(p);
                NetState::remember(&mut net.socket, pid, seen);
                out.push(Observation::Socket {
                    executable: ev.process.binary.clone(),
                    protocol: p,
                });
            }
        }
        EventKind::Connect { addr, result } if *result >= 0 || *result == -115 => {
            // EINPROGRESS (-115): a non-blocking connect under way.
            out.push(call("connect"));
            if let Some(a) = addr.filter(|a| a.port() != 0) {
                // A process whose sockets all predate the watch: tcp, the common case.
                let seen = net.socket.get(&pid);
                let kinds: Vec<Protocol> = match seen {
                    Some(s) if !s.is_empty() => s.iter().copied().collect(),
                    _ => vec![Protocol::Tcp],
                };
                for protocol in kinds {
                    out.push(Observation::Connect {
                        address: a.ip(),
                        port: a.port(),
                        protocol,
                    });
                }
            }
        }
        EventKind::Bind { addr, result } if *result >= 0 => {
            out.push(call("bind"));
            if let Some(port) = addr.map(|a: SocketAddr| a.port()).filter(|p| *p != 0) {
                NetState::remember(&mut net.bound, pid, port);
                if net
                    .socket
                    .get(&pid)
                    .is_some_and(|s| s.contains(&Protocol::Udp))
                {
                    out.push(Observation::Listen {
                        port,
                        protocol: Protocol::Udp,
                    });
                }
            }
        }
        EventKind::Listen { result, .. } if *result >= 0 => {
            out.push(call("listen"));
            if let Some(port) = net.bound.get(&pid) {
                out.push(Observation::Listen {
                    port: *port,
                    protocol: Protocol::Tcp,
                });
            }
        }
        EventKind::Accept { result, .. } if *result >= 0 => {
            // The event does not say which of the two it was.
            out.push(call("accept"));
            out.push(call("accept4"));
        }
        EventKind::Egress { .. } => out.extend(crate::profile_sends::peer(&ev.kind)),
        EventKind::Mount { result, .. } if *result >= 0 => out.push(call("mount")),
        EventKind::Syscall {
            call: c, result, ..
        } if *result >= 0 => out.push(call(c.name())),
        _ => {}
    }
    out
}

/// KubeArmor's protocols for a socket: a raw ICMP socket is both raw and ICMP, a packet
/// socket is raw, other families are none.
pub(crate) fn protocols(domain: i32, kind: i32, protocol: i32) -> Vec<Protocol> {
    let kind = kind & 0xf;
    match domain {
        AF_PACKET => vec![Protocol::Raw],
        AF_INET | AF_INET6 => {
            let icmp = (domain == AF_INET && protocol == IPPROTO_ICMP)
                || (domain == AF_INET6 && protocol == IPPROTO_ICMPV6);
            match kind {
                libc::SOCK_STREAM => vec![Protocol::Tcp],
                libc::SOCK_DGRAM if icmp => vec![Protocol::Icmp],
                libc::SOCK_DGRAM => vec![Protocol::Udp],
                libc::SOCK_RAW if icmp => vec![Protocol::Raw, Protocol::Icmp],
                libc::SOCK_RAW => vec![Protocol::Raw],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// `p` made absolute against the working directory (when relative) and normalized lexically;
/// unchanged when the directory is unknown (the recording then counts it as unrecognized).
pub(crate) fn absolute(p: &str, cwd: impl FnOnce() -> Option<String>) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        match cwd() {
            Some(dir) if dir.starts_with('/') => format!("{}/{p}", dir.trim_end_matches('/')),
            _ => return p.to_string(),
        }
    };
    palisade_monitor::normalize_path(&joined)
}

/// The directory a process's relative path starts from, as its own mount namespace names it:
/// its working directory for `AT_FDCWD`, else what its descriptor `dirfd` refers to (read
/// now: a descriptor closed or reused since is not known, or names a directory it has now).
fn dir_of(pid: u32, dirfd: i32) -> Option<String> {
    let link = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else if dirfd >= 0 {
        format!("/proc/{pid}/fd/{dirfd}")
    } else {
        return None;
    };
    std::fs::read_link(link)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
