//! Checks on the rule sections: process, file, network, capabilities and syscalls.

use crate::model::{
    Action, CapabilityRule, FileRule, FileTarget, NetworkRule, PathMatch, ProcessRule,
    ProcessTarget, RuleMeta, Source, SyscallRule,
};
use crate::names::{self, Capability, Protocol};
use crate::raw::{
    HasMeta, RawCapabilities, RawFile, RawMeta, RawNetwork, RawProcess, RawProcessPath, RawSource,
    RawSyscallPath, RawSyscalls,
};

use super::paths::{PathKind, NAME_MAX};
use super::{Level, Validator};

/// The checks of `spec.process` and `spec.file`, written once: both sections have the lists
/// `matchPaths`, `matchDirectories` and `matchPatterns`, whose entries differ only in their
/// flags (`ownerOnly`, and for files `readOnly`) and in what a `matchPaths` entry names
/// (`path`, a closure checking it). The raw entry types share field names, not a trait.
macro_rules! path_section {
    ($(#[$doc:meta])* fn $name:ident($raw:ty) -> $rule:ident<$target:ident> {
        base: $base:literal,
        path: $path:expr,
        flags: [$($flag:ident),*],
    }) => {
        $(#[$doc])*
        pub(super) fn $name(&mut self, s: &$raw, spec: &Level) -> Vec<$rule> {
            let paths = s.match_paths.as_deref().unwrap_or_default();
            let dirs = s.match_directories.as_deref().unwrap_or_default();
            let patterns = s.match_patterns.as_deref().unwrap_or_default();
            let lists = [
                ("matchPaths", paths.len()),
                ("matchDirectories", dirs.len()),
                ("matchPatterns", patterns.len()),
            ];
            let section = self.open($base, s.meta(), spec, Action::Block, &lists);
            let mut out = self.each(
                &section,
                "matchPaths",
                paths,
                $path,
                |r| r.from_source.as_deref(),
                |_, r, e| path_section!(@rule $rule, r, e, $($flag),*),
            );
            out.extend(self.each(
                &section,
                "matchDirectories",
                dirs,
                |v, r, at| v.required(r.dir.as_deref(), at, "dir", PathKind::Dir),
                |r| r.from_source.as_deref(),
                |v, r, e| {
                    v.whole_tree(&e.target, r.recursive, e.meta.action, &e.at);
                    let recursive = r.recursive.unwrap_or(false);
                    let e = e.with(|dir| $target::Directory { dir, recursive });
                    path_section!(@rule $rule, r, e, $($flag),*)
                },
            ));
            out.extend(self.each(
                &section,
                "matchPatterns",
                patterns,
                |v, r, at| v.required_pattern(r.pattern.as_deref(), at),
                |_| None,
                |_, r, e| {
                    let e = e.with($target::Pattern);
                    path_section!(@rule $rule, r, e, $($flag),*)
                },
            ));
            out
        }
    };
    // The rule of a checked entry `e` of the raw entry `r`: its flags unset are false.
    (@rule $rule:ident, $r:ident, $e:ident, $($flag:ident),*) => {
        $rule {
            target: $e.target,
            $($flag: $r.$flag.unwrap_or(false),)*
            from_source: $e.from_source,
            meta: $e.meta,
        }
    };
}

/// The checks of `spec.network` and `spec.capabilities`, written once: one list whose
/// entries each name one of a fixed set (`parse` knows them; `unknown` says what is wrong
/// with a name it does not).
macro_rules! named_section {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($raw:ident.$list:ident = $list_name:literal) -> $rule:ident.$field:ident {
            $base:literal, $parse:path, $unknown:expr
        }
    )*) => {$(
        $(#[$doc])*
        pub(super) fn $name(&mut self, s: &$raw, spec: &Level) -> Vec<$rule> {
            let entries = s.$list.as_deref().unwrap_or_default();
            let lists = [($list_name, entries.len())];
            let section = self.open($base, s.meta(), spec, Action::Block, &lists);
            self.each(
                &section,
                $list_name,
                entries,
                |v, r, at| {
                    let name = r.$field.as_deref();
                    v.required_name(name, at, stringify!($field), $parse, $unknown)
                },
                |r| r.from_source.as_deref(),
                |_, _, e| $rule {
                    $field: e.target,
                    from_source: e.from_source,
                    meta: e.meta,
                },
            )
        }
    )*};
}

