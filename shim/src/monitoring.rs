//! The eBPF monitor in the shim: the node's shared programs joined once per shim, one watch per
//! container, the sandbox's monitor-only rules turned into kernel rules, and events into the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_monitor::{
    cgroup_dir_of_pid, cgroup_id_of_pid, AuditOn, AuditRule, AuditTarget, ContainerRef,
    ContainerRules, ExecRule, FileRule, FileTarget, MonitorConfig, MonitorError, MonitorEvent,
    NodeMonitor, SockClass, SockRule, SyscallHook, MAX_SOCK_SOURCES,
};
use palisade_policy::Action;
use palisade_sandbox::{MonitorRule, MonitorRules, MonitorTarget};

use crate::report::Reporter;

/// Files one directory rule may expand to; a larger tree is refused rather than cut short.
const MAX_DIR_FILES: usize = 4096;

pub use palisade_config::{HookSetting, MonitorSettings};

/// The monitor's hook for a `[monitor] syscall_hook` value (a function, not a `From`: neither
/// type is the shim's).
pub fn syscall_hook(h: HookSetting) -> SyscallHook {
    match h {
        HookSetting::RawSysExit => SyscallHook::RawSysExit,
        HookSetting::ExitTracepoints => SyscallHook::ExitTracepoints,
    }
}

/// The monitor of one shim.
pub struct ShimMonitor {
    node: Arc<NodeMonitor>,
    /// The monitor refuses and kills (`[monitor] enforce`), or only reports.
    enforce: bool,
    /// The learning containers, fed from the reader before the reporter.
    pub(crate) recorders: crate::profile::Recorders,
}

impl std::fmt::Debug for ShimMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShimMonitor")
    }
}

impl ShimMonitor {
    /// Joins (or loads) the node's programs and forwards this shim's events to `reporter`.
    pub fn open(
        settings: &MonitorSettings,
        reporter: Reporter,
        node_name: String,
    ) -> Result<Self, MonitorError> {
        let started = std::time::Instant::now();
        let config = MonitorConfig {
            pin_root: settings.pin_root.clone(),
            enforce: settings.enforce,
            ring_size: settings.ring_bytes,
            syscall_hook: syscall_hook(settings.syscall_hook),
            keep_loaded: settings.keep_loaded,
            ..MonitorConfig::default()
        };
        // The reader thread hands the events to the learning containers' recorders and
        // straight to the reporter, which only queues them: no channel, no thread of our own.
        let recorders = crate::profile::Recorders::default();
        let tap = recorders.clone();
        let node = NodeMonitor::open(config, move |ev: MonitorEvent| {
            tap.observe(&ev);
            for e in ev.to_events(&node_name) {
                reporter.report(e);
            }
            true
        })?;
        let opened = started.elapsed();
        // Loading (first holder) parses the kernel's BTF and the BPF object: megabytes of
        // short-lived heap that glibc would otherwise keep for the shim's whole life.
        crate::sys::trim_heap();
        tracing::info!(
            features = ?node.features(),
            open_ms = crate::sys::ms(opened),
            trim_ms = crate::sys::ms(started.elapsed() - opened),
            "monitor joined"
        );
        Ok(ShimMonitor {
            node: Arc::new(node),
            enforce: settings.enforce,
            recorders,
        })
    }

    /// Whether BPF-LSM is in force in the node's programs and this monitor enforces: file
    /// Block rules are then refused in the kernel (an audit-only monitor would only report
    /// them, so they keep their masks).
    pub fn bpf_lsm(&self) -> bool {
        self.enforce && self.node.features().bpf_lsm
    }

    /// Watches a created container (its init waits for `start`).
    pub fn watch(
        &self,
        init_pid: i32,
        who: ContainerRef,
        rules: ContainerRules,
    ) -> Result<Watched, MonitorError> {
        let pid = u32::try_from(init_pid).unwrap_or(0);
        let who = ContainerRef {
            cgroup_id: cgroup_id_of_pid(pid)?,
            cgroup_dir: Some(cgroup_dir_of_pid(pid)?),
            ..who
        };
        self.node.watch(who, rules).map(|w| Watched(w, None))
    }
}

