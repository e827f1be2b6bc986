//! Carries out the compromise policy for the pod's containers: feeds their violations and the
//! gate's indicators to each container's tracker, kills a compromised container so that it
//! exits with the documented code, and holds back or refuses its restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_events::{Action, Event, Rule, Severity, Source, Workload};
use tokio::sync::{mpsc, Mutex};

use super::{Config, ShimError, Table};
use crate::compromise::{Admission, History, Tracker, Verdict, COMPROMISED_EXIT_CODE};
use crate::cri::CriContainer;
use crate::report::ReporterCell;

/// Events waiting for the judge; past this, evidence is dropped and counted in the log.
pub(super) const QUEUE: usize = 1024;
/// How often the pods' gate indicators are collected.
const GATE_POLL: Duration = Duration::from_secs(2);
/// The kubelet reads at most 4 KiB of a termination message.
const TERMINATION_MESSAGE_MAX: usize = 4000;
/// The longest a restart is held back inside its create call (well within the kubelet's
/// 2-minute runtime request timeout); a longer backoff refuses the start instead.
pub(super) const HOLD_MAX: Duration = Duration::from_secs(60);

/// Rule names of the compromise policy's own events.
pub const RULE_COMPROMISED: &str = "container-compromised";
pub const RULE_RESTARTED: &str = "compromised-container-restarted";
pub const RULE_HELD_BACK: &str = "compromised-restart-held-back";
pub const RULE_QUARANTINED: &str = "container-quarantined";

/// A container under the compromise policy.
#[derive(Debug)]
pub(super) struct Judged {
    /// The container's name in its pod, which its restarts share.
    name: String,
    /// The pod's sandbox id: the gate's evidence is reported under it.
    sandbox: String,
    tracker: Tracker,
    /// The host file behind the container's termination message.
    termination_log: Option<PathBuf>,
    audit: bool,
    node: String,
    workload: Workload,
    /// Set when the container was killed as compromised: its exit reports the distinct code.
    pub(super) verdict: Option<Verdict>,
}

/// The compromise policy of the pod's containers, shared by create and the judge task.
#[derive(Debug, Clone, Default)]
pub(super) struct Judge {
    history: Arc<std::sync::Mutex<History>>,
}

/// What create learned: the container's judge, and the event to report once it runs.
pub(super) struct Admitted {
    pub(super) judged: Judged,
    restart: Option<Event>,
}

impl Admitted {
    /// Reports the restart of a previously compromised container, with what decided its kill.
    pub(super) fn announce(&self, reporter: &crate::report::Reporter) {
        if let Some(e) = &self.restart {
            reporter.report(e.clone());
        }
    }
}

/// The compromise policy of a container (`None` for the sandbox or a disabled policy) and
/// the name its restarts share.
fn policy_of(
    cri: &CriContainer,
    spec: &serde_json::Value,
    config: &Config,
) -> Result<Option<(crate::compromise::CompromiseSettings, String)>, ShimError> {
    if cri.is_sandbox() {
        return Ok(None);
    }
    let settings = match spec["annotations"][crate::compromise::ANNOTATION].as_str() {
        Some(v) => config.compromise.with_annotation(v)?,
        None => config.compromise.clone(),
    };
    if !settings.enabled {
        return Ok(None);
    }
    let name = if cri.container.is_empty() {
        cri.id.clone()
    } else {
        cri.container.clone()
    };
    Ok(Some((settings, name)))
}

