//! Task service lifecycle against a recording fake runtime, with exits fed through the real reaper channel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: panics are its failure reports

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::api::{CreateTaskRequest, ExecProcessRequest, Status};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::monitor_notify_by_pid;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use palisade_shim::config::{Config, RuntimeOptions};
use palisade_shim::events::{Encoded, EventSender};
use palisade_shim::runc::{ContainerRuntime, LaunchOpts, RuncError};
use palisade_shim::service::{ProcessId, RuntimeFactory, TaskService};

/// Records every call; "processes" are pids that exit when killed.
#[derive(Debug, Default)]
struct FakeRuntime {
    calls: Mutex<Vec<String>>,
    next_pid: Mutex<i32>,
    init_pid: Mutex<i32>,
}

impl FakeRuntime {
    fn new(first_pid: i32) -> Self {
        FakeRuntime {
            next_pid: Mutex::new(first_pid),
            ..Default::default()
        }
    }
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
    fn pid(&self, file: &Path) -> i32 {
        let mut next = self.next_pid.lock().unwrap();
        *next += 1;
        std::fs::write(file, next.to_string()).unwrap();
        *next
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn create(&self, id: &str, _: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError> {
        let pid = self.pid(opts.pid_file);
        *self.init_pid.lock().unwrap() = pid;
        self.record(format!("create {id}"));
        Ok(())
    }
    async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.record(format!("start {id}"));
        Ok(())
    }
    async fn exec(&self, id: &str, process: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError> {
        let spec = std::fs::read_to_string(process).unwrap();
        assert!(
            spec.contains("\"args\""),
            "exec spec handed to runtime: {spec}"
        );
        self.pid(opts.pid_file);
        self.record(format!("exec {id}"));
        Ok(())
    }
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        self.record(format!("kill {id} {signal} {all}"));
        let pid = *self.init_pid.lock().unwrap();
        tokio::spawn(async move { monitor_notify_by_pid(pid, 128 + signal as i32).await });
        Ok(())
    }
    async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        self.record(format!("delete {id} {force}"));
        Ok(())
    }
    async fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.record(format!("pause {id}"));
        Ok(())
    }
    async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.record(format!("resume {id}"));
        Ok(())
    }
    async fn update(&self, id: &str, resources_json: &Path) -> Result<(), RuncError> {
        let r = std::fs::read_to_string(resources_json).unwrap();
        self.record(format!("update {id} {r}"));
        Ok(())
    }
    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuncError> {
        self.record(format!("ps {id}"));
        Ok(vec![*self.init_pid.lock().unwrap()])
    }
}

/// A configuration for the fake runtime: no monitor (the fake's pids are not processes) and the
/// violation log in the test's directory.
fn fake_config(dir: &Path, extra: &str) -> String {
    format!(
        "runc_binary = \"fake\"\n{extra}[monitor]\nenabled = false\n[events]\nlog_dir = \"{}\"\n",
        dir.join("log").display()
    )
}

/// What CRI hands a container, trimmed to what hardening reads.
const SPEC: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {"args": ["sleep", "1"], "cwd": "/", "capabilities": {
    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
    "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]}},
  "root": {"path": "rootfs"},
  "annotations": {"keep": "me", "io.kubernetes.cri.container-type": "container"},
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}
}"#;

/// A task service reading the configuration at `config`, every runtime it builds being `fake`;
/// the receiver of its events comes with it.
async fn fake_service(
    config: &Path,
    fake: &Arc<FakeRuntime>,
) -> (TaskService, tokio::sync::mpsc::Receiver<Encoded>) {
    let fake = fake.clone();
    let factory: RuntimeFactory =
        Arc::new(move |_: &Config| -> Arc<dyn ContainerRuntime> { fake.clone() });
    let (events, rx) = EventSender::channel();
    let options = RuntimeOptions {
        config_path: Some(config.to_path_buf()),
        ..Default::default()
    };
    let svc = TaskService::new(
        "k8s.io".into(),
        events,
        Arc::new(ExitSignal::default()),
        options,
        factory,
    )
    .await
    .unwrap();
    (svc, rx)
}

/// Create's request for container `id` with its bundle at `bundle`.
fn create_request(id: &str, bundle: &Path) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.to_string_lossy().into(),
        ..Default::default()
    }
}

/// The state of container `id`'s init process, as the service reports it.
async fn init_status(svc: &TaskService, id: &str) -> Result<Status, i32> {
    svc.state(id, &ProcessId::Init)
        .await
        .unwrap()
        .status
        .enum_value()
}

async fn next_topic(rx: &mut tokio::sync::mpsc::Receiver<Encoded>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("event within 5s")
        .expect("event channel open")
        .topic()
        .to_owned()
}

