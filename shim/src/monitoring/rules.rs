//! The sandbox's monitor-only rules turned into the monitor's kernel rules: exec kills,
//! BPF-LSM file rules (globs expanded at start), socket rules and the audits matched in user
//! space, with the reasons for what the monitor cannot carry.

use std::path::{Path, PathBuf};

use palisade_monitor::{
    AuditOn, AuditRule, AuditTarget, ContainerRules, ExecRule, FileRule, FileTarget, SockClass,
    SockRule, MAX_SOCK_SOURCES,
};
use palisade_policy::{glob_match, Action};
use palisade_sandbox::{MonitorRule, MonitorRules, MonitorTarget};

/// Files one directory rule may expand to; a larger tree is refused rather than cut short.
const MAX_DIR_FILES: usize = 4096;

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
    // One kernel rule per protocol: several rules of one kind (allowing, blocking or auditing
    // binaries) make one list, their binaries together; two kinds on one protocol cannot share
    // the key.
    let mut lists: Vec<SockRule> = Vec::new();
    for r in &m.network {
        match sock_rule(rootfs, m, r) {
            Ok(rule) => match lists.iter_mut().find(|l| l.class == rule.class) {
                Some(list) if (list.block_listed, list.audit) == (rule.block_listed, rule.audit) => {
                    list.sources.extend(rule.sources)
                }
                Some(list) => cannot.push(format!(
                    "{}: {} sockets: {} already {} binaries, the monitor holds one list per protocol",
                    r.rule,
                    rule.class.as_str(),
                    list.name,
                    if list.block_listed { "lists blocked" } else { "allows" },
                )),
                None => lists.push(rule),
            },
            Err(why) => cannot.push(format!("{}: {why}", r.rule)),
        }
    }
    for list in &mut lists {
        list.sources.sort();
        list.sources.dedup();
        if list.sources.len() > MAX_SOCK_SOURCES {
            cannot.push(format!(
                "{}: {} sockets {} {} binaries, the monitor holds {MAX_SOCK_SOURCES} per protocol",
                list.name,
                list.class.as_str(),
                if list.block_listed {
                    "limited for"
                } else {
                    "allowed to"
                },
                list.sources.len()
            ));
        }
    }
    // A block list whose binaries are all missing from the image has nothing to stop.
    lists.retain(|l| {
        l.sources.len() <= MAX_SOCK_SOURCES && !(l.block_listed && l.sources.is_empty())
    });
    rules.sock_create = lists;
    rules.audit = m.audit.iter().filter_map(audit_rule).collect();
    // An audited open is matched in user space: the kernel must send every open, not only
    // writes, denials and secret reads.
    rules.report_all_opens = rules.audit.iter().any(|a| matches!(a.on, AuditOn::Open(_)));
    (rules, cannot)
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

