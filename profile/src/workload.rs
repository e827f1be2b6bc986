//! A workload's identity: its namespace and name, derived from a pod's name as controllers
//! make them.

use serde::{Deserialize, Serialize};

use crate::record::RecordError;

/// A workload: its namespace and its name (as the gate derives it, or set by annotation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadId {
    pub namespace: String,
    pub name: String,
}

impl WorkloadId {
    pub fn new(namespace: &str, name: &str) -> Result<Self, RecordError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !ok(namespace) || !ok(name) {
            return Err(RecordError::Workload {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// The workload of pod `pod` in `namespace` when no annotation names it: the pod name
    /// without the suffixes controllers add, `-<template hash>-<5 characters>` (Deployment),
    /// `-<5 characters>` (ReplicaSet, DaemonSet, Job) and `-<ordinal>` (StatefulSet). Generated
    /// parts are recognised by Kubernetes' alphabet for them (consonants and the digits 2-9), so
    /// a pod named `web-cache` keeps its name.
    pub fn from_pod(namespace: &str, pod: &str) -> Result<Self, RecordError> {
        Self::new(namespace, workload_name(pod))
    }

    /// `namespace_name`: unambiguous, since neither part may contain `_`.
    pub fn file_stem(&self) -> String {
        format!("{}_{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes' alphabet for generated name parts (`k8s.io/apimachinery` `rand.String` and
/// `SafeEncodeString`): no vowels, no 0, 1 or 3.
fn generated_part(s: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&s.len())
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The workload a pod belongs to, from its name alone: the pod name without the suffixes
/// controllers add (see [`WorkloadId::from_pod`]). The one derivation of the node: the gate's
/// services and the learned profiles both use it.
pub fn workload_name(pod: &str) -> &str {
    let Some((head, tail)) = pod.rsplit_once('-') else {
        return pod;
    };
    if head.is_empty() {
        return pod;
    }
    if generated_part(tail, 5..=5) {
        return match head.rsplit_once('-') {
            Some((name, hash)) if !name.is_empty() && generated_part(hash, 6..=10) => name,
            _ => head,
        };
    }
    if !tail.is_empty() && tail.len() <= 5 && tail.bytes().all(|b| b.is_ascii_digit()) {
        return head;
    }
    pod
}
