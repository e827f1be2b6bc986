//! Driving the runc binary: every container operation the shim performs goes through here.
//!
//! The shim is a subreaper whose SIGCHLD handler reaps every child (see `containerd_shim`), so a
//! runc invocation cannot be waited on directly: each call subscribes to the reaper's exit events
//! before spawning and waits for its own pid.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim::monitor::{monitor_subscribe, monitor_unsubscribe, Subject, Topic};
use serde::Deserialize;

use crate::config::Config;

/// A runc invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("runc {command}: spawn {binary}: {source}")]
    Spawn {
        command: String,
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runc {command}: exit status {status}: {message}")]
    Failed {
        command: String,
        status: i32,
        message: String,
    },
    #[error("container {id}: not found by runc")]
    NotFound { id: String },
    #[error("runc {command}: reaper: {reason}")]
    Reaper { command: String, reason: String },
    #[error("runc {command}: bad output: {reason}")]
    Output { command: String, reason: String },
}

/// The stdio a runc child hands to the container process when there is no terminal.
#[derive(Debug, Default)]
pub struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The OCI runtime operations the task service needs: runc in production, a recording fake in tests.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// Sets the container up; its init waits for `start`. Writes the init's pid to `opts.pid_file`.
    async fn create(&self, id: &str, bundle: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError>;
    async fn start(&self, id: &str) -> Result<(), RuncError>;
    /// Starts the extra process that the process.json at `process` describes; writes its pid to
    /// `opts.pid_file`.
    async fn exec(&self, id: &str, process: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError>;
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError>;
    async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError>;
    async fn pause(&self, id: &str) -> Result<(), RuncError>;
    async fn resume(&self, id: &str) -> Result<(), RuncError>;
    async fn update(&self, id: &str, resources_json: &Path) -> Result<(), RuncError>;
    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuncError>;
    /// Whether the container's init is a real process the shim may signal itself (through a
    /// pidfd) instead of asking the runtime; the fake of the tests says no.
    fn signals_init_directly(&self) -> bool {
        false
    }
}

/// runc itself: each operation is one runc command line.
#[async_trait::async_trait]
impl ContainerRuntime for Runc {
    fn signals_init_directly(&self) -> bool {
        true
    }

    /// `runc create`: sets the container up, its init process waiting for `start`.
    async fn create(&self, id: &str, bundle: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError> {
        let command: [OsString; 3] = ["create".into(), "--bundle".into(), bundle.into()];
        self.launch_with("create", command, id, opts).await
    }

    /// `runc exec --detach`: starts an extra process described by a process.json.
    async fn exec(&self, id: &str, process: &Path, opts: LaunchOpts<'_>) -> Result<(), RuncError> {
        let command: [OsString; 4] = [
            "exec".into(),
            "--detach".into(),
            "--process".into(),
            process.into(),
        ];
        self.launch_with("exec", command, id, opts).await
    }

    async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.simple("start", &["start", id], id).await.map(drop)
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.simple("kill", &args, id).await.map(drop)
    }

    async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let args: &[&str] = if force {
            &["delete", "--force", id]
        } else {
            &["delete", id]
        };
        self.simple("delete", args, id).await.map(drop)
    }

    async fn pause(&self, id: &str) -> Result<(), RuncError> {
        self.simple("pause", &["pause", id], id).await.map(drop)
    }

    async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.simple("resume", &["resume", id], id).await.map(drop)
    }

    /// `runc update --resources`: applies a LinuxResources JSON file.
    async fn update(&self, id: &str, resources_json: &Path) -> Result<(), RuncError> {
        let path = resources_json.to_string_lossy();
        self.simple("update", &["update", "--resources", &path, id], id)
            .await
            .map(drop)
    }

    /// `runc ps --format json`: the host pids of the container's processes.
    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuncError> {
        let out = self
            .simple("ps", &["ps", "--format", "json", id], id)
            .await?;
        serde_json::from_slice::<Option<Vec<i32>>>(&out)
            .map(Option::unwrap_or_default)
            .map_err(|e| RuncError::Output {
                command: "ps".into(),
                reason: e.to_string(),
            })
    }
}

/// Makes the runtime for a configuration: runc, or a fake in tests.
pub type RuntimeFactory =
    std::sync::Arc<dyn Fn(&Config) -> std::sync::Arc<dyn ContainerRuntime> + Send + Sync>;

/// The production factory: runc as the configuration describes it.
pub fn runc_factory() -> RuntimeFactory {
    std::sync::Arc::new(|c: &Config| -> std::sync::Arc<dyn ContainerRuntime> {
        std::sync::Arc::new(Runc::new(
            c.runc_binary.clone(),
            c.runc_root.clone(),
            c.systemd_cgroup,
        ))
    })
}

/// How runc is found and where it keeps its state.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: String,
    root: PathBuf,
    systemd_cgroup: bool,
}

/// Options of `runc create` and `runc exec`.
#[derive(Debug)]
pub struct LaunchOpts<'a> {
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub log_file: &'a Path,
    pub stdio: ChildStdio,
}

/// The parts of `runc state` the shim uses.
#[derive(Debug, Clone, Deserialize)]
pub struct RuncState {
    pub status: String,
    pub pid: i32,
}

