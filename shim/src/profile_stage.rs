//! Learned profiles applied to pods: at Create, a container governed by its workload's profile
//! (`palisade.dev/profile: learn`, or `[profile] learn`) either keeps learning (the workload is
//! in learn) or gets the learned profile as a KubeArmor policy, in audit or enforce as the
//! workload's stage says for its pod (`StageState::mode_for`).
//!
//! The profile is the workload's document in the state directory, exported with
//! `palisade_profile::export::kubearmor` and compiled with the container's other policies, so
//! the sandbox and the monitor enforce it as they would a user's policy, with its enforcement
//! record. A document that cannot be read refuses the container, unless what is left of it
//! says the workload is still in learn (then the recorder sets it aside and learns afresh, as
//! before). Its system-call rules are left out of the policy: an enforced profile narrows the
//! container's hardened seccomp filter to the learned calls instead ([`narrow_seccomp`], through
//! `profile_seccomp`); an audited one leaves the filter as it is (seccomp cannot report a call
//! without refusing it). Its learned outbound peers become the monitor's egress allow-list
//! when it enforces ([`egress_list`]): a connect or send to any other destination is refused
//! by the cgroup sock_addr hooks; in audit the departures are reported as before.

use std::collections::BTreeMap;
use std::path::Path;

use palisade_policy::Policy;
use palisade_profile::persist::{self, Loaded};
use palisade_profile::{Event, EventKind, Mode, Recording, Rule, Stage, WorkloadId};

use crate::cri::CriContainer;

/// Errors of this module: a governed container whose profile cannot be applied; it must not
/// start.
#[derive(Debug, thiserror::Error)]
pub enum ProfileStageError {
    #[error("container {container}: learned profile of {workload} is at a stage above learn or unknown, and its document cannot be used: {reason}; fix or remove {path}")]
    Unusable {
        container: String,
        workload: String,
        reason: String,
        path: String,
    },
    #[error("container {container}: learned profile of {workload}: {source}")]
    Persist {
        container: String,
        workload: String,
        #[source]
        source: palisade_profile::PersistError,
    },
    #[error("container {container}: learned profile of {workload}: export: {reason}")]
    Export {
        container: String,
        workload: String,
        reason: String,
    },
    #[error("container {container}: {source}")]
    Narrow {
        container: String,
        #[source]
        source: crate::profile_seccomp::NarrowError,
    },
}

/// What a governed container runs under.
#[derive(Debug)]
pub enum Governed {
    /// The workload learns: the container is recorded (`crate::profile`).
    Learn(WorkloadId),
    /// The learned profile applies.
    Apply(Box<Applied>),
}

/// The learned profile as applied to one container.
#[derive(Debug)]
pub struct Applied {
    pub workload: WorkloadId,
    pub stage: Stage,
    /// Audit or Enforce.
    pub mode: Mode,
    /// The profile as policies of the pod's namespace (the export, system calls left out).
    pub policies: Vec<Policy>,
    /// The recording they were exported from (for the seccomp narrowing).
    pub recording: Recording,
    /// What the export could not express, and what was left out.
    pub notes: Vec<String>,
    /// The stage's transitions this Create caused (a restart's rollback).
    pub events: Vec<Event>,
}

impl Applied {
    /// The one-line account of the profile applied, for the container's event.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Learn => "learn",
        };
        let mut line = format!(
            "learned profile of {} applied in {mode} (stage {}): {} observations",
            self.workload,
            self.stage.name(),
            self.recording.observations
        );
        if let Some((list, _)) = egress_list(&self.workload, self.mode, &self.recording) {
            line.push_str(&format!(
                "; egress allow-list of {} learned peers",
                list.peers.len()
            ));
        }
        line
    }
}

/// The rule name of a workload's egress allow-list, as events and the enforcement record
/// carry it.
pub fn egress_rule(workload: &WorkloadId) -> String {
    format!("{}/{}: egress", workload.namespace, policy_name(workload))
}

