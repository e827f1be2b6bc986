//! The exports of a recording: a KubeArmorPolicy (`kubearmor`), a seccomp profile (`seccomp`)
//! and a Kubernetes NetworkPolicy (`netpol`).
//!
//! Each returns the document's text and notes on what it could not express. Every export adds
//! the system-call floor (`crate::floor`), and the KubeArmorPolicy export checks its own text
//! with `palisade-policy`'s parser and validator (what `palisade policy check` runs) before
//! returning it.

use std::collections::BTreeMap;

pub mod kubearmor;
pub mod netpol;
pub mod seccomp;

pub use kubearmor::kubearmor;
pub use netpol::network_policy;
pub use seccomp::{seccomp, Arch};

/// Failures to produce an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The document could not be serialized.
    #[error("export of {workload}: serialize: {reason}")]
    Serialize { workload: String, reason: String },
    /// The produced policy does not pass palisade's own validation (for instance over the
    /// input size limit): it is not returned.
    #[error(
        "export of {workload}: the generated policy is refused by the validator: {diagnostics}"
    )]
    Invalid {
        workload: String,
        diagnostics: String,
    },
    /// A label selector that Kubernetes would refuse.
    #[error("export of {workload}: selector label {key:?}: keys and values must be non-empty and at most 63 characters of A-Z, a-z, 0-9, -, _ and . (keys may have a DNS prefix/)")]
    Selector { workload: String, key: String },
}

/// One exported document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The document (YAML or JSON).
    pub text: String,
    /// What the recording holds that this format cannot express, one line each.
    pub notes: Vec<String>,
}

/// The labels selecting the workload's pods (`matchLabels`), checked like Kubernetes does.
pub(crate) fn check_selector(
    workload: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ExportError> {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    for (key, value) in labels {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n);
        let prefix_ok = key
            .rsplit_once('/')
            .is_none_or(|(p, _)| !p.is_empty() && p.len() <= 253 && p.split('.').all(part));
        if !part(name) || !prefix_ok || !(value.is_empty() || part(value)) {
            return Err(ExportError::Selector {
                workload: workload.to_string(),
                key: key.clone(),
            });
        }
    }
    Ok(())
}

/// Asserts that one of an export's `notes` starts with `prefix`, showing them all when none does.
#[cfg(test)]
pub(crate) fn assert_noted(notes: &[String], prefix: &str) {
    assert!(
        notes.iter().any(|n| n.starts_with(prefix)),
        "{prefix:?} not in {notes:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_checked() {
        let ok: BTreeMap<String, String> = [
            ("app".to_string(), "frontend".to_string()),
            ("app.kubernetes.io/name".to_string(), "shop".to_string()),
            ("tier".to_string(), String::new()),
        ]
        .into();
        assert!(check_selector("w", &ok).is_ok());
        for (k, v) in [
            ("", "x"),
            ("a b", "x"),
            ("app", "-x"),
            ("/app", "x"),
            ("app", "x y"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(check_selector("w", &bad).is_err(), "{k:?}={v:?}");
        }
    }
}
