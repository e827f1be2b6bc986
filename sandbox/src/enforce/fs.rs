//! File and process rules, and strict mode's filesystem: masked and read-only paths in the
//! spec, landlock layers for allow-lists and writable paths, the rest to the monitor.

use palisade_policy::{Action, CompiledPolicy, FileTarget, ProcessTarget};
use serde_json::{json, Map, Value};

use super::landlock::{beneath, clean, Layers};
use super::monitor::{file_target, process_target};
use super::{Ctx, EnforceError, Enforcer, RuleId, RuleKind};
use crate::paths;
use crate::spec::{self, SpecError};
use crate::strict::StrictConfig;

/// Mount types that are kernel interfaces, never a place for the workload's files: strict
/// mode does not count them as writable even when mounted read-write.
const KERNEL_MOUNT_TYPES: [&str; 4] = ["proc", "sysfs", "cgroup", "cgroup2"];

/// Options of the tmpfs given to a writable path no read-write mount covers.
const TMPFS_OPTIONS: [&str; 5] = ["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"];

/// Paths for `linux.maskedPaths` and `linux.readonlyPaths`.
#[derive(Debug, Default)]
pub(super) struct Masks {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

/// Strict mode: read-only root, the writable paths (read-write mounts plus the configured
/// ones, which get a tmpfs when no mount covers them). Returns the writable paths.
pub(super) fn apply_strict(
    ctx: &mut Ctx<'_>,
    root: &mut Map<String, Value>,
    strict: &StrictConfig,
) -> Result<Vec<String>, EnforceError> {
    let spec_err = |source| EnforceError::Spec {
        container: ctx.container.to_owned(),
        source,
    };
    let fs_root = spec::object_entry(root, "root", "root").map_err(spec_err)?;
    if fs_root.get("readonly") != Some(&Value::Bool(true)) {
        fs_root.insert("readonly".to_owned(), Value::Bool(true));
        ctx.out.applied.push("strict: root.readonly set".to_owned());
    }
    let mut writable = writable_mounts(root).map_err(spec_err)?;
    for path in &strict.writable_paths {
        if !path.starts_with('/')
            || path.contains("//")
            || path.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(EnforceError::WritablePath {
                container: ctx.container.to_owned(),
                path: path.clone(),
            });
        }
        let path = clean(path);
        if writable.iter().any(|w| beneath(&path, w)) {
            continue;
        }
        let mounts = match root
            .entry("mounts".to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(m) => m,
            _ => {
                return Err(spec_err(SpecError::WrongType {
                    path: "mounts".to_owned(),
                    expected: "an array",
                }))
            }
        };
        mounts.push(json!({
            "destination": path,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": TMPFS_OPTIONS,
        }));
        ctx.out
            .applied
            .push(format!("strict: tmpfs mounted at {path} (writable_paths)"));
        writable.push(path);
    }
    ctx.out.applied.push(format!(
        "strict: landlock allows writes only beneath {}",
        writable.join(", ")
    ));
    Ok(writable)
}

/// Destinations of the spec's read-write mounts, kernel interfaces excepted.
/// Whether `path` is `dir` or lies below it (both cleaned).
fn within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn writable_mounts(root: &Map<String, Value>) -> Result<Vec<String>, SpecError> {
    let wrong = |path: &str, expected| SpecError::WrongType {
        path: path.to_owned(),
        expected,
    };
    let mounts = match root.get("mounts") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(wrong("mounts", "an array")),
    };
    let mut out = Vec::new();
    for (i, mount) in mounts.iter().enumerate() {
        let mount = mount
            .as_object()
            .ok_or_else(|| wrong(&format!("mounts[{i}]"), "an object"))?;
        let destination = mount
            .get("destination")
            .and_then(Value::as_str)
            .ok_or_else(|| wrong(&format!("mounts[{i}].destination"), "a string"))?;
        let kind = mount.get("type").and_then(Value::as_str).unwrap_or("");
        let options = spec::string_list(mount, "options", &format!("mounts[{i}].options"))?;
        let destination = clean(destination);
        // A mount covers whatever earlier mounts put at or below its destination (CRI's pause
        // container gets /dev/shm as a tmpfs, then a read-only bind over it).
        out.retain(|w: &String| !within(w, &destination));
        if KERNEL_MOUNT_TYPES.contains(&kind) || options.iter().any(|o| o == "ro") {
            continue;
        }
        out.push(destination);
    }
    Ok(out)
}

