//! `palisade profile show|export|promote|pin|hold|unpin|accept`: the learned per-workload
//! profiles the shims keep in the node's state directory (`docs/profiles.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use palisade_profile::persist::{self, Document, Loaded};
use palisade_profile::{Cidr, Command, Event, Export, Stage, WorkloadId};
use serde::Serialize;

/// Where the shims keep the learned profiles unless their configuration's `[profile]
/// state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/palisade/profiles";

/// A profile command that cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ProfileCliError {
    #[error("workload {0:?}: expected NAMESPACE/NAME")]
    WorkloadSyntax(String),
    #[error(transparent)]
    Workload(#[from] palisade_profile::RecordError),
    #[error("workload {workload}: no learned profile in {dir}")]
    Absent { workload: String, dir: PathBuf },
    #[error(transparent)]
    Persist(#[from] palisade_profile::PersistError),
    #[error(transparent)]
    Export(#[from] palisade_profile::ExportError),
    #[error(transparent)]
    Stage(#[from] palisade_profile::StageError),
    #[error("stage {0:?}: expected learn, audit, canary or enforce")]
    StageName(String),
    #[error("format {0:?}: expected kubearmor, seccomp or networkpolicy")]
    Format(String),
    #[error("selector {0:?}: expected key=value")]
    Selector(String),
    #[error("service range {0:?}: expected an address/prefix such as 10.96.0.0/12")]
    ServiceRange(String),
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    KubeArmor,
    Seccomp,
    NetworkPolicy,
}

impl std::str::FromStr for Format {
    type Err = ProfileCliError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kubearmor" => Ok(Format::KubeArmor),
            "seccomp" => Ok(Format::Seccomp),
            "networkpolicy" => Ok(Format::NetworkPolicy),
            other => Err(ProfileCliError::Format(other.to_string())),
        }
    }
}

/// `NAMESPACE/NAME`.
pub fn parse_workload(s: &str) -> Result<WorkloadId, ProfileCliError> {
    let (ns, name) = s
        .split_once('/')
        .ok_or_else(|| ProfileCliError::WorkloadSyntax(s.to_string()))?;
    Ok(WorkloadId::new(ns, name)?)
}

/// A stage by name.
pub fn parse_stage(s: &str) -> Result<Stage, ProfileCliError> {
    Stage::named(s).ok_or_else(|| ProfileCliError::StageName(s.to_string()))
}

/// `key=value`, for the exports' pod selector.
pub fn parse_selector(s: &str) -> Result<(String, String), ProfileCliError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ProfileCliError::Selector(s.to_string())),
    }
}

/// A network such as a cluster's service range.
pub fn parse_cidr(s: &str) -> Result<Cidr, ProfileCliError> {
    s.parse()
        .map_err(|_| ProfileCliError::ServiceRange(s.to_string()))
}

/// The workload's document; absent or unusable is an error naming the file.
pub fn load(state_dir: &Path, workload: &WorkloadId) -> Result<Document, ProfileCliError> {
    match persist::load(state_dir, workload) {
        Loaded::Present(doc) => Ok(*doc),
        Loaded::Absent => Err(ProfileCliError::Absent {
            workload: workload.to_string(),
            dir: state_dir.to_path_buf(),
        }),
        Loaded::Unusable(e) => Err(e.into()),
    }
}

