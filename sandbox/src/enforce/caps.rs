//! Capability rules: Block and allow-lists cut the spec's capability sets (runc applies
//! them, so palisade-init needs no capability step); Audit goes to the monitor.

use std::collections::BTreeSet;

use palisade_policy::{Action, CompiledPolicy};
use serde_json::{Map, Value};

use super::monitor::MonitorTarget;
use super::{Ctx, Enforcer, RuleId, RuleKind};
use crate::capabilities::CAPABILITY_SETS;
use crate::spec::{self, SpecError};

fn oci_name(name: &str) -> String {
    format!("CAP_{}", name.to_ascii_uppercase())
}

pub(super) fn apply(
    ctx: &mut Ctx<'_>,
    root: &mut Map<String, Value>,
    policy: &CompiledPolicy,
) -> Result<(), SpecError> {
    if policy.capabilities.is_empty() {
        return Ok(());
    }
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    for compiled in &policy.capabilities {
        let r = &compiled.rule;
        let name = oci_name(r.capability.name);
        let id = RuleId::of(RuleKind::Capabilities, compiled, name.clone());
        let to_monitor = id.monitor(
            MonitorTarget::Capability(name.clone()),
            &r.from_source,
            false,
        );
        match (r.meta.action, r.from_source.is_empty()) {
            (Action::Audit, _) => {
                ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                ctx.record(&id, Enforcer::MonitorAudit, None);
            }
            (Action::Block, true) => {
                blocked.insert(name.clone());
                ctx.record(&id, Enforcer::CapabilitiesBounding, None);
            }
            (Action::Block, false) => {
                let why = "fromSource: the capability sets are the whole container's";
                ctx.audit_instead(&id, why, to_monitor(Action::Block));
            }
            (Action::Allow, true) => {
                allowed.insert(name.clone());
                ctx.record(&id, Enforcer::CapabilitiesBounding, None);
            }
            (Action::Allow, false) => {
                // Keeping the capability for every process is weaker than the rule.
                let why = "fromSource: the capability sets are the whole container's, so \
                           every process would keep it";
                if ctx.cannot(&id, why, Enforcer::AuditOnly) {
                    allowed.insert(name.clone());
                    ctx.out.monitor.audit.push(to_monitor(Action::Allow));
                }
            }
        }
    }
    let allow_list = policy.posture.capabilities == Action::Block;
    let Some(Value::Object(process)) = root.get_mut("process") else {
        return Err(SpecError::Missing { path: "process" });
    };
    let Some(caps) = process.get_mut("capabilities") else {
        return Ok(());
    };
    let Value::Object(caps) = caps else {
        return Err(SpecError::WrongType {
            path: "process.capabilities".to_owned(),
            expected: "an object",
        });
    };
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for set in CAPABILITY_SETS {
        let path = format!("process.capabilities.{set}");
        let had = spec::string_list(caps, set, &path)?;
        if had.is_empty() && !caps.contains_key(set) {
            continue;
        }
        let kept: Vec<String> = had
            .iter()
            .filter(|c| !blocked.contains(*c) && (!allow_list || allowed.contains(*c)))
            .cloned()
            .collect();
        dropped.extend(had.into_iter().filter(|c| !kept.contains(c)));
        spec::set_string_list(caps, set, &kept);
    }
    if !dropped.is_empty() {
        let list: Vec<&str> = dropped.iter().map(String::as_str).collect();
        ctx.out
            .applied
            .push(format!("policy: capabilities dropped {}", list.join(", ")));
    }
    if allow_list {
        ctx.out.applied.push(
            "policy: capability allow-list: every capability it does not list is dropped"
                .to_owned(),
        );
    }
    Ok(())
}
