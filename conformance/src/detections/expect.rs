//! What the corpus must show (issue 18), graded: no event and no compromise kill on an
//! ordinary workload, every step reported under its rule for the right pod and container,
//! every twin silent. [`KNOWN_MISSES`] lists what today's detections do not meet yet, each
//! with its reason: such an item is reported as a known miss instead of failing; an item that
//! is listed but meets the expectation fails, so the list only shrinks as the fixes land.

use std::collections::BTreeSet;

use super::attacks::StepRun;
use super::workloads::WorkloadRun;
use crate::security::eventlog::field;

/// Items that do not meet the expectation on today's main: `step:<id>` (not reported),
/// `twin:<id>` (not silent), `workload:<name>:<rule>` (the rule fired on an ordinary
/// workload; `compromise-kill` when the workload was killed).
pub const KNOWN_MISSES: &[(&str, &str)] = &[];

/// A list of known misses: (item, reason).
type Misses = [(&'static str, &'static str)];

/// The reason an item is listed in `misses`, if it is.
fn known(misses: &Misses, id: &str) -> Option<&'static str> {
    misses.iter().find(|(k, _)| *k == id).map(|(_, why)| *why)
}

/// One graded item.
#[derive(Debug, Clone, PartialEq)]
pub enum Grade {
    Pass,
    /// Listed in [`KNOWN_MISSES`]: reported, not failed.
    KnownMiss(String),
    Fail(String),
}

/// The items of one run, in order: (id, grade).
pub fn grade(workloads: &[WorkloadRun], steps: &[StepRun]) -> Vec<(String, Grade)> {
    grade_against(KNOWN_MISSES, workloads, steps)
}

/// [`grade`] with `misses` as the known misses.
fn grade_against(
    misses: &Misses,
    workloads: &[WorkloadRun],
    steps: &[StepRun],
) -> Vec<(String, Grade)> {
    let mut out = Vec::new();
    for w in workloads {
        let mut rules: BTreeSet<String> = w
            .events
            .iter()
            .filter(|e| field(e, "/source") != "compromise")
            .map(|e| field(e, "/rule/name").to_string())
            .collect();
        if w.compromise_kills() > 0 {
            rules.insert("compromise-kill".into());
        }
        let prefix = format!("workload:{}:", w.name);
        if rules.is_empty() {
            out.push((format!("workload:{}", w.name), Grade::Pass));
        }
        for r in &rules {
            let id = format!("{prefix}{r}");
            let n = w
                .events
                .iter()
                .filter(|e| field(e, "/rule/name") == r.as_str())
                .count();
            let g = match known(misses, &id) {
                Some(why) => Grade::KnownMiss(why.into()),
                None => Grade::Fail(format!("{n} {r} event(s) on an ordinary workload")),
            };
            out.push((id, g));
        }
        for (id, _) in misses.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            if !rules.contains(&id[prefix.len()..]) {
                out.push((
                    id.to_string(),
                    Grade::Fail("listed in KNOWN_MISSES but did not happen".into()),
                ));
            }
        }
    }
    for s in steps {
        out.push(item(
            misses,
            format!("step:{}", s.id),
            s.reported,
            "not reported under its rule for the pod and container",
        ));
        out.push(item(
            misses,
            format!("twin:{}", s.id),
            s.twin_events.is_empty(),
            &format!("{} event(s) raised", s.twin_events.len()),
        ));
    }
    out
}

fn item(misses: &Misses, id: String, met: bool, why_not: &str) -> (String, Grade) {
    let g = match (met, known(misses, &id)) {
        (true, None) => Grade::Pass,
        (true, Some(_)) => Grade::Fail("listed in KNOWN_MISSES but met: remove it".into()),
        (false, Some(why)) => Grade::KnownMiss(why.into()),
        (false, None) => Grade::Fail(why_not.into()),
    };
    (id, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(name: &'static str, rules: &[&str], exit_code: i32) -> WorkloadRun {
        WorkloadRun {
            name,
            seconds: 60.0,
            requests_ok: 10,
            requests_failed: 0,
            events: rules
                .iter()
                .map(|r| json!({"source": "monitor", "rule": {"name": r}}))
                .collect(),
            exit_code,
        }
    }

    fn step(id: &str, reported: bool, twin_noise: usize) -> StepRun {
        StepRun {
            id: id.to_string(),
            reported,
            step_events: Vec::new(),
            twin_events: vec![json!({"rule": {"name": "x"}}); twin_noise],
            codes: (0, 0),
        }
    }

    #[test]
    fn a_quiet_workload_passes_and_a_noisy_one_fails() {
        let g = grade(
            &[
                workload("quiet", &[], 0),
                workload("noisy", &["raw-socket"], 0),
            ],
            &[],
        );
        assert_eq!(g[0], ("workload:quiet".into(), Grade::Pass));
        assert!(matches!(&g[1], (id, Grade::Fail(_)) if id == "workload:noisy:raw-socket"));
    }

    #[test]
    fn a_kill_by_exit_code_alone_counts() {
        let g = grade(&[workload("killed", &[], 173)], &[]);
        assert!(matches!(&g[0], (id, Grade::Fail(_)) if id == "workload:killed:compromise-kill"));
    }

    #[test]
    fn listed_misses_are_known_and_listed_passes_fail() {
        let misses = [("step:shadow-read", "a reason")];
        // listed, missed: known miss
        let g = grade_against(&misses, &[], &[step("shadow-read", false, 0)]);
        assert!(matches!(g[0].1, Grade::KnownMiss(_)));
        assert_eq!(g[1].1, Grade::Pass);
        // listed, met: fails
        let g = grade_against(&misses, &[], &[step("shadow-read", true, 0)]);
        assert!(matches!(&g[0].1, Grade::Fail(r) if r.contains("remove it")));
        // a listed workload miss that did not happen fails too
        let misses = [("workload:quiet:raw-socket", "a reason")];
        let g = grade_against(&misses, &[workload("quiet", &[], 0)], &[]);
        assert!(
            matches!(&g[1], (id, Grade::Fail(r)) if id == "workload:quiet:raw-socket" && r.contains("did not happen")),
            "{g:?}"
        );
        // not listed, missed or noisy: fails
        let g = grade(&[], &[step("interactive-shell", false, 2)]);
        assert!(matches!(g[0].1, Grade::Fail(_)));
        assert!(matches!(&g[1].1, Grade::Fail(r) if r.contains("2 event")));
    }

    #[test]
    fn every_listed_step_exists() {
        let chain = super::super::attacks::steps().unwrap();
        for (id, why) in KNOWN_MISSES {
            assert!(!why.is_empty(), "{id} has no reason");
            if let Some(s) = id.strip_prefix("step:").or(id.strip_prefix("twin:")) {
                assert!(chain.iter().any(|x| x.id == s), "{id} names no step");
            }
        }
    }
}
