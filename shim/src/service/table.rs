//! The containers of one shim and their processes: the states a process may move between,
//! and how an exit is recorded and reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::api::{DeleteResponse, Status};
use containerd_shim::monitor::Subject;
use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::error::ShimError;
use crate::events::EventSender;
use crate::gate::RunningGate;
use crate::runc::ContainerRuntime;
use crate::stats::Cgroups;
use crate::stdio::{ProcessIo, StdioPaths};
use crate::sys::PidFd;

/// How long an exited process's output may take to drain before its exit is reported.
const IO_DRAIN: Duration = Duration::from_secs(2);
/// Exits of pids not (yet) known are kept this long, for an exec that exits before it is registered.
const UNKNOWN_EXIT_TTL: Duration = Duration::from_secs(30);

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

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

/// What a call asks of a process; [`State::check`] is the one place that says which states
/// allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `runc start` for the init, `runc exec` for an exec: Created to Running.
    Start,
    /// Adding or starting an exec: the container's init must be running.
    Exec,
    /// Running to Paused.
    Pause,
    /// Paused to Running.
    Resume,
    /// Removal: refused while the process runs or is paused.
    Delete,
}

impl Transition {
    fn allowed_from(self, state: State) -> bool {
        match self {
            Transition::Start => state == State::Created,
            Transition::Exec | Transition::Pause => state == State::Running,
            Transition::Resume => state == State::Paused,
            Transition::Delete => !matches!(state, State::Running | State::Paused),
        }
    }

    /// Why a process whose state does not allow this refuses it, as containerd is told.
    pub fn refusal(self) -> &'static str {
        match self {
            Transition::Start => "already started",
            Transition::Exec | Transition::Pause => "not running",
            Transition::Resume => "not paused",
            Transition::Delete => "still running",
        }
    }
}

impl State {
    /// Whether `asked` may happen in this state; `what` names the process in the error.
    pub fn check(self, asked: Transition, what: impl FnOnce() -> String) -> Result<(), ShimError> {
        if asked.allowed_from(self) {
            Ok(())
        } else {
            Err(ShimError::InvalidState {
                what: what(),
                from: self,
                asked,
            })
        }
    }

    /// The state once the runtime carried `done` out; unchanged when the process left the
    /// state `done` starts from in the meantime (the reaper recorded its exit first).
    pub fn after(self, done: Transition) -> State {
        match (done, self) {
            (Transition::Start, State::Created) | (Transition::Resume, State::Paused) => {
                State::Running
            }
            (Transition::Pause, State::Running) => State::Paused,
            _ => self,
        }
    }
}

impl From<State> for Status {
    fn from(s: State) -> Self {
        match s {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped => Status::STOPPED,
        }
    }
}

#[derive(Debug)]
pub(super) struct Process {
    pub(super) pid: i32,
    pub(super) state: State,
    pub(super) exit: Option<Exit>,
    pub(super) stdio: StdioPaths,
    pub(super) io: Option<ProcessIo>,
    pub(super) exit_tx: watch::Sender<Option<Exit>>,
    /// The OCI process of an exec, as JSON; `None` for init.
    pub(super) spec: Option<Vec<u8>>,
}

impl Process {
    pub(super) fn new(stdio: StdioPaths, spec: Option<Vec<u8>>) -> Self {
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
pub(super) struct Container {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) rootfs: Option<PathBuf>,
    pub(super) runc: Arc<dyn ContainerRuntime>,
    pub(super) processes: HashMap<ProcessId, Process>,
    pub(super) cgroups: Option<Cgroups>,
    pub(super) oom_watch: Option<JoinHandle<()>>,
    /// The pod's HTTP gate, held by its sandbox container.
    pub(super) gate: Option<RunningGate>,
    /// palisade-init runs in front of the init, so every exec goes through it too.
    pub(super) wrapped: bool,
    /// The eBPF monitor's hold on this container; dropping it detaches the container.
    pub(super) watch: Option<crate::monitoring::Watched>,
    /// The compromise policy's view of this container; none for the sandbox.
    pub(super) judge: Option<super::judge::Judged>,
    /// For a sandbox with a gate: the container its evidence counts against (all when none).
    pub(super) gate_container: Option<String>,
    /// A pidfd of the init: kill(2) without a runc exec, and without pid reuse races.
    pub(super) init_pidfd: Option<PidFd>,
    /// Under a learned profile: the check of its CRI execs (`crate::profile_exec`).
    pub(super) exec_guard: Option<Arc<crate::profile_exec::ExecGuard>>,
}

impl Container {
    pub(super) fn process(&self, pid: &ProcessId) -> Result<&Process, ShimError> {
        self.processes.get(pid).ok_or_else(|| self.missing(pid))
    }

