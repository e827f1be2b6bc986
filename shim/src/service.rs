//! The task service: containers and their processes, as plain async methods over runc.
//!
//! The ttrpc `Task` implementation in `task.rs` is a thin adapter over this; nothing here knows
//! about ttrpc contexts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::api::{
    CreateTaskRequest, DeleteResponse, ExecProcessRequest, StateResponse, Status, UpdateTaskRequest,
};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::types::task::ProcessInfo;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::config::{Config, RuntimeOptions};
use crate::error::ShimError;
use crate::events::EventSender;
use crate::gate::RunningGate;
use crate::idmap::IdmappedOverlay;
use crate::runc::{ContainerRuntime, LaunchOpts, Runc};
use crate::stats::Cgroups;
use crate::stdio::{pid_file, PendingIo, ProcessIo, StdioPaths};

mod judge;

/// How long a deleted container stays registered with the monitor, for its last events.
const MONITOR_DRAIN: Duration = Duration::from_millis(300);
/// How long an exited process's output may take to drain before its exit is reported.
const IO_DRAIN: Duration = Duration::from_secs(2);
/// Exits of pids not (yet) known are kept this long, for an exec that exits before it is registered.
const UNKNOWN_EXIT_TTL: Duration = Duration::from_secs(30);
/// The file in each bundle that lets `delete` (run without options) find the same runc.
pub const RUNTIME_FILE: &str = "palisade-runtime.json";

/// Which process of a container a call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessId {
    Init,
    Exec(String),
}

impl ProcessId {
    /// containerd names the init process with an empty exec id.
    pub fn from_exec_id(exec_id: &str) -> Self {
        if exec_id.is_empty() {
            ProcessId::Init
        } else {
            ProcessId::Exec(exec_id.to_string())
        }
    }
}

/// A process's exit, as containerd wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug)]
struct Process {
    pid: i32,
    state: State,
    exit: Option<Exit>,
    stdio: StdioPaths,
    io: Option<ProcessIo>,
    exit_tx: watch::Sender<Option<Exit>>,
    /// The OCI process of an exec, as JSON; `None` for init.
    spec: Option<Vec<u8>>,
}

impl Process {
    fn new(stdio: StdioPaths, spec: Option<Vec<u8>>) -> Self {
        Process {
            pid: 0,
            state: State::Created,
            exit: None,
            stdio,
            io: None,
            exit_tx: watch::channel(None).0,
            spec,
        }
    }
}

#[derive(Debug)]
struct Container {
    id: String,
    bundle: PathBuf,
    rootfs: Option<PathBuf>,
    runc: Arc<dyn ContainerRuntime>,
    processes: HashMap<ProcessId, Process>,
    cgroups: Option<Cgroups>,
    oom_watch: Option<JoinHandle<()>>,
    /// The pod's HTTP gate, held by its sandbox container.
    gate: Option<RunningGate>,
    /// palisade-init runs in front of the init, so every exec goes through it too.
    wrapped: bool,
    /// The eBPF monitor's hold on this container; dropping it detaches the container.
    watch: Option<crate::monitoring::Watched>,
    /// The compromise policy's view of this container; none for the sandbox.
    judge: Option<judge::Judged>,
    /// For a sandbox with a gate: the container its evidence counts against (all when none).
    gate_container: Option<String>,
    /// A pidfd of the init: kill(2) without a runc exec, and without pid reuse races.
    init_pidfd: Option<std::os::fd::OwnedFd>,
}

impl Container {
    fn process(&self, pid: &ProcessId) -> Result<&Process, ShimError> {
        self.processes.get(pid).ok_or_else(|| self.missing(pid))
    }

    fn process_mut(&mut self, pid: &ProcessId) -> Result<&mut Process, ShimError> {
        let missing = self.missing(pid);
        self.processes.get_mut(pid).ok_or(missing)
    }

    fn missing(&self, pid: &ProcessId) -> ShimError {
        match pid {
            ProcessId::Init => ShimError::ContainerNotFound(self.id.clone()),
            ProcessId::Exec(e) => ShimError::ExecNotFound {
                container: self.id.clone(),
                exec: e.clone(),
            },
        }
    }

    fn init_state(&self) -> State {
        self.processes
            .get(&ProcessId::Init)
            .map(|p| p.state)
            .unwrap_or(State::Stopped)
    }
}

#[derive(Debug, Default)]
struct Table {
    containers: HashMap<String, Container>,
    /// Exits the reaper saw for pids no process claimed yet (runc itself, or an exec racing its registration).
    unknown_exits: HashMap<i32, (Exit, std::time::Instant)>,
}

impl Table {
    fn container(&self, id: &str) -> Result<&Container, ShimError> {
        self.containers
            .get(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.into()))
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container, ShimError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.into()))
    }
}

/// What `delete` needs to find runc again after the shim is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub runc_binary: String,
    pub runc_root: PathBuf,
    pub systemd_cgroup: bool,
}

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

/// Makes the runtime for a configuration: runc, or a fake in tests.
pub type RuntimeFactory = Arc<dyn Fn(&Config) -> Arc<dyn ContainerRuntime> + Send + Sync>;

