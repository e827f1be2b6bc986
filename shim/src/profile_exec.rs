//! The learned profile at a CRI exec: under enforce (and for the canary pod), an exec whose
//! binary the runtime never started while the workload learned is refused by the shim before
//! anything runs in the container, and reported (enforcer `shim-exec`); in audit it runs and
//! is reported.
//!
//! The binary is `argv[0]` resolved as the runtime resolves it (palisade-init and runc's init
//! alike): a name with a slash as it is (against the process's working directory), a bare name
//! searched in the process's `PATH` (or runc's default) inside the container's root, where the
//! first regular file with an execute bit wins. What is compared is that **path name**, the one
//! the recording holds for what the runtime started (`Parents::runtime`), never the file it
//! leads to: `/bin/sh` and `/bin/nc` are both busybox, and only the name the runtime ran
//! while learning is allowed. The lookup is made again by the runtime when the exec starts: a
//! file renamed in between by a process of the container is not seen here (landlock still
//! applies to whatever runs).

use std::collections::BTreeSet;
use std::path::Path;

use palisade_events::{Action, Event, Process, Rule, Severity, Source, Workload};
use palisade_profile::{Mode, Observation, Stage, WorkloadId};

use crate::cri::CriContainer;
use crate::report::Reporter;

/// The enforcer named by the events of this check.
pub const ENFORCER: &str = "shim-exec";
/// The rule named by the events of this check.
pub const RULE: &str = "profile-exec";
/// runc's `PATH` when the process environment has none (palisade-init's too).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of this module: a CRI exec refused under an enforced learned profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileExecError {
    #[error("container {container}: exec {exec} refused: {binary} was never started by the runtime while {workload} learned, and its learned profile is enforced (stage {stage}); to allow it, accept the departure with `palisade profile accept {workload}` (containers created afterwards allow it) or pin the workload at audit with `palisade profile pin {workload} audit`")]
    NeverStarted {
        container: String,
        exec: String,
        binary: String,
        workload: String,
        stage: &'static str,
    },
    #[error("container {container}: exec {exec} refused: {name:?} names no executable file in the container's PATH ({path}), and the learned profile of {workload} is enforced (stage {stage})")]
    NotRunnable {
        container: String,
        exec: String,
        name: String,
        path: String,
        workload: String,
        stage: &'static str,
    },
    #[error("container {container}: exec {exec} refused: {name:?} cannot be looked up in the container's root: {reason}; the learned profile of {workload} is enforced (stage {stage})")]
    Lookup {
        container: String,
        exec: String,
        name: String,
        reason: String,
        workload: String,
        stage: &'static str,
    },
}

/// What `argv[0]` of an exec leads the runtime to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The path name the runtime will execute (absolute, normalized), symlinks not followed.
    Path(String),
    /// A bare name with no executable regular file in any `PATH` directory (or an empty
    /// `argv[0]`): the runtime fails it, nothing runs.
    NotRunnable { name: String, path: String },
}

/// What a `PATH` candidate is inside the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Executable,
    /// A regular file without an execute bit (the runtime skips it).
    NotExecutable,
    /// Absent, or not a regular file.
    Absent,
}

/// Resolves `argv0` as the runtime does, with `path_var` the process's `PATH` (`None`: runc's
/// default) and `cwd` its working directory; `probe` says what a candidate path is inside the
/// container.
pub fn resolve(
    argv0: &str,
    cwd: &str,
    path_var: Option<&str>,
    probe: &mut dyn FnMut(&str) -> std::io::Result<Found>,
) -> std::io::Result<Resolved> {
    let absolute = |p: &str| crate::profile::absolute(p, || Some(cwd.to_string()));
    let path = match path_var {
        Some(p) if !p.is_empty() => p,
        _ => DEFAULT_PATH,
    };
    if argv0.is_empty() {
        return Ok(Resolved::NotRunnable {
            name: String::new(),
            path: path.into(),
        });
    }
    if argv0.contains('/') {
        return Ok(Resolved::Path(absolute(argv0)));
    }
    for dir in path.split(':') {
        // An empty PATH entry is the working directory, as in POSIX shells and Go.
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = absolute(&format!("{dir}/{argv0}"));
        if probe(&candidate)? == Found::Executable {
            return Ok(Resolved::Path(candidate));
        }
    }
    Ok(Resolved::NotRunnable {
        name: argv0.into(),
        path: path.into(),
    })
}

