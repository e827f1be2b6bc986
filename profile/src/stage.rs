//! Promotion and rollback of a workload's learned profile, as a pure state machine.
//!
//! Stages: learn → audit → canary → enforce. Time is passed in (seconds since the epoch); the
//! machine reads no clock. Every transition returns an [`Event`] with its reason and evidence.
//!
//! Promotion by the rule ([`StageState::tick`]), unless pinned:
//! - learn → audit: at least `min_learn` in learn and `min_observations` observations;
//! - audit → canary: at least `min_audit` in audit, and no departure in the last `quiet_window`;
//! - canary → enforce: at least `min_canary` in canary, no departure in the last
//!   `quiet_window`, and no pod restart in the last `restart_window`.
//!
//! Every stage above learn needs a promotable recording (no drops, no overflow): neither the
//! rule nor an operator can promote a lossy recording. Rollback of canary or enforce to audit
//! happens when `restart_limit` restarts of the workload's pods fall within `restart_window`,
//! or `departure_limit` departures (refused on enforced pods, reported on audited ones) within
//! `departure_window`; a pinned workload does not move, and gets a `RollbackHeld` event instead.

use serde::{Deserialize, Serialize};

use crate::record::{Observation, Recording};

/// Distinct pending departures kept as evidence; more (and departures with a path or pod name
/// over the recording's limits) are counted in `departures_beyond`.
pub const MAX_DEPARTURES: usize = 256;
/// Recent departure and restart times kept for the rollback windows.
pub const MAX_RECENT: usize = 1024;
/// Containers created above learn remembered to tell a restart (the oldest are forgotten).
pub const MAX_SEEN: usize = 256;

/// Errors of this module: operator commands that cannot be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StageError {
    /// The recording is lossy or overflowed.
    #[error("profile of {workload} cannot be promoted: {}", reasons.join("; "))]
    NotPromotable {
        workload: String,
        reasons: Vec<String>,
    },
    /// Already enforced: there is no further stage.
    #[error("profile of {0} is already enforced")]
    AtEnd(String),
    /// Nothing to accept.
    #[error("profile of {0} has no pending departures to accept")]
    NothingToAccept(String),
    /// Not pinned.
    #[error("profile of {0} is not pinned")]
    NotPinned(String),
}

/// The stages, in promotion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Learn,
    Audit,
    Canary,
    Enforce,
}

impl Stage {
    /// Each stage with its name as the commands and the documents spell it, in promotion order.
    const NAMES: [(Stage, &'static str); 4] = [
        (Stage::Learn, "learn"),
        (Stage::Audit, "audit"),
        (Stage::Canary, "canary"),
        (Stage::Enforce, "enforce"),
    ];

    /// The stage's name (`learn`, `audit`, `canary`, `enforce`).
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    /// The stage called `name`, if any.
    pub fn named(name: &str) -> Option<Stage> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
    }

    pub fn next(self) -> Option<Stage> {
        match self {
            Self::Learn => Some(Self::Audit),
            Self::Audit => Some(Self::Canary),
            Self::Canary => Some(Self::Enforce),
            Self::Enforce => None,
        }
    }
}

/// What a pod of the workload runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Everything is recorded.
    Learn,
    /// The profile is applied in audit: departures are reported, nothing is refused.
    Audit,
    /// The profile is enforced.
    Enforce,
}

/// The promotion and rollback rule's figures, in seconds and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub min_learn: u64,
    pub min_observations: u64,
    pub min_audit: u64,
    pub min_canary: u64,
    pub quiet_window: u64,
    pub restart_window: u64,
    pub restart_limit: usize,
    pub departure_window: u64,
    pub departure_limit: usize,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            min_learn: 24 * 3600,
            min_observations: 10_000,
            min_audit: 24 * 3600,
            min_canary: 3600,
            quiet_window: 6 * 3600,
            restart_window: 600,
            restart_limit: 1,
            departure_window: 300,
            departure_limit: 5,
        }
    }
}

