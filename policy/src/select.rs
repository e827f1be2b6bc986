//! Which policies apply to a container: a policy's namespace, scope and selector against the
//! container's workload.

use crate::model::{Policy, Scope};
use crate::selector::Workload;

impl Policy {
    /// Whether this policy applies to the workload: active, same namespace, in scope, selector matches.
    pub fn applies_to(&self, w: &Workload) -> bool {
        if !self.active || self.id.namespace != w.namespace {
            return false;
        }
        if let Scope::Pod { pod_name } = &self.scope {
            if *pod_name != w.pod_name {
                return false;
            }
        }
        self.selector.matches(w)
    }
}

/// The policies that apply to one container, in the order given.
pub fn select<'a>(policies: &'a [Policy], w: &Workload) -> Vec<&'a Policy> {
    policies.iter().filter(|p| p.applies_to(w)).collect()
}
