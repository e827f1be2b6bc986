//! File deny rules: one `deny_file` key per rule (the container's slot and the device and
//! inode of the file or directory it names, resolved now with symlinks followed), and one
//! `deny_glob` key per glob the kernel can match (on its literal directory, lsm_globs.h),
//! refused with EACCES by the BPF-LSM programs: `file_open` for opens, the inode hooks
//! (lsm_file_ops.h) for removal, renames, links, attribute changes and new names. Without
//! BPF-LSM in force nothing could refuse them, so registering such a rule fails (the caller
//! refuses the container, or degrades the rule to a report before asking, when its
//! configuration allows degrading).

use std::collections::HashMap;
use std::path::Path;

use super::{source_id, Enforced, Installed, Target};
use crate::error::MonitorError;
use crate::kernel::function_params;
use crate::raw::{self, bytes_of};
use crate::rules::{file_id_in, Enforcer, FileRule, FileTarget, RuleEnforcement, RuleError};
use crate::skel::monitor::types;

/// The longest head and tail of a glob's last segment the kernel compares (GLOB_PART in
/// lsm_globs.h).
const GLOB_PART: usize = 32;
/// Globs per literal directory and container (GLOBS_PER_DIR in lsm_globs.h).
const GLOBS_PER_DIR: usize = 2;

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