/// The learned outbound peers (address or folded network, port, protocol) as the monitor's
/// egress allow-list, when the profile enforces; `None` in audit and learn, where the
/// departures are reported and nothing is refused. A profile that learned no peers gets an
/// empty list: every connect and send is refused. Raw peers are left out (with a note): raw
/// sockets never pass the hooks, the socket allow-list decides who may have one.
pub fn egress_list(
    workload: &WorkloadId,
    mode: Mode,
    recording: &Recording,
) -> Option<(palisade_monitor::EgressList, Vec<String>)> {
    use palisade_policy::Protocol;
    if mode != Mode::Enforce {
        return None;
    }
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    for p in &recording.peers {
        let protocol = match p.protocol {
            Protocol::Tcp => palisade_monitor::SockClass::Tcp,
            Protocol::Udp => palisade_monitor::SockClass::Udp,
            Protocol::Icmp => palisade_monitor::SockClass::Icmp,
            Protocol::Raw => {
                notes.push(format!(
                    "egress: raw peer {}/{} port {} left out: raw sockets never pass the connect and send hooks",
                    p.net.addr(),
                    p.net.prefix(),
                    p.port
                ));
                continue;
            }
        };
        peers.push(palisade_monitor::EgressPeer {
            addr: p.net.addr(),
            prefix_len: p.net.prefix(),
            port: Some(p.port),
            protocol,
        });
    }
    let list = palisade_monitor::EgressList {
        name: egress_rule(workload),
        peers,
        audit: false,
        severity: 7,
        message: format!("learned profile of {workload}: a peer never reached while learning"),
    };
    Some((list, notes))
}

/// Narrows `spec`'s hardened seccomp filter (after the container's policies are applied to it)
/// to the learned system calls when `applied` enforces: every call the hardened filter allowed
/// and the recording never saw (apart from the floor and the runtime's own calls) gets EPERM.
/// `None` in audit, where the filter stays as it is. An error refuses the container: an
/// enforced profile is never applied without its system calls.
pub fn narrow_seccomp(
    container: &str,
    applied: &Applied,
    spec: &mut serde_json::Value,
) -> Result<Option<crate::profile_seccomp::Narrowed>, ProfileStageError> {
    if applied.mode != Mode::Enforce {
        return Ok(None);
    }
    crate::profile_seccomp::narrow(spec, &applied.recording)
        .map(Some)
        .map_err(|source| ProfileStageError::Narrow {
            container: container.to_string(),
            source,
        })
}

/// A stage event of `workload` as one line: kind, trigger, stages and reason.
pub fn event_line(workload: &WorkloadId, e: &Event) -> String {
    let kind = match e.kind {
        EventKind::Promoted => "promoted",
        EventKind::RolledBack => "rolled back",
        EventKind::RollbackHeld => "rollback held",
        EventKind::PromotionRefused => "promotion refused",
        EventKind::Pinned => "pinned",
        EventKind::Unpinned => "unpinned",
        EventKind::Accepted => "departures accepted",
    };
    let by = match e.trigger {
        palisade_profile::stage::Trigger::Rule => "the rule",
        palisade_profile::stage::Trigger::Operator => "the operator",
    };
    format!(
        "learned profile of {workload}: {kind} by {by}, {} -> {}: {}",
        e.from.name(),
        e.to.name(),
        e.reason
    )
}

/// The name of the policy a workload's learned profile becomes.
pub fn policy_name(workload: &WorkloadId) -> String {
    format!("palisade-learned-{}", workload.name)
}

/// Decides at Create what `workload`'s container `cri` runs under, from the workload's
/// document in `state_dir`, `now` in seconds since the epoch. During canary the first pod to
/// ask enforces; that choice is saved (under the workload's lock), as is the container, so
/// that its next Create counts as a restart of its pod, which may roll the workload back
/// (`Applied::events`).
pub fn governed(
    state_dir: &Path,
    workload: WorkloadId,
    cri: &CriContainer,
    now: u64,
    rule: &Rule,
) -> Result<Governed, ProfileStageError> {
    let container = cri.id.clone();
    let pod = if cri.pod.is_empty() {
        cri.id.as_str()
    } else {
        cri.pod.as_str()
    };
    let doc = match persist::load(state_dir, &workload) {
        Loaded::Absent => return Ok(Governed::Learn(workload)),
        Loaded::Present(doc) => doc,
        Loaded::Unusable(e) => {
            let path = persist::path_in(state_dir, &workload);
            if still_learning(&path) {
                return Ok(Governed::Learn(workload));
            }
            return Err(ProfileStageError::Unusable {
                container,
                workload: workload.to_string(),
                reason: e.to_string(),
                path: path.display().to_string(),
            });
        }
    };
    if doc.stage.stage == Stage::Learn {
        return Ok(Governed::Learn(workload));
    }
    let key = format!(
        "{}/{}",
        cri.sandbox_id.as_deref().unwrap_or(pod),
        cri.container
    );
    let (stage, mode, recording, events) = {
        {
            // Under the workload's lock: a second Create of the pod's container is a restart
            // (which may roll the workload back first), and the canary pod is chosen once,
            // by whoever asks first.
            let mut mode = Mode::Audit;
            let mut events = Vec::new();
            let updated = persist::update(state_dir, &workload, now, |d| {
                if d.stage.stage != Stage::Learn {
                    events.extend(d.stage.container_created(now, &key, pod, rule));
                }
                mode = d.stage.mode_for(pod);
            })
            .map_err(|source| ProfileStageError::Persist {
                container: container.clone(),
                workload: workload.to_string(),
                source,
            })?;
            if let Some(e) = updated.replaced_unusable {
                return Err(ProfileStageError::Unusable {
                    container,
                    workload: workload.to_string(),
                    reason: e.to_string(),
                    path: updated.path.display().to_string(),
                });
            }
            let d = updated.document;
            if d.stage.stage == Stage::Learn {
                return Ok(Governed::Learn(workload));
            }
            (d.stage.stage, mode, d.recording, events)
        }
    };
    let (policies, notes) = profile_policies(&recording, &cri.namespace).map_err(|reason| {
        ProfileStageError::Export {
            container,
            workload: workload.to_string(),
            reason,
        }
    })?;
    let mut notes = notes;
    if let Some((_, egress)) = egress_list(&workload, mode, &recording) {
        notes.extend(egress);
    }
    Ok(Governed::Apply(Box::new(Applied {
        workload,
        stage,
        mode,
        policies,
        recording,
        notes,
        events,
    })))
}