/// What `path` is inside the container whose root directory is `root` (`/proc/PID/root` of
/// one of its processes: its mounts count), resolved there (`RESOLVE_IN_ROOT`).
pub fn probe_in_root(root: &Path, path: &str) -> std::io::Result<Found> {
    use std::os::unix::fs::PermissionsExt as _;
    // The root itself must be there: its absence (the container's process gone) is no
    // "not found" of the name.
    std::fs::metadata(root)?;
    let meta = match palisade_monitor::open_in_root(root, Path::new(path), libc::O_PATH)
        .and_then(|f| f.metadata())
    {
        Ok(m) => m,
        // What the runtime's own lookup skips as well.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES)
            ) =>
        {
            return Ok(Found::Absent)
        }
        Err(e) => return Err(e),
    };
    Ok(if !meta.is_file() {
        Found::Absent
    } else if meta.permissions().mode() & 0o111 != 0 {
        Found::Executable
    } else {
        Found::NotExecutable
    })
}

/// A governed container's check of its CRI execs, made at Create from its applied profile.
pub struct ExecGuard {
    cri: CriContainer,
    workload: WorkloadId,
    stage: Stage,
    mode: Mode,
    /// The executables the runtime started while the workload learned (or that any process
    /// may start: more parents than the recording keeps), by path name.
    started_by_runtime: BTreeSet<String>,
    reporter: Reporter,
    node: String,
}

impl std::fmt::Debug for ExecGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecGuard({}, {:?})", self.workload, self.mode)
    }
}

/// What the check decides for one exec.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The runtime started this binary while learning.
    Allow,
    /// Audit: it runs and is reported (the monitor records its departure when it runs).
    Report { binary: String },
    /// Enforce: refused; `departure` is what the workload's document gets (none when nothing
    /// would have run anyway).
    Refuse {
        binary: String,
        departure: Option<Observation>,
    },
}

impl ExecGuard {
    /// The check for container `cri` under `applied`; its events go to `reporter` as node
    /// `node`'s.
    pub fn new(
        cri: &CriContainer,
        applied: &crate::profile_stage::Applied,
        reporter: Reporter,
        node: String,
    ) -> Self {
        let started_by_runtime = applied
            .recording
            .executables
            .iter()
            .filter(|(_, p)| p.runtime || p.any)
            .map(|(path, _)| path.clone())
            .collect();
        ExecGuard {
            cri: cri.clone(),
            workload: applied.workload.clone(),
            stage: applied.stage,
            mode: applied.mode,
            started_by_runtime,
            reporter,
            node,
        }
    }

    /// What the check does, for the container's `profile-applied` event.
    pub fn describe(&self) -> String {
        let what = if self.mode == Mode::Enforce {
            "refused"
        } else {
            "reported"
        };
        format!(
            "; CRI execs of executables the runtime did not start while learning {what} ({ENFORCER}: {} allowed)",
            self.started_by_runtime.len()
        )
    }