#[tokio::test]
async fn create_start_exec_kill_delete_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, fake_config(dir.path(), "")).unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), SPEC).unwrap();

    let fake = Arc::new(FakeRuntime::new(910_000));
    let seen_config = Arc::new(Mutex::new(None::<Config>));
    let factory: RuntimeFactory = {
        let fake = fake.clone();
        let seen = seen_config.clone();
        Arc::new(move |c: &Config| -> Arc<dyn ContainerRuntime> {
            *seen.lock().unwrap() = Some(c.clone());
            fake.clone()
        })
    };
    let (events, mut rx) = EventSender::channel();
    let exit = Arc::new(ExitSignal::default());
    let options = RuntimeOptions {
        config_path: Some(config),
        ..Default::default()
    };
    let svc = TaskService::new("k8s.io".into(), events, exit.clone(), options, factory)
        .await
        .unwrap();

    let req = create_request("c1", &bundle);
    let pid = svc.create(req.clone()).await.unwrap();
    assert_eq!(pid, 910_001);
    assert_eq!(
        seen_config.lock().unwrap().as_ref().unwrap().runc_binary,
        "fake"
    );
    assert_eq!(next_topic(&mut rx).await, "/tasks/create");
    assert!(
        bundle.join("palisade-runtime.json").exists(),
        "delete needs the runtime record"
    );
    let err = svc.create(req).await.unwrap_err();
    assert_eq!(err.to_string(), "container c1: already exists");
    assert_eq!(init_status(&svc, "c1").await, Ok(Status::CREATED));

    assert_eq!(svc.start("c1", ProcessId::Init).await.unwrap(), 910_001);
    assert_eq!(next_topic(&mut rx).await, "/tasks/start");
    assert_eq!(init_status(&svc, "c1").await, Ok(Status::RUNNING));

    let spec = Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: br#"{"args":["true"],"cwd":"/"}"#.to_vec(),
        ..Default::default()
    };
    let exec = ExecProcessRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        spec: MessageField::some(spec),
        ..Default::default()
    };
    svc.exec(exec.clone()).await.unwrap();
    assert_eq!(next_topic(&mut rx).await, "/tasks/exec-added");
    assert_eq!(
        svc.exec(exec).await.unwrap_err().to_string(),
        "container c1: exec e1: already exists"
    );
    let exec_pid = svc.start("c1", ProcessId::Exec("e1".into())).await.unwrap();
    assert_eq!(exec_pid, 910_002);
    assert_eq!(next_topic(&mut rx).await, "/tasks/exec-started");

    // The exec exits on its own: the reaper reports it, Wait returns its code, TaskExit follows.
    let e1 = ProcessId::Exec("e1".into());
    let waiter = {
        let svc = &svc;
        async move { svc.wait("c1", &e1).await }
    };
    monitor_notify_by_pid(exec_pid as i32, 7).await.unwrap();
    let exit_e1 = waiter.await.unwrap();
    assert_eq!(exit_e1.code, 7);
    assert_eq!(next_topic(&mut rx).await, "/tasks/exit");
    let pids = svc.pids("c1").await.unwrap();
    assert_eq!(pids.len(), 1);
    svc.delete("c1", &ProcessId::Exec("e1".into()))
        .await
        .unwrap();
    assert!(
        svc.state("c1", &ProcessId::Exec("e1".into()))
            .await
            .is_err(),
        "deleted exec is gone"
    );

    svc.pause("c1").await.unwrap();
    assert_eq!(next_topic(&mut rx).await, "/tasks/paused");
    assert_eq!(init_status(&svc, "c1").await, Ok(Status::PAUSED));
    svc.resume("c1").await.unwrap();
    assert_eq!(next_topic(&mut rx).await, "/tasks/resumed");

    // Deleting a running container is refused; killing it reports exit 137 and releases Wait.
    let err = svc.delete("c1", &ProcessId::Init).await.unwrap_err();
    assert_eq!(err.to_string(), "container c1: still running");
    svc.kill("c1", &ProcessId::Init, 9, false).await.unwrap();
    let exit_init = svc.wait("c1", &ProcessId::Init).await.unwrap();
    assert_eq!(exit_init.code, 137);
    assert_eq!(next_topic(&mut rx).await, "/tasks/exit");
    let err = svc
        .kill("c1", &ProcessId::Init, 15, false)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "container c1: process already finished");

    let resp = svc.delete("c1", &ProcessId::Init).await.unwrap();
    assert_eq!(resp.exit_status, 137);
    assert_eq!(next_topic(&mut rx).await, "/tasks/delete");
    assert_eq!(
        svc.state("c1", &ProcessId::Init)
            .await
            .unwrap_err()
            .to_string(),
        "container c1: not found"
    );

    svc.shutdown().await;
    tokio::time::timeout(std::time::Duration::from_secs(5), exit.wait())
        .await
        .expect("shutdown with no containers left");
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "create c1",
            "start c1",
            "exec c1",
            "ps c1",
            "pause c1",
            "resume c1",
            "kill c1 9 false",
            "delete c1 true"
        ]
    );
}

#[tokio::test]
async fn capability_beyond_the_default_set_refuses_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, fake_config(dir.path(), "")).unwrap();
    let spec = SPEC.replace("\"CAP_KILL\"", "\"CAP_SYS_ADMIN\"");
    std::fs::write(dir.path().join("config.json"), &spec).unwrap();
    let fake = Arc::new(FakeRuntime::new(930_000));
    let (svc, _rx) = fake_service(&config, &fake).await;
    let req = create_request("c3", dir.path());
    let err = svc.create(req.clone()).await.unwrap_err().to_string();
    assert!(
        err.starts_with("container c3: capability CAP_SYS_ADMIN"),
        "{err}"
    );
    assert!(
        fake.calls.lock().unwrap().is_empty(),
        "runc never saw a refused container"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
        spec,
        "a refused spec is left as it was"
    );

    // The operator can allow it explicitly.
    let allow = "[hardening]\nallowed_added_capabilities = [\"SYS_ADMIN\"]\n";
    std::fs::write(&config, fake_config(dir.path(), allow)).unwrap();
    svc.create(req).await.unwrap();
    assert_eq!(fake.calls.lock().unwrap().clone(), ["create c3"]);
}

#[tokio::test]
async fn bad_config_fails_create_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(&config, "runc_root = \"relative\"\n").unwrap();
    let fake = Arc::new(FakeRuntime::new(920_000));
    let (svc, _rx) = fake_service(&config, &fake).await;
    let req = create_request("c2", dir.path());
    let err = svc.create(req).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config {}: runc_root: must be an absolute path",
            config.display()
        )
    );
}
