//! The learned profile at a CRI exec: under enforce (and for the canary pod), an exec whose
//! binary the runtime never started while the workload learned, or whose command no CRI exec
//! ran then, is refused by the shim before anything runs in the container, and reported
//! (enforcer `shim-exec`); in audit it runs and is reported. While the workload learns, each
//! CRI exec's command is recorded ([`Invocation::command`]).
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
//!
//! The command is the whole `argv`, its first word replaced by that path name: an exec probe
//! `busybox cat /data/seed` allows that command, never `busybox sh`, though both run the same
//! file. A document recorded before commands were (`Recording::runtime_commands` is `None`)
//! is judged by the path name alone.

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
    #[error("container {container}: exec {exec} refused: no CRI exec ran the command {command} while {workload} learned (the runtime did start {binary}), and its learned profile is enforced (stage {stage}); to allow it, accept the departure with `palisade profile accept {workload}` (containers created afterwards allow it) or pin the workload at audit with `palisade profile pin {workload} audit`")]
    NewCommand {
        container: String,
        exec: String,
        binary: String,
        command: String,
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

/// One CRI exec: the words of its process spec and what `argv[0]` leads the runtime to run.
#[derive(Debug)]
pub struct Invocation {
    pub args: Vec<String>,
    pub resolved: std::io::Result<Resolved>,
}

impl Invocation {
    /// The exec of `process` (its OCI process spec) in the container whose root is `root`.
    pub fn of(process: &serde_json::Value, root: &Path) -> Self {
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
        Invocation { args, resolved }
    }

    /// The command a recording holds for this exec: the path name the runtime runs, then the
    /// arguments as given; `None` when nothing would run.
    pub fn command(&self) -> Option<Vec<String>> {
        let Ok(Resolved::Path(p)) = &self.resolved else {
            return None;
        };
        Some(
            std::iter::once(p.clone())
                .chain(self.args.iter().skip(1).cloned())
                .collect(),
        )
    }

    fn argv0(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or_default()
    }
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
    /// The commands CRI execs ran while the workload learned; `None`: not recorded (an older
    /// document), the path name alone decides.
    commands: Option<BTreeSet<Vec<String>>>,
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
    /// The runtime started this binary while learning, and a CRI exec ran this command.
    Allow,
    /// Audit: it runs and is reported; `departures` are what the workload's document gets
    /// from here (the new command: the monitor records an exec's departure when it runs).
    Report {
        binary: String,
        departures: Vec<Observation>,
    },
    /// Enforce: refused; `departures` are what the workload's document gets (none when
    /// nothing would have run anyway).
    Refuse {
        binary: String,
        departures: Vec<Observation>,
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
            commands: applied.recording.runtime_commands.clone(),
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
        match &self.commands {
            Some(c) => format!(
                "; CRI execs other than the commands CRI execs ran while learning {what} ({ENFORCER}, commands allowed: {})",
                c.len()
            ),
            None => format!(
                "; CRI execs of executables the runtime did not start while learning {what} ({ENFORCER}: {} allowed)",
                self.started_by_runtime.len()
            ),
        }
    }

    /// The check as a rule of the container's enforcement record (`palisade status`).
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "rule": format!("{}/{}: CRI execs", self.cri.namespace, crate::profile_stage::policy_name(&self.workload)),
            "kind": "process",
            "target": match &self.commands {
                Some(c) => format!("the commands CRI execs ran while learning ({})", c.len()),
                None => format!("executables the runtime started while learning ({})", self.started_by_runtime.len()),
            },
            "action": if self.mode == Mode::Enforce { "Block" } else { "Audit" },
            "enforcer": ENFORCER,
            "note": match &self.commands {
                Some(_) => "checked at the shim's Exec: argv whole, argv[0] as the path name it resolves to",
                None => "checked at the shim's Exec, by the path name argv[0] resolves to (the profile holds no commands: recorded before they were)",
            },
        })
    }

    /// The decision for exec `inv`.
    pub fn verdict(&self, inv: &Invocation) -> Verdict {
        let enforce = self.mode == Mode::Enforce;
        match &inv.resolved {
            Ok(Resolved::Path(p)) => {
                let started = self.started_by_runtime.contains(p);
                let command = inv.command().unwrap_or_default();
                let ran = self.commands.as_ref().is_none_or(|c| c.contains(&command));
                if started && ran {
                    return Verdict::Allow;
                }
                let mut departures = Vec::new();
                // In audit the exec runs and the monitor records its departure then.
                if !started && enforce {
                    departures.push(Observation::Exec {
                        path: p.clone(),
                        parent: None,
                    });
                }
                if !ran {
                    departures.push(Observation::RuntimeCommand { argv: command });
                }
                let binary = p.clone();
                if enforce {
                    Verdict::Refuse { binary, departures }
                } else {
                    Verdict::Report { binary, departures }
                }
            }
            // Nothing runs: the runtime fails it; enforced, refused here before it tries.
            Ok(Resolved::NotRunnable { name, .. }) if enforce => Verdict::Refuse {
                binary: name.clone(),
                departures: Vec::new(),
            },
            Err(_) if enforce => Verdict::Refuse {
                binary: String::new(),
                departures: Vec::new(),
            },
            Ok(Resolved::NotRunnable { .. }) | Err(_) => Verdict::Allow,
        }
    }

    /// Judges exec `exec` of `process` (its OCI process spec) in the container whose root is
    /// `root`: reports what is not allowed, hands each departure to `depart` (with whether it
    /// was refused), and returns the refusal under enforce.
    pub fn check(
        &self,
        exec: &str,
        process: &serde_json::Value,
        root: &Path,
        mut depart: impl FnMut(Observation, bool),
    ) -> Result<(), Box<ProfileExecError>> {
        let inv = Invocation::of(process, root);
        let verdict = self.verdict(&inv);
        let (binary, departures, refused) = match verdict {
            Verdict::Allow => return Ok(()),
            Verdict::Report { binary, departures } => (binary, departures, false),
            Verdict::Refuse { binary, departures } => (binary, departures, true),
        };
        let argv0 = inv.argv0().to_string();
        let shown_binary = if binary.is_empty() {
            argv0.as_str()
        } else {
            binary.as_str()
        };
        let started = self.started_by_runtime.contains(&binary);
        let command = inv
            .command()
            .map(|c| palisade_profile::quoted_command(&c))
            .unwrap_or_default();
        let why = if started {
            format!("no CRI exec ran the command {command} while it learned")
        } else {
            "it never saw the runtime start it".to_string()
        };
        let message = format!(
            "exec of {shown_binary} by the runtime (a CRI exec) {}: the learned profile of {}: {why} (stage {})",
            if refused { "refused" } else { "allowed in audit" },
            self.workload,
            self.stage.name()
        );
        tracing::warn!(container = %self.cri.id, exec, "{message}");
        self.reporter
            .report(self.event(&message, shown_binary, &inv.args, refused));
        for d in departures {
            depart(d, refused);
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
        Err(Box::new(match inv.resolved {
            Ok(Resolved::Path(binary)) if started => ProfileExecError::NewCommand {
                container,
                exec,
                binary,
                command,
                workload,
                stage,
            },
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
                name: argv0,
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
