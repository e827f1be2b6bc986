//! Exec deny rules: one `deny_exec` key per rule (the container's slot and the binary's inode
//! and device, taken now), enforced by the BPF-LSM program (the exec fails with EPERM) where
//! the node loaded it, else by a kill at exec.

use super::{deny_value, Enforced, Installed, Target};
use crate::raw::bytes_of;
use crate::rules::{exec_key, Enforcer, ExecRule, RuleEnforcement};

/// Puts a container's exec deny rules into `deny_exec`; returns, per rule, its enforcer.
pub(crate) fn install(t: &Target<'_>, rules: &[ExecRule], installed: &mut Installed) -> Enforced {
    let maps = t.maps;
    // What the loaded programs do, whatever this handle asked for.
    let enforcer = match (maps.config.enforce != 0, maps.lsm) {
        (false, _) => Enforcer::AuditOnly,
        (true, true) => Enforcer::BpfLsm,
        (true, false) => Enforcer::BpfExecKill,
    };
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let key = exec_key(t.slot, &rule.name, &rule.path)?;
        let value = deny_value(i, &rule.name, rule.from_parent.as_deref())?;
        t.insert(
            &maps.deny_exec,
            "deny_exec",
            bytes_of(&key),
            bytes_of(&value),
        )?;
        installed.exec_keys.push(key);
        out.push(RuleEnforcement {
            rule: rule.name.clone(),
            enforcer,
            note: Some(match enforcer {
                Enforcer::BpfLsm => "matched on inode and device at registration; \
                                    the exec fails with EPERM"
                    .to_string(),
                _ => "matched on inode and device at registration; the process is \
                      killed at exec (bpf-lsm unavailable)"
                    .to_string(),
            }),
        });
    }
    Ok(out)
}