struct Output {
    status: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Runc {
    pub fn new(binary: impl Into<String>, root: impl Into<PathBuf>, systemd_cgroup: bool) -> Self {
        Runc {
            binary: binary.into(),
            root: root.into(),
            systemd_cgroup,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn base_args(&self, log_file: Option<&Path>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--root".into(), self.root.clone().into_os_string()];
        if let Some(log) = log_file {
            args.extend([
                "--log".into(),
                log.as_os_str().to_owned(),
                "--log-format".into(),
                "json".into(),
            ]);
        }
        if self.systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        args
    }

    /// Launches `runc <command>` for container `id` with the pid file, console socket, log and
    /// stdio of `opts`.
    async fn launch_with(
        &self,
        what: &'static str,
        command: impl IntoIterator<Item = OsString>,
        id: &str,
        opts: LaunchOpts<'_>,
    ) -> Result<(), RuncError> {
        let mut args = self.base_args(Some(opts.log_file));
        args.extend(command);
        args.extend(["--pid-file".into(), opts.pid_file.into()]);
        if let Some(sock) = opts.console_socket {
            args.extend(["--console-socket".into(), sock.into()]);
        }
        args.push(id.into());
        self.launch(what, args, opts.stdio, opts.log_file).await
    }

    pub async fn state(&self, id: &str) -> Result<RuncState, RuncError> {
        let out = self.simple("state", &["state", id], id).await?;
        serde_json::from_slice(&out).map_err(|e| RuncError::Output {
            command: "state".into(),
            reason: e.to_string(),
        })
    }

    async fn simple(&self, command: &str, args: &[&str], id: &str) -> Result<Vec<u8>, RuncError> {
        let mut full = self.base_args(None);
        full.extend(args.iter().map(OsString::from));
        let out = self
            .run(command, full, Stdio::null(), Stdio::piped(), Stdio::piped())
            .await?;
        if out.status == 0 {
            return Ok(out.stdout);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(classify(command, out.status, message, id))
    }

    async fn launch(
        &self,
        command: &str,
        args: Vec<OsString>,
        stdio: ChildStdio,
        log: &Path,
    ) -> Result<(), RuncError> {
        let to_stdio = |fd: Option<OwnedFd>| fd.map(Stdio::from).unwrap_or_else(Stdio::null);
        let out = self
            .run(
                command,
                args,
                to_stdio(stdio.stdin),
                to_stdio(stdio.stdout),
                to_stdio(stdio.stderr),
            )
            .await?;
        if out.status == 0 {
            return Ok(());
        }
        let message = last_log_error(log)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        Err(RuncError::Failed {
            command: command.into(),
            status: out.status,
            message,
        })
    }

    async fn run(
        &self,
        command: &str,
        args: Vec<OsString>,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Output, RuncError> {
        let reaper_err = |reason: String| RuncError::Reaper {
            command: command.into(),
            reason,
        };
        // Subscribe before spawning: the reaper may collect the child before spawn() returns.
        let mut sub = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| reaper_err(e.to_string()))?;
        let spawned = Command::new(&self.binary)
            .args(&args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                let _ = monitor_unsubscribe(sub.id).await;
                return Err(RuncError::Spawn {
                    command: command.into(),
                    binary: self.binary.clone(),
                    source,
                });
            }
        };
        let pid = child.id() as i32;
        let out_pipe = child.stdout.take();
        let err_pipe = child.stderr.take();
        let read_out = tokio::task::spawn_blocking(move || read_all(out_pipe));
        let read_err = tokio::task::spawn_blocking(move || read_all(err_pipe));
        let mut status = None;
        while let Some(ev) = sub.rx.recv().await {
            if matches!(ev.subject, Subject::Pid(p) if p == pid) {
                status = Some(ev.exit_code);
                break;
            }
        }
        let _ = monitor_unsubscribe(sub.id).await;
        let status = status.ok_or_else(|| reaper_err(format!("no exit event for pid {pid}")))?;
        let stdout = read_out.await.unwrap_or_default();
        let stderr = read_err.await.unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn read_all<R: std::io::Read>(pipe: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf);
    }
    buf
}

fn classify(command: &str, status: i32, message: String, id: &str) -> RuncError {
    let lower = message.to_lowercase();
    if lower.contains("does not exist") || lower.contains("container not found") {
        return RuncError::NotFound { id: id.to_string() };
    }
    RuncError::Failed {
        command: command.into(),
        status,
        message,
    }
}

/// runc writes JSON log lines; the last one at level error says why it failed.
fn last_log_error(log: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .find(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_not_found() {
        let e = classify("kill", 1, "container \"abc\" does not exist".into(), "abc");
        assert!(matches!(e, RuncError::NotFound { ref id } if id == "abc"));
        let e = classify("kill", 1, "container not running".into(), "abc");
        assert_eq!(
            e.to_string(),
            "runc kill: exit status 1: container not running"
        );
    }

    #[test]
    fn reads_last_error_from_json_log() {
        let (dir, log) = crate::test_support::temp_path("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"starting\",\"time\":\"t\"}\n\
             {\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\",\"time\":\"t\"}\n\
             {\"level\":\"warning\",\"msg\":\"cleanup\",\"time\":\"t\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_log_error(&log).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_log_error(&dir.path().join("missing")), None);
    }

    #[test]
    fn global_flags_come_first() {
        let r = Runc::new("runc", "/run/x", true);
        let args = r.base_args(Some(Path::new("/b/log.json")));
        let args: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/x",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "--systemd-cgroup"
            ]
        );
    }
}