/// The human summary of a workload's profile.
pub fn show(doc: &Document) -> String {
    let r = &doc.recording;
    let s = &doc.stage;
    let mut out = String::new();
    let _ = writeln!(out, "workload {}", r.workload);
    let _ = writeln!(
        out,
        "  stage: {}{} since {}",
        s.stage.name(),
        if s.pinned { " (pinned)" } else { "" },
        s.since
    );
    let pods: Vec<&str> = r.pods.iter().map(String::as_str).collect();
    let _ = writeln!(
        out,
        "  pods: {}{}",
        pods.join(", "),
        if r.pods_beyond > 0 {
            format!(" and {} more", r.pods_beyond)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  observations: {} (first {}, last {}), dropped events: {}",
        r.observations,
        r.first_seen.map_or("-".into(), |t| t.to_string()),
        r.last_seen.map_or("-".into(), |t| t.to_string()),
        r.drops
    );
    match r.promotable() {
        Ok(()) => {
            let _ = writeln!(out, "  promotable: yes");
        }
        Err(reasons) => {
            let _ = writeln!(out, "  promotable: no");
            for why in reasons {
                let _ = writeln!(out, "    {why}");
            }
        }
    }
    let _ = writeln!(out, "  executables ({}):", r.executables.len());
    for (path, p) in &r.executables {
        let mut from: Vec<&str> = p.paths.iter().map(String::as_str).collect();
        if p.runtime {
            from.insert(0, "(runtime)");
        }
        if p.any {
            from = vec!["(any)"];
        }
        let _ = writeln!(out, "    {path}  from {}", from.join(", "));
    }
    let _ = writeln!(out, "  files ({}):", r.files.len());
    for (path, a) in &r.files {
        let access = match (a.read, a.write) {
            (_, true) => "write",
            _ => "read",
        };
        let _ = writeln!(out, "    {path}  {access}");
    }
    let _ = writeln!(out, "  sockets:");
    for (exe, protocols) in &r.sockets {
        let names: Vec<String> = protocols
            .iter()
            .map(|p| format!("{p:?}").to_lowercase())
            .collect();
        let _ = writeln!(out, "    {exe}  {}", names.join(", "));
    }
    let listening: Vec<String> = r
        .listening
        .iter()
        .map(|p| format!("{}/{}", p.port, format!("{:?}", p.protocol).to_lowercase()))
        .collect();
    let _ = writeln!(out, "  listening: {}", listening.join(", "));
    let peers: Vec<String> = r
        .peers
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.net,
                p.port,
                format!("{:?}", p.protocol).to_lowercase()
            )
        })
        .collect();
    let _ = writeln!(out, "  peers: {}", peers.join(", "));
    let caps: Vec<String> = r.capabilities.iter().map(|c| format!("{c:?}")).collect();
    if r.capabilities_observed() {
        let _ = writeln!(out, "  capabilities: {}", caps.join(", "));
    } else {
        let _ = writeln!(
            out,
            "  capabilities: not observable on the node(s) that recorded this profile: incomplete, no capability rules are exported"
        );
    }
    if !r.runtime_capabilities.is_empty() {
        let runtime: Vec<&str> = r.runtime_capabilities.iter().map(|c| c.name).collect();
        let _ = writeln!(
            out,
            "  the runtime's capabilities (not exported): {}",
            runtime.join(", ")
        );
    }
    let calls: Vec<&str> = r.syscalls.iter().map(String::as_str).collect();
    let _ = writeln!(out, "  system calls: {}", calls.join(", "));
    match &r.runtime_commands {
        Some(commands) => {
            let _ = writeln!(out, "  CRI exec commands ({}):", commands.len());
            for argv in commands {
                let _ = writeln!(out, "    {}", palisade_profile::quoted_command(argv));
            }
        }
        None => {
            let _ = writeln!(
                out,
                "  CRI exec commands: not recorded (a document from before they were): CRI execs are judged by the executable alone"
            );
        }
    }
    let _ = writeln!(
        out,
        "  pending departures: {}{}",
        s.departures.len(),
        if s.departures_beyond > 0 {
            format!(" (and {} not kept)", s.departures_beyond)
        } else {
            String::new()
        }
    );
    // What `accept` would add to the profile: the evidence behind a rollback, for instance.
    for d in &s.departures {
        let what = serde_json::to_string(&d.observation).unwrap_or_default();
        let _ = writeln!(
            out,
            "    at {} pod {} {}: {what}",
            d.at,
            d.pod,
            if d.refused { "refused" } else { "reported" }
        );
    }
    if let Some(pod) = &s.canary_pod {
        let _ = writeln!(out, "  canary pod: {pod}");
    }
    out
}

