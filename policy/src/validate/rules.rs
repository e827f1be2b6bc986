//! Checks on the rule sections: process, file, network, capabilities and syscalls.

use crate::model::{
    Action, CapabilityRule, FileRule, FileTarget, NetworkRule, PathMatch, ProcessRule,
    ProcessTarget, SyscallRule,
};
use crate::names::{self, Capability, Protocol};
use crate::raw::{HasMeta, RawCapabilities, RawFile, RawNetwork, RawProcess, RawSyscalls};

use super::paths::{PathKind, NAME_MAX};
use super::{Level, Validator};

impl Validator<'_> {
    pub(super) fn empty_section(&mut self, at: &str, lists: &[usize], names: &str) {
        if lists.iter().all(|n| *n == 0) {
            self.error(at, format!("has no rules: set at least one of {names}"));
        }
    }

    pub(super) fn process(&mut self, p: &RawProcess, spec: &Level) -> Vec<ProcessRule> {
        let base = "spec.process";
        let section = self.level(p.meta(), base);
        let paths = p.match_paths.as_deref().unwrap_or_default();
        let dirs = p.match_directories.as_deref().unwrap_or_default();
        let patterns = p.match_patterns.as_deref().unwrap_or_default();
        self.empty_section(
            base,
            &[paths.len(), dirs.len(), patterns.len()],
            "matchPaths, matchDirectories, matchPatterns",
        );
        let mut out = Vec::new();
        for (i, r) in paths.iter().enumerate() {
            let at = format!("{base}.matchPaths[{i}]");
            let target = match (&r.path, &r.execname) {
                (Some(p), None) => self
                    .abs_path(p, &format!("{at}.path"), PathKind::File)
                    .map(ProcessTarget::Path),
                (None, Some(n)) => {
                    let nat = format!("{at}.execname");
                    if n.is_empty() {
                        self.error(&nat, "must not be empty");
                        None
                    } else if n.contains('/') || n.contains('\0') || n.len() > NAME_MAX {
                        self.error(
                            &nat,
                            "must be a process name (no / or NUL, at most 255 bytes)",
                        );
                        None
                    } else {
                        Some(ProcessTarget::ExecName(n.clone()))
                    }
                }
                (Some(_), Some(_)) => {
                    self.error(&at, "set either path or execname, not both");
                    None
                }
                (None, None) => {
                    self.error(&format!("{at}.path"), "is required");
                    None
                }
            };
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(target) = target {
                out.push(ProcessRule {
                    target,
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source,
                    meta,
                });
            }
        }
        for (i, r) in dirs.iter().enumerate() {
            let at = format!("{base}.matchDirectories[{i}]");
            let target = match &r.dir {
                Some(d) => self.abs_path(d, &format!("{at}.dir"), PathKind::Dir),
                None => {
                    self.error(&format!("{at}.dir"), "is required");
                    None
                }
            };
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(dir) = target {
                self.whole_tree(&dir, r.recursive, meta.action, &at);
                out.push(ProcessRule {
                    target: ProcessTarget::Directory {
                        dir,
                        recursive: r.recursive.unwrap_or(false),
                    },
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source,
                    meta,
                });
            }
        }
        for (i, r) in patterns.iter().enumerate() {
            let at = format!("{base}.matchPatterns[{i}]");
            let target = match &r.pattern {
                Some(p) => self.pattern(p, &format!("{at}.pattern")),
                None => {
                    self.error(&format!("{at}.pattern"), "is required");
                    None
                }
            };
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(pattern) = target {
                out.push(ProcessRule {
                    target: ProcessTarget::Pattern(pattern),
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source: Vec::new(),
                    meta,
                });
            }
        }
        out
    }

    /// `/` with `recursive` covers everything: legitimate in an allow-list, suspicious otherwise.
    pub(super) fn whole_tree(
        &mut self,
        dir: &str,
        recursive: Option<bool>,
        action: Action,
        at: &str,
    ) {
        if dir == "/" && recursive == Some(true) && action != Action::Allow {
            self.warn(
                &format!("{at}.dir"),
                format!("/ with recursive matches every path, and the action is {action}"),
            );
        }
    }

    pub(super) fn file(&mut self, f: &RawFile, spec: &Level) -> Vec<FileRule> {
        let base = "spec.file";
        let section = self.level(f.meta(), base);
        let paths = f.match_paths.as_deref().unwrap_or_default();
        let dirs = f.match_directories.as_deref().unwrap_or_default();
        let patterns = f.match_patterns.as_deref().unwrap_or_default();
        self.empty_section(
            base,
            &[paths.len(), dirs.len(), patterns.len()],
            "matchPaths, matchDirectories, matchPatterns",
        );
        let mut out = Vec::new();
        for (i, r) in paths.iter().enumerate() {
            let at = format!("{base}.matchPaths[{i}]");
            let target = match &r.path {
                Some(p) => self.abs_path(p, &format!("{at}.path"), PathKind::File),
                None => {
                    self.error(&format!("{at}.path"), "is required");
                    None
                }
            };
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(path) = target {
                out.push(FileRule {
                    target: FileTarget::Path(path),
                    read_only: r.read_only.unwrap_or(false),
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source,
                    meta,
                });
            }
        }
        for (i, r) in dirs.iter().enumerate() {
            let at = format!("{base}.matchDirectories[{i}]");
            let target = match &r.dir {
                Some(d) => self.abs_path(d, &format!("{at}.dir"), PathKind::Dir),
                None => {
                    self.error(&format!("{at}.dir"), "is required");
                    None
                }
            };
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(dir) = target {
                self.whole_tree(&dir, r.recursive, meta.action, &at);
                out.push(FileRule {
                    target: FileTarget::Directory {
                        dir,
                        recursive: r.recursive.unwrap_or(false),
                    },
                    read_only: r.read_only.unwrap_or(false),
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source,
                    meta,
                });
            }
        }
        for (i, r) in patterns.iter().enumerate() {
            let at = format!("{base}.matchPatterns[{i}]");
            let target = match &r.pattern {
                Some(p) => self.pattern(p, &format!("{at}.pattern")),
                None => {
                    self.error(&format!("{at}.pattern"), "is required");
                    None
                }
            };
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(pattern) = target {
                out.push(FileRule {
                    target: FileTarget::Pattern(pattern),
                    read_only: r.read_only.unwrap_or(false),
                    owner_only: r.owner_only.unwrap_or(false),
                    from_source: Vec::new(),
                    meta,
                });
            }
        }
        out
    }

    pub(super) fn network(&mut self, n: &RawNetwork, spec: &Level) -> Vec<NetworkRule> {
        let base = "spec.network";
        let section = self.level(n.meta(), base);
        let protocols = n.match_protocols.as_deref().unwrap_or_default();
        self.empty_section(base, &[protocols.len()], "matchProtocols");
        let mut out = Vec::new();
        for (i, r) in protocols.iter().enumerate() {
            let at = format!("{base}.matchProtocols[{i}]");
            let protocol = self.required_name(
                r.protocol.as_deref(),
                &at,
                "protocol",
                Protocol::parse,
                |p| format!("unknown protocol {p}, expected one of tcp, udp, icmp, raw"),
            );
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(protocol) = protocol {
                out.push(NetworkRule {
                    protocol,
                    from_source,
                    meta,
                });
            }
        }
        out
    }

    /// A required field naming one of a fixed set (`parse` knows them): an error at
    /// `{at}.{field}` when it is missing or unknown.
    fn required_name<T>(
        &mut self,
        value: Option<&str>,
        at: &str,
        field: &str,
        parse: impl Fn(&str) -> Option<T>,
        unknown: impl Fn(&str) -> String,
    ) -> Option<T> {
        let path = format!("{at}.{field}");
        let Some(name) = value else {
            self.error(&path, "is required");
            return None;
        };
        let parsed = parse(name);
        if parsed.is_none() {
            self.error(&path, unknown(name));
        }
        parsed
    }

    pub(super) fn capabilities(
        &mut self,
        c: &RawCapabilities,
        spec: &Level,
    ) -> Vec<CapabilityRule> {
        let base = "spec.capabilities";
        let section = self.level(c.meta(), base);
        let caps = c.match_capabilities.as_deref().unwrap_or_default();
        self.empty_section(base, &[caps.len()], "matchCapabilities");
        let mut out = Vec::new();
        for (i, r) in caps.iter().enumerate() {
            let at = format!("{base}.matchCapabilities[{i}]");
            let capability = self.required_name(
                r.capability.as_deref(),
                &at,
                "capability",
                Capability::parse,
                |name| format!("unknown capability {name}"),
            );
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Block);
            if let Some(capability) = capability {
                out.push(CapabilityRule {
                    capability,
                    from_source,
                    meta,
                });
            }
        }
        out
    }

    pub(super) fn syscall_names(
        &mut self,
        list: Option<&[String]>,
        at: &str,
        required: bool,
    ) -> Vec<String> {
        let list = list.unwrap_or_default();
        let at = format!("{at}.syscall");
        if list.is_empty() {
            if required {
                self.error(&at, "must list at least one syscall");
            }
            return Vec::new();
        }
        if list.len() > self.ctx.limits.max_rules {
            self.error(
                &at,
                format!(
                    "has {} syscalls, limit is {}",
                    list.len(),
                    self.ctx.limits.max_rules
                ),
            );
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for (k, name) in list.iter().enumerate() {
            match names::syscall(name) {
                None => self.error(&format!("{at}[{k}]"), format!("unknown syscall {name}")),
                Some(canonical) if out.iter().any(|o| o == canonical) => {
                    self.warn(&format!("{at}[{k}]"), format!("lists {canonical} twice"));
                }
                Some(canonical) => out.push(canonical.to_string()),
            }
        }
        out.sort();
        out
    }

    pub(super) fn syscalls(&mut self, s: &RawSyscalls, spec: &Level) -> Vec<SyscallRule> {
        let base = "spec.syscalls";
        let section = self.level(s.meta(), base);
        let matches = s.match_syscalls.as_deref().unwrap_or_default();
        let paths = s.match_paths.as_deref().unwrap_or_default();
        self.empty_section(
            base,
            &[matches.len(), paths.len()],
            "matchSyscalls, matchPaths",
        );
        // KubeArmor only ever audits syscalls, so an unset action means Audit here, not Block.
        let mut out = Vec::new();
        for (i, r) in matches.iter().enumerate() {
            let at = format!("{base}.matchSyscalls[{i}]");
            let syscalls = self.syscall_names(r.syscall.as_deref(), &at, true);
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Audit);
            if !syscalls.is_empty() {
                out.push(SyscallRule {
                    syscalls,
                    target: None,
                    from_source,
                    meta,
                });
            }
        }
        for (i, r) in paths.iter().enumerate() {
            let at = format!("{base}.matchPaths[{i}]");
            let target = match r.path.as_deref() {
                None => {
                    self.error(&format!("{at}.path"), "is required");
                    None
                }
                Some(p) if p.ends_with('/') => self
                    .abs_path(p, &format!("{at}.path"), PathKind::Dir)
                    .map(|dir| PathMatch::Directory {
                        dir,
                        recursive: r.recursive.unwrap_or(false),
                    }),
                Some(p) => {
                    if r.recursive.is_some() {
                        self.error(
                            &format!("{at}.recursive"),
                            "applies only to a directory path (ending with /)",
                        );
                    }
                    self.abs_path(p, &format!("{at}.path"), PathKind::File)
                        .map(PathMatch::Path)
                }
            };
            let syscalls = self.syscall_names(r.syscall.as_deref(), &at, false);
            let from_source = self.sources(r.from_source.as_deref(), &at);
            let meta = self.rule_meta(r.meta(), &at, &section, spec, Action::Audit);
            if let Some(target) = target {
                out.push(SyscallRule {
                    syscalls,
                    target: Some(target),
                    from_source,
                    meta,
                });
            }
        }
        if out.iter().any(|r| r.meta.action != Action::Audit) {
            self.warn(
                base,
                "KubeArmor only audits syscalls; palisade enforces Allow and Block where seccomp can",
            );
        }
        out
    }
}
