//! CRI v1 client over a unix socket and the small helpers the checks share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState,
    ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A long-running container command that exits promptly on SIGTERM: as pid 1 of
/// its own pid namespace, a plain `sleep` would ignore the signal until SIGKILL.
pub const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

/// Both CRI services on one channel; cheap to clone.
#[derive(Clone)]
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI gRPC server listening on `socket`.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let path = socket.to_path_buf();
        let channel =
            Endpoint::try_from("http://[::]:50051")
                .context("cri endpoint")?
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .with_context(|| format!("connect to cri socket {}", socket.display()))?;
        Ok(Self {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
        })
    }

    pub async fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let resp = self
            .rt
            .clone()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            })
            .await
            .with_context(|| format!("run pod sandbox {}", pod_name(config)))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    /// Stops and removes a pod sandbox and everything in it.
    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        let mut rt = self.rt.clone();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .with_context(|| format!("stop pod sandbox {id}"))?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .with_context(|| format!("remove pod sandbox {id}"))?;
        Ok(())
    }

    /// The containers containerd lists for `filter`.
    pub async fn list_containers(
        &self,
        filter: k8s_cri::v1::ContainerFilter,
    ) -> Result<Vec<k8s_cri::v1::Container>> {
        Ok(self
            .rt
            .clone()
            .list_containers(k8s_cri::v1::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .context("list containers")?
            .into_inner()
            .containers)
    }

    /// Removes every pod sandbox containerd knows about (teardown helper).
    pub async fn remove_all_pods(&self) -> Result<usize> {
        let pods = self
            .rt
            .clone()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .context("list pod sandboxes")?
            .into_inner()
            .items;
        let mut errors = Vec::new();
        for p in &pods {
            if let Err(e) = self.remove_pod(&p.id).await {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(pods.len())
    }

    pub async fn create_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("");
        let resp = self
            .rt
            .clone()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .with_context(|| format!("create container {name}"))?;
        Ok(resp.into_inner().container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.rt
            .clone()
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .with_context(|| format!("start container {id}"))?;
        Ok(())
    }

    /// Creates and starts a container.
    pub async fn run_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String> {
        let id = self.create_container(pod_id, config, pod_config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    pub async fn stop_container(&self, id: &str, timeout_s: i64) -> Result<()> {
        self.rt
            .clone()
            .stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_s,
            })
            .await
            .with_context(|| format!("stop container {id}"))?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.rt
            .clone()
            .remove_container(RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .with_context(|| format!("remove container {id}"))?;
        Ok(())
    }

    /// The containers of pod sandbox `pod_id`, in any state.
    pub async fn pod_containers(&self, pod_id: &str) -> Result<Vec<Container>> {
        self.list_containers(ContainerFilter {
            pod_sandbox_id: pod_id.to_string(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("list the containers of pod {pod_id}"))
    }

    /// What the kubelet shows for container `name` of a pod: its current container (the newest
    /// of that name) and its Last State (the one created before it, when any), by creation
    /// time as the kubelet sorts them.
    pub async fn kubelet_view(
        &self,
        pod_id: &str,
        name: &str,
    ) -> Result<(ContainerStatus, Option<ContainerStatus>)> {
        let mut mine: Vec<Container> = self
            .pod_containers(pod_id)
            .await?
            .into_iter()
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let mut statuses = Vec::new();
        for c in mine.iter().take(2) {
            statuses.push(self.container_status(&c.id).await?);
        }
        let mut it = statuses.into_iter();
        let current = it
            .next()
            .with_context(|| format!("pod {pod_id} has no container {name}"))?;
        Ok((current, it.next()))
    }

    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.container_status_verbose(id, false).await?.0)
    }

    /// Status plus containerd's verbose info map (holds the pid, the runtime spec and more).
    pub async fn container_status_verbose(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>)> {
        let resp = self
            .rt
            .clone()
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose,
            })
            .await
            .with_context(|| format!("container status {id}"))?
            .into_inner();
        let status = resp
            .status
            .with_context(|| format!("container status {id}: empty status"))?;
        Ok((status, resp.info))
    }

    /// The host pid of a running container's init process.
    pub async fn container_pid(&self, id: &str) -> Result<i32> {
        let (_, info) = self.container_status_verbose(id, true).await?;
        info_pid(&info).with_context(|| format!("container {id}"))
    }

    /// The host pid of a pod sandbox's pause process.
    pub async fn sandbox_pid(&self, id: &str) -> Result<i32> {
        let info = self.pod_status(id, true).await?.info;
        info_pid(&info).with_context(|| format!("pod sandbox {id}"))
    }

    /// CRI's status of pod sandbox `id`, with containerd's `info` when `verbose`.
    pub async fn pod_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<k8s_cri::v1::PodSandboxStatusResponse> {
        Ok(self
            .rt
            .clone()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose,
            })
            .await
            .with_context(|| format!("pod sandbox status {id}"))?
            .into_inner())
    }

    /// Polls until the container has exited, failing after `timeout`.
    pub async fn wait_exited(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.container_status(id).await?;
            if st.state == ContainerState::ContainerExited as i32 {
                return Ok(st);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "container {id}: not exited after {timeout:?} (state {})",
                    state_name(st.state)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a command in the container and returns (stdout, stderr, exit code).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<(String, String, i32)> {
        let resp = self
            .rt
            .clone()
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            })
            .await
            .with_context(|| format!("exec sync {cmd:?} in {id}"))?
            .into_inner();
        Ok((
            String::from_utf8_lossy(&resp.stdout).into_owned(),
            String::from_utf8_lossy(&resp.stderr).into_owned(),
            resp.exit_code,
        ))
    }

    /// Runs a shell snippet and returns its stdout, failing on a non-zero exit.
    pub async fn sh(&self, id: &str, script: &str) -> Result<String> {
        self.exec_ok(id, &["sh", "-c", script]).await
    }

    /// Runs `cmd` in container `id`, which must exit 0; its stdout.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> Result<String> {
        let (out, err, code) = self.exec_sync(id, cmd, 20).await?;
        if code != 0 {
            bail!(
                "`{}` exited {code}: stdout {out:?} stderr {err:?}",
                cmd.join(" ")
            );
        }
        Ok(out)
    }

    /// Runs `cmd` in container `id`, which must fail with `want` in its stderr.
    pub async fn refused(&self, id: &str, cmd: &[&str], want: &str) -> Result<()> {
        let (_, err, code) = self.exec_sync(id, cmd, 10).await?;
        if code == 0 || !err.contains(want) {
            bail!("{cmd:?} exited {code}, want a failure naming {want:?}: stderr {err:?}");
        }
        Ok(())
    }
}

