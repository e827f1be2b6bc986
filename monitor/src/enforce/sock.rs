//! Socket creation allow-lists and block lists: a container's [`SockRule`]s encoded into the `sock_rules` map
//! that the cgroup `sock_create` program reads (attached to the container's cgroup when it has
//! such a rule), and the enforcer each rule gets.

use std::collections::HashMap;

use super::{attach_cgroup, Installed, Target};
use crate::error::MonitorError;
use crate::raw::bytes_of;
use crate::rules::{file_id, Enforcer, RuleEnforcement, RuleError, SockRule, MAX_SOCK_SOURCES};
use crate::set::pin::SOCK_PROG;
use crate::skel::monitor::types;

/// `sock_rule.flags`: what the rule covers is reported, not refused (SR_AUDIT in events.h).
const SR_AUDIT: u32 = 1;
/// `sock_rule.flags`: a block list, the listed binaries are covered (SR_LISTED in events.h).
const SR_LISTED: u32 = 2;

/// The map value of one rule: `index` is its position in the container's rules (the kernel
/// reports `index + 1`).
pub(crate) fn sock_value(
    index: usize,
    rule: &SockRule,
    sources: &[(u32, u64)],
) -> Result<types::sock_rule, RuleError> {
    if sources.len() > MAX_SOCK_SOURCES {
        return Err(RuleError::SockSources {
            name: rule.name.clone(),
            count: sources.len(),
            max: MAX_SOCK_SOURCES,
        });
    }
    let mut value = types::sock_rule {
        rule: index as u32 + 1,
        flags: if rule.audit { SR_AUDIT } else { 0 }
            | if rule.block_listed { SR_LISTED } else { 0 },
        count: sources.len() as u32,
        ..Default::default()
    };
    for (slot, (dev, ino)) in value.allow.iter_mut().zip(sources) {
        slot.dev = *dev;
        slot.ino = *ino;
    }
    Ok(value)
}

/// Rules checked before anything reaches the kernel: one rule per class, and no more
/// binaries than the kernel rule holds.
pub(crate) fn validate(rules: &[SockRule]) -> Result<(), RuleError> {
    let mut seen: HashMap<u32, &str> = HashMap::new();
    for r in rules {
        if r.sources.len() > MAX_SOCK_SOURCES {
            return Err(RuleError::SockSources {
                name: r.name.clone(),
                count: r.sources.len(),
                max: MAX_SOCK_SOURCES,
            });
        }
        if let Some(first) = seen.insert(r.class.code(), &r.name) {
            return Err(RuleError::SockClassTwice {
                first: first.to_string(),
                second: r.name.clone(),
                class: r.class.as_str(),
            });
        }
    }
    Ok(())
}

/// Puts a container's socket rules into `sock_rules` and attaches the `sock_create` program to
/// its cgroup; returns, per rule, its enforcer. Refuses what the loaded programs cannot carry:
/// no `sock_create` program on this node, or binaries to tell apart where the hook cannot read
/// the current task.
pub(crate) fn install(
    t: &Target<'_>,
    rules: &[SockRule],
    installed: &mut Installed,
) -> Result<Vec<RuleEnforcement>, MonitorError> {
    let (maps, container, slot) = (t.maps, t.name, t.slot);
    validate(rules)?;
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    if maps.sock_create.is_none() {
        return Err(MonitorError::Unsupported {
            container: container.to_string(),
            what: "socket rules: this kernel refused the cgroup sock_create program",
        });
    }
    let source_check = maps.config.source_check != 0;
    if !source_check && rules.iter().any(|r| !r.sources.is_empty()) {
        return Err(MonitorError::Unsupported {
            container: container.to_string(),
            what: "socket rules naming binaries (fromSource): this kernel's cgroup sock hooks \
                   cannot read the current task",
        });
    }
    let enforce = maps.config.enforce != 0;
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let sources = rule
            .sources
            .iter()
            .map(|p| file_id(&rule.name, p))
            .collect::<Result<Vec<_>, _>>()?;
        let value = sock_value(i, rule, &sources)?;
        let key = types::sock_key {
            slot,
            class: rule.class.code(),
        };
        t.insert(
            &maps.sock_rules,
            "sock_rules",
            bytes_of(&key),
            bytes_of(&value),
        )?;
        installed.sock_keys.push(key);
        let names: Vec<String> = rule
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let who = match (rule.block_listed, names.is_empty()) {
            (true, _) => format!("processes running {}", names.join(", ")),
            (false, true) => "every process".to_string(),
            (false, false) => format!("processes other than {}", names.join(", ")),
        };
        let (enforcer, note) = match (enforce, rule.audit) {
            (true, false) => (
                Enforcer::BpfSockCreate,
                format!(
                    "{} sockets of {who} fail with EPERM at creation (matched on inode and \
                     device at registration)",
                    rule.class.as_str()
                ),
            ),
            _ => (
                Enforcer::AuditOnly,
                format!(
                    "{} sockets of {who} are reported at creation, not refused",
                    rule.class.as_str()
                ),
            ),
        };
        out.push(RuleEnforcement {
            rule: rule.name.clone(),
            enforcer,
            note: Some(note),
        });
    }
    if let (false, Some(prog)) = (installed.sock_keys.is_empty(), &maps.sock_create) {
        let dir = t.cgroup_dir()?;
        let prog = prog.try_clone().map_err(|source| MonitorError::Attach {
            container: container.to_string(),
            program: SOCK_PROG.0,
            path: dir.clone(),
            source,
        })?;
        let links = attach_cgroup(container, &dir, &[(SOCK_PROG.0, SOCK_PROG.1, prog)])?;
        installed.links.extend(links);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::SockClass;

    fn rule(name: &str, class: SockClass, n: usize) -> SockRule {
        SockRule {
            name: name.into(),
            class,
            sources: (0..n).map(|i| format!("/bin/b{i}").into()).collect(),
            block_listed: false,
            audit: false,
            severity: 6,
            message: String::new(),
        }
    }

    #[test]
    fn values_carry_rule_id_posture_and_sources() {
        let mut r = rule("tcp-nginx", SockClass::Tcp, 2);
        r.audit = true;
        let v = sock_value(2, &r, &[(8, 100), (9, 200)]).unwrap();
        assert_eq!(v.rule, 3);
        assert_eq!(v.flags, SR_AUDIT);
        assert_eq!(v.count, 2);
        assert_eq!((v.allow[1].dev, v.allow[1].ino), (9, 200));
        assert_eq!(v.allow[2].ino, 0);
        r.block_listed = true;
        assert_eq!(sock_value(0, &r, &[]).unwrap().flags, SR_AUDIT | SR_LISTED);
        let too_many = vec![(1, 1); MAX_SOCK_SOURCES + 1];
        assert!(matches!(
            sock_value(0, &r, &too_many),
            Err(RuleError::SockSources { count: 5, .. })
        ));
    }

    #[test]
    fn one_rule_per_class_and_bounded_sources() {
        assert!(validate(&[rule("a", SockClass::Tcp, 1), rule("b", SockClass::Udp, 4)]).is_ok());
        let err = validate(&[rule("a", SockClass::Tcp, 1), rule("b", SockClass::Tcp, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "socket rules a and b: both for tcp, one rule per protocol"
        );
        let err = validate(&[rule("big", SockClass::Raw, 5)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "socket rule big: 5 allowed binaries, at most 4 fit in the kernel rule"
        );
    }
}