/// File rules: Block to masks, Allow to the landlock file allow-list, Audit and what
/// neither can express to the monitor.
pub(super) fn file_rules(ctx: &mut Ctx<'_>, policy: &CompiledPolicy, layers: &mut Layers) -> Masks {
    let mut masks = Masks::default();
    let allow_list = policy.posture.file == Action::Block;
    let mut read: Vec<String> = Vec::new();
    let mut write: Vec<String> = Vec::new();
    for compiled in &policy.file {
        let r = &compiled.rule;
        let target_text = match &r.target {
            FileTarget::Path(p) | FileTarget::Pattern(p) => p.clone(),
            FileTarget::Directory { dir, .. } => dir.clone(),
        };
        let id = RuleId::of(RuleKind::File, compiled, target_text);
        let to_monitor = id.monitor(file_target(&r.target), &r.from_source, r.owner_only);
        let unexpressible = unexpressible_file(r.owner_only, !r.from_source.is_empty(), &r.target);
        match r.meta.action {
            Action::Audit => {
                ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                ctx.record(&id, Enforcer::MonitorAudit, None);
            }
            Action::Block if ctx.kernel.bpf_lsm => {
                // Refused in the kernel with EACCES, on the file the kernel resolves, for
                // every rule kind (patterns are expanded when the container is watched).
                let mut rule = to_monitor(Action::Block);
                rule.read_only = r.read_only;
                ctx.out.monitor.deny_file.push(rule);
                let mut note = match &r.target {
                    FileTarget::Pattern(_) => {
                        "bpf-lsm file_open refuses with EACCES; the pattern is expanded to the \
                         files present when the container starts"
                    }
                    _ => "bpf-lsm file_open refuses with EACCES, on every path to the file",
                }
                .to_owned();
                // file_open sees the writes that open a file, not an unlink, a rename, a
                // mkdir or a link: a read-only rule keeps its read-only remount for those.
                if r.read_only {
                    match &r.target {
                        FileTarget::Path(p) => masks.readonly.push(p.clone()),
                        FileTarget::Directory { dir, .. } => masks.readonly.push(clean(dir)),
                        FileTarget::Pattern(_) => {}
                    }
                    if !matches!(r.target, FileTarget::Pattern(_)) {
                        note.push_str(
                            "; the read-only remount refuses unlink, rename and the other \
                             writes that open no file (EROFS)",
                        );
                    }
                }
                ctx.record(&id, Enforcer::MonitorBpfLsm, Some(note));
            }
            Action::Block => {
                if let Some(why) = unexpressible {
                    ctx.audit_instead(&id, why, to_monitor(Action::Block));
                    continue;
                }
                let (path, subtree_note) = match &r.target {
                    FileTarget::Path(p) => (p.clone(), None),
                    FileTarget::Directory { dir, recursive } => (
                        clean(dir),
                        (!recursive).then_some(
                            "covers the whole subtree, stricter than the non-recursive rule",
                        ),
                    ),
                    FileTarget::Pattern(_) => continue,
                };
                let (enforcer, what) = if r.read_only {
                    masks.readonly.push(path);
                    (
                        Enforcer::ReadonlyPath,
                        "read-only remount: writes fail with EROFS, reads and execution work",
                    )
                } else {
                    masks.masked.push(path);
                    (
                        Enforcer::BindMountMask,
                        "masked: a file reads as empty (/dev/null, where writes vanish), a \
                         directory as an empty read-only tmpfs",
                    )
                };
                // Without BPF-LSM a masked file reads as empty with no error: the monitor
                // at least reports the opens of what the rule names.
                let what = if r.read_only {
                    what.to_owned()
                } else {
                    ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                    format!("{what}; opens reported by the monitor")
                };
                let note = match subtree_note {
                    Some(s) => format!("{what}; {s}"),
                    None => what,
                };
                ctx.record(&id, enforcer, Some(note));
            }
            Action::Allow if !allow_list => {
                // Deny posture Audit: the allow-list is tried out, the monitor reports what
                // falls outside it.
                ctx.out.monitor.audit.push(to_monitor(Action::Allow));
                ctx.record(
                    &id,
                    Enforcer::MonitorAudit,
                    Some("deny posture audit: accesses outside the allow-list are reported".into()),
                );
            }
            Action::Allow => {
                let grant = match &r.target {
                    FileTarget::Path(p) => p.clone(),
                    FileTarget::Directory { dir, .. } => clean(dir),
                    FileTarget::Pattern(p) => literal_prefix(p),
                };
                if let Some(why) = unexpressible {
                    // Granting more than the rule says is weaker than the allow-list.
                    let why = format!("{why}; landlock would have to grant all of {grant}");
                    if !ctx.cannot(&id, &why, Enforcer::Landlock) {
                        continue;
                    }
                } else {
                    let note = match &r.target {
                        FileTarget::Directory {
                            recursive: false, ..
                        } => Some(
                            "covers the whole subtree, wider than the non-recursive rule"
                                .to_owned(),
                        ),
                        _ => None,
                    };
                    ctx.record(&id, Enforcer::Landlock, note);
                }
                if !r.read_only {
                    write.push(grant.clone());
                }
                read.push(grant);
            }
        }
    }
    if allow_list {
        layers.file_read = Some(read);
        layers.file_write = Some(write);
    }
    masks
}