/// A fromSource rule on a protocol, checked at socket creation on the creating process's
/// executable. Allow: an allow-list, the other binaries get the posture the sandbox worked out
/// for the protocol. Block or Audit: a block list, the named binaries are refused or reported.
/// Binaries missing from the image are left out.
fn sock_rule(rootfs: &Path, m: &MonitorRules, r: &MonitorRule) -> Result<SockRule, String> {
    let MonitorTarget::Protocol(p) = &r.target else {
        return Err(format!("{:?}: not a protocol", r.target));
    };
    let class = SockClass::parse(p).ok_or_else(|| format!("protocol {p}: unknown"))?;
    let (block_listed, audit) = match r.action {
        Action::Block => (true, false),
        Action::Audit => (true, true),
        Action::Allow => match m.socket_unlisted.get(p.as_str()) {
            Some(Action::Block) => (false, false),
            Some(Action::Audit) => (false, true),
            other => {
                return Err(format!(
                    "protocol {p}: no allow-list posture for other binaries ({other:?})"
                ))
            }
        },
    };
    let mut sources = Vec::new();
    for source in &r.from_source {
        if source.ends_with('/') {
            return Err(format!(
                "fromSource {source}: a directory; the monitor matches files"
            ));
        }
        let host = inside(rootfs, source);
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
            // The kernel matches the executable's inode: through a symlink (busybox applets)
            // every other name of the same file would be allowed, or blocked, too.
            return Err(format!(
                "fromSource {source} is a symlink; the monitor matches the file it points to, which other names may share"
            ));
        }
        if host.exists() {
            sources.push(host);
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
        sources,
        block_listed,
        audit,
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
/// the watch is registered. A pattern goes to the monitor as it is, followed by the files it
/// matches now (at most [`MAX_DIR_FILES`]): the monitor matches the glob itself on each new or
/// opened name where its form allows, else refuses only those files, and its note says which.
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
            // The glob first (its enforcement is the rule's), then the files it matches now.
            let mut found = Vec::new();
            expand(root, glob, &mut found)?;
            Ok(std::iter::once(rule(FileTarget::pattern(glob)))
                .chain(found.into_iter().map(|p| rule(FileTarget::Path(p))))
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
            if ft.is_dir() {
                stack.push(path.clone());
            }
            if !ft.is_dir() && glob_match(glob, &path.to_string_lossy()) {
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

    /// A container root holding `files` (each with its directories, content `x`) and
    /// `links` (name, target).
    fn rootfs(files: &[&str], links: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for f in files {
            let p = root.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        for (name, target) in links {
            std::os::unix::fs::symlink(target, root.path().join(name)).unwrap();
        }
        root
    }

    #[test]
    fn file_block_rules_resolve_in_the_container_root_and_patterns_expand() {
        let root = rootfs(
            &["etc/shadow", "etc/ssl/a.key", "etc/ssl/b.pem", "etc/c.key"],
            &[],
        );
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
        // `**` stands for characters, `/` included, as in matchPatterns (AppArmor's globs): the
        // `/` after it must be in the path, so /etc/c.key is not below /etc/**/
        // the glob itself (its literal directory here), then the files it matches at start
        assert_eq!(
            targets,
            ["/etc", "/etc/absent", "/etc/shadow", "/etc/ssl/a.key"]
        );
        assert!(out.deny_file.iter().any(|r| matches!(
            &r.target,
            FileTarget::Pattern { glob, .. } if glob == "/etc/**/*.key"
        )));
        assert!(out
            .deny_file
            .iter()
            .all(|r| r.read_only && r.root.as_deref() == Some(root.path())));
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
        let root = rootfs(
            &["usr/bin/apt", "opt/tools/a", "opt/tools/sub/b"],
            &[("usr/bin/apt-link", "apt")],
        );
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
    fn socket_lists_map_sources_into_the_rootfs_with_their_posture() {
        let root = rootfs(&["usr/sbin/nginx", "bin/busybox"], &[("bin/nc", "busybox")]);
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
                net("raw", Action::Block, &["/usr/bin/missing"]),
                net("tcp", Action::Block, &["/usr/sbin/nginx"]),
                net("udp", Action::Audit, &["/usr/bin/missing"]),
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
            .map(|r| (r.class, r.sources.clone(), r.block_listed, r.audit))
            .collect();
        let nginx = root.path().join("usr/sbin/nginx");
        assert_eq!(
            got,
            vec![
                (SockClass::Tcp, vec![nginx.clone()], false, false),
                (SockClass::Udp, vec![nginx.clone()], false, true),
                (SockClass::Raw, vec![nginx], true, false),
            ]
        );
        assert_eq!(cannot.len(), 3, "{cannot:?}");
        assert!(cannot[0].contains("/bin/nc is a symlink"), "{cannot:?}");
        assert_eq!(
            cannot[1],
            "ns/p: tcp: tcp sockets: ns/p: tcp already allows binaries, the monitor holds one \
             list per protocol"
        );
        assert!(
            cannot[2].starts_with("ns/p: udp: udp sockets: "),
            "{cannot:?}"
        );
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
        assert_eq!(rules.sock_create[0].sources.len(), 3);

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