    /// The check as a rule of the container's enforcement record (`palisade status`).
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "rule": format!("{}/{}: CRI execs", self.cri.namespace, crate::profile_stage::policy_name(&self.workload)),
            "kind": "process",
            "target": format!("executables the runtime started while learning ({})", self.started_by_runtime.len()),
            "action": if self.mode == Mode::Enforce { "Block" } else { "Audit" },
            "enforcer": ENFORCER,
            "note": "checked at the shim's Exec, by the path name argv[0] resolves to",
        })
    }

    /// The decision for an exec resolved to `resolved`.
    pub fn verdict(&self, resolved: &std::io::Result<Resolved>) -> Verdict {
        let enforce = self.mode == Mode::Enforce;
        match resolved {
            Ok(Resolved::Path(p)) if self.started_by_runtime.contains(p) => Verdict::Allow,
            Ok(Resolved::Path(p)) if enforce => Verdict::Refuse {
                binary: p.clone(),
                departure: Some(Observation::Exec {
                    path: p.clone(),
                    parent: None,
                }),
            },
            Ok(Resolved::Path(p)) => Verdict::Report { binary: p.clone() },
            // Nothing runs: the runtime fails it; enforced, refused here before it tries.
            Ok(Resolved::NotRunnable { name, .. }) if enforce => Verdict::Refuse {
                binary: name.clone(),
                departure: None,
            },
            Err(_) if enforce => Verdict::Refuse {
                binary: String::new(),
                departure: None,
            },
            Ok(Resolved::NotRunnable { .. }) | Err(_) => Verdict::Allow,
        }
    }

    /// Judges exec `exec` of `process` (its OCI process spec) in the container whose root is
    /// `root`: reports what is not allowed, hands a refused exec's departure to `depart`, and
    /// returns the refusal under enforce.
    pub fn check(
        &self,
        exec: &str,
        process: &serde_json::Value,
        root: &Path,
        depart: impl FnOnce(Observation),
    ) -> Result<(), Box<ProfileExecError>> {
        let args: Vec<String> = process["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let argv0 = args.first().map(String::as_str).unwrap_or_default();
        let cwd = process["cwd"].as_str().unwrap_or("/");
        let path_var = process["env"].as_array().and_then(|env| {
            env.iter()
                .filter_map(|v| v.as_str()?.strip_prefix("PATH="))
                .next()
        });
        let resolved = resolve(argv0, cwd, path_var, &mut |p| probe_in_root(root, p));
        let verdict = self.verdict(&resolved);
        let (binary, departure, refused) = match verdict {
            Verdict::Allow => return Ok(()),
            Verdict::Report { binary } => (binary, None, false),
            Verdict::Refuse { binary, departure } => (binary, departure, true),
        };
        let shown = if binary.is_empty() {
            argv0
        } else {
            binary.as_str()
        };
        let message = format!(
            "exec of {shown} by the runtime (a CRI exec) {}: the learned profile of {} never saw the runtime start it (stage {})",
            if refused { "refused" } else { "allowed in audit" },
            self.workload,
            self.stage.name()
        );
        tracing::warn!(container = %self.cri.id, exec, "{message}");
        self.reporter
            .report(self.event(&message, shown, &args, refused));
        if let Some(d) = departure {
            depart(d);
        }
        if !refused {
            return Ok(());
        }
        let (container, exec, workload, stage) = (
            self.cri.id.clone(),
            exec.to_string(),
            self.workload.to_string(),
            self.stage.name(),
        );
        Err(Box::new(match resolved {
            Ok(Resolved::Path(binary)) => ProfileExecError::NeverStarted {
                container,
                exec,
                binary,
                workload,
                stage,
            },
            Ok(Resolved::NotRunnable { name, path }) => ProfileExecError::NotRunnable {
                container,
                exec,
                name,
                path,
                workload,
                stage,
            },
            Err(e) => ProfileExecError::Lookup {
                container,
                exec,
                name: argv0.to_string(),
                reason: e.to_string(),
                workload,
                stage,
            },
        }))
    }

    /// The violation event of one exec not allowed.
    fn event(&self, message: &str, binary: &str, args: &[String], refused: bool) -> Event {
        let rule = Rule {
            name: RULE.into(),
            severity: Severity::clamped(7),
            tags: vec!["palisade-profile".into()],
            message: message.into(),
        };
        let action = if refused {
            Action::Block
        } else {
            Action::Audit
        };
        let mut event = Event::new(
            &self.node,
            Source::Runtime,
            Workload::from(&self.cri),
            rule,
            action,
            ENFORCER,
        )
        .with_evidence("workload", self.workload.to_string())
        .with_evidence(
            "policy",
            crate::profile_stage::policy_name(&self.workload).as_str(),
        )
        .with_evidence("stage", self.stage.name())
        .with_evidence("path", binary)
        .with_evidence("refused", refused);
        event.process = Some(Process {
            binary: binary.into(),
            args: args.to_vec(),
            ..Default::default()
        });
        event
    }
}

#[cfg(test)]
#[path = "profile_exec_tests.rs"]
mod tests;