/// Why landlock and mounts cannot carry a file rule as written, if they cannot.
fn unexpressible_file(
    owner_only: bool,
    from_source: bool,
    target: &FileTarget,
) -> Option<&'static str> {
    if let FileTarget::Pattern(_) = target {
        return Some("matchPatterns: landlock and mounts cannot express globs, and BPF-LSM is not in force here");
    }
    if from_source {
        return Some("fromSource: landlock and mounts apply to every process of the container, and BPF-LSM is not in force here");
    }
    if owner_only {
        return Some(
            "ownerOnly: landlock and mounts cannot compare the caller with the file owner, and BPF-LSM \
             is not in force here",
        );
    }
    None
}

/// The directory part of a glob before its first wildcard segment.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    for segment in pattern.split('/').skip(1) {
        if segment.contains(['*', '?', '[']) {
            break;
        }
        out.push('/');
        out.push_str(segment);
    }
    // The last literal segment may be a file name the glob does not reach.
    if out.len() == pattern.len() {
        return out;
    }
    if out.is_empty() {
        "/".to_owned()
    } else {
        out
    }
}

/// Process rules: an allow-list to landlock's execute right, Block rules to the monitor's
/// exec kill (or to landlock when the allow-list already leaves the binary out).
pub(super) fn process_rules(ctx: &mut Ctx<'_>, policy: &CompiledPolicy, layers: &mut Layers) {
    let posture = policy.posture.process;
    // Landlock carries the allow-list only if it can express every entry; otherwise, when
    // degrading is allowed, the monitor carries the whole list.
    let mut landlock_list = posture == Action::Block;
    let mut exec: Vec<String> = Vec::new();
    for compiled in policy
        .process
        .iter()
        .filter(|c| c.rule.meta.action == Action::Allow)
    {
        let r = &compiled.rule;
        match &r.target {
            ProcessTarget::Path(p) => exec.push(p.clone()),
            ProcessTarget::Directory { dir, .. } => exec.push(clean(dir)),
            ProcessTarget::ExecName(_) | ProcessTarget::Pattern(_) if landlock_list => {
                let id = RuleId::of(RuleKind::Process, compiled, process_text(&r.target));
                let why = "landlock's execute right takes paths, not process names or globs; \
                           the monitor would carry the whole exec allow-list";
                if !ctx.refuse_or_warn(&id, why, &Enforcer::MonitorExecKill) {
                    return;
                }
                landlock_list = false;
            }
            _ => {}
        }
    }
    if posture != Action::Allow && !landlock_list {
        ctx.out.monitor.exec_allow_list = true;
        ctx.out.monitor.exec_posture = Some(posture);
    }

    for compiled in &policy.process {
        let r = &compiled.rule;
        let id = RuleId::of(RuleKind::Process, compiled, process_text(&r.target));
        let to_monitor = id.monitor(process_target(&r.target), &r.from_source, r.owner_only);
        match r.meta.action {
            Action::Audit => {
                ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                ctx.record(&id, Enforcer::MonitorAudit, None);
            }
            Action::Allow if landlock_list => {
                if r.from_source.is_empty() && !r.owner_only {
                    ctx.record(&id, Enforcer::Landlock, None);
                } else {
                    ctx.out.monitor.allow_exec.push(to_monitor(Action::Allow));
                    ctx.record(
                        &id,
                        Enforcer::MonitorExecKill,
                        Some(
                            "landlock lets every process execute it; the monitor kills \
                             executions by other sources or non-owners"
                                .to_owned(),
                        ),
                    );
                }
            }
            Action::Allow => {
                ctx.out.monitor.allow_exec.push(to_monitor(Action::Allow));
                let enforcer = if posture == Action::Audit {
                    Enforcer::MonitorAudit
                } else {
                    Enforcer::MonitorExecKill
                };
                ctx.record(&id, enforcer, None);
            }
            Action::Block => {
                let outside = landlock_list
                    && r.from_source.is_empty()
                    && match &r.target {
                        ProcessTarget::Path(p) => !exec.iter().any(|e| beneath(p, e)),
                        ProcessTarget::Directory { dir, .. } => {
                            let dir = clean(dir);
                            !exec.iter().any(|e| beneath(&dir, e) || beneath(e, &dir))
                        }
                        _ => false,
                    };
                if outside {
                    ctx.record(
                        &id,
                        Enforcer::Landlock,
                        Some("outside the exec allow-list".to_owned()),
                    );
                } else {
                    ctx.out.monitor.deny_exec.push(to_monitor(Action::Block));
                    ctx.record(&id, Enforcer::MonitorExecKill, None);
                }
            }
        }
    }
    if landlock_list {
        layers.exec = Some(exec);
    }
}