/// The learned profile as policies of `namespace` selecting every pod there (they are only
/// ever added to the governed container's own policies), system-call rules left out.
fn profile_policies(
    recording: &Recording,
    namespace: &str,
) -> Result<(Vec<Policy>, Vec<String>), String> {
    let export = palisade_profile::export::kubearmor(
        recording,
        &policy_name(&recording.workload),
        &BTreeMap::new(),
    )
    .map_err(|e| e.to_string())?;
    let parsed = palisade_policy::parse_policies(export.text.as_bytes())
        .map_err(|d| format!("the exported policy does not parse: {d}"))?;
    let mut notes = export.notes;
    let mut policies = parsed.policies;
    let mut dropped = false;
    let mut parents = false;
    let mut sockets = false;
    for p in &mut policies {
        // The export names the workload's namespace; the pod's is what selection compares.
        p.id.namespace = namespace.to_string();
        dropped |= !p.syscalls.is_empty();
        p.syscalls.clear();
        // Exec allow-lists by parent are refused by the monitor (no kernel enforces them
        // yet): the learned executables are allowed whoever starts them.
        for r in &mut p.process {
            parents |= !r.from_source.is_empty();
            r.from_source.clear();
        }
        // Socket allow-lists by binary name the recorded executables, which in images of
        // multi-call binaries (busybox) are symlinks to one file shared by every applet: the
        // monitor matches that file, so the container would be refused at Create. The learned
        // protocols are allowed to every executable of the container instead.
        for r in &mut p.network {
            sockets |= !r.from_source.is_empty();
            r.from_source.clear();
        }
    }
    if sockets {
        notes.push(
            "network fromSource left out: the learned protocols are allowed to every executable of the container (a recorded executable may be a symlink to a file other binaries share, which the monitor cannot tell apart)"
                .into(),
        );
    }
    if parents {
        notes.push(
            "process fromSource left out: exec allow-lists by parent are not enforced yet, so the learned executables may be started by any process of the container"
                .into(),
        );
    }
    if dropped {
        notes.push(
            "system-call rules left out of the policy: enforced, the container's seccomp filter is narrowed to the learned calls instead (refused with EPERM); in audit the filter is not narrowed"
                .into(),
        );
    }
    Ok((policies, notes))
}

/// Whether an unusable document still says, as far as it can be read, that its workload is
/// in learn (then learning again loses nothing that was enforced).
fn still_learning(path: &Path) -> bool {
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    if text.len() as u64 > persist::MAX_DOCUMENT_BYTES {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v["stage"]["stage"].as_str() == Some("learn"))
}

/// The promotion and rollback rule of a configuration's `[profile.rule]` table.
pub fn rule_of(settings: &palisade_config::ProfileSettings) -> Rule {
    let r = &settings.rule;
    Rule {
        min_learn: r.min_learn_secs,
        min_observations: r.min_observations,
        min_audit: r.min_audit_secs,
        min_canary: r.min_canary_secs,
        quiet_window: r.quiet_window_secs,
        restart_window: r.restart_window_secs,
        restart_limit: r.restart_limit as usize,
        departure_window: r.departure_window_secs,
        departure_limit: r.departure_limit as usize,
    }
}

/// Seconds since the epoch, the state machine's time.
pub fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "profile_stage_tests.rs"]
mod tests;