/// The monitor's hold on one container (with its recording when it learns).
pub use crate::profile::Watched;

/// Turns the sandbox's monitor-only rules into kernel rules for a container whose root is
/// `rootfs` (as the shim sees it) and, as its processes see it with its mounts, `root` (its
/// init's `/proc/<pid>/root`). Rules the monitor cannot carry come back as reasons.
pub fn rules_for(rootfs: &Path, root: &Path, m: &MonitorRules) -> (ContainerRules, Vec<String>) {
    let mut rules = ContainerRules::default();
    let mut cannot = Vec::new();
    for r in &m.deny_file {
        match file_rules(root, r) {
            Ok(mut v) => rules.deny_file.append(&mut v),
            Err(why) => cannot.push(format!("{}: {why}", r.rule)),
        }
    }
    for r in &m.deny_exec {
        match exec_rules(rootfs, r) {
            Ok(mut v) => rules.deny_exec.append(&mut v),
            Err(why) => cannot.push(format!("{}: {why}", r.rule)),
        }
    }
    for r in &m.allow_exec {
        cannot.push(format!(
            "{}: exec allow-lists with fromSource or ownerOnly are not in the monitor yet",
            r.rule
        ));
    }
    let mut allow_lists: Vec<SockRule> = Vec::new();
    for r in &m.network {
        match sock_rule(rootfs, m, r) {
            Ok(rule) => match allow_lists.iter_mut().find(|l| l.class == rule.class) {
                // Several rules allowing one protocol make one list: their binaries together.
                Some(list) => list.allow_from.extend(rule.allow_from),
                None => allow_lists.push(rule),
            },
            Err(why) => cannot.push(format!("{}: {why}", r.rule)),
        }
    }
    for list in &mut allow_lists {
        list.allow_from.sort();
        list.allow_from.dedup();
        if list.allow_from.len() > MAX_SOCK_SOURCES {
            cannot.push(format!(
                "{}: {} sockets allowed to {} binaries, the monitor holds {MAX_SOCK_SOURCES} per protocol",
                list.name,
                list.class.as_str(),
                list.allow_from.len()
            ));
        }
    }
    allow_lists.retain(|l| l.allow_from.len() <= MAX_SOCK_SOURCES);
    rules.sock_create = allow_lists;
    rules.audit = m.audit.iter().filter_map(audit_rule).collect();
    // An audited open is matched in user space: the kernel must send every open, not only
    // writes, denials and secret reads.
    rules.report_all_opens = rules.audit.iter().any(|a| matches!(a.on, AuditOn::Open(_)));
    (rules, cannot)
}

/// The enforcer really in force for each policy rule of a container, for its start's
/// `enforcement-record` event: the sandbox's choice, with the monitor's own answer in place of
/// the sandbox's plan for the rules the monitor carries (BPF-LSM or the kill at exec, say),
/// and `none: not watched` when the monitor did not take them. Landlock names its ABI.
pub fn enforcement_record(
    rules: &[palisade_sandbox::RuleEnforcement],
    watched: Option<&[palisade_monitor::RuleEnforcement]>,
    landlock_abi: Option<u32>,
) -> Vec<serde_json::Value> {
    rules
        .iter()
        .map(|r| {
            let planned = r.enforcer.to_string();
            let (enforcer, note) = if planned.starts_with("monitor-") {
                let found: Vec<&palisade_monitor::RuleEnforcement> = watched
                    .unwrap_or_default()
                    .iter()
                    .filter(|m| m.rule == r.rule)
                    .collect();
                match (watched, found.first()) {
                    (None, _) => ("none: not watched by the monitor".to_string(), None),
                    (Some(_), Some(m)) => (m.enforcer.as_str().to_string(), m.note.clone()),
                    // An Audit rule the monitor matches in user space.
                    (Some(_), None) => (planned, r.note.clone()),
                }
            } else if planned == "landlock" {
                match landlock_abi {
                    Some(abi) => (format!("landlock (ABI {abi})"), r.note.clone()),
                    None => (planned, r.note.clone()),
                }
            } else {
                (planned, r.note.clone())
            };
            serde_json::json!({
                "rule": r.rule,
                "kind": r.kind.to_string(),
                "target": r.target,
                "action": format!("{:?}", r.action),
                "enforcer": enforcer,
                "note": note,
            })
        })
        .collect()
}

