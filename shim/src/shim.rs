//! The shim binary protocol: `start` (one shim per pod), `delete` (cleanup after a dead shim) and serve.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config as ShimLibConfig, Error as LibError, Flags, StartOpts};

use crate::bundle::{unmount, RuntimeRecord, RUNTIME_FILE};
use crate::config::{Config, RuntimeOptions};
use crate::cri::SANDBOX_ID as SANDBOX_ID_ANNOTATION;
use crate::events::{self, EventSender};
use crate::runc::{ContainerRuntime, Runc, RuncError};
use crate::service::TaskService;
use crate::task::TaskAdapter;

/// Exit status reported for a container whose shim died (SIGKILL).
const KILLED_STATUS: u32 = 128 + 9;

/// One palisade shim process.
pub struct PalisadeShim {
    namespace: String,
    /// containerd's grpc address (`-address`).
    address: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
    /// Options handed over by the `start` process; a Create without options uses them.
    start_options: RuntimeOptions,
}

#[async_trait]
impl Shim for PalisadeShim {
    type T = TaskAdapter;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut ShimLibConfig) -> Self {
        let mut start_options = RuntimeOptions::default();
        if args.action.is_empty() {
            crate::logging::init_serve_logging(&args.id, args.debug);
            let mut stdin = Vec::new();
            if std::io::stdin().read_to_end(&mut stdin).is_ok() {
                match RuntimeOptions::from_any_bytes(&stdin) {
                    Ok(o) => start_options = o,
                    Err(e) => tracing::warn!("shim {}: start options: {e}", args.id),
                }
            }
        }
        PalisadeShim {
            start_options,
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, LibError> {
        let mut stdin = Vec::new();
        std::io::stdin()
            .read_to_end(&mut stdin)
            .map_err(|e| LibError::Other(format!("read runtime options from stdin: {e}")))?;
        let options = RuntimeOptions::from_any_bytes(&stdin)
            .map_err(|e| LibError::InvalidArgument(e.to_string()))?;
        // Fail at start, not at the first Create, when the configuration is broken.
        options
            .load_config()
            .map_err(|e| LibError::InvalidArgument(e.to_string()))?;
        let grouping = group_id(&opts.id, Path::new("config.json"));
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        if socket_serves(&address) {
            write_address(&address)?;
            return Ok(address);
        }
        spawn_server(&opts, &address, &stdin, options.shim_cgroup.as_deref())?;
        write_address(&address)?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, LibError> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().map_err(|e| LibError::Other(format!("current dir: {e}")))?
        } else {
            self.bundle.clone().into()
        };
        let runc = runc_for_bundle(&bundle);
        match runc.delete(&self.id, true).await {
            Ok(()) | Err(RuncError::NotFound { .. }) => {}
            Err(e) => eprintln!("container {}: cleanup: {e}", self.id),
        }
        let rootfs = bundle.join("rootfs");
        if rootfs.exists() {
            unmount(&rootfs);
        }
        Ok(DeleteResponse {
            pid: 0,
            exit_status: KILLED_STATUS,
            exited_at: MessageField::some(Timestamp::from(SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskAdapter {
        let (sender, rx) = EventSender::channel();
        tokio::spawn(events::forward(publisher, self.namespace.clone(), rx));
        let svc = match TaskService::new(
            self.namespace.clone(),
            sender,
            self.exit.clone(),
            self.start_options.clone(),
            crate::runc::runc_factory(),
        )
        .await
        {
            Ok(svc) => svc.with_containerd(&self.address),
            Err(e) => {
                // Without the reaper subscription no exit would ever be reported: refuse to serve.
                tracing::error!("shim {}: {e}", self.id);
                std::process::exit(1);
            }
        };
        TaskAdapter::new(Arc::new(svc))
    }
}

/// The pod a container belongs to, so that all containers of a pod share one shim.
pub fn group_id(id: &str, config_json: &Path) -> String {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    std::fs::read(config_json)
        .ok()
        .and_then(|b| serde_json::from_slice::<Spec>(&b).ok())
        .and_then(|s| s.annotations.get(SANDBOX_ID_ANNOTATION).cloned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_string())
}

fn socket_serves(address: &str) -> bool {
    match containerd_shim::util::connect(address) {
        Ok(fd) => {
            // SAFETY: `connect` returns a fresh descriptor that nothing else owns.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            true
        }
        Err(_) => false,
    }
}

fn write_address(address: &str) -> Result<(), LibError> {
    std::fs::write("address", address)
        .map_err(|e| LibError::Other(format!("write address file: {e}")))
}

/// Starts the serving shim and returns once it listens (it closes its stdout then).
fn spawn_server(
    opts: &StartOpts,
    address: &str,
    options: &[u8],
    shim_cgroup: Option<&str>,
) -> Result<(), LibError> {
    let exe =
        std::env::current_exe().map_err(|e| LibError::Other(format!("own executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &opts.namespace,
        "-id",
        &opts.id,
        "-address",
        &opts.address,
        "-socket",
        address,
    ]);
    if opts.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LibError::Other(format!("spawn shim server: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(options);
    }
    if let Some(cg) = shim_cgroup {
        if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(cg, child.id()) {
            eprintln!("shim cgroup {cg}: {e}");
        }
    }
    // Only ever raise the score: lowering it needs CAP_SYS_RESOURCE, which root may lack.
    if let Err(e) = containerd_shim::cgroup::adjust_oom_score(child.id()) {
        eprintln!("shim oom score: {e}");
    }
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| LibError::Other("shim server stdout".into()))?;
    let mut sink = Vec::new();
    let _ = out.read_to_end(&mut sink);
    Ok(())
}

fn runc_for_bundle(bundle: &Path) -> Runc {
    let record = std::fs::read(bundle.join(RUNTIME_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<RuntimeRecord>(&b).ok());
    match record {
        Some(r) => Runc::new(r.runc_binary, r.runc_root, r.systemd_cgroup),
        None => {
            let c = Config::default();
            Runc::new(c.runc_binary, c.runc_root, c.systemd_cgroup)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_sandbox_annotation() {
        let (dir, cfg) = crate::test_support::temp_path("config.json");
        std::fs::write(
            &cfg,
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"pod123"}}"#,
        )
        .unwrap();
        assert_eq!(group_id("ctr456", &cfg), "pod123");
        std::fs::write(&cfg, r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(group_id("ctr456", &cfg), "ctr456");
        assert_eq!(
            group_id("ctr456", &dir.path().join("missing.json")),
            "ctr456"
        );
    }

    #[test]
    fn delete_finds_runc_from_bundle_record() {
        let dir = tempfile::tempdir().unwrap();
        let rec = RuntimeRecord {
            runc_binary: "/opt/runc".into(),
            runc_root: "/run/p".into(),
            systemd_cgroup: false,
        };
        std::fs::write(
            dir.path().join(RUNTIME_FILE),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let runc = runc_for_bundle(dir.path());
        assert_eq!(runc.root(), Path::new("/run/p"));
        let none = runc_for_bundle(&dir.path().join("nothing"));
        assert_eq!(none.root(), Path::new(crate::config::DEFAULT_RUNC_ROOT));
    }
}
