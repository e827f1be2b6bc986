//! The task service: containers and their processes, as plain async methods over runc.
//!
//! The ttrpc `Task` implementation in `task.rs` is a thin adapter over this; nothing here knows
//! about ttrpc contexts. Each verb looks its process up in the `table`, checks that the
//! process's state allows the call ([`State::check`]), calls the runtime and sends the event.
//! Create (`create`), the monitor and gate that follow `runc create` (`attach`) and Exec
//! (`exec`) have modules of their own, as does the compromise judge (`judge`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::api::{DeleteResponse, StateResponse, Status, UpdateTaskRequest};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{monitor_subscribe, Topic};
use containerd_shim::protos::events::task::{TaskDelete, TaskPaused, TaskResumed, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::types::task::ProcessInfo;
use tokio::sync::Mutex;

use crate::bundle::unmount;
use crate::config::{Config, RuntimeOptions};
use crate::error::ShimError;
use crate::events::EventSender;
use crate::runc::ContainerRuntime;
use crate::sys;

mod attach;
mod create;
mod exec;
mod judge;
pub(crate) mod table;

pub use crate::runc::{runc_factory, RuntimeFactory};
use table::{delete_response, handle_exits, timestamp, Table};
pub use table::{Exit, ProcessId, State, Transition};

/// How long a deleted container stays registered with the monitor, for its last events.
const MONITOR_DRAIN: Duration = Duration::from_millis(300);

/// The containers one shim serves (one pod), and how to reach containerd.
pub struct TaskService {
    namespace: String,
    table: Arc<Mutex<Table>>,
    events: EventSender,
    exit: Arc<ExitSignal>,
    /// Options the shim was started with; a Create without options falls back to them.
    start_options: RuntimeOptions,
    /// Builds the OCI runtime a container's configuration names.
    runtime_for: RuntimeFactory,
    /// The violation log, opened with the first container's configuration.
    reporter: Arc<crate::report::ReporterCell>,
    /// The eBPF monitor, joined with the first container's configuration.
    monitor: Arc<std::sync::OnceLock<Option<crate::monitoring::ShimMonitor>>>,
    /// The compromise policy: restarts held back or refused, across the pod's containers.
    judge: judge::Judge,
    /// containerd's grpc address (the shim's `-address`), for the pod's labels.
    containerd: Option<String>,
}

impl TaskService {
    /// Builds the service and starts the task that turns reaped exits into `TaskExit` events.
    pub async fn new(
        namespace: String,
        events: EventSender,
        exit: Arc<ExitSignal>,
        start_options: RuntimeOptions,
        runtime_for: RuntimeFactory,
    ) -> Result<Self, ShimError> {
        let table = Arc::new(Mutex::new(Table::default()));
        let sub = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| ShimError::Precondition {
                what: "reaper".into(),
                reason: e.to_string(),
            })?;
        tokio::spawn(handle_exits(sub, table.clone(), events.clone()));
        let (observer, judge_rx) = judge::Judge::observer();
        let reporter = Arc::new(crate::report::ReporterCell::new(
            crate::report::SinkContext {
                observer: Some(observer),
                ..crate::report::SinkContext::for_shim(events.clone())
            },
        ));
        let judge = judge::Judge::default();
        judge.start(judge_rx, table.clone(), reporter.clone());
        let monitor = Arc::new(std::sync::OnceLock::new());
        // Join the node's monitor while containerd is still preparing the first Create: the
        // configuration named at `start` is the one the pod's containers use.
        if let Ok(config) = start_options.load_config() {
            if config.monitor.enabled {
                let (m, r) = (monitor.clone(), reporter.clone());
                let spawned = std::thread::Builder::new()
                    .name("palisade-monitor-join".into())
                    .spawn(move || {
                        attach::join_monitor(&m, &r, &config);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("monitor join thread: {e}");
                }
            }
        }
        Ok(TaskService {
            namespace,
            table,
            events,
            exit,
            start_options,
            runtime_for,
            reporter,
            monitor,
            judge,
            containerd: None,
        })
    }

    /// Where containerd serves its API, so that policies can select by the pod's labels.
    pub fn with_containerd(mut self, address: &str) -> Self {
        self.containerd = (!address.is_empty()).then(|| address.to_string());
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The violation log: one per shim, set up from the first container's configuration
    /// (every container of a pod shares its runtime handler, so its configuration).
    pub fn reporter(&self, config: &Config) -> crate::report::Reporter {
        reporter_of(&self.reporter, config)
    }

    pub async fn start(&self, id: &str, pid_id: ProcessId) -> Result<u32, ShimError> {
        match pid_id {
            ProcessId::Init => self.start_init(id).await,
            ProcessId::Exec(exec) => self.start_exec(id, exec).await,
        }
    }

    async fn start_init(&self, id: &str) -> Result<u32, ShimError> {
        let (runc, pid) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            let init = c.process(&ProcessId::Init)?;
            init.state
                .check(Transition::Start, || format!("container {id}"))?;
            (c.runc.clone(), init.pid)
        };
        let starting = std::time::Instant::now();
        runc.start(id).await?;
        let runc_start = starting.elapsed();
        {
            let mut table = self.table.lock().await;
            if let Some(p) = table
                .containers
                .get_mut(id)
                .and_then(|c| c.processes.get_mut(&ProcessId::Init))
            {
                // The init may already have exited and been recorded by the reaper.
                p.state = p.state.after(Transition::Start);
            }
        }
        tracing::info!(container = %id, pid, runc_start_ms = sys::ms(runc_start), "container started");
        self.events
            .send(TaskStart {
                container_id: id.into(),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        let heap = sys::trim_heap();
        tracing::info!(
            container = %id,
            heap_in_use_kib = heap.in_use_kib,
            heap_free_kib = heap.free_kib,
            trimmed = heap.trimmed,
            "heap after start"
        );
        Ok(pid as u32)
    }

    pub async fn state(&self, id: &str, key: &ProcessId) -> Result<StateResponse, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        let p = c.process(key)?;
        let status = Status::from(p.state);
        Ok(StateResponse {
            id: id.into(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid as u32,
            status: status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: p.exit.map(|e| e.code).unwrap_or(0),
            exited_at: timestamp(p.exit.map(|e| e.at)),
            exec_id: match key {
                ProcessId::Init => String::new(),
                ProcessId::Exec(e) => e.clone(),
            },
            ..Default::default()
        })
    }

    pub async fn kill(
        &self,
        id: &str,
        key: &ProcessId,
        signal: u32,
        all: bool,
    ) -> Result<(), ShimError> {
        let (runc, pid, state, signalled) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            let p = c.process(key)?;
            // The init alone, while it runs: signalled through its pidfd at once, under the
            // lock that orders it with the reaper's record of its exit. Exec'ing `runc kill`
            // takes long enough for the exit, containerd's cleanup and a closed connection to
            // overtake the reply (seen under containerd 1.7).
            let signalled = match (key, &c.init_pidfd) {
                (ProcessId::Init, Some(fd)) if !all && p.state != State::Stopped => {
                    Some(fd.send_signal(signal))
                }
                _ => None,
            };
            (c.runc.clone(), p.pid, p.state, signalled)
        };
        match key {
            ProcessId::Init => {
                if state == State::Stopped && !all {
                    return Err(ShimError::ProcessFinished(format!("container {id}")));
                }
                match signalled {
                    Some(Ok(())) => {}
                    Some(Err(nix::errno::Errno::ESRCH)) => {
                        return Err(ShimError::ProcessFinished(format!("container {id}")))
                    }
                    // A signal the kernel refuses through a pidfd: runc decides as before.
                    Some(Err(_)) | None => runc.kill(id, signal, all).await?,
                }
            }
            ProcessId::Exec(exec) => {
                if state != State::Running || pid <= 0 {
                    return Err(ShimError::ProcessFinished(format!(
                        "container {id}: exec {exec}"
                    )));
                }
                let sig = nix::sys::signal::Signal::try_from(signal as i32).map_err(|e| {
                    ShimError::InvalidArgument {
                        what: format!("signal {signal}"),
                        reason: e.to_string(),
                    }
                })?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(
                    |e| match e {
                        nix::errno::Errno::ESRCH => {
                            ShimError::ProcessFinished(format!("container {id}: exec {exec}"))
                        }
                        other => ShimError::io(format!("container {id}: exec {exec}: kill"))(
                            other.into(),
                        ),
                    },
                )?;
            }
        }
        tracing::info!(container = %id, ?key, signal, all, "signalled");
        Ok(())
    }

    pub async fn delete(&self, id: &str, key: &ProcessId) -> Result<DeleteResponse, ShimError> {
        match key {
            ProcessId::Exec(exec) => {
                let mut table = self.table.lock().await;
                let c = table.container_mut(id)?;
                let p = c.process(key)?;
                p.state.check(Transition::Delete, || {
                    format!("container {id}: exec {exec}")
                })?;
                let p = c.processes.remove(key).ok_or_else(|| c.missing(key))?;
                let exit = p.exit.unwrap_or(Exit {
                    code: 0,
                    at: SystemTime::now(),
                });
                Ok(delete_response(p.pid, exit))
            }
            ProcessId::Init => self.delete_container(id).await,
        }
    }

    async fn delete_container(&self, id: &str) -> Result<DeleteResponse, ShimError> {
        let (runc, state) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            (c.runc.clone(), c.init_state())
        };
        state.check(Transition::Delete, || format!("container {id}"))?;
        match runc.delete(id, true).await {
            Ok(()) | Err(crate::runc::RuncError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let c = self
            .table
            .lock()
            .await
            .containers
            .remove(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.into()))?;
        if let Some(w) = &c.oom_watch {
            w.abort();
        }
        let mut c = c;
        if let Some(g) = c.gate.take() {
            g.stop().await;
        }
        if let Some(w) = c.watch.take() {
            // The monitor's reader drains the ring every 50 ms and forgets a container's events
            // once it is detached: detach a little later, so that what the container did in its
            // last moments is still reported. Its processes are gone, so nothing new arrives.
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(MONITOR_DRAIN).await;
                drop(w);
                tracing::debug!(container = %id, "monitor detached");
            });
        }
        if let Some(r) = &c.rootfs {
            unmount(r);
        }
        let init = c.processes.get(&ProcessId::Init);
        let pid = init.map(|p| p.pid).unwrap_or(0);
        let exit = init.and_then(|p| p.exit).unwrap_or(Exit {
            code: 137,
            at: SystemTime::now(),
        });
        // Any exec still recorded is gone with the container: release its waiters.
        for (k, p) in &c.processes {
            if p.exit.is_none() {
                p.exit_tx.send_replace(Some(exit));
                tracing::debug!(container = %id, ?k, "process released by delete");
            }
        }
        tracing::info!(container = %id, "container deleted");
        self.events
            .send(TaskDelete {
                container_id: id.into(),
                pid: pid as u32,
                exit_status: exit.code,
                exited_at: timestamp(Some(exit.at)),
                id: id.into(),
                ..Default::default()
            })
            .await;
        Ok(delete_response(pid, exit))
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>, ShimError> {
        let (runc, execs) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            let execs: HashMap<i32, String> = c
                .processes
                .iter()
                .filter_map(|(k, p)| match k {
                    ProcessId::Exec(e) if p.pid > 0 => Some((p.pid, e.clone())),
                    _ => None,
                })
                .collect();
            (c.runc.clone(), execs)
        };
        let pids = runc.ps(id).await?;
        let mut out = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut info = ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            };
            if let Some(exec_id) = execs.get(&pid) {
                let details = ProcessDetails {
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                let value = details
                    .write_to_bytes()
                    .map_err(|source| ShimError::Proto {
                        context: format!("container {id}: process details"),
                        source,
                    })?;
                info.info = MessageField::some(Any {
                    type_url: "containerd.runc.v1.ProcessDetails".into(),
                    value,
                    ..Default::default()
                });
            }
            out.push(info);
        }
        Ok(out)
    }

    pub async fn pause(&self, id: &str) -> Result<(), ShimError> {
        self.freeze(id, true).await
    }

    pub async fn resume(&self, id: &str) -> Result<(), ShimError> {
        self.freeze(id, false).await
    }

    /// Pause (`pause`) or Resume: the runtime freezes or thaws the container, then the init's
    /// state changes and containerd hears `TaskPaused` or `TaskResumed`.
    async fn freeze(&self, id: &str, pause: bool) -> Result<(), ShimError> {
        let asked = if pause {
            Transition::Pause
        } else {
            Transition::Resume
        };
        let runc = self.runc_for(id, asked).await?;
        if pause {
            runc.pause(id).await?;
        } else {
            runc.resume(id).await?;
        }
        self.init_did(id, asked).await;
        let container_id = id.to_string();
        if pause {
            let paused = TaskPaused {
                container_id,
                ..Default::default()
            };
            self.events.send(paused).await;
        } else {
            let resumed = TaskResumed {
                container_id,
                ..Default::default()
            };
            self.events.send(resumed).await;
        }
        Ok(())
    }

    /// Records that the runtime carried `done` out on the container's init.
    async fn init_did(&self, id: &str, done: Transition) {
        let mut table = self.table.lock().await;
        if let Some(p) = table
            .containers
            .get_mut(id)
            .and_then(|c| c.processes.get_mut(&ProcessId::Init))
        {
            p.state = p.state.after(done);
        }
    }

    /// The container's runtime, once its init's state allows `asked`.
    async fn runc_for(
        &self,
        id: &str,
        asked: Transition,
    ) -> Result<Arc<dyn ContainerRuntime>, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        c.init_state().check(asked, || format!("container {id}"))?;
        Ok(c.runc.clone())
    }

    pub async fn close_io(&self, id: &str, key: &ProcessId) -> Result<(), ShimError> {
        let mut table = self.table.lock().await;
        let c = table.container_mut(id)?;
        if let Some(io) = c.process_mut(key)?.io.as_mut() {
            io.close_stdin();
        }
        Ok(())
    }

    pub async fn resize_pty(
        &self,
        id: &str,
        key: &ProcessId,
        width: u32,
        height: u32,
    ) -> Result<(), ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        if let Some(io) = c.process(key)?.io.as_ref() {
            io.resize(width, height)?;
        }
        Ok(())
    }

    pub async fn update(&self, req: UpdateTaskRequest) -> Result<(), ShimError> {
        let id = req.id.as_str();
        let (runc, bundle) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            (c.runc.clone(), c.bundle.clone())
        };
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        exec::check_json_object(&resources, &[]).map_err(|reason| ShimError::InvalidArgument {
            what: format!("container {id}: resources"),
            reason,
        })?;
        let path = bundle.join("update-resources.json");
        std::fs::write(&path, &resources)
            .map_err(ShimError::io(format!("container {id}: write resources")))?;
        let res = runc.update(id, &path).await;
        let _ = std::fs::remove_file(&path);
        res?;
        tracing::info!(container = %id, "resources updated");
        Ok(())
    }

    pub async fn wait(&self, id: &str, key: &ProcessId) -> Result<Exit, ShimError> {
        let mut rx = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            c.process(key)?.exit_tx.subscribe()
        };
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return Ok(exit);
            }
            if rx.changed().await.is_err() {
                return Err(ShimError::Precondition {
                    what: format!("container {id}"),
                    reason: "deleted while waiting".into(),
                });
            }
        }
    }

    pub async fn stats(&self, id: &str) -> Result<Any, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        let cgroups = c.cgroups.as_ref().ok_or_else(|| ShimError::Precondition {
            what: format!("container {id}"),
            reason: "cgroups unknown".into(),
        })?;
        Ok(cgroups.metrics()?)
    }

    /// The pid of the container's init, for `Connect`.
    pub async fn init_pid(&self, id: &str) -> Result<u32, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        Ok(c.process(&ProcessId::Init)?.pid as u32)
    }

    /// Ends the shim once it serves no container.
    pub async fn shutdown(&self) {
        if self.table.lock().await.containers.is_empty() {
            tracing::info!("no containers left: shutting down");
            if let Some(Some(m)) = self.monitor.get() {
                // The last container's final events are still in the monitor's ring.
                tokio::time::sleep(MONITOR_DRAIN * 2).await;
                m.recorders.wait_idle(Duration::from_secs(5)).await;
            }
            if let Some(r) = self.reporter.get().cloned() {
                // Folded events out, metrics file removed: bounded, off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || r.shutdown()).await;
            }
            self.exit.signal();
        }
    }
}

fn reporter_of(cell: &crate::report::ReporterCell, config: &Config) -> crate::report::Reporter {
    cell.get_or_start(&config.events).clone()
}