    pub(super) fn process_mut(&mut self, pid: &ProcessId) -> Result<&mut Process, ShimError> {
        let missing = self.missing(pid);
        self.processes.get_mut(pid).ok_or(missing)
    }

    pub(super) fn missing(&self, pid: &ProcessId) -> ShimError {
        match pid {
            ProcessId::Init => ShimError::ContainerNotFound(self.id.clone()),
            ProcessId::Exec(e) => ShimError::ExecNotFound {
                container: self.id.clone(),
                exec: e.clone(),
            },
        }
    }

    pub(super) fn init_state(&self) -> State {
        self.processes
            .get(&ProcessId::Init)
            .map(|p| p.state)
            .unwrap_or(State::Stopped)
    }
}

#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) containers: HashMap<String, Container>,
    /// Exits the reaper saw for pids no process claimed yet (runc itself, or an exec racing its registration).
    pub(super) unknown_exits: HashMap<i32, (Exit, std::time::Instant)>,
}

impl Table {
    pub(super) fn container(&self, id: &str) -> Result<&Container, ShimError> {
        self.containers
            .get(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.into()))
    }

    pub(super) fn container_mut(&mut self, id: &str) -> Result<&mut Container, ShimError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| ShimError::ContainerNotFound(id.into()))
    }
}

/// Work left after an exit was recorded under the lock: draining io and telling containerd.
pub(super) struct ExitWork {
    pub(super) container: String,
    pub(super) key: ProcessId,
    pub(super) pid: i32,
    pub(super) exit: Exit,
    pub(super) io: Option<ProcessIo>,
    pub(super) tx: watch::Sender<Option<Exit>>,
}

/// Marks a process stopped; returns what must be done outside the lock.
pub(super) async fn record_exit(
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

pub(super) async fn finish_exit(mut work: ExitWork, events: &EventSender) {
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
pub(super) async fn handle_exits(
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
pub(super) async fn release_execs_of(table: &Mutex<Table>, id: &str) {
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

pub(super) async fn watch_oom(id: String, cgroups: Cgroups, events: EventSender) {
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

pub(super) fn timestamp(at: Option<SystemTime>) -> MessageField<Timestamp> {
    at.map(|t| MessageField::some(Timestamp::from(t)))
        .unwrap_or_else(MessageField::none)
}

pub(super) fn delete_response(pid: i32, exit: Exit) -> DeleteResponse {
    DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: timestamp(Some(exit.at)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runc::Runc;

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
                exec_guard: None,
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
    fn each_call_is_allowed_from_its_states_only() {
        use State::*;
        use Transition::*;
        let allowed = |t: Transition| {
            [Created, Running, Paused, Stopped]
                .into_iter()
                .filter(|s| s.check(t, String::new).is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(Start), [Created]);
        assert_eq!(allowed(Exec), [Running]);
        assert_eq!(allowed(Pause), [Running]);
        assert_eq!(allowed(Resume), [Paused]);
        assert_eq!(allowed(Delete), [Created, Stopped]);
        let err = Paused.check(Delete, || "container c1".into()).unwrap_err();
        assert_eq!(err.to_string(), "container c1: still running");
        assert_eq!(
            err.code(),
            containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION
        );
        assert_eq!(Created.after(Start), Running);
        assert_eq!(
            Stopped.after(Start),
            Stopped,
            "an exit recorded first stays"
        );
        assert_eq!(Running.after(Pause), Paused);
        assert_eq!(Paused.after(Resume), Running);
        assert_eq!(Stopped.after(Resume), Stopped);
    }
}
