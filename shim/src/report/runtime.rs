//! The runtime's own notable events about one container: protection it runs without
//! (`enforcement-degraded`), hardening the configuration relaxed (`hardening-relaxed`).

use palisade_events::{Action, Event, Rule, Severity, Source, Workload};

use crate::cri::CriContainer;

/// A notable event of the runtime itself about one container, reported from node `node`.
pub fn runtime_event(node: &str, cri: &CriContainer, rule: &str, message: &str) -> Event {
    let rule = Rule {
        name: rule.to_string(),
        severity: Severity::clamped(5),
        tags: vec!["palisade-runtime".to_string()],
        message: message.to_string(),
    };
    Event::new(
        node,
        Source::Runtime,
        Workload::from(cri),
        rule,
        Action::Audit,
        "runtime",
    )
}