fn process_text(t: &ProcessTarget) -> String {
    match t {
        ProcessTarget::Path(p) | ProcessTarget::ExecName(p) | ProcessTarget::Pattern(p) => {
            p.clone()
        }
        ProcessTarget::Directory { dir, .. } => dir.clone(),
    }
}

/// Merges the masks into `linux.maskedPaths` and `linux.readonlyPaths`.
pub(super) fn apply_masks(root: &mut Map<String, Value>, masks: &Masks) -> Result<(), SpecError> {
    if masks.masked.is_empty() && masks.readonly.is_empty() {
        return Ok(());
    }
    let linux = spec::object_entry(root, "linux", "linux")?;
    for (key, list) in [
        ("maskedPaths", &masks.masked),
        ("readonlyPaths", &masks.readonly),
    ] {
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        paths::merge(linux, key, &refs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard_segment() {
        assert_eq!(literal_prefix("/etc/**/*.conf"), "/etc");
        assert_eq!(literal_prefix("/var/log/app-*.log"), "/var/log");
        assert_eq!(literal_prefix("/*/secret"), "/");
    }

    #[test]
    fn writable_mounts_skip_read_only_and_kernel_mounts() {
        let root = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "options": ["nosuid"]},
            {"destination": "/dev", "type": "tmpfs", "options": ["nosuid"]},
            {"destination": "/sys", "type": "sysfs", "options": ["ro"]},
            {"destination": "/data/", "type": "bind", "options": ["rbind", "rw"]},
            {"destination": "/secrets", "type": "bind", "options": ["rbind", "ro"]},
            {"destination": "/dev", "type": "tmpfs"}
        ]});
        let Value::Object(root) = root else {
            unreachable!()
        };
        assert_eq!(writable_mounts(&root).unwrap(), ["/data", "/dev"]);
    }

    #[test]
    fn a_later_mount_covers_earlier_ones_at_or_below_it() {
        let root = json!({"mounts": [
            {"destination": "/dev/shm", "type": "tmpfs", "options": ["rw"]},
            {"destination": "/data/cache", "type": "bind", "options": ["rbind", "rw"]},
            {"destination": "/data2", "type": "bind", "options": ["rbind", "rw"]},
            {"destination": "/dev/shm", "type": "bind", "options": ["rbind", "ro"]},
            {"destination": "/data", "type": "bind", "options": ["rbind", "ro"]}
        ]});
        let Value::Object(root) = root else {
            unreachable!()
        };
        assert_eq!(writable_mounts(&root).unwrap(), ["/data2"]);
    }
}