/// One thing a pod did that the profile does not cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    pub at: u64,
    pub pod: String,
    /// Whether it was refused (the pod ran in enforce) or only reported.
    pub refused: bool,
    pub observation: Observation,
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Promoted,
    RolledBack,
    /// The rule's conditions for rollback held, but the workload is pinned.
    RollbackHeld,
    /// The rule's time and observation conditions held, but the recording is not promotable.
    PromotionRefused,
    Pinned,
    Unpinned,
    Accepted,
}

/// Who caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Rule,
    Operator,
}

/// A transition (or a refused one), with its reason and evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: u64,
    pub kind: EventKind,
    pub trigger: Trigger,
    pub from: Stage,
    pub to: Stage,
    pub reason: String,
    /// The departures behind a rollback, or those accepted into the profile.
    pub evidence: Vec<Departure>,
}

/// An operator's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command", content = "stage")]
pub enum Command {
    /// To the next stage now, skipping the rule's time and quiet conditions.
    Promote,
    /// To this stage, held there (no promotion, no rollback) until unpinned.
    Pin(Stage),
    Unpin,
    /// Add the pending departures to the recording.
    Accept,
}

/// The promotion state of one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    pub stage: Stage,
    /// When the current stage was entered.
    pub since: u64,
    pub pinned: bool,
    /// The pod enforcing during canary (the first that asked).
    pub canary_pod: Option<String>,
    /// Distinct departures not yet accepted, oldest first.
    pub departures: Vec<Departure>,
    pub departures_beyond: u64,
    /// Times of departures and pod restarts, for the rollback windows (sorted).
    pub recent_departures: Vec<u64>,
    pub recent_restarts: Vec<u64>,
    /// The last promotion refusal reported, so that it is reported once.
    pub refusal: Option<String>,
    /// The pods' containers created above learn (`SANDBOX/CONTAINER`), oldest first: a second
    /// Create of one is a restart.
    #[serde(default)]
    pub seen: Vec<String>,
}