/// Where Kubernetes mounts secrets in a container (the service account token volume, and
/// secret volumes by convention).
const SECRET_DIRS: [&str; 2] = ["/var/run/secrets", "/run/secrets"];

/// The host directories bind-mounted at or below [`SECRET_DIRS`] in a container's spec: the
/// monitor reports every open of a file on those mounts, however its path is spelled.
pub fn secret_mounts(spec: &serde_json::Value) -> Vec<PathBuf> {
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter(|m| {
            let dest = m["destination"].as_str().unwrap_or_default();
            let dest = dest.trim_end_matches('/');
            SECRET_DIRS.iter().any(|d| {
                dest == *d
                    || dest
                        .strip_prefix(d)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .filter_map(|m| m["source"].as_str())
        .filter(|s| Path::new(s).is_absolute())
        .map(PathBuf::from)
        .collect()
}

/// Whether the monitor reports what `r` audits (exec and open of files and directories,
/// for every process); other Audit rules are only logged by the shim.
pub fn audit_reported(r: &MonitorRule) -> bool {
    audit_rule(r).is_some()
}

/// An Audit rule on executing or opening a file or directory, for every process: matched
/// on the container's exec and open events and reported.
fn audit_rule(r: &MonitorRule) -> Option<AuditRule> {
    if r.action != Action::Audit || !r.from_source.is_empty() || r.owner_only {
        return None;
    }
    let target = match &r.target {
        MonitorTarget::Path(p) => AuditTarget::Path(p.clone()),
        MonitorTarget::Directory { dir, recursive } => AuditTarget::Directory {
            dir: dir.clone(),
            recursive: *recursive,
        },
        _ => return None,
    };
    let on = match r.kind {
        palisade_sandbox::RuleKind::Process => AuditOn::Exec(target),
        palisade_sandbox::RuleKind::File => AuditOn::Open(target),
        _ => return None,
    };
    Some(AuditRule {
        name: r.rule.clone(),
        on,
        severity: r.severity,
        message: r.message.clone().unwrap_or_default(),
    })
}

/// A fromSource Allow rule on a protocol: a socket allow-list checked at socket creation.
/// Binaries missing from the image allow nothing; the other binaries get the posture the
/// sandbox worked out for the protocol.
fn sock_rule(rootfs: &Path, m: &MonitorRules, r: &MonitorRule) -> Result<SockRule, String> {
    let MonitorTarget::Protocol(p) = &r.target else {
        return Err(format!("{:?}: not a protocol", r.target));
    };
    if r.action != Action::Allow {
        return Err(
            "network rules limited to source binaries other than Allow are not in the monitor yet"
                .into(),
        );
    }
    let class = SockClass::parse(p).ok_or_else(|| format!("protocol {p}: unknown"))?;
    let audit_unlisted = match m.socket_unlisted.get(p.as_str()) {
        Some(Action::Block) => false,
        Some(Action::Audit) => true,
        other => {
            return Err(format!(
                "protocol {p}: no allow-list posture for other binaries ({other:?})"
            ))
        }
    };
    let mut allow_from = Vec::new();
    for source in &r.from_source {
        if source.ends_with('/') {
            return Err(format!(
                "fromSource {source}: a directory; the monitor matches files"
            ));
        }
        let host = inside(rootfs, source);
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
            // The kernel matches the executable's inode: through a symlink (busybox applets)
            // every other name of the same file would be allowed too.
            return Err(format!(
                "fromSource {source} is a symlink; the monitor matches the file it points to, which other names may share"
            ));
        }
        if host.exists() {
            allow_from.push(host);
        } else {
            tracing::info!(
                "socket rule {}: {source} does not exist in the image",
                r.rule
            );
        }
    }
    Ok(SockRule {
        name: r.rule.clone(),
        class,
        allow_from,
        audit_unlisted,
        severity: r.severity.clamp(1, 10),
        message: r.message.clone().unwrap_or_default(),
    })
}

fn exec_rules(rootfs: &Path, r: &MonitorRule) -> Result<Vec<ExecRule>, String> {
    let from_parent = match r.from_source.as_slice() {
        [] => None,
        [one] => Some(inside(rootfs, one)),
        _ => return Err("more than one fromSource is not in the monitor yet".into()),
    };
    let rule = |path: PathBuf| ExecRule {
        name: r.rule.clone(),
        path,
        from_parent: from_parent.clone(),
        severity: r.severity.clamp(1, 10),
        message: r.message.clone().unwrap_or_default(),
    };
    match &r.target {
        MonitorTarget::Path(p) => {
            let host = inside(rootfs, p);
            if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
                // Kernel rules key on the file's inode: through a symlink (busybox applets, for
                // one) that would stop every other name of the same file.
                return Err(format!(
                    "{p} is a symlink; the monitor matches the file it points to, which other names may share"
                ));
            }
            if host.exists() {
                Ok(vec![rule(host)])
            } else {
                // Nothing to run there: the rule holds until a file appears, which the
                // inode-keyed kernel rule would miss; say so instead of pretending.
                tracing::info!("exec rule {}: {p} does not exist in the image", r.rule);
                Ok(Vec::new())
            }
        }
        MonitorTarget::Directory { dir, recursive } => {
            let mut out = Vec::new();
            collect_files(&inside(rootfs, dir), *recursive, &mut out)?;
            Ok(out.into_iter().map(rule).collect())
        }
        other => Err(format!(
            "{other:?}: the monitor matches files, not names or patterns"
        )),
    }
}

/// A file Block rule as BPF-LSM file rules, paths resolved inside the container's `root` when
/// the watch is registered. A pattern is expanded now to the files it matches (at most
/// [`MAX_DIR_FILES`]): files created later are not covered, and the rule's note says so.
fn file_rules(root: &Path, r: &MonitorRule) -> Result<Vec<FileRule>, String> {
    let from_source = match r.from_source.as_slice() {
        [] => None,
        [one] if !one.ends_with('/') => Some(PathBuf::from(one)),
        [_] => {
            return Err("fromSource naming a directory is not in the monitor's file rules".into())
        }
        _ => return Err("more than one fromSource is not in the monitor's file rules yet".into()),
    };
    let rule = |target| FileRule {
        name: r.rule.clone(),
        target,
        read_only: r.read_only,
        owner_only: r.owner_only,
        from_source: from_source.clone(),
        root: Some(root.to_path_buf()),
        severity: r.severity.clamp(1, 10),
        message: r.message.clone().unwrap_or_default(),
    };
    // A path missing from the container is left to the monitor, which resolves it as the
    // container does and says that it keyed nothing.
    match &r.target {
        MonitorTarget::Path(p) => Ok(vec![rule(FileTarget::Path(p.into()))]),
        MonitorTarget::Directory { dir, recursive } => Ok(vec![rule(FileTarget::Directory {
            path: dir.into(),
            recursive: *recursive,
        })]),
        MonitorTarget::Pattern(glob) => {
            let mut found = Vec::new();
            expand(root, glob, &mut found)?;
            Ok(found
                .into_iter()
                .map(|p| rule(FileTarget::Path(p)))
                .collect())
        }
        other => Err(format!("{other:?}: not a file target")),
    }
}

/// The files of the container (under `root`) that `glob` matches, as container paths: the
/// walk starts at the glob's literal directory and never follows a symlink.
fn expand(root: &Path, glob: &str, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let pattern: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    let literal = pattern
        .iter()
        .take_while(|s| !s.contains(['*', '?', '[']))
        .count();
    let start: PathBuf = std::iter::once("/")
        .chain(pattern[..literal].iter().copied())
        .collect();
    let mut stack = vec![start];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let host = root.join(dir.strip_prefix("/").unwrap_or(&dir));
        let Ok(entries) = std::fs::read_dir(&host) else {
            continue;
        };
        for e in entries.flatten() {
            let path = dir.join(e.file_name());
            seen += 1;
            if seen > MAX_DIR_FILES * 4 {
                return Err(format!(
                    "matchPatterns {glob}: more than {} entries to look at",
                    MAX_DIR_FILES * 4
                ));
            }
            let Ok(ft) = e.file_type() else { continue };
            let segments: Vec<String> = path
                .components()
                .skip(1)
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            if ft.is_dir() {
                stack.push(path.clone());
            }
            if !ft.is_dir() && glob_matches(&pattern, &segments) {
                out.push(path);
                if out.len() > MAX_DIR_FILES {
                    return Err(format!(
                        "matchPatterns {glob}: more than {MAX_DIR_FILES} files"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether the path segments match the glob's: `*` and `?` within a segment, `**` across any
/// number of them.
fn glob_matches(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| glob_matches(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((s, tail)) => {
                segment_matches(p.as_bytes(), s.as_bytes()) && glob_matches(rest, tail)
            }
            None => false,
        },
    }
}

fn segment_matches(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment_matches(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && segment_matches(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && segment_matches(rest, &s[1..]),
    }
}

fn collect_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_file() {
            out.push(path);
        } else if ft.is_dir() && recursive {
            collect_files(&path, true, out)?;
        }
        if out.len() > MAX_DIR_FILES {
            return Err(format!(
                "{}: more than {MAX_DIR_FILES} files",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// A container path under the rootfs as the host sees it (symlinks are not followed out of it).
fn inside(rootfs: &Path, p: &str) -> PathBuf {
    rootfs.join(p.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Action;
    use palisade_sandbox::RuleKind;

    #[test]
    fn the_record_names_the_monitors_own_choice_and_never_claims_an_unwatched_rule() {
        use palisade_sandbox::{Enforcer as Planned, RuleEnforcement as Plan};
        let plan = |rule: &str, enforcer| Plan {
            rule: rule.into(),
            kind: RuleKind::File,
            target: "/etc/shadow".into(),
            action: Action::Block,
            enforcer,
            note: None,
        };
        let rules = [
            plan("ns/p: file", Planned::MonitorBpfLsm),
            plan("ns/p: exec", Planned::MonitorExecKill),
            plan("ns/p: fs", Planned::Landlock),
        ];
        let watched = [
            palisade_monitor::RuleEnforcement {
                rule: "ns/p: file".into(),
                enforcer: palisade_monitor::Enforcer::BpfLsm,
                note: None,
            },
            palisade_monitor::RuleEnforcement {
                rule: "ns/p: exec".into(),
                enforcer: palisade_monitor::Enforcer::BpfExecKill,
                note: None,
            },
        ];
        let got = enforcement_record(&rules, Some(&watched), Some(4));
        let enforcers: Vec<&str> = got
            .iter()
            .map(|r| r["enforcer"].as_str().unwrap())
            .collect();
        assert_eq!(enforcers, ["bpf-lsm", "bpf-exec-kill", "landlock (ABI 4)"]);
        let unwatched = enforcement_record(&rules, None, None);
        assert_eq!(unwatched[0]["enforcer"], "none: not watched by the monitor");
        assert_eq!(unwatched[2]["enforcer"], "landlock");
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        let m = |g: &str, p: &str| {
            let g: Vec<&str> = g.split('/').filter(|s| !s.is_empty()).collect();
            let p: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            glob_matches(&g, &p)
        };
        assert!(m("/etc/*.conf", "/etc/resolv.conf"));
        assert!(!m("/etc/*.conf", "/etc/ssl/openssl.conf"));
        assert!(m("/etc/**/*.conf", "/etc/ssl/openssl.conf"));
        assert!(m("/etc/**/*.conf", "/etc/x.conf"));
        assert!(m("/root/.ssh/id_?sa", "/root/.ssh/id_rsa"));
        assert!(!m("/root/.ssh/id_?sa", "/root/.ssh/id_ecdsa"));
    }

    #[test]
    fn file_block_rules_resolve_in_the_container_root_and_patterns_expand() {
        let root = tempfile::tempdir().unwrap();
        for f in ["etc/shadow", "etc/ssl/a.key", "etc/ssl/b.pem", "etc/c.key"] {
            let p = root.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        let block = |target| MonitorRule {
            read_only: true,
            ..rule(target, &[])
        };
        let rules = MonitorRules {
            deny_file: vec![
                block(MonitorTarget::Path("/etc/shadow".into())),
                block(MonitorTarget::Path("/etc/absent".into())),
                block(MonitorTarget::Pattern("/etc/**/*.key".into())),
            ],
            ..MonitorRules::default()
        };
        let (out, cannot) = rules_for(Path::new("/nonexistent"), root.path(), &rules);
        assert!(cannot.is_empty(), "{cannot:?}");
        let mut targets: Vec<_> = out
            .deny_file
            .iter()
            .map(|r| r.target.path().display().to_string())
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            ["/etc/absent", "/etc/c.key", "/etc/shadow", "/etc/ssl/a.key"]
        );
        assert!(out
            .deny_file
            .iter()
            .all(|r| r.read_only && r.root.as_deref() == Some(root.path())));
    }

    #[test]
    fn secret_mounts_are_the_binds_at_or_below_the_secret_dirs() {
        let spec = serde_json::json!({"mounts": [
            {"destination": "/var/run/secrets/kubernetes.io/serviceaccount",
             "source": "/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x",
             "type": "bind"},
            {"destination": "/run/secrets/", "source": "/host/run-secrets", "type": "bind"},
            {"destination": "/var/run/secretsx", "source": "/host/lookalike", "type": "bind"},
            {"destination": "/etc/hosts", "source": "/host/hosts", "type": "bind"},
            {"destination": "/run/secrets/tmp", "source": "tmpfs", "type": "tmpfs"},
            {"destination": "/proc", "source": "proc", "type": "proc"}
        ]});
        assert_eq!(
            secret_mounts(&spec),
            [
                PathBuf::from(
                    "/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x"
                ),
                PathBuf::from("/host/run-secrets"),
            ]
        );
        assert!(secret_mounts(&serde_json::json!({})).is_empty());
    }

    fn rule(target: MonitorTarget, from: &[&str]) -> MonitorRule {
        MonitorRule {
            rule: "ns/deny-apt".into(),
            kind: RuleKind::Process,
            action: Action::Block,
            target,
            from_source: from.iter().map(|s| s.to_string()).collect(),
            owner_only: false,
            read_only: false,
            severity: 7,
            message: Some("no package managers".into()),
        }
    }

    #[test]
    fn exec_paths_and_directories_map_into_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.path().join("opt/tools/sub")).unwrap();
        std::fs::write(root.path().join("usr/bin/apt"), b"x").unwrap();
        std::os::unix::fs::symlink("apt", root.path().join("usr/bin/apt-link")).unwrap();
        std::fs::write(root.path().join("opt/tools/a"), b"x").unwrap();
        std::fs::write(root.path().join("opt/tools/sub/b"), b"x").unwrap();
        let m = MonitorRules {
            deny_exec: vec![
                rule(MonitorTarget::Path("/usr/bin/apt".into()), &[]),
                rule(MonitorTarget::Path("/usr/bin/apt-get".into()), &[]),
                rule(
                    MonitorTarget::Directory {
                        dir: "/opt/tools/".into(),
                        recursive: false,
                    },
                    &["/bin/sh"],
                ),
                rule(MonitorTarget::ExecName("curl".into()), &[]),
                rule(MonitorTarget::Path("/usr/bin/apt-link".into()), &[]),
            ],
            ..Default::default()
        };
        let (rules, cannot) = rules_for(root.path(), root.path(), &m);
        let mut paths: Vec<_> = rules.deny_exec.iter().map(|r| r.path.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                root.path().join("opt/tools/a"),
                root.path().join("usr/bin/apt")
            ]
        );
        let tools = rules
            .deny_exec
            .iter()
            .find(|r| r.path.ends_with("opt/tools/a"))
            .unwrap();
        assert_eq!(tools.from_parent, Some(root.path().join("bin/sh")));
        assert_eq!(tools.severity, 7);
        assert_eq!(cannot.len(), 2, "{cannot:?}");
        assert!(
            cannot[0].starts_with("ns/deny-apt: ExecName(\"curl\")"),
            "{cannot:?}"
        );
        assert_eq!(
            cannot[1],
            "ns/deny-apt: /usr/bin/apt-link is a symlink; the monitor matches the file it points to, which other names may share"
        );
        assert!(rules.builtins, "built-in detections stay on");
    }

    fn net(protocol: &str, action: Action, from: &[&str]) -> MonitorRule {
        MonitorRule {
            rule: format!("ns/p: {protocol}"),
            kind: RuleKind::Network,
            action,
            target: MonitorTarget::Protocol(protocol.into()),
            from_source: from.iter().map(|s| s.to_string()).collect(),
            owner_only: false,
            read_only: false,
            severity: 6,
            message: None,
        }
    }

    #[test]
    fn socket_allow_lists_map_sources_into_the_rootfs_with_their_posture() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("usr/sbin/nginx"), b"x").unwrap();
        std::fs::write(root.path().join("bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("busybox", root.path().join("bin/nc")).unwrap();
        let mut m = MonitorRules {
            network: vec![
                net("tcp", Action::Allow, &["/usr/sbin/nginx"]),
                net(
                    "udp",
                    Action::Allow,
                    &["/usr/sbin/nginx", "/usr/bin/missing"],
                ),
                net("icmp", Action::Allow, &["/bin/nc"]),
                net("raw", Action::Block, &["/usr/sbin/nginx"]),
            ],
            ..Default::default()
        };
        m.socket_unlisted.insert("tcp".into(), Action::Block);
        m.socket_unlisted.insert("udp".into(), Action::Audit);
        m.socket_unlisted.insert("icmp".into(), Action::Block);
        let (rules, cannot) = rules_for(root.path(), root.path(), &m);
        let got: Vec<_> = rules
            .sock_create
            .iter()
            .map(|r| (r.class, r.allow_from.clone(), r.audit_unlisted))
            .collect();
        let nginx = root.path().join("usr/sbin/nginx");
        assert_eq!(
            got,
            vec![
                (SockClass::Tcp, vec![nginx.clone()], false),
                (SockClass::Udp, vec![nginx], true),
            ]
        );
        assert_eq!(cannot.len(), 2, "{cannot:?}");
        assert!(cannot[0].contains("/bin/nc is a symlink"), "{cannot:?}");
        assert!(cannot[1].contains("other than Allow"), "{cannot:?}");
    }

    #[test]
    fn socket_allow_lists_of_one_protocol_merge_and_stay_bounded() {
        let root = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..5).map(|i| format!("/b{i}")).collect();
        for n in &names {
            std::fs::write(root.path().join(&n[1..]), b"x").unwrap();
        }
        let mut m = MonitorRules {
            network: vec![
                net("tcp", Action::Allow, &[&names[0], &names[1]]),
                net("tcp", Action::Allow, &[&names[1], &names[2]]),
            ],
            ..Default::default()
        };
        m.socket_unlisted.insert("tcp".into(), Action::Block);
        let (rules, cannot) = rules_for(root.path(), root.path(), &m);
        assert!(cannot.is_empty(), "{cannot:?}");
        assert_eq!(rules.sock_create.len(), 1);
        assert_eq!(rules.sock_create[0].allow_from.len(), 3);

        m.network
            .push(net("tcp", Action::Allow, &[&names[3], &names[4]]));
        let (rules, cannot) = rules_for(root.path(), root.path(), &m);
        assert!(rules.sock_create.is_empty());
        assert_eq!(
            cannot,
            vec!["ns/p: tcp: tcp sockets allowed to 5 binaries, the monitor holds 4 per protocol"]
        );
    }
}
