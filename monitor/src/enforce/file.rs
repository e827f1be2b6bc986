//! File deny rules: one `deny_file` key per rule (the container's slot and the device and
//! inode of the file or directory it names, resolved now with symlinks followed), refused with
//! EACCES by the BPF-LSM programs: `file_open` for opens, the inode hooks (lsm_file_ops.h) for
//! removal, renames, links, attribute changes and new names in a covered directory. Without BPF-LSM in force nothing could refuse
//! the open, so registering such a rule fails (the caller refuses the container, or degrades
//! the rule to a report before asking, when its configuration allows degrading).

use std::collections::HashMap;

use super::{source_id, Installed, Target};
use crate::error::MonitorError;
use crate::kernel::function_params;
use crate::raw::{self, bytes_of};
use crate::rules::{file_id_in, Enforcer, FileRule, FileTarget, RuleEnforcement, RuleError};
use crate::skel::monitor::types;

/// Whether the LSM program `name` matches the running kernel's hook: of the two
/// `inode_setattr` programs, the one with the hook's arguments (a `mnt_idmap` first from 6.10
/// on; read from the kernel's BTF). Where the BTF does not tell, the older one is tried: it
/// loads or the LSM programs fail to load together, and BPF-LSM is then not claimed. Every
/// other program fits.
pub(crate) fn fits_kernel(name: &str) -> bool {
    let idmap = match name {
        "lsm_setattr" => false,
        "lsm_setattr_idmap" => true,
        _ => return true,
    };
    setattr_has_idmap(function_params("bpf_lsm_inode_setattr")).unwrap_or(false) == idmap
}

/// From the number of parameters of `bpf_lsm_inode_setattr`: whether it takes a `mnt_idmap`
/// (three) or not (two); `None` when the kernel's BTF does not say.
fn setattr_has_idmap(params: Option<usize>) -> Option<bool> {
    match params? {
        2 => Some(false),
        3 => Some(true),
        _ => None,
    }
}

