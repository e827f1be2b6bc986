//! The running side of an applied learned profile: what a governed container does that its
//! profile does not cover is a departure, fed to its workload's state machine with the rule's
//! promotion check at each merge, and every transition reported as a `profile-stage` event.
//!
//! The monitor's reader hands every event to [`Governors::observe`] (memory only); departures
//! are merged into the workload's document every [`crate::profile::FLUSH_EVERY`] and when the
//! container is detached, under the workload's lock. An unusable document is left alone (never
//! replaced by a fresh one from here). A rollback cannot loosen a running container's
//! landlock or seccomp: a merge that finds its workload rolled back to audit (by the rule, not
//! pinned) while the container enforces stops it ([`Governing::on_demotion`]), so that it is
//! created again, in audit; the event says so. A pinned or held stage stops nothing, and a
//! container created again in audit is never stopped for it: no restart loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use palisade_monitor::{EventKind, MonitorEvent};
use palisade_policy::Protocol;
use palisade_profile::persist::{self, Loaded};
use palisade_profile::{
    Departure, Event, Mode, Observation, Recording, Rule, Stage, StageState, WorkloadId,
};

use crate::cri::CriContainer;
use crate::profile_runtime::{Lineage, RUNTIME_INIT};
use crate::report::runtime::runtime_event;
use crate::report::Reporter;

/// Departures kept between two merges of one container; more are counted and logged.
const MAX_PENDING: usize = 1024;
const EPERM: i64 = 1;
const EACCES: i64 = 13;

/// The governed containers of this shim, by container id.
#[derive(Clone, Default)]
pub struct Governors(Arc<Mutex<HashMap<String, Arc<Governor>>>>);

impl std::fmt::Debug for Governors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Governors")
    }
}

/// What one governed container is judged against, and where its departures go.
pub struct Governor {
    workload: WorkloadId,
    pod: String,
    mode: Mode,
    recording: Recording,
    state_dir: PathBuf,
    rule: Rule,
    report: Box<dyn Fn(&Event) + Send + Sync>,
    pending: Mutex<Pending>,
    /// Which processes are the runtime's (`profile_runtime`).
    lineage: Mutex<Lineage>,
    /// Stops the container when its workload is rolled back while it enforces
    /// ([`Governing::on_demotion`]); called once.
    demoted: OnceLock<Demotion>,
    stopped: AtomicBool,
}

/// What stops a container whose workload was rolled back under it, given the reason.
pub type Demotion = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Pending {
    departures: Vec<Departure>,
    beyond: u64,
}

impl Governors {
    /// Judges `ev` if its container is governed: each observation its profile does not cover
    /// is a departure, refused when the operation failed with EPERM/EACCES or was killed.
    pub fn observe(&self, ev: &MonitorEvent) {
        let Some(governor) = crate::profile::of_container(&self.0, ev) else {
            return;
        };
        let at = epoch_secs(ev.time);
        // The runtime's own work (a CRI exec's runc init and palisade-init) is no departure.
        let runtime = governor
            .lineage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .runtime(ev);
        if runtime {
            return;
        }
        for (observation, refused) in judged(ev) {
            if !governor.covered(&observation) {
                governor.depart(at, observation, refused);
            }
        }
    }

    /// Records a departure of container `id` judged outside the monitor (the shim's Exec
    /// refusing a binary the runtime never started while learning); false when `id` is not
    /// governed here (its monitor is not running).
    pub fn depart(&self, id: &str, observation: Observation, refused: bool) -> bool {
        let governor = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        let Some(governor) = governor else {
            return false;
        };
        governor.depart(
            epoch_secs(std::time::SystemTime::now()),
            observation,
            refused,
        );
        true
    }

    /// Starts judging container `id` of `cri`'s pod against `recording`, the profile it was
    /// given in `mode`; stage events go to `reporter`.
    pub fn start(
        &self,
        cri: &CriContainer,
        target: Target,
        reporter: Reporter,
        node_name: String,
    ) -> Governing {
        let report = stage_reporter(cri, &target.workload, reporter, node_name);
        self.start_with(cri, target, report)
    }

    /// [`Governors::start`] with the stage events handed to `report`.
    pub fn start_with(
        &self,
        cri: &CriContainer,
        target: Target,
        report: Box<dyn Fn(&Event) + Send + Sync>,
    ) -> Governing {
        let governor = Arc::new(Governor {
            workload: target.workload,
            pod: if cri.pod.is_empty() {
                cri.id.clone()
            } else {
                cri.pod.clone()
            },
            mode: target.mode,
            recording: target.recording,
            state_dir: target.state_dir,
            rule: target.rule,
            report,
            pending: Mutex::new(Pending::default()),
            lineage: Mutex::new(Lineage::default()),
            demoted: OnceLock::new(),
            stopped: AtomicBool::new(false),
        });
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cri.id.clone(), governor.clone());
        let flusher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let g = governor.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(crate::profile::FLUSH_EVERY).await;
                    let g = g.clone();
                    let _ = tokio::task::spawn_blocking(move || g.flush()).await;
                }
            })
        });
        Governing {
            id: cri.id.clone(),
            governor,
            governors: self.clone(),
            flusher,
        }
    }
}

