//! Connect deny rules: one `deny_connect` trie key per rule (slot, port or any, address
//! prefix), enforced by the cgroup sock_addr programs (connect and sendmsg fail with EPERM),
//! attached to the container's cgroup when it has such a rule or an egress allow-list
//! ([`super::egress`]).

use super::{attach_cgroup, deny_value, Installed, Target};
use crate::error::MonitorError;
use crate::raw::bytes_of;
use crate::rules::{net_key, ConnectRule, Enforcer, RuleEnforcement};

/// Puts a container's connect deny rules into `deny_connect`; returns, per rule, its enforcer.
/// [`attach`] then attaches the programs. A rule letting one binary through
/// (`only_from`) is only reported where the hooks cannot read the current task: refusing
/// everyone would break the allowed binary.
pub(crate) fn install(
    t: &Target<'_>,
    rules: &[ConnectRule],
    installed: &mut Installed,
) -> Result<Vec<RuleEnforcement>, MonitorError> {
    let maps = t.maps;
    let enforce = maps.config.enforce != 0;
    let source_check = maps.config.source_check != 0;
    let mut notes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let value = deny_value(i, &rule.name, rule.only_from.as_deref())?;
        if rule.only_from.is_some() && !source_check {
            // Refusing everyone would break the allowed binary; report instead.
            notes.push((
                Enforcer::AuditOnly,
                Some("this kernel's sock_addr hooks cannot read the current task".to_string()),
            ));
            continue;
        }
        let key = net_key(t.slot, rule)?;
        t.insert(
            &maps.deny_connect,
            "deny_connect",
            bytes_of(&key),
            bytes_of(&value),
        )?;
        installed.net_keys.push((i, key));
        notes.push((
            if enforce {
                Enforcer::BpfSockAddr
            } else {
                Enforcer::AuditOnly
            },
            rule.only_from
                .as_ref()
                .map(|p| format!("{} may still connect (checked in the kernel)", p.display())),
        ));
    }
    Ok(rules
        .iter()
        .zip(notes)
        .map(|(rule, (enforcer, note))| RuleEnforcement {
            rule: rule.name.clone(),
            enforcer,
            note,
        })
        .collect())
}

/// Attaches the sock_addr programs to the container's cgroup, once, when it has connect deny
/// keys or an egress allow-list (a program cannot be linked twice to one cgroup).
pub(crate) fn attach(t: &Target<'_>, installed: &mut Installed) -> Result<(), MonitorError> {
    if installed.net_keys.is_empty() && !installed.egress {
        return Ok(());
    }
    let dir = t.cgroup_dir()?;
    let links = attach_cgroup(t.name, &dir, &t.maps.cgroup_progs)?;
    installed.links.extend(links);
    Ok(())
}

/// The enforcer the detections credit for a connect rule the kernel matched: the sock_addr
/// programs once [`install`] attached them in enforcing mode, else none (audit).
pub(crate) fn enforcer(t: &Target<'_>, installed: &Installed) -> Enforcer {
    if t.maps.config.enforce != 0 && !installed.net_keys.is_empty() {
        Enforcer::BpfSockAddr
    } else {
        Enforcer::AuditOnly
    }
}
