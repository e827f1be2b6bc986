//! The runtime events of the CRI contract (`docs/cri-contract.md`): a container the hardened
//! default refused, a request it overrode, and what a relaxed configuration granted beyond it.
//!
//! Raised only when they say something about this container: a container that asks for
//! nothing beyond the hardened default raises nothing, and an override of what CRI writes for
//! a pod that said nothing (no seccomp profile, no_new_privs off) is logged, not raised.

use palisade_events::{Action, Event, Rule, Severity, Source, Workload};
use palisade_sandbox::{HardenError, HardeningReport, CONTAINER_TYPE_ANNOTATION};
use serde_json::Value;

/// The rule of the event for a container the hardened default refused.
pub const REFUSED: &str = "hardening-refused";
/// The rule of the event for a request the hardened default replaced with something stricter.
pub const OVERRIDE: &str = "hardening-override";
/// The rule of the event for what the configuration granted beyond the hardened default.
pub const RELAXED: &str = "hardening-relaxed";

/// The event for a refused container, when the refusal is the pod's request (privileged, a
/// capability beyond the allowed set) rather than a broken spec or configuration.
pub fn refusal_event(node: &str, id: &str, spec: &Value, err: &HardenError) -> Option<Event> {
    let refused_request = match err {
        HardenError::Privileged { .. } => true,
        HardenError::Capabilities { source, .. } => matches!(
            source,
            palisade_sandbox::capabilities::CapabilityError::NotAllowed(_)
        ),
        _ => false,
    };
    refused_request.then(|| event(node, id, spec, REFUSED, Action::Block, err.to_string()))
}

/// The events for a hardened container: one [`RELAXED`] event listing every grant beyond the
/// hardened default (none for the pod's pause container, which runs only the pause program),
/// and one [`OVERRIDE`] event per override the spec shows the pod asked for. Every override
/// is logged.
pub fn decision_events(node: &str, id: &str, spec: &Value, report: &HardeningReport) -> Vec<Event> {
    let mut events = Vec::new();
    for o in &report.overridden {
        tracing::info!(container = %id, field = o.field, explicit = o.explicit, "hardening override: {}", o.message);
        if o.explicit {
            let message = format!("container {}: {}", name(id, spec), o.message);
            events.push(event(node, id, spec, OVERRIDE, Action::Block, message));
        }
    }
    let sandbox = spec["annotations"][CONTAINER_TYPE_ANNOTATION].as_str() == Some("sandbox");
    if !report.relaxed.is_empty() {
        tracing::info!(container = %id, sandbox, relaxed = ?report.relaxed, "granted beyond the hardened default");
        if !sandbox {
            let message = format!(
                "container {} granted beyond the hardened default: {}",
                name(id, spec),
                report.relaxed.join("; ")
            );
            events.push(event(node, id, spec, RELAXED, Action::Audit, message));
        }
    }
    events
}

/// `NAME (ID)` from CRI's annotations, or the id alone.
fn name(id: &str, spec: &Value) -> String {
    let c = crate::cri::CriContainer::of(id, spec);
    if c.container.is_empty() {
        id.to_string()
    } else if c.pod.is_empty() {
        format!("{} ({id})", c.container)
    } else {
        format!("{}/{}/{} ({id})", c.namespace, c.pod, c.container)
    }
}

fn event(node: &str, id: &str, spec: &Value, rule: &str, action: Action, message: String) -> Event {
    let workload = Workload::from(&crate::cri::CriContainer::of(id, spec));
    let rule = Rule {
        name: rule.to_string(),
        severity: Severity::clamped(5),
        tags: vec!["palisade-runtime".to_string(), "cri-contract".to_string()],
        message,
    };
    Event::new(node, Source::Runtime, workload, rule, action, "runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sandbox::{harden_spec, HardeningConfig};
    use serde_json::json;

    fn spec(kind: &str) -> Value {
        json!({
            "process": {"args": ["sh"], "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_NET_RAW"],
                "effective": ["CAP_CHOWN", "CAP_NET_RAW"]
            }},
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
            "annotations": {
                "io.kubernetes.cri.container-type": kind,
                "io.kubernetes.cri.sandbox-namespace": "team",
                "io.kubernetes.cri.sandbox-name": "web-0",
                "io.kubernetes.cri.container-name": "app"
            }
        })
    }

    #[test]
    fn an_ordinary_container_under_the_hardened_default_raises_nothing() {
        let mut s = spec("container");
        let report = harden_spec("c1", &mut s, &HardeningConfig::default()).unwrap();
        assert!(
            !report.overridden.is_empty(),
            "no_new_privs and seccomp are overridden"
        );
        assert!(decision_events("node", "c1", &s, &report).is_empty());
    }

    #[test]
    fn compat_raises_one_event_naming_the_container_and_every_grant() {
        let mut s = spec("container");
        let report = harden_spec("c1", &mut s, &HardeningConfig::compat()).unwrap();
        let events = decision_events("node", "c1", &s, &report);
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.rule.name, RELAXED);
        assert_eq!(e.action, Action::Audit);
        assert_eq!(e.workload.container_id, "c1");
        assert!(
            e.rule.message.starts_with(
                "container team/web-0/app (c1) granted beyond the hardened default: \
                 capabilities: CAP_NET_RAW"
            ),
            "{}",
            e.rule.message
        );
        assert!(e.rule.message.contains("no_new_privs: left off"));
        assert!(e.rule.message.contains("seccomp: no filter"));

        // The pause container's grants are logged only.
        let mut s = spec("sandbox");
        let report = harden_spec("p1", &mut s, &HardeningConfig::compat()).unwrap();
        assert!(decision_events("node", "p1", &s, &report).is_empty());
    }

    #[test]
    fn an_explicit_override_is_an_event() {
        let mut s = spec("container");
        let cfg = HardeningConfig {
            unset_seccomp_is_runtime_default: true,
            ..HardeningConfig::default()
        };
        let report = harden_spec("c1", &mut s, &cfg).unwrap();
        let events = decision_events("node", "c1", &s, &report);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].rule.name, OVERRIDE);
        assert!(events[0]
            .rule
            .message
            .starts_with("container team/web-0/app (c1): securityContext.seccompProfile:"));
    }

    #[test]
    fn a_refused_request_is_an_event_and_a_broken_spec_is_not() {
        let mut s = spec("container");
        s["process"]["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN"]);
        let err = harden_spec("c1", &mut s, &HardeningConfig::default()).unwrap_err();
        let e = refusal_event("node", "c1", &s, &err).expect("an event");
        assert_eq!(e.rule.name, REFUSED);
        assert_eq!(e.action, Action::Block);
        assert!(e.rule.message.contains("allowed_added_capabilities"));

        let mut broken = json!({"process": 3});
        let err = harden_spec("c1", &mut broken, &HardeningConfig::default()).unwrap_err();
        assert!(refusal_event("node", "c1", &broken, &err).is_none());
    }
}