/// What a governed container is judged against.
#[derive(Clone)]
pub struct Target {
    pub workload: WorkloadId,
    pub mode: Mode,
    pub recording: Recording,
    pub state_dir: PathBuf,
    pub rule: Rule,
}

/// One governed container's hold: dropping it merges its last departures and stops judging.
pub struct Governing {
    id: String,
    governor: Arc<Governor>,
    governors: Governors,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Governing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Governing({})", self.id)
    }
}

impl Governing {
    /// `stop` is called (once) when a merge finds the workload rolled back to audit, unpinned,
    /// while this container enforces its profile: landlock and seccomp cannot be lifted in a
    /// running process, so the container must be created again, in audit.
    pub fn on_demotion(&self, stop: Demotion) {
        let _ = self.governor.demoted.set(stop);
    }
}

impl Drop for Governing {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        self.governor.flush();
        self.governors
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Governor {
    /// Keeps one departure for the next merge, refused when it was and the container enforces.
    fn depart(&self, at: u64, observation: Observation, refused: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.departures.len() >= MAX_PENDING {
            pending.beyond += 1;
            return;
        }
        pending.departures.push(Departure {
            at,
            pod: self.pod.clone(),
            refused: refused && self.mode == Mode::Enforce,
            observation,
        });
    }

    fn covered(&self, o: &Observation) -> bool {
        match o {
            // The event does not name the protocol of the socket connected: either learned one.
            Observation::Connect { address, port, .. } => {
                [Protocol::Tcp, Protocol::Udp].into_iter().any(|protocol| {
                    self.recording.covers(&Observation::Connect {
                        address: *address,
                        port: *port,
                        protocol,
                    })
                })
            }
            _ => self.recording.covers(o),
        }
    }

    /// Merges the pending departures into the workload's state machine, then the rule's
    /// promotion check; reports every transition.
    fn flush(&self) {
        let Pending { departures, beyond } =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if beyond > 0 {
            tracing::warn!(workload = %self.workload, beyond, "learned profile: departures over the pending limit were not kept");
        }
        let now = epoch_secs(std::time::SystemTime::now());
        match persist::load(&self.state_dir, &self.workload) {
            Loaded::Present(_) => {}
            Loaded::Absent => return,
            Loaded::Unusable(e) => {
                tracing::error!(workload = %self.workload, "learned profile: departures not merged: {e}");
                return;
            }
        }
        let mut events = Vec::new();
        let updated = persist::update(&self.state_dir, &self.workload, now, |doc| {
            if doc.stage.stage == Stage::Learn {
                return;
            }
            for d in departures {
                events.extend(doc.stage.departure(d, &self.rule));
            }
            events.extend(doc.stage.tick(now, &doc.recording, &self.rule));
        });
        let updated = match updated {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(workload = %self.workload, "learned profile: departures not merged: {e}");
                return;
            }
        };
        for e in &events {
            tracing::warn!(workload = %self.workload, "{}", stage_line(&self.workload, e));
            (self.report)(e);
        }
        if let Some(reason) = self.demotion(&updated.document.stage) {
            if let Some(stop) = self.demoted.get() {
                if !self.stopped.swap(true, Ordering::SeqCst) {
                    tracing::warn!(workload = %self.workload, pod = %self.pod, "{reason}");
                    stop(&reason);
                }
            }
        }
    }

    /// Why this container must be created again: it enforces, and its workload is now in
    /// audit by the rule's rollback (not pinned there by the operator, nor held: a held
    /// rollback leaves the stage as it was). `None` otherwise, so that a container created
    /// again in audit is never stopped again.
    fn demotion(&self, stage: &StageState) -> Option<String> {
        (self.mode == Mode::Enforce && stage.stage == Stage::Audit && !stage.pinned).then(|| {
            format!(
                "learned profile of {}: rolled back to audit while pod {} enforced it; its container is stopped to be created again in audit (landlock and seccomp cannot be lifted in a running process)",
                self.workload, self.pod
            )
        })
    }
}

/// Where `workload`'s stage events caused by container `cri` go: `profile-stage` events of
/// `reporter`, the transition as evidence.
pub fn stage_reporter(
    cri: &CriContainer,
    workload: &WorkloadId,
    reporter: Reporter,
    node_name: String,
) -> Box<dyn Fn(&Event) + Send + Sync> {
    let who = cri.clone();
    let workload = workload.clone();
    Box::new(move |e: &Event| {
        reporter.report(
            runtime_event(&node_name, &who, "profile-stage", &stage_line(&workload, e))
                .with_evidence("transition", serde_json::json!(e)),
        );
    })
}