/// Puts a container's file deny rules into `deny_file` (and its globs into `deny_glob`);
/// returns, per rule, its enforcer.
pub(crate) fn install(t: &Target<'_>, rules: &[FileRule], installed: &mut Installed) -> Enforced {
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
    let enforce = maps.config.enforce != 0;
    let mut notes: Vec<(Enforcer, String)> = Vec::with_capacity(rules.len());
    // Two rules on one file make one key: the stricter conditions of the two.
    let mut keys: HashMap<(u32, u64), (usize, types::file_rule)> = HashMap::new();
    let mut order = Vec::new();
    let mut globs_in: HashMap<(u32, u64), u32> = HashMap::new();
    for (i, rule) in rules.iter().enumerate() {
        if let FileTarget::Pattern { glob, dir } = &rule.target {
            notes.push(install_glob(
                t,
                i,
                rule,
                (glob.as_str(), dir.as_path()),
                rules,
                &mut globs_in,
                installed,
            )?);
            continue;
        }
        let (dev, ino) = match file_id_in(&rule.name, rule.root.as_deref(), rule.target.path()) {
            Ok(id) => id,
            // Nothing to open there now: an inode rule cannot key a file that does not exist.
            Err(RuleError::ExecPath { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                notes.push((
                    Enforcer::BpfLsm,
                    format!(
                        "{} does not exist in the container at registration: nothing keyed, a \
                         file created there later is not refused",
                        rule.target.path().display()
                    ),
                ));
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
        notes.push((Enforcer::BpfLsm, note(rule)));
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
    if !installed.glob_keys.is_empty() {
        let count = installed.glob_keys.len() as u32;
        t.insert(
            &maps.glob_slots,
            "glob_slots",
            bytes_of(&t.slot),
            bytes_of(&count),
        )?;
        installed.glob_slot = Some(t.slot);
    }
    Ok(rules
        .iter()
        .zip(notes)
        .map(|(rule, (enforcer, mut note))| {
            let enforcer = match enforcer {
                Enforcer::BpfLsm if !enforce => {
                    note.push_str("; reported only (the monitor runs in audit mode)");
                    Enforcer::AuditOnly
                }
                e => e,
            };
            RuleEnforcement {
                rule: rule.name.clone(),
                enforcer,
                note: Some(note),
            }
        })
        .collect())
}

/// Keys glob rule `index` on its literal directory when the kernel can match its form
/// ([`glob_form`]); returns its enforcer and note. Otherwise only the files the caller
/// expanded it to (the rules of the same name) are refused, and the note says so; with none,
/// nothing is, and the rule is reported as such.
fn install_glob(
    t: &Target<'_>,
    index: usize,
    rule: &FileRule,
    (glob, dir): (&str, &Path),
    rules: &[FileRule],
    globs_in: &mut HashMap<(u32, u64), u32>,
    installed: &mut Installed,
) -> Result<(Enforcer, String), MonitorError> {
    let expanded = rules
        .iter()
        .filter(|r| r.name == rule.name && !matches!(r.target, FileTarget::Pattern { .. }))
        .count();
    let only_expanded = |why: &str| {
        if expanded == 0 {
            (
                Enforcer::AuditOnly,
                format!(
                    "matchPatterns {glob}: {why}, and no file matches it at registration: \
                     nothing is refused"
                ),
            )
        } else {
            (
                Enforcer::BpfLsm,
                format!(
                    "matchPatterns {glob}: {why}; the {expanded} files matching it at \
                     registration are refused with EACCES (by device and inode), a matching \
                     file created later is not"
                ),
            )
        }
    };
    let Some(form) = glob_form(glob) else {
        return Ok(only_expanded(
            "the kernel matches a glob whose wildcards are all in its last segment (one `*`, \
             `?`, parts of at most 32 bytes), or follow a `**`; this one is not",
        ));
    };
    let (dev, ino) = match file_id_in(&rule.name, rule.root.as_deref(), dir) {
        Ok(id) => id,
        Err(RuleError::ExecPath { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(only_expanded(&format!(
                "its directory {} does not exist at registration",
                dir.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let idx = globs_in.entry((dev, ino)).or_insert(0);
    if *idx as usize >= GLOBS_PER_DIR {
        return Err(RuleError::GlobsPerDir {
            name: rule.name.clone(),
            dir: dir.to_path_buf(),
            max: GLOBS_PER_DIR,
        }
        .into());
    }
    let key = types::glob_key {
        slot: t.slot,
        dev,
        ino,
        idx: *idx,
        pad: 0,
    };
    *idx += 1;
    let (head, head_mask) = glob_words(&form.head, false);
    let (tail, tail_mask) = glob_words(&form.tail, true);
    let mut value = types::glob_rule {
        r: file_value(index, rule)?,
        min_depth: form.min_depth,
        star: u32::from(form.star),
        head_len: form.head.len() as u32,
        tail_len: form.tail.len() as u32,
        head,
        head_mask,
        tail,
        tail_mask,
    };
    if form.recursive {
        value.r.flags |= raw::FR_RECURSIVE;
    }
    t.insert(
        &t.maps.deny_glob,
        "deny_glob",
        bytes_of(&key),
        bytes_of(&value),
    )?;
    installed.glob_keys.push((index, key));
    let what = if rule.read_only {
        "opens for writing and changes (removal, rename, link, attributes, a new name) fail"
    } else {
        "opens and changes (removal, rename, link, attributes, a new name) fail"
    };
    Ok((
        Enforcer::BpfLsm,
        format!(
            "matchPatterns {glob}: matched on each name below {} by the lsm hooks, whenever \
             the file was made; {what} with EACCES",
            dir.display()
        ),
    ))
}

/// The form of a glob the kernel matches (lsm_globs.h): below its literal directory, a last
/// segment of a head, at most one `*` and a tail (`?` for one character), at one depth (its
/// wildcards all in its last segment) or at `min_depth` and below (after a `**`). It reads the
/// glob as `palisade_policy::glob_match` does (a test below holds the two together).
#[derive(Debug, PartialEq, Eq)]
struct GlobForm {
    min_depth: u32,
    recursive: bool,
    star: bool,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl GlobForm {
    fn new(min_depth: u32, recursive: bool, star: bool, head: &str, tail: &str) -> Self {
        GlobForm {
            min_depth,
            recursive,
            star,
            head: head.as_bytes().to_vec(),
            tail: tail.as_bytes().to_vec(),
        }
    }
}

fn glob_form(glob: &str) -> Option<GlobForm> {
    let segments: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    let literal = segments
        .iter()
        .take_while(|s| !s.contains(['*', '?']))
        .count();
    let rest = segments[literal..].join("/");
    if rest.is_empty() || glob.ends_with('/') || glob.contains("//") {
        return None;
    }
    // `**` is any run of characters, `/` included. `**/` then a last segment: that segment at
    // depth two or more (the `/` after `**` is in the path); `**` then a segment's end: at any
    // depth from one, the last name ending as the segment does.
    let (min_depth, recursive, segment) = if let Some(s) = rest.strip_prefix("**/") {
        (2, true, s.to_string())
    } else if let Some(s) = rest.strip_prefix("**") {
        let s = s.trim_start_matches('*');
        if s.contains(['*', '?']) {
            return None;
        }
        (1, true, format!("*{s}"))
    } else {
        (1, false, rest.clone())
    };
    if segment.contains('/') || segment.is_empty() {
        return None;
    }
    let (star, head, tail) = match segment.split_once('*') {
        None => (false, segment.as_str(), ""),
        Some((h, t)) if !t.contains('*') => (true, h, t),
        Some(_) => return None,
    };
    if head.len() > GLOB_PART || tail.len() > GLOB_PART {
        return None;
    }
    Some(GlobForm::new(min_depth, recursive, star, head, tail))
}

/// A glob's head or tail as the kernel compares it: GLOB_PART bytes as words and the mask of
/// the bytes that must be equal (`?` and the bytes past the part excluded); a tail is aligned
/// on the end (the name's last bytes).
fn glob_words(part: &[u8], at_end: bool) -> ([u64; GLOB_PART / 8], [u64; GLOB_PART / 8]) {
    let mut bytes = [0u8; GLOB_PART];
    let mut mask = [0u8; GLOB_PART];
    let start = if at_end { GLOB_PART - part.len() } else { 0 };
    for (k, &c) in part.iter().enumerate() {
        if c != b'?' {
            bytes[start + k] = c;
            mask[start + k] = 0xff;
        }
    }
    let words = |b: &[u8; GLOB_PART]| {
        let mut w = [0u64; GLOB_PART / 8];
        for (k, chunk) in b.chunks_exact(8).enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            w[k] = u64::from_ne_bytes(a);
        }
        w
    };
    (words(&bytes), words(&mask))
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

fn note(rule: &FileRule) -> String {
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
    fn globs_the_kernel_matches_and_the_others() {
        let form = |min_depth, recursive, star, head, tail| {
            Some(GlobForm::new(min_depth, recursive, star, head, tail))
        };
        assert_eq!(glob_form("/etc/*.key"), form(1, false, true, "", ".key"));
        assert_eq!(
            glob_form("/etc/ssh/ssh_host_*_key"),
            form(1, false, true, "ssh_host_", "_key")
        );
        assert_eq!(
            glob_form("/tmp/secret?"),
            form(1, false, false, "secret?", "")
        );
        assert_eq!(glob_form("/etc/**/*.pem"), form(2, true, true, "", ".pem"));
        assert_eq!(
            glob_form("/etc/**/id_?sa"),
            form(2, true, false, "id_?sa", "")
        );
        assert_eq!(glob_form("/srv/**.key"), form(1, true, true, "", ".key"));
        assert_eq!(glob_form("/srv/**"), form(1, true, true, "", ""));
        for other in [
            "/home/*/secret",
            "/etc/*a*b",
            "/etc/[ab].key",
            "/etc/a**b",
            "/etc//*.key",
            "/etc/**/x/*.key",
            "/etc/*/",
            &format!("/etc/{}*", "a".repeat(33)),
        ] {
            assert_eq!(glob_form(other), None, "{other}");
        }
    }

    /// What the kernel decides for a name `rel` below the glob's literal directory, from its
    /// form and the masks it gets (lsm_globs.h, palisade_glob_match).
    fn kernel_matches(form: &GlobForm, rel: &str) -> bool {
        let depth = rel.split('/').count() as u32;
        let name = rel.rsplit('/').next().unwrap().as_bytes();
        if depth < form.min_depth || (depth > form.min_depth && !form.recursive) {
            return false;
        }
        let (hl, tl) = (form.head.len(), form.tail.len());
        if if form.star {
            name.len() < hl + tl
        } else {
            name.len() != hl
        } {
            return false;
        }
        let mut first = [0u8; GLOB_PART];
        let n = name.len().min(GLOB_PART);
        first[..n].copy_from_slice(&name[..n]);
        let mut last = [0u8; GLOB_PART];
        last[GLOB_PART - n..].copy_from_slice(&name[name.len() - n..]);
        let masked = |b: &[u8; GLOB_PART], (w, m): ([u64; 4], [u64; 4])| {
            b.chunks_exact(8)
                .enumerate()
                .all(|(k, c)| (u64::from_ne_bytes(c.try_into().unwrap()) ^ w[k]) & m[k] == 0)
        };
        masked(&first, glob_words(&form.head, false)) && masked(&last, glob_words(&form.tail, true))
    }

    #[test]
    fn the_kernel_reads_a_glob_as_the_policy_does() {
        let long = "a-rather-long-name-for-a-key-file-of-some-service.key";
        let globs = [
            "/etc/*.key",
            "/etc/ssh/ssh_host_*_key",
            "/etc/secret?",
            "/etc/**/*.key",
            "/etc/**/id_?sa",
            "/etc/**.key",
            "/etc/**",
            "/etc/*",
            "/etc/a*",
        ];
        let names = [
            "c.key".to_string(),
            "ssl/a.key".into(),
            "ssl/private/a.key".into(),
            "ssh/ssh_host_rsa_key".into(),
            "ssh/ssh_host__key".into(),
            "ssh/ssh_host_key".into(),
            "ssh_host_rsa_key".into(),
            "ssh_host__key".into(),
            "ssh_host_key".into(),
            "secret1".into(),
            "secret".into(),
            "secret12".into(),
            "id_rsa".into(),
            "x/id_rsa".into(),
            "x/y/id_dsa".into(),
            "x/id_ecdsa".into(),
            ".key".into(),
            "key".into(),
            "a".into(),
            "b/a".into(),
            long.into(),
            format!("d/{long}"),
            format!("{long}x"),
        ];
        for glob in globs {
            let form = glob_form(glob).unwrap_or_else(|| panic!("{glob}: the kernel matches it"));
            let dir = glob
                .split('/')
                .take_while(|s| !s.contains(['*', '?']))
                .collect::<Vec<_>>()
                .join("/");
            for rel in &names {
                let path = format!("{dir}/{rel}");
                assert_eq!(
                    kernel_matches(&form, rel),
                    palisade_policy::glob_match(glob, &path),
                    "{glob} on {path}"
                );
            }
        }
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