/// One export of the workload's profile; the pods are selected by `selector` (KubeArmor and
/// NetworkPolicy), `app=<workload name>` when empty.
pub fn export(
    doc: &Document,
    format: Format,
    selector: &BTreeMap<String, String>,
    service_range: Option<Cidr>,
) -> Result<Export, ProfileCliError> {
    let r = &doc.recording;
    let mut labels = selector.clone();
    if labels.is_empty() {
        labels.insert("app".into(), r.workload.name.clone());
    }
    let name = format!("{}-learned", r.workload.name);
    Ok(match format {
        Format::KubeArmor => palisade_profile::export::kubearmor(r, &name, &labels)?,
        Format::Seccomp => palisade_profile::export::seccomp(r, native_arch())?,
        Format::NetworkPolicy => {
            palisade_profile::export::network_policy(r, &name, &labels, service_range)?
        }
    })
}

fn native_arch() -> palisade_profile::Arch {
    if cfg!(target_arch = "aarch64") {
        palisade_profile::Arch::Aarch64
    } else {
        palisade_profile::Arch::X86_64
    }
}

/// An operator's command on an existing document; returns the event and the new stage.
pub fn apply(
    state_dir: &Path,
    workload: &WorkloadId,
    command: Command,
    now: u64,
) -> Result<(Event, Stage), ProfileCliError> {
    load(state_dir, workload)?;
    let mut outcome = None;
    let updated = persist::update(state_dir, workload, now, |doc| {
        let mut rec = doc.recording.clone();
        outcome = Some(doc.stage.command(now, command, &mut rec));
        doc.recording = rec;
    })?;
    let event = outcome.ok_or_else(|| ProfileCliError::Absent {
        workload: workload.to_string(),
        dir: state_dir.to_path_buf(),
    })??;
    Ok((event, updated.document.stage.stage))
}

/// `hold`: pin the workload at the stage it is in.
pub fn hold(
    state_dir: &Path,
    workload: &WorkloadId,
    now: u64,
) -> Result<(Event, Stage), ProfileCliError> {
    let stage = load(state_dir, workload)?.stage.stage;
    apply(state_dir, workload, Command::Pin(stage), now)
}

/// One line of `palisade status` per learned workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStatus {
    pub workload: String,
    pub stage: Option<String>,
    pub pinned: bool,
    pub observations: u64,
    pub drops: u64,
    pub promotable: bool,
    /// Why the document cannot be used, when it cannot.
    pub error: Option<String>,
}

/// The workloads with a document in `state_dir` (none when it does not exist).
pub fn workloads(state_dir: &Path) -> Vec<WorkloadStatus> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(persist::SUFFIX)) else {
            continue;
        };
        let Some((ns, wl)) = stem.split_once('_') else {
            continue;
        };
        let Ok(workload) = WorkloadId::new(ns, wl) else {
            continue;
        };
        out.push(match persist::load(state_dir, &workload) {
            Loaded::Present(doc) => WorkloadStatus {
                workload: workload.to_string(),
                stage: Some(doc.stage.stage.name().to_string()),
                pinned: doc.stage.pinned,
                observations: doc.recording.observations,
                drops: doc.recording.drops,
                promotable: doc.recording.promotable().is_ok(),
                error: None,
            },
            Loaded::Absent => continue,
            Loaded::Unusable(e) => WorkloadStatus {
                workload: workload.to_string(),
                stage: None,
                pinned: false,
                observations: 0,
                drops: 0,
                promotable: false,
                error: Some(e.to_string()),
            },
        });
    }
    out.sort_by(|a, b| a.workload.cmp(&b.workload));
    out
}

/// The lines `palisade status` prints for the learned workloads.
pub fn render_workloads(state_dir: &Path, rows: &[WorkloadStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "learned profiles ({}):", state_dir.display());
    if rows.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for w in rows {
        match (&w.stage, &w.error) {
            (_, Some(e)) => {
                let _ = writeln!(out, "  {}: unusable: {e}", w.workload);
            }
            (stage, None) => {
                let _ = writeln!(
                    out,
                    "  {}: {}{}, {} observations, {} dropped, {}",
                    w.workload,
                    stage.as_deref().unwrap_or("-"),
                    if w.pinned { " (pinned)" } else { "" },
                    w.observations,
                    w.drops,
                    if w.promotable {
                        "promotable"
                    } else {
                        "not promotable"
                    }
                );
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
