//! A container's hardened seccomp filter narrowed to what its workload was seen doing: the
//! system calls of its learned profile (`palisade_profile::Recording::syscalls`), the floor
//! every container's start-up and exit path needs (`palisade_profile::floor`), and the
//! runtime's own calls after the filter is loaded ([`RUNTIME_AFTER_FILTER`]). Every other call
//! the hardened filter allowed is refused with the filter's default action (EPERM in
//! palisade's hardened filter) and named in [`Narrowed::refused`], for the caller to report.
//!
//! Only allow rules lose names: the hardened filter's refusals and conditional rules for the
//! kept calls stay as they are, so the narrowed filter never lets through what the hardened
//! one refused. A recording that is not promotable (lossy, overflowing, with unrecognized
//! observations) is refused: a profile that may miss calls is never enforced.

use std::collections::BTreeSet;

use palisade_profile::floor::SYSCALL_FLOOR;
use palisade_profile::Recording;
use serde_json::{json, Value};

pub use palisade_profile::floor::RUNTIME_AFTER_FILTER;

/// Errors of this module: a filter that cannot be narrowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NarrowError {
    /// The spec has no seccomp filter: nothing to narrow, and the container would run with no
    /// filter at all.
    #[error(
        "container spec has no linux.seccomp filter to narrow to the learned profile of {workload}"
    )]
    NoFilter { workload: String },
    /// The recording may miss calls.
    #[error("learned profile of {workload} cannot be enforced: {}", reasons.join("; "))]
    NotPromotable {
        workload: String,
        reasons: Vec<String>,
    },
    /// A rule of the filter is not an object with a list of names.
    #[error("seccomp filter rule {index}: {reason}")]
    Rule { index: usize, reason: &'static str },
}

/// What narrowing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// The calls the hardened filter allowed that the narrowed one refuses, sorted.
    pub refused: Vec<String>,
    /// The calls still allowed (with or without conditions), sorted.
    pub allowed: Vec<String>,
}

/// Actions that let a call through (narrowing removes names from these rules only).
const PASSING: &[&str] = &["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"];

/// Narrows `spec`'s `linux.seccomp` to `recording`'s system calls, the floor and
/// [`RUNTIME_AFTER_FILTER`]; a default action that lets calls through becomes EPERM.
pub fn narrow(spec: &mut Value, recording: &Recording) -> Result<Narrowed, NarrowError> {
    let workload = recording.workload.to_string();
    recording
        .promotable()
        .map_err(|reasons| NarrowError::NotPromotable {
            workload: workload.clone(),
            reasons,
        })?;
    let filter = spec
        .pointer_mut("/linux/seccomp")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| NarrowError::NoFilter {
            workload: workload.clone(),
        })?;
    let keep: BTreeSet<&str> = recording
        .syscalls
        .iter()
        .map(String::as_str)
        .chain(SYSCALL_FLOOR.iter().copied())
        .chain(RUNTIME_AFTER_FILTER.iter().copied())
        .collect();
    let default_passes = filter
        .get("defaultAction")
        .and_then(Value::as_str)
        .is_some_and(|a| PASSING.contains(&a));
    if default_passes {
        filter.insert("defaultAction".into(), json!("SCMP_ACT_ERRNO"));
        filter.insert("defaultErrnoRet".into(), json!(libc::EPERM));
    }
    let mut refused = BTreeSet::new();
    let mut allowed = BTreeSet::new();
    let rules = filter
        .get_mut("syscalls")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut kept_rules = Vec::with_capacity(rules.len());
    for (index, mut rule) in rules.into_iter().enumerate() {
        let passing = rule
            .get("action")
            .and_then(Value::as_str)
            .is_some_and(|a| PASSING.contains(&a));
        let names =
            rule.get_mut("names")
                .and_then(Value::as_array_mut)
                .ok_or(NarrowError::Rule {
                    index,
                    reason: "no list of names",
                })?;
        if passing {
            let mut kept = Vec::new();
            for n in names.drain(..) {
                let name = n
                    .as_str()
                    .ok_or(NarrowError::Rule {
                        index,
                        reason: "a name that is not a string",
                    })?
                    .to_string();
                if keep.contains(name.as_str()) {
                    allowed.insert(name);
                    kept.push(n);
                } else {
                    refused.insert(name);
                }
            }
            *names = kept;
            if names.is_empty() {
                continue;
            }
        }
        kept_rules.push(rule);
    }
    filter.insert("syscalls".into(), Value::Array(kept_rules));
    // A name refused by one rule may still pass through another (a conditional one).
    let refused = refused.difference(&allowed).cloned().collect();
    Ok(Narrowed {
        refused,
        allowed: allowed.into_iter().collect(),
    })
}

#[cfg(test)]
#[path = "profile_seccomp_tests.rs"]
mod tests;
