//! Exec: a process added to a running container, hardened like its init and, when the init
//! runs behind palisade-init, wrapped by it too.

use std::time::SystemTime;

use containerd_shim::api::ExecProcessRequest;
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};

use super::table::{finish_exit, record_exit, Exit, Process, ProcessId, Transition};
use super::TaskService;
use crate::bundle::{pid_file, read_config, read_pid};
use crate::error::ShimError;
use crate::stdio::{PendingIo, StdioPaths};

impl TaskService {
    pub(super) async fn start_exec(&self, id: &str, exec: String) -> Result<u32, ShimError> {
        let key = ProcessId::Exec(exec.clone());
        let (runc, bundle, stdio, spec, wrapped) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            c.init_state()
                .check(Transition::Exec, || format!("container {id}"))?;
            let p = c.process(&key)?;
            p.state
                .check(Transition::Start, || format!("container {id}: exec {exec}"))?;
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
        let launched = runc
            .exec(id, &spec_path, pending.launch_opts(&pid_path, &log))
            .await;
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
            p.state = p.state.after(Transition::Start);
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

    /// Under a learned profile, an exec whose binary the runtime never started while the
    /// workload learned, or whose command no CRI exec ran then, is reported, and refused when
    /// the profile is enforced (`crate::profile_exec`), before anything runs in the
    /// container. While the workload learns, the exec's command is recorded.
    async fn check_learned_exec(&self, id: &str, exec: &str, spec: &[u8]) -> Result<(), ShimError> {
        let (guard, pid) = {
            let table = self.table.lock().await;
            let c = table.container(id)?;
            (
                c.exec_guard.clone(),
                c.processes.get(&ProcessId::Init).map_or(0, |p| p.pid),
            )
        };
        let monitor = self.monitor.get().and_then(Option::as_ref);
        let recorders = monitor
            .map(|m| m.recorders.clone())
            .filter(|r| r.learns(id));
        if guard.is_none() && recorders.is_none() {
            return Ok(());
        }
        let process: serde_json::Value =
            serde_json::from_slice(spec).map_err(|source| ShimError::Json {
                context: format!("container {id}: exec {exec}: process spec"),
                source,
            })?;
        // The container's own view of its files, mounts included.
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        if let Some(recorders) = recorders {
            let inv = crate::profile_exec::Invocation::of(&process, &root);
            match inv.command() {
                Some(argv) => {
                    recorders.record(id, &palisade_profile::Observation::RuntimeCommand { argv })
                }
                None => {
                    tracing::info!(container = %id, exec, args = ?inv.args, "learned profile: the exec runs nothing in the container ({:?}), no command recorded", inv.resolved)
                }
            }
        }
        let Some(guard) = guard else {
            return Ok(());
        };
        let governors = monitor.map(|m| m.governors.clone());
        guard.check(exec, &process, &root, |departure, refused| {
            if !governors
                .as_ref()
                .is_some_and(|g| g.depart(id, departure, refused))
            {
                tracing::warn!(container = %id, exec, "learned profile: the exec's departure is not recorded: the container is not watched");
            }
        })?;
        Ok(())
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
        self.check_learned_exec(&id, &req.exec_id, &spec).await?;
        {
            let mut table = self.table.lock().await;
            let c = table.container_mut(&id)?;
            c.init_state()
                .check(Transition::Exec, || format!("container {id}"))?;
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

/// A light check of JSON that runc will read in full: an object, with the keys runc cannot do without.
///
/// A typed parse here would reject fields newer than our spec crate that runc understands.
pub(super) fn check_json_object(bytes: &[u8], required: &[&str]) -> Result<(), String> {
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