/// The demotion of container `cri` ([`Governing::on_demotion`]): a `profile-restart` event of
/// `reporter` with the reason, then every process of the container killed through `runtime`,
/// so that its pod creates it again (in audit).
pub fn stop_on_demotion(
    cri: &CriContainer,
    runtime: Arc<dyn crate::runc::ContainerRuntime>,
    reporter: Reporter,
    node_name: String,
) -> Demotion {
    let who = cri.clone();
    let handle = tokio::runtime::Handle::try_current().ok();
    Box::new(move |reason: &str| {
        reporter.report(runtime_event(&node_name, &who, "profile-restart", reason));
        let (runtime, id) = (runtime.clone(), who.id.clone());
        let Some(handle) = &handle else {
            tracing::error!(container = %id, "learned profile rolled back: the container cannot be stopped (no runtime)");
            return;
        };
        handle.spawn(async move {
            if let Err(e) = runtime.kill(&id, libc::SIGKILL as u32, true).await {
                tracing::error!(container = %id, "learned profile rolled back: stop: {e}");
            }
        });
    })
}

/// A stage event's line, with what a rollback does to running containers.
fn stage_line(workload: &WorkloadId, e: &Event) -> String {
    let line = crate::profile_stage::event_line(workload, e);
    if e.kind == palisade_profile::EventKind::RolledBack {
        format!("{line}; the containers that enforce it are stopped, to be created again in audit")
    } else {
        line
    }
}

/// The observations of one event a profile may not cover, each with whether it was refused.
fn judged(ev: &MonitorEvent) -> Vec<(Observation, bool)> {
    let denied = |r: i64| r == -EPERM || r == -EACCES;
    match &ev.kind {
        EventKind::Exec {
            filename,
            parent,
            killed,
            refused,
            entrypoint,
            ..
        } => {
            let init = RUNTIME_INIT;
            if filename == init || !filename.starts_with('/') {
                return Vec::new();
            }
            // As the recorder reads it: a parent without a path is runc's init.
            vec![(
                crate::profile::exec_of(filename.clone(), parent, *entrypoint),
                *killed || *refused,
            )]
        }
        EventKind::Open {
            path,
            flags,
            result,
            ..
        } if path.starts_with('/') && (*result >= 0 || denied(*result)) => {
            let write = flags & crate::profile::O_WRITE_FLAGS != 0;
            vec![(
                Observation::Open {
                    path: path.clone(),
                    write,
                },
                denied(*result),
            )]
        }
        EventKind::Socket {
            domain,
            kind,
            protocol,
            result,
        } if *result >= 0 || denied(*result) => {
            crate::profile::protocols(*domain, *kind, *protocol)
                .into_iter()
                .map(|p| {
                    (
                        Observation::Socket {
                            executable: ev.process.binary.clone(),
                            protocol: p,
                        },
                        denied(*result),
                    )
                })
                .collect()
        }
        EventKind::Connect { addr, result }
            if *result >= 0 || *result == -115 || denied(*result) =>
        {
            match addr.filter(|a| a.port() != 0) {
                Some(a) => vec![(
                    Observation::Connect {
                        address: a.ip(),
                        port: a.port(),
                        protocol: Protocol::Tcp,
                    },
                    denied(*result),
                )],
                None => Vec::new(),
            }
        }
        // An unconnected UDP send the egress allow-list refused: no connect event tells of it
        // (a refused connect is judged from its own event), and the recorder learns peers from
        // connects only, so it must count, or a workload broken by it would never roll back.
        EventKind::Egress {
            addr,
            protocol: 17,
            sendmsg: true,
            refused,
        } => vec![(
            Observation::Connect {
                address: addr.ip(),
                port: addr.port(),
                protocol: Protocol::Udp,
            },
            *refused,
        )],
        // An exec the kernel refused inside the container (landlock's execute allow-list, say):
        // the caller's image is the parent that asked for it.
        EventKind::ExecRefused { path, .. } if path.starts_with('/') => vec![(
            crate::profile::exec_of(path.clone(), &ev.process.binary, false),
            true,
        )],
        EventKind::Mount { result, .. } => vec![(
            Observation::Syscall {
                name: "mount".into(),
            },
            denied(*result),
        )],
        EventKind::Bind { result, .. } | EventKind::Listen { result, .. }
            if *result >= 0 || denied(*result) =>
        {
            let name = if matches!(ev.kind, EventKind::Bind { .. }) {
                "bind"
            } else {
                "listen"
            };
            vec![(Observation::Syscall { name: name.into() }, denied(*result))]
        }
        EventKind::Syscall { call, result, .. } => vec![(
            Observation::Syscall {
                name: call.name().to_string(),
            },
            denied(*result),
        )],
        _ => Vec::new(),
    }
}

fn epoch_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "profile_govern_tests.rs"]
mod tests;