/// The production factory: runc as the configuration describes it.
pub fn runc_factory() -> RuntimeFactory {
    Arc::new(|c: &Config| -> Arc<dyn ContainerRuntime> {
        Arc::new(Runc::new(
            c.runc_binary.clone(),
            c.runc_root.clone(),
            c.systemd_cgroup,
        ))
    })
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
            .map_err(|e| ShimError::InvalidState {
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
                        join_monitor(&m, &r, &config);
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

    /// The labels of the pod a container belongs to, from containerd's sandbox record.
    async fn pod_labels(&self, id: &str, spec: &serde_json::Value) -> crate::policy::PodLabels {
        use crate::policy::PodLabels;
        let sandbox = (!crate::policy::is_sandbox(spec))
            .then(|| spec["annotations"][crate::shim::SANDBOX_ID_ANNOTATION].as_str())
            .flatten()
            .map(String::from);
        let Some(sandbox) = sandbox else {
            return PodLabels::Known(Default::default());
        };
        let Some(address) = &self.containerd else {
            return PodLabels::Unknown("the shim was not told containerd's address".into());
        };
        match crate::labels::pod_labels(address, &self.namespace, &sandbox).await {
            Ok(l) => PodLabels::Known(l),
            Err(e) => {
                tracing::warn!(container = %id, "pod labels: {e}");
                PodLabels::Unknown(e.to_string())
            }
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The violation log: one per shim, set up from the first container's configuration
    /// (every container of a pod shares its runtime handler, so its configuration).
    pub fn reporter(&self, config: &Config) -> crate::report::Reporter {
        reporter_of(&self.reporter, config)
    }

    pub async fn create(&self, req: CreateTaskRequest) -> Result<u32, ShimError> {
        let started = std::time::Instant::now();
        let id = req.id.clone();
        if self.table.lock().await.containers.contains_key(&id) {
            return Err(ShimError::ContainerExists(id));
        }
        let options = match req.options.as_ref() {
            Some(any) if !any.type_url.is_empty() => RuntimeOptions::from_any(any)?,
            _ => self.start_options.clone(),
        };
        let config: Config = options.load_config()?;
        let runc = (self.runtime_for)(&config);
        let bundle = PathBuf::from(&req.bundle);
        let record = RuntimeRecord {
            runc_binary: config.runc_binary.clone(),
            runc_root: config.runc_root.clone(),
            systemd_cgroup: config.systemd_cgroup,
        };
        let record_json = serde_json::to_vec(&record).map_err(|source| ShimError::Json {
            context: format!("container {id}: runtime record"),
            source,
        })?;
        std::fs::write(bundle.join(RUNTIME_FILE), record_json).map_err(ShimError::io(format!(
            "container {id}: write {RUNTIME_FILE}"
        )))?;

        let spec = read_config(&id, &bundle)?;
        let candidates = crate::policy::candidates_for(&id, &spec, config.policy_dir.as_deref())?;
        // A lookup over containerd's API on every Create otherwise: only a policy that selects
        // by labels needs them.
        let labels = match &candidates {
            Some(c) if c.need_labels() => self.pod_labels(&id, &spec).await,
            _ => crate::policy::PodLabels::Unknown("not read: no policy selects by labels".into()),
        };
        let labelled = started.elapsed();
        let hardened = harden_bundle(
            &id,
            &bundle,
            spec,
            &config,
            candidates,
            &labels,
            &self.reporter(&config),
        )?;
        let (spec, wrapped) = (&hardened.spec, hardened.wrapped);
        // A pod's gate is set up with its sandbox container; bad annotations stop the pod here.
        let gate_request = if crate::policy::is_sandbox(spec) {
            crate::gate::requested(spec)?
        } else {
            None
        };
        let gate_container = gate_request.as_ref().and_then(|r| r.container.clone());
        // A container killed as compromised comes back only after its backoff, and not at all
        // once quarantined.
        let admitted = self
            .judge
            .admit(&id, spec, &config, &self.reporter(&config))?;
        let rootfs = self.mount_rootfs(&id, &bundle, &req).await?;
        let prepared = started.elapsed();
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut runc_created = prepared;
        let launched = match self.launch_init(&id, &bundle, runc.as_ref(), &stdio).await {
            Ok((pid, io)) => {
                runc_created = started.elapsed();
                match self
                    .attach(&id, pid, &bundle, &hardened, gate_request, &config)
                    .await
                {
                    Ok((watch, gate)) => Ok((pid, io, watch, gate)),
                    Err(e) => {
                        let _ = runc.delete(&id, true).await;
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let attached = started.elapsed();
        match launched {
            Ok((pid, io, watch, gate)) => {
                let cgroups = Cgroups::of_pid(pid)
                    .map_err(|e| tracing::warn!(container = %id, "cgroups not found, no stats or oom events: {e}"))
                    .ok();
                let mut init = Process::new(stdio.clone(), None);
                init.pid = pid;
                init.io = Some(io);
                let oom_watch = cgroups
                    .clone()
                    .map(|c| tokio::spawn(watch_oom(id.clone(), c, self.events.clone())));
                let init_pidfd = runc
                    .signals_init_directly()
                    .then(|| pidfd_open(pid))
                    .flatten();
                let container = Container {
                    id: id.clone(),
                    bundle: bundle.clone(),
                    rootfs,
                    runc,
                    processes: HashMap::from([(ProcessId::Init, init)]),
                    cgroups,
                    oom_watch,
                    gate,
                    wrapped,
                    watch,
                    judge: admitted.map(|a| {
                        a.announce(&self.reporter(&config));
                        a.judged
                    }),
                    gate_container,
                    init_pidfd,
                };
                let early_exit = {
                    let mut table = self.table.lock().await;
                    table.containers.insert(id.clone(), container);
                    // Killed from outside between runc create and now: the reaper saw it first.
                    table.unknown_exits.remove(&pid).map(|(exit, _)| exit)
                };
                // Where a Create's time went, for docs/benchmarks.md.
                tracing::info!(
                    container = %id,
                    pid,
                    labels_ms = ms(labelled),
                    prepare_ms = ms(prepared - labelled),
                    runc_create_ms = ms(runc_created - prepared),
                    attach_ms = ms(attached - runc_created),
                    "container created"
                );
                let id_for_exit = id.clone();
                self.events
                    .send(TaskCreate {
                        container_id: id,
                        bundle: req.bundle,
                        rootfs: req.rootfs,
                        io: MessageField::some(TaskIO {
                            stdin: stdio.stdin,
                            stdout: stdio.stdout,
                            stderr: stdio.stderr,
                            terminal: stdio.terminal,
                            ..Default::default()
                        }),
                        checkpoint: req.checkpoint,
                        pid: pid as u32,
                        ..Default::default()
                    })
                    .await;
                if let Some(exit) = early_exit {
                    if let Some(work) =
                        record_exit(&self.table, &id_for_exit, &ProcessId::Init, exit).await
                    {
                        finish_exit(work, &self.events).await;
                    }
                }
                Ok(pid as u32)
            }
            Err(e) => {
                if let Some(r) = &rootfs {
                    unmount(r);
                }
                Err(e)
            }
        }
    }

    /// After `runc create`, before start: the monitor's watch and the pod's gate. A rule that
    /// needs the monitor and cannot get it refuses the container.
    async fn attach(
        &self,
        id: &str,
        pid: i32,
        bundle: &Path,
        hardened: &Hardened,
        gate_request: Option<crate::gate::GateRequest>,
        config: &Config,
    ) -> Result<(Option<crate::monitoring::Watched>, Option<RunningGate>), ShimError> {
        let watch = self.watch(id, pid, bundle, hardened, config)?;
        let gate = match gate_request {
            None => None,
            Some(mut r) => Some(
                RunningGate::start(
                    id,
                    &hardened.spec,
                    {
                        if config.audit() && r.mode == palisade_gate::Mode::Block {
                            tracing::info!(pod = %id, "audit mode: gate blocks nothing, it alerts");
                            r.mode = palisade_gate::Mode::Alert;
                        }
                        r
                    },
                    &config.gate,
                    &config.node_name,
                    self.reporter(config),
                )
                .await?,
            ),
        };
        Ok((watch, gate))
    }

    fn watch(
        &self,
        id: &str,
        pid: i32,
        bundle: &Path,
        hardened: &Hardened,
        config: &Config,
    ) -> Result<Option<crate::monitoring::Watched>, ShimError> {
        let m = &hardened.monitor;
        let needed = !m.deny_exec.is_empty() || !m.allow_exec.is_empty() || !m.network.is_empty();
        let reporter = self.reporter(config);
        let degraded = |what: &str| {
            reporter.report(runtime_event(
                config,
                id,
                &hardened.spec,
                "enforcement-degraded",
                what,
            ))
        };
        let waiting = std::time::Instant::now();
        let joined = self.monitor(config);
        let waited = waiting.elapsed();
        let Some(monitor) = joined else {
            if needed && !hardened.degrade {
                return Err(ShimError::Unenforced {
                    container: id.into(),
                    reason: "policy rules need the eBPF monitor, which is not running in this shim"
                        .into(),
                });
            }
            if needed {
                degraded("policy rules that need the eBPF monitor run unenforced: the monitor is not running");
            }
            return Ok(None);
        };
        let rootfs = match hardened.spec["root"]["path"].as_str() {
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) => bundle.join(p),
            None => bundle.join("rootfs"),
        };
        let (mut rules, cannot) = crate::monitoring::rules_for(&rootfs, m);
        rules.secret_mounts = crate::monitoring::secret_mounts(&hardened.spec);
        if !cannot.is_empty() && !hardened.degrade {
            return Err(ShimError::Unenforced {
                container: id.into(),
                reason: cannot.join("; "),
            });
        }
        for c in &cannot {
            degraded(c);
        }
        for a in &m.audit {
            if !crate::monitoring::audit_reported(a) {
                tracing::info!(container = %id, rule = %a.rule, "audit rule: not reported by the monitor (only through its built-in detections)");
            }
        }
        let w = crate::policy::workload_of(&hardened.spec);
        let who = palisade_monitor::ContainerRef {
            cgroup_id: 0,
            cgroup_dir: None,
            namespace: w.namespace,
            pod: w.pod_name,
            container: w.container_name,
            container_id: id.to_string(),
            image: w.image,
        };
        let watching = std::time::Instant::now();
        match monitor.watch(pid, who, rules) {
            Ok(watch) => {
                tracing::info!(
                    container = %id,
                    join_wait_ms = ms(waited),
                    watch_ms = ms(watching.elapsed()),
                    "container watched"
                );
                for r in watch.0.enforcement() {
                    tracing::info!(container = %id, rule = %r.rule, enforcer = r.enforcer.as_str(), note = ?r.note, "monitor rule");
                    if r.enforcer == palisade_monitor::Enforcer::AuditOnly {
                        degraded(&format!(
                            "{}: reported only: {}",
                            r.rule,
                            r.note.as_deref().unwrap_or("no enforcer")
                        ));
                    }
                }
                Ok(Some(watch))
            }
            Err(e) if needed && !hardened.degrade => Err(ShimError::Unenforced {
                container: id.into(),
                reason: format!("monitor: {e}"),
            }),
            Err(e) => {
                degraded(&format!("container not monitored: {e}"));
                Ok(None)
            }
        }
    }

    /// The shim's monitor, joined with the first container's configuration; `None` when it is
    /// disabled or could not start (reported once).
    fn monitor(&self, config: &Config) -> Option<&crate::monitoring::ShimMonitor> {
        join_monitor(&self.monitor, &self.reporter, config)
    }

    async fn mount_rootfs(
        &self,
        id: &str,
        bundle: &Path,
        req: &CreateTaskRequest,
    ) -> Result<Option<PathBuf>, ShimError> {
        if req.rootfs.is_empty() {
            return Ok(None);
        }
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(ShimError::io(format!("container {id}: create rootfs dir")))?;
        for m in &req.rootfs {
            let idmap = |source| ShimError::Idmap {
                container: id.to_string(),
                source,
            };
            // containerd 2.x asks for an idmapped root filesystem for user-namespaced pods
            let mounted = match IdmappedOverlay::parse(m).map_err(idmap)? {
                Some(overlay) => overlay
                    .mount(m, &bundle.join("idmapped"), &target)
                    .await
                    .map_err(idmap),
                None => containerd_shim::util::mount_rootfs(m, &target)
                    .await
                    .map_err(|source| ShimError::Mount {
                        container: id.to_string(),
                        source,
                    }),
            };
            if let Err(e) = mounted {
                unmount(&target);
                return Err(e);
            }
        }
        Ok(Some(target))
    }

    async fn launch_init(
        &self,
        id: &str,
        bundle: &Path,
        runc: &dyn ContainerRuntime,
        stdio: &StdioPaths,
    ) -> Result<(i32, ProcessIo), ShimError> {
        let pending = PendingIo::prepare(stdio).await?;
        let pid_path = pid_file(bundle, "init");
        let log = bundle.join("log.json");
        let console = pending.console_socket.clone();
        let mut pending = pending;
        let child = std::mem::take(&mut pending.child);
        let opts = LaunchOpts {
            pid_file: &pid_path,
            console_socket: console.as_deref(),
            log_file: &log,
            stdio: child,
        };
        if let Err(e) = runc.create(id, bundle, opts).await {
            pending.abandon();
            let _ = runc.delete(id, true).await;
            return Err(e.into());
        }
        let io = match pending.finish().await {
            Ok(io) => io,
            Err(e) => {
                let _ = runc.delete(id, true).await;
                return Err(e.into());
            }
        };
        let pid = read_pid(&pid_path)?;
        Ok((pid, io))
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
            if init.state != State::Created {
                return Err(ShimError::InvalidState {
                    what: format!("container {id}"),
                    reason: "already started".into(),
                });
            }
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
                if p.state == State::Created {
                    p.state = State::Running;
                }
            }
        }
        tracing::info!(container = %id, pid, runc_start_ms = ms(runc_start), "container started");
        self.events
            .send(TaskStart {
                container_id: id.into(),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        trim_heap(id);
        Ok(pid as u32)
    }

    async fn start_exec(&self, id: &str, exec: String) -> Result<u32, ShimError> {
        let key = ProcessId::Exec(exec.clone());
        let (runc, bundle, stdio, spec, wrapped) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            if c.init_state() != State::Running {
                return Err(ShimError::InvalidState {
                    what: format!("container {id}"),
                    reason: "not running".into(),
                });
            }
            let p = c.process(&key)?;
            if p.state != State::Created {
                return Err(ShimError::InvalidState {
                    what: format!("container {id}: exec {exec}"),
                    reason: "already started".into(),
                });
            }
            (
                c.runc.clone(),
                c.bundle.clone(),
                p.stdio.clone(),
                p.spec.clone().unwrap_or_default(),
                c.wrapped,
            )
        };
        let mut process: serde_json::Value =
            serde_json::from_slice(&spec).map_err(|source| ShimError::Json {
                context: format!("container {id}: exec {exec}: process spec"),
                source,
            })?;
        let hardened = read_config(id, &bundle)?;
        harden_exec_process(&hardened, &mut process);
        // An exec into a container behind palisade-init gets the same plan applied first.
        if wrapped {
            palisade_sandbox::install::wrap_process(id, &mut process)?;
        }
        let spec = serde_json::to_vec(&process).map_err(|source| ShimError::Json {
            context: format!("container {id}: exec {exec}: process spec"),
            source,
        })?;
        let spec_path = bundle.join(format!("exec-{exec}.json"));
        std::fs::write(&spec_path, &spec).map_err(ShimError::io(format!(
            "container {id}: exec {exec}: write process spec"
        )))?;
        let mut pending = PendingIo::prepare(&stdio).await?;
        let pid_path = pid_file(&bundle, &format!("exec-{exec}"));
        let log = bundle.join(format!("exec-{exec}-log.json"));
        let console = pending.console_socket.clone();
        let child = std::mem::take(&mut pending.child);
        let opts = LaunchOpts {
            pid_file: &pid_path,
            console_socket: console.as_deref(),
            log_file: &log,
            stdio: child,
        };
        let launched = runc.exec(id, &spec_path, opts).await;
        let _ = std::fs::remove_file(&spec_path);
        let _ = std::fs::remove_file(&log);
        if let Err(e) = launched {
            pending.abandon();
            self.fail_exec(id, &key).await;
            return Err(e.into());
        }
        let io = pending.finish().await?;
        let pid = read_pid(&pid_path)?;
        let _ = std::fs::remove_file(&pid_path);
        let already_exited = {
            let mut table = self.table.lock().await;
            let early = table.unknown_exits.remove(&pid).map(|(exit, _)| exit);
            let c = table.container_mut(id)?;
            let p = c.process_mut(&key)?;
            p.pid = pid;
            p.state = State::Running;
            p.io = Some(io);
            early
        };
        tracing::info!(container = %id, exec = %exec, pid, "exec started");
        self.events
            .send(TaskExecStarted {
                container_id: id.into(),
                exec_id: exec.clone(),
                pid: pid as u32,
                ..Default::default()
            })
            .await;
        if let Some(exit) = already_exited {
            let work = record_exit(&self.table, id, &key, exit).await;
            if let Some(work) = work {
                finish_exit(work, &self.events).await;
            }
        }
        Ok(pid as u32)
    }

    /// An exec whose launch failed exits at once with 255, so that waiters are released.
    async fn fail_exec(&self, id: &str, key: &ProcessId) {
        let exit = Exit {
            code: 255,
            at: SystemTime::now(),
        };
        if let Some(work) = record_exit(&self.table, id, key, exit).await {
            finish_exit(work, &self.events).await;
        }
    }

    pub async fn exec(&self, req: ExecProcessRequest) -> Result<(), ShimError> {
        let id = req.id.clone();
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if spec.is_empty() {
            return Err(ShimError::InvalidArgument {
                what: format!("container {id}: exec {}", req.exec_id),
                reason: "no process spec".into(),
            });
        }
        check_json_object(&spec, &["args"]).map_err(|reason| ShimError::InvalidArgument {
            what: format!("container {id}: exec {}: process spec", req.exec_id),
            reason,
        })?;
        {
            let mut table = self.table.lock().await;
            let c = table.container_mut(&id)?;
            if c.init_state() != State::Running {
                return Err(ShimError::InvalidState {
                    what: format!("container {id}"),
                    reason: "not running".into(),
                });
            }
            let key = ProcessId::Exec(req.exec_id.clone());
            if c.processes.contains_key(&key) {
                return Err(ShimError::ExecExists {
                    container: id.clone(),
                    exec: req.exec_id.clone(),
                });
            }
            let stdio = StdioPaths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            };
            c.processes.insert(key, Process::new(stdio, Some(spec)));
        }
        self.events
            .send(TaskExecAdded {
                container_id: id,
                exec_id: req.exec_id,
                ..Default::default()
            })
            .await;
        Ok(())
    }

    pub async fn state(&self, id: &str, key: &ProcessId) -> Result<StateResponse, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        let p = c.process(key)?;
        let status = match p.state {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped => Status::STOPPED,
        };
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
                    Some(pidfd_send_signal(fd, signal))
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
                if p.state == State::Running || p.state == State::Paused {
                    return Err(ShimError::InvalidState {
                        what: format!("container {id}: exec {exec}"),
                        reason: "still running".into(),
                    });
                }
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
        if state == State::Running || state == State::Paused {
            return Err(ShimError::InvalidState {
                what: format!("container {id}"),
                reason: "still running".into(),
            });
        }
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
        let runc = self.running_runc(id).await?;
        runc.pause(id).await?;
        self.set_init_state(id, State::Running, State::Paused).await;
        self.events
            .send(TaskPaused {
                container_id: id.into(),
                ..Default::default()
            })
            .await;
        Ok(())
    }

    pub async fn resume(&self, id: &str) -> Result<(), ShimError> {
        let runc = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            if c.init_state() != State::Paused {
                return Err(ShimError::InvalidState {
                    what: format!("container {id}"),
                    reason: "not paused".into(),
                });
            }
            c.runc.clone()
        };
        runc.resume(id).await?;
        self.set_init_state(id, State::Paused, State::Running).await;
        self.events
            .send(TaskResumed {
                container_id: id.into(),
                ..Default::default()
            })
            .await;
        Ok(())
    }

    async fn set_init_state(&self, id: &str, from: State, to: State) {
        let mut table = self.table.lock().await;
        if let Some(p) = table
            .containers
            .get_mut(id)
            .and_then(|c| c.processes.get_mut(&ProcessId::Init))
        {
            if p.state == from {
                p.state = to;
            }
        }
    }

    async fn running_runc(&self, id: &str) -> Result<Arc<dyn ContainerRuntime>, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        if c.init_state() != State::Running {
            return Err(ShimError::InvalidState {
                what: format!("container {id}"),
                reason: "not running".into(),
            });
        }
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
        check_json_object(&resources, &[]).map_err(|reason| ShimError::InvalidArgument {
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
                return Err(ShimError::InvalidState {
                    what: format!("container {id}"),
                    reason: "deleted while waiting".into(),
                });
            }
        }
    }

    pub async fn stats(&self, id: &str) -> Result<Any, ShimError> {
        let table = self.table.lock().await;
        let c = table.container(id)?;
        let cgroups = c.cgroups.as_ref().ok_or_else(|| ShimError::InvalidState {
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
            if matches!(self.monitor.get(), Some(Some(_))) {
                // The last container's final events are still in the monitor's ring.
                tokio::time::sleep(MONITOR_DRAIN * 2).await;
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

/// Milliseconds with a fraction, for the timings in the logs.
fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The shim's monitor, joined once; `None` when disabled or unavailable (logged once).
fn join_monitor<'a>(
    cell: &'a std::sync::OnceLock<Option<crate::monitoring::ShimMonitor>>,
    reporter: &crate::report::ReporterCell,
    config: &Config,
) -> Option<&'a crate::monitoring::ShimMonitor> {
    cell.get_or_init(|| {
        if !config.monitor.enabled {
            return None;
        }
        match crate::monitoring::ShimMonitor::open(
            &config.monitor,
            reporter_of(reporter, config),
            config.node_name.clone(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("monitor unavailable: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// A pidfd for `pid` (Linux 5.3+); none where the kernel has no pidfd_open.
fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        tracing::debug!(pid, "pidfd_open: {}", std::io::Error::last_os_error());
        return None;
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &std::os::fd::OwnedFd, signal: u32) -> Result<(), nix::errno::Errno> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

/// Work left after an exit was recorded under the lock: draining io and telling containerd.
struct ExitWork {
    container: String,
    key: ProcessId,
    pid: i32,
    exit: Exit,
    io: Option<ProcessIo>,
    tx: watch::Sender<Option<Exit>>,
}

/// Marks a process stopped; returns what must be done outside the lock.
async fn record_exit(
    table: &Mutex<Table>,
    id: &str,
    key: &ProcessId,
    exit: Exit,
) -> Option<ExitWork> {
    let mut table = table.lock().await;
    let c = table.containers.get_mut(id)?;
    // A container killed as compromised says so in its exit status.
    let compromised = c.judge.as_ref().is_some_and(|j| j.verdict.is_some());
    let p = c.processes.get_mut(key)?;
    if p.state == State::Stopped {
        return None;
    }
    let mut exit = exit;
    if compromised && *key == ProcessId::Init {
        exit.code = crate::compromise::COMPROMISED_EXIT_CODE;
    }
    p.state = State::Stopped;
    p.exit = Some(exit);
    Some(ExitWork {
        container: id.into(),
        key: key.clone(),
        pid: p.pid,
        exit,
        io: p.io.take(),
        tx: p.exit_tx.clone(),
    })
}

async fn finish_exit(mut work: ExitWork, events: &EventSender) {
    if let Some(io) = work.io.as_mut() {
        io.drain(IO_DRAIN).await;
    }
    let id = match &work.key {
        ProcessId::Init => work.container.clone(),
        ProcessId::Exec(e) => e.clone(),
    };
    tracing::info!(container = %work.container, process = %id, pid = work.pid, code = work.exit.code, "process exited");
    events
        .send(TaskExit {
            container_id: work.container.clone(),
            id,
            pid: work.pid as u32,
            exit_status: work.exit.code,
            exited_at: timestamp(Some(work.exit.at)),
            ..Default::default()
        })
        .await;
    work.tx.send_replace(Some(work.exit));
}

/// Turns every reaped child into a recorded exit and a `TaskExit`.
async fn handle_exits(
    mut sub: containerd_shim::monitor::Subscription,
    table: Arc<Mutex<Table>>,
    events: EventSender,
) {
    while let Some(ev) = sub.rx.recv().await {
        let Subject::Pid(pid) = ev.subject else {
            continue;
        };
        let exit = Exit {
            code: ev.exit_code as u32,
            at: SystemTime::now(),
        };
        let owner = {
            let mut t = table.lock().await;
            let owner = t.containers.iter().find_map(|(cid, c)| {
                c.processes
                    .iter()
                    .find(|(_, p)| p.pid == pid && p.state != State::Stopped)
                    .map(|(k, _)| (cid.clone(), k.clone()))
            });
            if owner.is_none() {
                let now = std::time::Instant::now();
                t.unknown_exits
                    .retain(|_, (_, seen)| now.duration_since(*seen) < UNKNOWN_EXIT_TTL);
                t.unknown_exits.insert(pid, (exit, now));
            }
            owner
        };
        let Some((cid, key)) = owner else { continue };
        if let Some(work) = record_exit(&table, &cid, &key, exit).await {
            if key == ProcessId::Init {
                // Execs die with the init in its pid namespace; in the host's they would linger.
                release_execs_of(&table, &cid).await;
            }
            let events = events.clone();
            tokio::spawn(async move { finish_exit(work, &events).await });
        }
    }
}

/// After an init exit, kills exec processes that share the host pid namespace and survived it.
async fn release_execs_of(table: &Mutex<Table>, id: &str) {
    let t = table.lock().await;
    let Some(c) = t.containers.get(id) else {
        return;
    };
    for (k, p) in &c.processes {
        if matches!(k, ProcessId::Exec(_)) && p.state == State::Running && p.pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn watch_oom(id: String, cgroups: Cgroups, events: EventSender) {
    loop {
        match cgroups.wait_oom().await {
            Ok(true) => {
                tracing::warn!(container = %id, "oom kill in container cgroup");
                events
                    .send(TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    })
                    .await;
            }
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(container = %id, "oom watch ended: {e}");
                return;
            }
        }
    }
}

/// The bundle's config.json, as hardened at Create.
fn read_config(id: &str, bundle: &Path) -> Result<serde_json::Value, ShimError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(ShimError::io(format!(
        "container {id}: read {}",
        path.display()
    )))?;
    serde_json::from_slice(&bytes).map_err(|source| ShimError::Json {
        context: format!("container {id}: {}", path.display()),
        source,
    })
}

/// containerd sends an exec the process spec it generated for the container, from before the
/// shim hardened config.json: the exec gets the container's hardened capability sets and
/// no_new_privs instead, so `kubectl exec` holds no more than the container's init.
fn harden_exec_process(hardened: &serde_json::Value, process: &mut serde_json::Value) {
    let from = &hardened["process"];
    if let Some(p) = process.as_object_mut() {
        match from.get("capabilities") {
            Some(caps) => p.insert("capabilities".into(), caps.clone()),
            None => p.remove("capabilities"),
        };
        if from["noNewPrivileges"].as_bool() == Some(true) {
            p.insert("noNewPrivileges".into(), serde_json::Value::Bool(true));
        }
    }
}

/// Rewrites the bundle's config.json with palisade's default hardening, or refuses the container.
/// A notable event of the runtime itself about one container: protection it runs without.
fn runtime_event(
    config: &Config,
    id: &str,
    spec: &serde_json::Value,
    rule: &str,
    message: &str,
) -> palisade_events::Event {
    let w = crate::policy::workload_of(spec);
    let workload = palisade_events::Workload {
        namespace: w.namespace,
        pod: w.pod_name,
        container: w.container_name,
        container_id: id.to_string(),
        image: w.image,
    };
    let rule = palisade_events::Rule {
        name: rule.to_string(),
        severity: palisade_events::Severity::clamped(5),
        tags: vec!["palisade-runtime".to_string()],
        message: message.to_string(),
    };
    palisade_events::Event::new(
        &config.node_name,
        palisade_events::Source::Runtime,
        workload,
        rule,
        palisade_events::Action::Audit,
        "runtime",
    )
}

/// The spec runc runs, and whether palisade-init stands in front of its processes.
struct Hardened {
    spec: serde_json::Value,
    wrapped: bool,
    /// What only the eBPF monitor can carry.
    monitor: palisade_sandbox::MonitorRules,
    /// The configuration lets protection the node cannot give be reported instead.
    degrade: bool,
}

/// Hardens `spec`, the bundle's config.json as read, and writes it back over the file.
fn harden_bundle(
    id: &str,
    bundle: &Path,
    mut spec: serde_json::Value,
    config: &Config,
    candidates: Option<crate::policy::Candidates>,
    labels: &crate::policy::PodLabels,
    reporter: &crate::report::Reporter,
) -> Result<Hardened, ShimError> {
    let path = bundle.join("config.json");
    let report = match palisade_sandbox::harden_spec(id, &mut spec, &config.hardening) {
        Ok(report) => report,
        Err(e) => {
            if let Some(event) = crate::contract::refusal_event(&config.node_name, id, &spec, &e) {
                reporter.report(event);
            }
            return Err(e.into());
        }
    };
    let compiled = match candidates {
        Some(c) => c.select(labels, config.audit())?,
        None => None,
    };
    let kernel = palisade_sandbox::KernelFeatures::probe().map_err(|e| ShimError::Unenforced {
        container: id.to_string(),
        reason: format!("kernel features: {e}"),
    })?;
    let enforcement = palisade_sandbox::enforce(
        id,
        &mut spec,
        compiled.as_ref(),
        config.strict.as_ref(),
        &kernel,
    )?;
    let wrapped = match &enforcement.plan {
        Some(plan) => {
            let plan_path = bundle.join("palisade-plan.json");
            let plan_json = serde_json::to_vec(plan).map_err(|source| ShimError::Json {
                context: format!("container {id}: landlock plan"),
                source,
            })?;
            std::fs::write(&plan_path, plan_json).map_err(ShimError::io(format!(
                "container {id}: write landlock plan"
            )))?;
            palisade_sandbox::install::install_init(
                id,
                &mut spec,
                &config.init_binary_path(),
                &plan_path,
            )?;
            true
        }
        None => false,
    };
    for r in &enforcement.rules {
        tracing::info!(container = %id, rule = %r.rule, target = %r.target, enforcer = ?r.enforcer, note = ?r.note, "policy rule");
    }
    for line in &enforcement.applied {
        tracing::debug!(container = %id, "enforcement: {line}");
    }
    for line in &enforcement.warnings {
        reporter.report(runtime_event(
            config,
            id,
            &spec,
            "enforcement-degraded",
            line,
        ));
    }
    for line in &report.applied {
        tracing::debug!(container = %id, "hardening: {line}");
    }
    for event in crate::contract::decision_events(&config.node_name, id, &spec, &report) {
        reporter.report(event);
    }
    let out = serde_json::to_vec(&spec).map_err(|source| ShimError::Json {
        context: format!("container {id}: config.json"),
        source,
    })?;
    // Written beside and renamed over, so runc never reads a half-written spec.
    let tmp = bundle.join(".config.json.palisade");
    std::fs::write(&tmp, out).map_err(ShimError::io(format!(
        "container {id}: write hardened config.json"
    )))?;
    std::fs::rename(&tmp, &path).map_err(ShimError::io(format!(
        "container {id}: replace config.json"
    )))?;
    tracing::info!(container = %id, applied = report.applied.len(), relaxed = report.relaxed.len(), wrapped, "hardened");
    let degrade = config.strict.as_ref().is_some_and(|s| s.allow_degraded);
    Ok(Hardened {
        spec,
        wrapped,
        monitor: enforcement.monitor,
        degrade,
    })
}

/// A light check of JSON that runc will read in full: an object, with the keys runc cannot do without.
///
/// A typed parse here would reject fields newer than our spec crate that runc understands.
fn check_json_object(bytes: &[u8], required: &[&str]) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let obj = value
        .as_object()
        .ok_or_else(|| "must be a JSON object".to_string())?;
    for key in required {
        match obj.get(*key) {
            Some(serde_json::Value::Array(a)) if !a.is_empty() => {}
            Some(serde_json::Value::Array(_)) | None => {
                return Err(format!("{key}: must not be empty"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn read_pid(path: &Path) -> Result<i32, ShimError> {
    let text = std::fs::read_to_string(path)
        .map_err(ShimError::io(format!("read pid file {}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| ShimError::InvalidState {
            what: format!("pid file {}", path.display()),
            reason: e.to_string(),
        })
}

/// Detaches a rootfs mount; errors are logged since a stale mount must not fail a delete.
pub fn unmount(target: &Path) {
    let target_str = target.to_string_lossy();
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(&target_str), libc::MNT_DETACH) {
        tracing::warn!("unmount {}: {e}", target.display());
    }
}

fn timestamp(at: Option<SystemTime>) -> MessageField<Timestamp> {
    at.map(|t| MessageField::some(Timestamp::from(t)))
        .unwrap_or_else(MessageField::none)
}

fn delete_response(pid: i32, exit: Exit) -> DeleteResponse {
    DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: timestamp(Some(exit.at)),
        ..Default::default()
    }
}

/// Hands the heap's free pages back to the kernel once a container has started: its Create
/// (the spec's JSON, the hardening, the policies) leaves free chunks that glibc would keep
/// resident for the shim's whole life. Logs what the heap holds (docs/benchmarks.md).
fn trim_heap(container: &str) {
    // SAFETY: mallinfo2 only reads the allocator's counters and malloc_trim only returns free
    // pages; both take the allocator's own lock.
    let (info, trimmed) = unsafe {
        let info = libc::mallinfo2();
        (info, libc::malloc_trim(0) == 1)
    };
    tracing::info!(
        container,
        heap_in_use_kib = info.uordblks / 1024,
        heap_free_kib = info.fordblks / 1024,
        trimmed,
        "heap after start"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_checks_name_the_problem() {
        assert_eq!(check_json_object(b"{\"args\":[\"sh\"]}", &["args"]), Ok(()));
        assert_eq!(
            check_json_object(b"{\"args\":[]}", &["args"]),
            Err("args: must not be empty".into())
        );
        assert_eq!(
            check_json_object(b"[1]", &[]),
            Err("must be a JSON object".into())
        );
        assert!(check_json_object(b"{", &[]).unwrap_err().contains("EOF"));
    }

    #[test]
    fn process_id_from_exec_id() {
        assert_eq!(ProcessId::from_exec_id(""), ProcessId::Init);
        assert_eq!(ProcessId::from_exec_id("e1"), ProcessId::Exec("e1".into()));
    }

    #[tokio::test]
    async fn record_exit_is_once_and_releases_waiters() {
        let table = Mutex::new(Table::default());
        let mut p = Process::new(StdioPaths::default(), None);
        p.pid = 42;
        p.state = State::Running;
        let mut rx = p.exit_tx.subscribe();
        table.lock().await.containers.insert(
            "c1".into(),
            Container {
                id: "c1".into(),
                bundle: "/b".into(),
                rootfs: None,
                runc: Arc::new(Runc::new("runc", "/run/x", false)),
                processes: HashMap::from([(ProcessId::Init, p)]),
                cgroups: None,
                oom_watch: None,
                gate: None,
                wrapped: false,
                watch: None,
                judge: None,
                gate_container: None,
                init_pidfd: None,
            },
        );
        let exit = Exit {
            code: 3,
            at: SystemTime::now(),
        };
        let work = record_exit(&table, "c1", &ProcessId::Init, exit)
            .await
            .expect("first exit recorded");
        assert_eq!(work.pid, 42);
        assert!(
            record_exit(&table, "c1", &ProcessId::Init, exit)
                .await
                .is_none(),
            "second exit ignored"
        );
        let (events, mut erx) = EventSender::channel();
        finish_exit(work, &events).await;
        assert_eq!(*rx.borrow_and_update(), Some(exit));
        let ev = erx.recv().await.expect("exit event");
        assert_eq!(ev.topic(), "/tasks/exit");
        assert_eq!(ev.type_name(), "containerd.events.TaskExit");
        let t = table.lock().await;
        assert_eq!(t.containers["c1"].init_state(), State::Stopped);
    }

    #[test]
    fn exec_gets_the_hardened_capabilities_and_no_new_privs() {
        let hardened = serde_json::json!({"process": {
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
            "noNewPrivileges": true
        }});
        let mut process = serde_json::json!({
            "args": ["sh"],
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW"], "effective": ["CAP_NET_RAW"]}
        });
        harden_exec_process(&hardened, &mut process);
        assert_eq!(process["capabilities"], hardened["process"]["capabilities"]);
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(process["user"]["uid"], 1000);
        assert_eq!(process["args"][0], "sh");
    }
}
