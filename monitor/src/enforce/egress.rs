//! Egress allow-lists: a container's [`EgressList`] as allow keys in the `deny_connect` trie
//! (egress.h), its `containers` flags, and the enforcer it gets. The sock_addr programs that
//! check them are attached by [`super::connect::attach`], once for both rule kinds. A
//! learning container without a list gets the learning flags instead: each destination is
//! reported once and none refused.

use super::{Installed, Target};
use crate::egress::{allow_keys, EgressList};
use crate::error::MonitorError;
use crate::raw::{self, bytes_of};
use crate::rules::{Enforcer, RuleEnforcement};
use crate::skel::monitor::types;

/// The `containers` flags of a learning container: every destination reported once, none
/// refused.
pub(crate) const LEARN_FLAGS: u32 = raw::CF_EGRESS | raw::CF_EGRESS_AUDIT | raw::CF_EGRESS_LEARN;

/// Puts the container's allow keys into the trie; returns the `containers` flags that turn
/// the list on (none without a list) and the list's enforcer: `bpf-sock-addr` when the node
/// enforces and the list is not in audit, else `audit-only`. Without a list, `learn` asks for
/// the hooks and the learning flags (an observation, no rule: no enforcement is recorded).
pub(crate) fn install(
    t: &Target<'_>,
    list: Option<&EgressList>,
    learn: bool,
    installed: &mut Installed,
) -> Result<(u32, Vec<RuleEnforcement>), MonitorError> {
    let Some(list) = list else {
        if !learn {
            return Ok((0, Vec::new()));
        }
        installed.egress = true;
        return Ok((LEARN_FLAGS, Vec::new()));
    };
    for (i, peer) in list.peers.iter().enumerate() {
        let value = types::deny_value {
            rule: i as u32 + 1,
            ..Default::default()
        };
        for key in allow_keys(t.slot, &list.name, peer)? {
            t.insert(
                &t.maps.deny_connect,
                "deny_connect",
                bytes_of(&key),
                bytes_of(&value),
            )?;
            installed.egress_keys.push(key);
        }
    }
    installed.egress = true;
    let enforce = t.maps.config.enforce != 0 && !list.audit;
    let mut flags = raw::CF_EGRESS;
    if list.audit {
        flags |= raw::CF_EGRESS_AUDIT;
    }
    let n = list.peers.len();
    let (enforcer, note) = if enforce {
        (
            Enforcer::BpfSockAddr,
            format!(
                "connects and sends to destinations other than its {n} peers fail with EPERM in the cgroup sock_addr hooks"
            ),
        )
    } else {
        (
            Enforcer::AuditOnly,
            format!(
                "connects and sends to destinations other than its {n} peers are reported, not refused"
            ),
        )
    };
    Ok((
        flags,
        vec![RuleEnforcement {
            rule: list.name.clone(),
            enforcer,
            note: Some(note),
        }],
    ))
}