impl Judge {
    /// Holds back the restart of a container killed as compromised until its backoff has
    /// passed, when that is at most [`HOLD_MAX`]: the create call waits instead of failing.
    /// A refused start would be the newest terminated container of its name, and the kubelet
    /// would show it (exit code 128, StartError) under Last State instead of the kill's 173
    /// and termination message; a start that waits leaves the killed container the last one
    /// that terminated.
    pub(super) async fn hold(
        &self,
        cri: &CriContainer,
        spec: &serde_json::Value,
        config: &Config,
        reporter: &crate::report::Reporter,
    ) -> Result<(), ShimError> {
        let Some((settings, name)) = policy_of(cri, spec, config)? else {
            return Ok(());
        };
        let admission = crate::report::lock(&self.history).admit(&name, &settings, Instant::now());
        let Admission::BackingOff {
            count,
            wait,
            previous,
        } = admission
        else {
            return Ok(());
        };
        if wait > HOLD_MAX {
            return Ok(());
        }
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let message = format!(
            "container {name} was killed as compromised {count} time(s) ({}); restart held back for {secs}s: it starts then",
            previous.reason
        );
        let judged = Judged::new(cri, &settings, config, name);
        reporter.report(judged.event(RULE_HELD_BACK, 8, Action::Block, &message, &previous));
        tracing::info!(container = %cri.id, wait_ms = wait.as_millis() as u64, "compromised restart held back");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Decides whether a container may be created, given its predecessors in this pod; `None`
    /// for containers the policy does not cover (the sandbox, or a disabled policy).
    pub(super) fn admit(
        &self,
        cri: &CriContainer,
        spec: &serde_json::Value,
        config: &Config,
        reporter: &crate::report::Reporter,
    ) -> Result<Option<Admitted>, ShimError> {
        let Some((settings, name)) = policy_of(cri, spec, config)? else {
            return Ok(None);
        };
        let id = cri.id.as_str();
        let mut judged = Judged::new(cri, &settings, config, name);
        judged.termination_log = crate::cri::termination_log(spec);
        let admission =
            crate::report::lock(&self.history).admit(&judged.name, &settings, Instant::now());
        let refuse = |rule: &str, severity: u8, message: String, previous: &Verdict| {
            reporter.report(judged.event(rule, severity, Action::Block, &message, previous));
            Err(ShimError::Compromised {
                container: id.to_string(),
                reason: message,
            })
        };
        let restart = match admission {
            Admission::Fresh => None,
            Admission::BackingOff {
                count,
                wait,
                previous,
            } => {
                return refuse(
                    RULE_HELD_BACK,
                    8,
                    format!(
                        "container {} was killed as compromised {count} time(s) ({}); restart held back for another {}s",
                        judged.name,
                        previous.reason,
                        wait.as_secs().max(1)
                    ),
                    &previous,
                )
            }
            Admission::Quarantined { count, previous } => {
                return refuse(
                    RULE_QUARANTINED,
                    10,
                    format!(
                        "container {} was killed as compromised {count} times, more than max_restarts {} allows ({}); quarantined: it is not started again in this pod",
                        judged.name, settings.max_restarts, previous.reason
                    ),
                    &previous,
                )
            }
            Admission::Restart { count, previous } => Some(judged.event(
                RULE_RESTARTED,
                8,
                Action::Restart,
                &format!(
                    "container {} restarted from its image after compromise {count} ({})",
                    judged.name, previous.reason
                ),
                &previous,
            )),
        };
        Ok(Some(Admitted { judged, restart }))
    }

    /// The reporter's observer that feeds the judge, and the judge's end of it.
    pub(super) fn observer() -> (crate::report::Observer, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel::<Event>(QUEUE);
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let observer = crate::report::Observer::new(move |e: &Event| {
            if !crate::compromise::is_violation(e) {
                return;
            }
            if tx.try_send(e.clone()).is_err() {
                let n = lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        lost = n + 1,
                        "compromise judge queue full: evidence dropped"
                    );
                }
            }
        });
        (observer, rx)
    }

    /// Starts the task that judges the pod's containers on what the observer feeds it.
    pub(super) fn start(
        &self,
        rx: mpsc::Receiver<Event>,
        table: Arc<Mutex<Table>>,
        reporter: Arc<ReporterCell>,
    ) {
        tokio::spawn(run(rx, table, self.history.clone(), reporter));
    }
}

impl Judged {
    fn new(
        cri: &CriContainer,
        settings: &crate::compromise::CompromiseSettings,
        config: &Config,
        name: String,
    ) -> Self {
        Judged {
            sandbox: cri.sandbox_id.clone().unwrap_or_default(),
            termination_log: None,
            tracker: Tracker::new(settings.clone()),
            audit: config.audit(),
            node: config.node_name.clone(),
            workload: Workload::from(cri),
            verdict: None,
            name,
        }
    }

    /// Whether the gate of pod sandbox `sandbox`, aimed at container `only` (every container
    /// of the pod when `None`), fronts this container: its evidence counts against it.
    fn fronted_by(&self, sandbox: &str, only: Option<&str>) -> bool {
        self.sandbox == sandbox && only.is_none_or(|name| name == self.name)
    }

    fn event(
        &self,
        rule: &str,
        severity: u8,
        action: Action,
        message: &str,
        verdict: &Verdict,
    ) -> Event {
        Event::new(
            &self.node,
            Source::Compromise,
            self.workload.clone(),
            Rule {
                name: rule.to_string(),
                severity: Severity::clamped(severity),
                tags: vec!["palisade-compromise".to_string()],
                message: message.to_string(),
            },
            action,
            "compromise",
        )
        .with_evidence("reason", verdict.reason.clone())
        .with_evidence(
            "evidence",
            serde_json::to_value(&verdict.evidence).unwrap_or_default(),
        )
    }
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    table: Arc<Mutex<Table>>,
    history: Arc<std::sync::Mutex<History>>,
    reporter: Arc<ReporterCell>,
) {
    let mut tick = tokio::time::interval(GATE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let verdicts = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => observe(&table, &e).await,
                None => return,
            },
            _ = tick.tick() => poll_gates(&table).await,
        };
        for (id, verdict) in verdicts {
            carry_out(&table, &history, &reporter, &id, verdict).await;
        }
    }
}