/// Puts a container's file deny rules into `deny_file`; returns, per rule, its enforcer.
pub(crate) fn install(
    t: &Target<'_>,
    rules: &[FileRule],
    installed: &mut Installed,
) -> Result<Vec<RuleEnforcement>, MonitorError> {
    let maps = t.maps;
    let Some(first) = rules.first() else {
        return Ok(Vec::new());
    };
    if !maps.lsm {
        return Err(MonitorError::NoBpfLsm {
            container: t.name.to_string(),
            rule: first.name.clone(),
            reason: "bpf is not among the active LSMs, or its probe program never ran",
        });
    }
    // Two rules on one file make one key: the stricter conditions of the two.
    let mut keys: HashMap<(u32, u64), (usize, types::file_rule)> = HashMap::new();
    let mut order = Vec::new();
    let mut missing = vec![false; rules.len()];
    for (i, rule) in rules.iter().enumerate() {
        let (dev, ino) = match file_id_in(&rule.name, rule.root.as_deref(), rule.target.path()) {
            Ok(id) => id,
            // Nothing to open there now: an inode rule cannot key a file that does not exist.
            Err(RuleError::ExecPath { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                missing[i] = true;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let value = file_value(i, rule)?;
        match keys.get_mut(&(dev, ino)) {
            Some((_, existing)) => *existing = stricter(*existing, value),
            None => {
                keys.insert((dev, ino), (i, value));
                order.push((dev, ino));
            }
        }
    }
    for (dev, ino) in order {
        let Some((i, value)) = keys.get(&(dev, ino)) else {
            continue;
        };
        let key = types::file_key {
            slot: t.slot,
            dev,
            ino,
        };
        t.insert(
            &maps.deny_file,
            "deny_file",
            bytes_of(&key),
            bytes_of(value),
        )?;
        installed.file_keys.push((*i, key));
    }
    let enforce = maps.config.enforce != 0;
    Ok(rules
        .iter()
        .zip(missing)
        .map(|(rule, missing)| RuleEnforcement {
            rule: rule.name.clone(),
            enforcer: if enforce {
                Enforcer::BpfLsm
            } else {
                Enforcer::AuditOnly
            },
            note: Some(if missing {
                format!(
                    "{} does not exist in the container at registration: nothing keyed, a file \
                     created there later is not refused",
                    rule.target.path().display()
                )
            } else {
                note(rule, enforce)
            }),
        })
        .collect())
}

/// The kernel value of rule `index` (the kernel reports `index + 1`).
fn file_value(index: usize, rule: &FileRule) -> Result<types::file_rule, MonitorError> {
    let mut flags = 0;
    if rule.read_only {
        flags |= raw::FR_WRITE_ONLY;
    }
    if rule.owner_only {
        flags |= raw::FR_OWNER_ONLY;
    }
    if let FileTarget::Directory { recursive, .. } = rule.target {
        flags |= raw::FR_DIR;
        if recursive {
            flags |= raw::FR_RECURSIVE;
        }
    }
    let (src_dev, src_ino) = source_id(
        &rule.name,
        rule.root.as_deref(),
        rule.from_source.as_deref(),
    )?;
    Ok(types::file_rule {
        rule: index as u32 + 1,
        flags,
        src_dev,
        pad: 0,
        src_ino,
        hits: 0,
    })
}

/// Two rules on one file: a condition (readOnly, ownerOnly, fromSource) holds only when both
/// rules have it; a directory's coverage is the wider of the two.
fn stricter(a: types::file_rule, b: types::file_rule) -> types::file_rule {
    let both = raw::FR_WRITE_ONLY | raw::FR_OWNER_ONLY;
    let either = raw::FR_DIR | raw::FR_RECURSIVE;
    let same_source = a.src_dev == b.src_dev && a.src_ino == b.src_ino;
    types::file_rule {
        flags: (a.flags & b.flags & both) | ((a.flags | b.flags) & either),
        src_dev: if same_source { a.src_dev } else { 0 },
        src_ino: if same_source { a.src_ino } else { 0 },
        ..a
    }
}

fn note(rule: &FileRule, enforce: bool) -> String {
    let what = if rule.read_only {
        "opens for writing and changes (removal, rename, link, chmod, chown, truncate) fail \
         with EACCES"
    } else {
        "opens and changes (removal, rename, link, chmod, chown, truncate) fail with EACCES"
    };
    let mut s = format!(
        "matched on device and inode at registration (every path to the file); {what} in the \
         lsm hooks"
    );
    if let FileTarget::Directory { .. } = rule.target {
        s.push_str("; files below the directory within its own mount, and new names in it");
    }
    if !enforce {
        s.push_str("; reported only (the monitor runs in audit mode)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(flags: u32, src: (u32, u64)) -> types::file_rule {
        types::file_rule {
            rule: 1,
            flags,
            src_dev: src.0,
            pad: 0,
            src_ino: src.1,
            hits: 0,
        }
    }

    #[test]
    fn the_setattr_program_follows_the_hook_arguments() {
        assert_eq!(setattr_has_idmap(Some(2)), Some(false));
        assert_eq!(setattr_has_idmap(Some(3)), Some(true));
        assert_eq!(setattr_has_idmap(Some(4)), None);
        assert_eq!(setattr_has_idmap(None), None);
        assert!(fits_kernel("lsm_file_open"));
        assert_ne!(
            fits_kernel("lsm_setattr"),
            fits_kernel("lsm_setattr_idmap"),
            "one setattr program per kernel"
        );
    }

    #[test]
    fn two_rules_on_one_file_keep_only_the_conditions_both_have() {
        let ro = value(raw::FR_WRITE_ONLY | raw::FR_OWNER_ONLY, (8, 5));
        let plain = value(raw::FR_OWNER_ONLY | raw::FR_DIR, (8, 5));
        let merged = stricter(ro, plain);
        assert_eq!(merged.flags, raw::FR_OWNER_ONLY | raw::FR_DIR);
        assert_eq!((merged.src_dev, merged.src_ino), (8, 5));
        let other_source = stricter(ro, value(raw::FR_WRITE_ONLY, (8, 6)));
        assert_eq!(other_source.flags, raw::FR_WRITE_ONLY);
        assert_eq!((other_source.src_dev, other_source.src_ino), (0, 0));
        assert_eq!(merged.rule, 1, "the first rule names the key");
    }
}