impl Validator<'_> {
    /// Starts checking one rule section: its own meta, and an error when none of its `lists`
    /// (name, length) has an entry.
    fn open<'a>(
        &mut self,
        base: &'a str,
        meta: RawMeta<'_>,
        spec: &'a Level,
        default: Action,
        lists: &[(&str, usize)],
    ) -> Section<'a> {
        let level = self.level(meta, base);
        if lists.iter().all(|(_, n)| *n == 0) {
            let names: Vec<&str> = lists.iter().map(|(name, _)| *name).collect();
            self.error(
                base,
                format!("has no rules: set at least one of {}", names.join(", ")),
            );
        }
        Section {
            base,
            level,
            spec,
            default,
        }
    }

    path_section! {
        /// `spec.process`: a `matchPaths` entry names its binary by path or by name.
        fn process(RawProcess) -> ProcessRule<ProcessTarget> {
            base: "spec.process",
            path: |v, r, at| v.process_path(r, at),
            flags: [owner_only],
        }
    }

    path_section! {
        /// `spec.file`: a `matchPaths` entry names one file.
        fn file(RawFile) -> FileRule<FileTarget> {
            base: "spec.file",
            path: |v, r, at| {
                v.required(r.path.as_deref(), at, "path", PathKind::File).map(FileTarget::Path)
            },
            flags: [read_only, owner_only],
        }
    }

    /// A process `matchPaths` entry names its binary by path or by name, exactly one of them.
    fn process_path(&mut self, r: &RawProcessPath, at: &str) -> Option<ProcessTarget> {
        match (&r.path, &r.execname) {
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
                self.error(at, "set either path or execname, not both");
                None
            }
            (None, None) => {
                self.error(&format!("{at}.path"), "is required");
                None
            }
        }
    }

    /// A required absolute path at `{at}.{field}`.
    fn required(
        &mut self,
        value: Option<&str>,
        at: &str,
        field: &str,
        kind: PathKind,
    ) -> Option<String> {
        let path = format!("{at}.{field}");
        match value {
            Some(v) => self.abs_path(v, &path, kind),
            None => {
                self.error(&path, "is required");
                None
            }
        }
    }

    /// A required `pattern` at `{at}.pattern`.
    fn required_pattern(&mut self, value: Option<&str>, at: &str) -> Option<String> {
        let path = format!("{at}.pattern");
        match value {
            Some(v) => self.pattern(v, &path),
            None => {
                self.error(&path, "is required");
                None
            }
        }
    }

    /// Checks every entry of one rule list, `{base}.{list}[i]`: first what the entry matches
    /// (`target`, which reports its own errors), then its `fromSource` and its meta; `rule`
    /// builds the rule of each entry whose target is good.
    fn each<E: HasMeta, T, R>(
        &mut self,
        section: &Section<'_>,
        list: &str,
        entries: &[E],
        target: impl Fn(&mut Self, &E, &str) -> Option<T>,
        sources: impl Fn(&E) -> Option<&[RawSource]>,
        rule: impl Fn(&mut Self, &E, Checked<T>) -> R,
    ) -> Vec<R> {
        let mut out = Vec::new();
        for (i, r) in entries.iter().enumerate() {
            let at = format!("{}.{list}[{i}]", section.base);
            let target = target(self, r, &at);
            let from_source = self.sources(sources(r), &at);
            let meta = self.rule_meta(r.meta(), &at, &section.level, section.spec, section.default);
            if let Some(target) = target {
                let checked = Checked {
                    at,
                    target,
                    from_source,
                    meta,
                };
                out.push(rule(self, r, checked));
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

    named_section! {
        /// `spec.network`: protocols.
        fn network(RawNetwork.match_protocols = "matchProtocols") -> NetworkRule.protocol {
            "spec.network", Protocol::parse,
            |p| format!("unknown protocol {p}, expected one of tcp, udp, icmp, raw")
        }
        /// `spec.capabilities`: capabilities, in KubeArmor's or the kernel's spelling.
        fn capabilities(RawCapabilities.match_capabilities = "matchCapabilities") -> CapabilityRule.capability {
            "spec.capabilities", Capability::parse, |name| format!("unknown capability {name}")
        }
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
        if self.over_count(&at, list.len(), "syscalls", self.ctx.limits.max_rules) {
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
        let matches = s.match_syscalls.as_deref().unwrap_or_default();
        let paths = s.match_paths.as_deref().unwrap_or_default();
        // KubeArmor only ever audits syscalls, so an unset action means Audit here, not Block.
        let lists = [
            ("matchSyscalls", matches.len()),
            ("matchPaths", paths.len()),
        ];
        let section = self.open("spec.syscalls", s.meta(), spec, Action::Audit, &lists);
        let rule = |e: Checked<(Option<PathMatch>, Vec<String>)>| SyscallRule {
            syscalls: e.target.1,
            target: e.target.0,
            from_source: e.from_source,
            meta: e.meta,
        };
        let mut out = self.each(
            &section,
            "matchSyscalls",
            matches,
            |v, r, at| {
                Some(v.syscall_names(r.syscall.as_deref(), at, true)).filter(|s| !s.is_empty())
            },
            |r| r.from_source.as_deref(),
            |_, _, e| rule(e.with(|syscalls| (None, syscalls))),
        );
        out.extend(self.each(
            &section,
            "matchPaths",
            paths,
            |v, r, at| {
                let target = v.syscall_path(r, at);
                let syscalls = v.syscall_names(r.syscall.as_deref(), at, false);
                target.map(|t| (t, syscalls))
            },
            |r| r.from_source.as_deref(),
            |_, _, e| rule(e.with(|(target, syscalls)| (Some(target), syscalls))),
        ));
        if out.iter().any(|r| r.meta.action != Action::Audit) {
            self.warn(
                section.base,
                "KubeArmor only audits syscalls; palisade enforces Allow and Block where seccomp can",
            );
        }
        out
    }

    /// A syscalls `matchPaths` entry: a directory when the path ends with `/`, else one file.
    fn syscall_path(&mut self, r: &RawSyscallPath, at: &str) -> Option<PathMatch> {
        match r.path.as_deref() {
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
        }
    }
}

/// One rule section being checked: where it is, the meta set on it and on the spec, and the
/// action a rule gets when no level sets one.
struct Section<'a> {
    base: &'a str,
    level: Level,
    spec: &'a Level,
    default: Action,
}

/// A rule entry whose target checked good, with its field path, sources and resolved meta.
struct Checked<T> {
    at: String,
    target: T,
    from_source: Vec<Source>,
    meta: RuleMeta,
}

impl<T> Checked<T> {
    /// The same entry with its target turned into the rule's target type.
    fn with<U>(self, f: impl FnOnce(T) -> U) -> Checked<U> {
        Checked {
            at: self.at,
            target: f(self.target),
            from_source: self.from_source,
            meta: self.meta,
        }
    }
}