/// Feeds a violation to the containers it is evidence against: its own container, or for the
/// gate (which reports under the pod's sandbox) the containers the gate fronts.
async fn observe(table: &Mutex<Table>, e: &Event) -> Vec<(String, Verdict)> {
    let now = Instant::now();
    let mut t = table.lock().await;
    let target = e.workload.container_id.as_str();
    let gate_for = t
        .containers
        .get(target)
        .and_then(|c| c.gate.as_ref().map(|_| c.gate_container.clone()));
    let mut out = Vec::new();
    for (id, c) in t.containers.iter_mut() {
        let Some(j) = c.judge.as_mut() else { continue };
        let evidence_of = match &gate_for {
            None => id == target,
            Some(only) => j.fronted_by(target, only.as_deref()),
        };
        if evidence_of {
            if let Some(v) = j.tracker.observe(e, now) {
                out.push((id.clone(), v));
            }
        }
    }
    out
}

/// Collects the gates' pod indicators and feeds them to the containers they front.
async fn poll_gates(table: &Mutex<Table>) -> Vec<(String, Verdict)> {
    let now = Instant::now();
    let mut t = table.lock().await;
    let gates: Vec<(String, Option<String>, u64, u64)> = t
        .containers
        .iter()
        .filter_map(|(id, c)| {
            let g = c.gate.as_ref()?;
            let ind = g.gate().indicators();
            let peers = ind.new_peers.len() as u64 + ind.new_peers_unlisted;
            Some((id.clone(), c.gate_container.clone(), ind.violations, peers))
        })
        .collect();
    let mut out = Vec::new();
    for (sandbox, only, violations, peers) in gates {
        for (id, c) in t.containers.iter_mut() {
            let Some(j) = c.judge.as_mut() else { continue };
            if !j.fronted_by(&sandbox, only.as_deref()) {
                continue;
            }
            if let Some(v) = j.tracker.observe_gate(violations, peers, now) {
                out.push((id.clone(), v));
            }
        }
    }
    out
}

/// Kills a container judged compromised (or, in audit mode, reports that it would have).
async fn carry_out(
    table: &Mutex<Table>,
    history: &std::sync::Mutex<History>,
    reporter: &ReporterCell,
    id: &str,
    verdict: Verdict,
) {
    let Some(reporter) = reporter.get().cloned() else {
        return;
    };
    let (runc, event, audit) = {
        let mut t = table.lock().await;
        let Some(c) = t.containers.get_mut(id) else {
            return;
        };
        let running = c.init_state() == super::State::Running;
        let runc = c.runc.clone();
        let Some(j) = c.judge.as_mut() else { return };
        if j.audit {
            let msg = format!(
                "container {} judged compromised ({}); audit mode: not killed",
                j.name, verdict.reason
            );
            (
                runc,
                j.event(RULE_COMPROMISED, 10, Action::Audit, &msg, &verdict),
                true,
            )
        } else {
            if !running {
                return;
            }
            let count = crate::report::lock(history).killed(&j.name, &verdict, Instant::now());
            let msg = format!(
                "container {} judged compromised ({}): killed, exit code {COMPROMISED_EXIT_CODE}; compromise {count} in this pod",
                j.name, verdict.reason
            );
            if let Some(path) = &j.termination_log {
                write_termination_message(path, &msg, &verdict);
            }
            j.verdict = Some(verdict.clone());
            (
                runc,
                j.event(RULE_COMPROMISED, 10, Action::Kill, &msg, &verdict)
                    .with_evidence("exit_code", COMPROMISED_EXIT_CODE)
                    .with_evidence("compromises", count),
                false,
            )
        }
    };
    tracing::warn!(container = %id, reason = %verdict.reason, audit, "container compromised");
    reporter.report(event);
    if audit {
        return;
    }
    if let Err(e) = runc.kill(id, libc::SIGKILL as u32, true).await {
        tracing::error!(container = %id, "kill of compromised container: {e}");
    }
}

/// Writes the compromise into the termination message, where `kubectl describe` shows it.
fn write_termination_message(path: &Path, message: &str, verdict: &Verdict) {
    let mut text = format!("palisade: {message}\nevidence:\n");
    for e in &verdict.evidence {
        let line = format!(
            "- {} {} (severity {}, {:?}){}\n",
            e.time,
            e.rule,
            e.severity,
            e.action,
            e.process
                .as_ref()
                .map(|p| format!(" by {p}"))
                .unwrap_or_default()
        );
        if text.len() + line.len() > TERMINATION_MESSAGE_MAX {
            break;
        }
        text.push_str(&line);
    }
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), "termination message: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_names_the_reason_and_evidence_within_the_kubelet_limit() {
        let (_dir, path) = crate::test_support::temp_path("msg");
        let ev = crate::compromise::Evidence {
            time: "2026-11-23T01:00:00Z".into(),
            source: Source::Monitor,
            rule: "kernel-module-load".into(),
            severity: 9,
            action: Action::Audit,
            message: "init_module".into(),
            process: Some("/bin/insmod".into()),
        };
        let verdict = Verdict {
            reason: "rule kernel-module-load is decisive".into(),
            evidence: vec![ev; 500],
        };
        write_termination_message(&path, "container web judged compromised", &verdict);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("palisade: container web judged compromised\n"));
        assert!(text.contains(
            "- 2026-11-23T01:00:00Z kernel-module-load (severity 9, Audit) by /bin/insmod\n"
        ));
        assert!(text.len() <= TERMINATION_MESSAGE_MAX, "{}", text.len());
    }
}