impl StageState {
    /// A workload that starts learning at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            stage: Stage::Learn,
            since: now,
            pinned: false,
            canary_pod: None,
            departures: Vec::new(),
            departures_beyond: 0,
            recent_departures: Vec::new(),
            recent_restarts: Vec::new(),
            refusal: None,
            seen: Vec::new(),
        }
    }

    /// A container `key` (`SANDBOX/CONTAINER`, one per container of a pod) of `pod` is
    /// created at `now`: when it was created before above learn, the pod restarted it
    /// ([`StageState::pod_restarted`]). In learn nothing is remembered.
    pub fn container_created(
        &mut self,
        now: u64,
        key: &str,
        pod: &str,
        rule: &Rule,
    ) -> Option<Event> {
        if self.stage == Stage::Learn {
            return None;
        }
        if self.seen.iter().any(|k| k == key) {
            return self.pod_restarted(now, pod, rule);
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.remove(0);
        }
        self.seen.push(key.to_string());
        None
    }

    /// The mode `pod` runs under; during canary the first pod to ask enforces.
    pub fn mode_for(&mut self, pod: &str) -> Mode {
        match self.stage {
            Stage::Learn => Mode::Learn,
            Stage::Audit => Mode::Audit,
            Stage::Enforce => Mode::Enforce,
            Stage::Canary => {
                let canary = self.canary_pod.get_or_insert_with(|| pod.to_string());
                if canary == pod {
                    Mode::Enforce
                } else {
                    Mode::Audit
                }
            }
        }
    }

    /// The canary pod went away: the next pod to ask becomes the canary.
    pub fn pod_gone(&mut self, pod: &str) {
        if self.canary_pod.as_deref() == Some(pod) {
            self.canary_pod = None;
        }
    }

    /// The rule's promotion check at `now`.
    pub fn tick(&mut self, now: u64, rec: &Recording, rule: &Rule) -> Option<Event> {
        let next = self.stage.next()?;
        if self.pinned {
            return None;
        }
        let in_stage = now.saturating_sub(self.since);
        let quiet = !within(&self.recent_departures, now, rule.quiet_window);
        let ready = match self.stage {
            Stage::Learn => in_stage >= rule.min_learn && rec.observations >= rule.min_observations,
            Stage::Audit => in_stage >= rule.min_audit && quiet,
            Stage::Canary => {
                in_stage >= rule.min_canary
                    && quiet
                    && !within(&self.recent_restarts, now, rule.restart_window)
            }
            Stage::Enforce => false,
        };
        if !ready {
            return None;
        }
        if let Err(reasons) = rec.promotable() {
            let reason = reasons.join("; ");
            if self.refusal.as_deref() == Some(reason.as_str()) {
                return None;
            }
            self.refusal = Some(reason.clone());
            return Some(self.event(
                now,
                EventKind::PromotionRefused,
                Trigger::Rule,
                self.stage,
                reason,
                Vec::new(),
            ));
        }
        let reason = match self.stage {
            Stage::Learn => format!(
                "{in_stage}s in learn (rule: {}s), {} observations (rule: {})",
                rule.min_learn, rec.observations, rule.min_observations
            ),
            _ => format!(
                "{in_stage}s in {:?} (rule: {}s), no departure in the last {}s",
                self.stage,
                if self.stage == Stage::Audit {
                    rule.min_audit
                } else {
                    rule.min_canary
                },
                rule.quiet_window
            )
            .to_lowercase(),
        };
        Some(self.enter(
            now,
            next,
            EventKind::Promoted,
            Trigger::Rule,
            reason,
            Vec::new(),
        ))
    }

    /// Something `departure.pod` did that the profile does not cover. In learn it means nothing
    /// (the caller records everything); in audit it is kept as evidence and delays promotion;
    /// in canary and enforce it counts towards rollback.
    pub fn departure(&mut self, departure: Departure, rule: &Rule) -> Option<Event> {
        if self.stage == Stage::Learn {
            return None;
        }
        let now = departure.at;
        push_recent(&mut self.recent_departures, now);
        let keepable = Recording::bounded(&departure.observation)
            && departure.pod.len() <= crate::record::MAX_POD_NAME;
        if self
            .departures
            .iter()
            .any(|d| d.observation == departure.observation)
        {
            // Already evidence.
        } else if keepable && self.departures.len() < MAX_DEPARTURES {
            self.departures.push(departure);
        } else {
            self.departures_beyond = self.departures_beyond.saturating_add(1);
        }
        if !matches!(self.stage, Stage::Canary | Stage::Enforce) {
            return None;
        }
        let (window, limit) = (rule.departure_window, rule.departure_limit);
        let (since, n) = self.reached(&self.recent_departures, now, window, limit)?;
        let reason = format!(
            "{n} departures within {}s in {:?} (rule: {})",
            rule.departure_window, self.stage, rule.departure_limit
        )
        .to_lowercase();
        Some(self.roll_back(now, reason, since))
    }

    /// The start of the `window` seconds before `now`, and how many of `times` fall within it
    /// and in the current stage, when they are `limit` or more.
    fn reached(&self, times: &[u64], now: u64, window: u64, limit: usize) -> Option<(u64, usize)> {
        let since = now.saturating_sub(window);
        let n = times
            .iter()
            .filter(|t| **t > since && **t >= self.since)
            .count();
        (n >= limit).then_some((since, n))
    }

    /// A pod of the workload restarted at `now`.
    pub fn pod_restarted(&mut self, now: u64, pod: &str, rule: &Rule) -> Option<Event> {
        if !matches!(self.stage, Stage::Canary | Stage::Enforce) {
            return None;
        }
        push_recent(&mut self.recent_restarts, now);
        let (window, limit) = (rule.restart_window, rule.restart_limit);
        let (_, n) = self.reached(&self.recent_restarts, now, window, limit)?;
        let reason = format!(
            "pod {pod} restarted: {n} restarts within {}s in {:?} (rule: {})",
            rule.restart_window, self.stage, rule.restart_limit
        );
        Some(self.roll_back(now, reason, self.since))
    }

    /// An operator's command at `now`; accepting adds the pending departures to `rec`.
    pub fn command(
        &mut self,
        now: u64,
        command: Command,
        rec: &mut Recording,
    ) -> Result<Event, StageError> {
        let workload = rec.workload.to_string();
        match command {
            Command::Promote => {
                let next = self
                    .stage
                    .next()
                    .ok_or(StageError::AtEnd(workload.clone()))?;
                rec.promotable()
                    .map_err(|reasons| StageError::NotPromotable { workload, reasons })?;
                Ok(self.enter(
                    now,
                    next,
                    EventKind::Promoted,
                    Trigger::Operator,
                    "operator's command".into(),
                    Vec::new(),
                ))
            }
            Command::Pin(stage) => {
                if stage != Stage::Learn {
                    rec.promotable()
                        .map_err(|reasons| StageError::NotPromotable { workload, reasons })?;
                }
                let reason = format!("pinned at {stage:?} by the operator").to_lowercase();
                self.pinned = true;
                if stage == self.stage {
                    return Ok(self.event(
                        now,
                        EventKind::Pinned,
                        Trigger::Operator,
                        stage,
                        reason,
                        Vec::new(),
                    ));
                }
                Ok(self.enter(
                    now,
                    stage,
                    EventKind::Pinned,
                    Trigger::Operator,
                    reason,
                    Vec::new(),
                ))
            }
            Command::Unpin => {
                if !self.pinned {
                    return Err(StageError::NotPinned(workload));
                }
                self.pinned = false;
                Ok(self.event(
                    now,
                    EventKind::Unpinned,
                    Trigger::Operator,
                    self.stage,
                    "unpinned by the operator".into(),
                    Vec::new(),
                ))
            }
            Command::Accept => {
                if self.departures.is_empty() {
                    return Err(StageError::NothingToAccept(workload));
                }
                let accepted = std::mem::take(&mut self.departures);
                for d in &accepted {
                    rec.observe(d.at, &d.observation);
                }
                self.departures_beyond = 0;
                self.recent_departures.clear();
                let reason = format!(
                    "{} departures accepted into the profile by the operator",
                    accepted.len()
                );
                Ok(self.event(
                    now,
                    EventKind::Accepted,
                    Trigger::Operator,
                    self.stage,
                    reason,
                    accepted,
                ))
            }
        }
    }

    fn roll_back(&mut self, now: u64, reason: String, evidence_since: u64) -> Event {
        let evidence: Vec<Departure> = self
            .departures
            .iter()
            .filter(|d| d.at >= evidence_since)
            .cloned()
            .collect();
        if self.pinned {
            return self.event(
                now,
                EventKind::RollbackHeld,
                Trigger::Rule,
                self.stage,
                format!("{reason}; pinned, not rolled back"),
                evidence,
            );
        }
        self.enter(
            now,
            Stage::Audit,
            EventKind::RolledBack,
            Trigger::Rule,
            reason,
            evidence,
        )
    }

    fn enter(
        &mut self,
        now: u64,
        to: Stage,
        kind: EventKind,
        trigger: Trigger,
        reason: String,
        evidence: Vec<Departure>,
    ) -> Event {
        let from = self.stage;
        self.stage = to;
        self.since = now;
        self.canary_pod = None;
        self.recent_restarts.clear();
        self.refusal = None;
        self.event(now, kind, trigger, from, reason, evidence)
    }

    fn event(
        &self,
        now: u64,
        kind: EventKind,
        trigger: Trigger,
        from: Stage,
        reason: String,
        evidence: Vec<Departure>,
    ) -> Event {
        Event {
            at: now,
            kind,
            trigger,
            from,
            to: self.stage,
            reason,
            evidence,
        }
    }
}

/// Whether any time in `times` falls within the `window` seconds before `now`.
fn within(times: &[u64], now: u64, window: u64) -> bool {
    let since = now.saturating_sub(window);
    times.iter().any(|t| *t > since && *t <= now)
}

fn push_recent(times: &mut Vec<u64>, t: u64) {
    if times.len() >= MAX_RECENT {
        times.remove(0);
    }
    let at = times.partition_point(|x| *x <= t);
    times.insert(at, t);
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