/// The `pid` in containerd's verbose status info (a JSON document under "info").
fn info_pid(info: &HashMap<String, String>) -> Result<i32> {
    let raw = info.get("info").context("verbose status has no info")?;
    let v: serde_json::Value = serde_json::from_str(raw).context("parse verbose info")?;
    let pid = v
        .get("pid")
        .and_then(serde_json::Value::as_i64)
        .context("verbose info has no pid")?;
    if pid <= 0 {
        bail!("pid {pid} (not running)");
    }
    Ok(i32::try_from(pid)?)
}

pub fn pod_name(config: &PodSandboxConfig) -> &str {
    config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or("")
}

pub fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "CREATED",
        Ok(ContainerState::ContainerRunning) => "RUNNING",
        Ok(ContainerState::ContainerExited) => "EXITED",
        Ok(ContainerState::ContainerUnknown) => "UNKNOWN",
        Err(_) => "INVALID",
    }
}

/// A pod sandbox config with unique name and uid, its own log dir and cgroup parent.
pub fn pod_config(name: &str, uid: &str, log_dir: &Path, cgroup_root: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: "palisade-conformance".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_root}/pod{uid}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(own_pid_namespace()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container config that runs `command` with its log at `<name>/<attempt>.log`.
pub fn container_config(
    name: &str,
    attempt: u32,
    image: &str,
    command: &[&str],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: log_rel_path(name, attempt).display().to_string(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(own_pid_namespace()),
                masked_paths: KUBELET_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
                readonly_paths: KUBELET_READONLY_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A bind mount of the host's `host` at `container_path`, read-only when `readonly`.
pub fn bind_mount(container_path: &str, host: &Path, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.to_string(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// The security context of a container config, created when missing.
pub fn security(cc: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The paths the kubelet asks CRI to mask in every container whose `procMount` is `Default`
/// (Kubernetes' `pkg/securitycontext`, 1.31 and later): a harness request without them reads
/// as `procMount: Unmasked`, which no ordinary pod asks for.
pub const KUBELET_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths the kubelet asks CRI to make read-only with `procMount: Default`.
pub const KUBELET_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Each container in its own pid namespace, as the kubelet asks unless the pod
/// shares its process namespace (CRI's zero value would share the sandbox's).
fn own_pid_namespace() -> NamespaceOption {
    NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    }
}

pub fn log_rel_path(name: &str, attempt: u32) -> PathBuf {
    PathBuf::from(format!("{name}/{attempt}.log"))
}
