//! Validation: turns a raw document into a [`Policy`], reporting every problem with its field path.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::model::{
    Action, CapabilityRule, FileRule, FileTarget, NetworkRule, PathMatch, Policy, PolicyId,
    ProcessRule, ProcessTarget, RuleMeta, Scope, Source, SyscallRule, DEFAULT_NAMESPACE,
    DEFAULT_SEVERITY,
};
use crate::names::{self, Capability, Protocol};
use crate::parse::Limits;
use crate::raw::{
    HasMeta, RawCapabilities, RawFile, RawMeta, RawMetadata, RawNetwork, RawPolicy, RawProcess,
    RawSelector, RawSource, RawSyscalls,
};
use crate::selector::{
    compile_regex, ContainerNames, Expression, Operator, Selector, CONTAINER_NAME_KEY,
    LABEL_EXPRESSION_KEY,
};

pub const API_VERSION: &str = "security.kubearmor.com/v1";
pub const KIND: &str = "KubeArmorPolicy";

/// Longest file name component Linux accepts (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// What the document is being validated for.
pub(crate) struct Context<'a> {
    pub document: usize,
    pub limits: &'a Limits,
    pub scope: &'a Scope,
    /// Inline pod policies take the pod's namespace.
    pub forced_namespace: Option<&'a str>,
}

/// Severity, tags, message and action as set at one level (spec, section or rule).
#[derive(Debug, Clone, Default)]
struct Level {
    action: Option<Action>,
    severity: Option<u8>,
    tags: Option<Vec<String>>,
    message: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    File,
    Dir,
}

struct Validator<'a> {
    ctx: &'a Context<'a>,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

/// Validates one document; returns the policy only if it has no errors (warnings are fine).
pub(crate) fn policy(
    raw: &RawPolicy,
    ctx: &Context<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Policy> {
    let mut v = Validator {
        ctx,
        diags,
        errors: 0,
    };
    v.policy(raw)
}

/// Reports policies defined twice in one input (same namespace and name).
pub(crate) fn unique_ids(policies: &[(usize, Policy)], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&PolicyId, usize> = HashMap::new();
    for (doc, p) in policies {
        if let Some(first) = seen.insert(&p.id, *doc) {
            diags.push(Diagnostic::error(
                *doc,
                "metadata.name",
                format!("policy {} is also defined in document {first}", p.id),
            ));
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A glob made only of separators and wildcards, spanning segments: it matches every path.
fn matches_everything(pattern: &str) -> bool {
    pattern.chars().all(|c| c == '/' || c == '*') && (pattern.contains("**") || pattern == "*")
}

impl Validator<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors += 1;
        self.diags
            .push(Diagnostic::error(self.ctx.document, path, message));
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(self.ctx.document, path, message));
    }

    fn policy(&mut self, raw: &RawPolicy) -> Option<Policy> {
        match raw.api_version.as_deref() {
            None => self.error("apiVersion", "is required"),
            Some(API_VERSION) => {}
            Some(other) => self.error("apiVersion", format!("must be {API_VERSION}, not {other}")),
        }
        match raw.kind.as_deref() {
            None => self.error("kind", "is required"),
            Some(KIND) => {}
            Some(other) => self.error("kind", format!("unsupported kind {other}, expected {KIND}")),
        }
        let id = self.metadata(raw.metadata.as_ref());
        let Some(spec) = raw.spec.as_ref() else {
            self.error("spec", "is required");
            return None;
        };
        let spec_level = self.level(spec.meta(), "spec");
        let selector = self.selector(spec.selector.as_ref());
        let active = match spec.status.as_deref() {
            None | Some("Active") => true,
            Some("Inactive") => false,
            Some(other) => {
                self.error(
                    "spec.status",
                    format!("must be Active or Inactive, not {other}"),
                );
                true
            }
        };
        let mut unenforced = Vec::new();
        if spec.apparmor.is_some() {
            self.warn(
                "spec.apparmor",
                "raw AppArmor profiles are not enforced by palisade; the other rules are",
            );
            unenforced.push("spec.apparmor: raw AppArmor profile is not enforced".to_string());
        }

        if spec.process.is_none()
            && spec.file.is_none()
            && spec.network.is_none()
            && spec.capabilities.is_none()
            && spec.syscalls.is_none()
        {
            self.error(
                "spec",
                "has no rules: set at least one of process, file, network, capabilities, syscalls",
            );
            return None;
        }
        let total = raw_rule_count(spec);
        if total > self.ctx.limits.max_rules {
            self.error(
                "spec",
                format!("has {total} rules, limit is {}", self.ctx.limits.max_rules),
            );
            return None;
        }

        let process = spec
            .process
            .as_ref()
            .map(|p| self.process(p, &spec_level))
            .unwrap_or_default();
        let file = spec
            .file
            .as_ref()
            .map(|f| self.file(f, &spec_level))
            .unwrap_or_default();
        let network = spec
            .network
            .as_ref()
            .map(|n| self.network(n, &spec_level))
            .unwrap_or_default();
        let capabilities = spec
            .capabilities
            .as_ref()
            .map(|c| self.capabilities(c, &spec_level))
            .unwrap_or_default();
        let syscalls = spec
            .syscalls
            .as_ref()
            .map(|s| self.syscalls(s, &spec_level))
            .unwrap_or_default();

        self.overlaps(
            process
                .iter()
                .map(|r| {
                    let key = format!("process {:?} from {:?}", r.target, sorted(&r.from_source));
                    (key, format!("owner={}", r.owner_only), &r.meta)
                })
                .collect(),
        );
        self.overlaps(
            file.iter()
                .map(|r| {
                    let key = format!("file {:?} from {:?}", r.target, sorted(&r.from_source));
                    let detail = format!("ro={} owner={}", r.read_only, r.owner_only);
                    (key, detail, &r.meta)
                })
                .collect(),
        );
        self.overlaps(
            network
                .iter()
                .map(|r| {
                    let key = format!("net {:?} from {:?}", r.protocol, sorted(&r.from_source));
                    (key, String::new(), &r.meta)
                })
                .collect(),
        );
        self.overlaps(
            capabilities
                .iter()
                .map(|r| {
                    let key = format!(
                        "cap {} from {:?}",
                        r.capability.name,
                        sorted(&r.from_source)
                    );
                    (key, String::new(), &r.meta)
                })
                .collect(),
        );
        self.overlaps(
            syscalls
                .iter()
                .flat_map(|r| {
                    r.syscalls.iter().map(move |s| {
                        let key = format!(
                            "syscall {s} on {:?} from {:?}",
                            r.target,
                            sorted(&r.from_source)
                        );
                        (key, String::new(), &r.meta)
                    })
                })
                .collect(),
        );

        if self.errors > 0 {
            return None;
        }
        Some(Policy {
            id,
            scope: self.ctx.scope.clone(),
            active,
            selector,
            process,
            file,
            network,
            capabilities,
            syscalls,
            unenforced,
        })
    }

    fn metadata(&mut self, m: Option<&RawMetadata>) -> PolicyId {
        let empty = RawMetadata::default();
        let m = m.unwrap_or(&empty);
        let name = match m.name.as_deref() {
            None => {
                self.error("metadata.name", "is required");
                String::new()
            }
            Some(n) => {
                if !is_dns_subdomain(n) {
                    self.error(
                        "metadata.name",
                        "must be a DNS subdomain name (lowercase letters, digits, - and ., at most 253)",
                    );
                }
                n.to_string()
            }
        };
        let namespace = match (self.ctx.forced_namespace, m.namespace.as_deref()) {
            (Some(forced), Some(ns)) if ns != forced => {
                self.error(
                    "metadata.namespace",
                    format!("must be the pod's namespace {forced}, not {ns}"),
                );
                forced.to_string()
            }
            (Some(forced), _) => forced.to_string(),
            (None, None) => DEFAULT_NAMESPACE.to_string(),
            (None, Some(ns)) => {
                if !is_dns_label(ns) {
                    self.error(
                        "metadata.namespace",
                        "must be a DNS label (lowercase letters, digits and -, at most 63)",
                    );
                }
                ns.to_string()
            }
        };
        PolicyId { namespace, name }
    }

    fn level(&mut self, m: RawMeta<'_>, at: &str) -> Level {
        let mut level = Level::default();
        if let Some(s) = m.severity {
            match u8::try_from(s) {
                Ok(s) if (1..=10).contains(&s) => level.severity = Some(s),
                _ => self.error(&format!("{at}.severity"), "must be between 1 and 10"),
            }
        }
        if let Some(a) = m.action {
            match Action::parse(a) {
                Some(a) => level.action = Some(a),
                None => self.error(
                    &format!("{at}.action"),
                    format!("unknown action {a}, expected one of Allow, Audit, Block"),
                ),
            }
        }
        if let Some(tags) = m.tags {
            let limits = self.ctx.limits;
            if tags.len() > limits.max_list_len {
                self.error(
                    &format!("{at}.tags"),
                    format!("has {} tags, limit is {}", tags.len(), limits.max_list_len),
                );
            }
            for (i, t) in tags.iter().enumerate() {
                if t.trim().is_empty() {
                    self.error(&format!("{at}.tags[{i}]"), "must not be empty");
                } else if t.len() > limits.max_string_len {
                    self.error(
                        &format!("{at}.tags[{i}]"),
                        format!(
                            "is {} bytes long, limit is {}",
                            t.len(),
                            limits.max_string_len
                        ),
                    );
                }
            }
            level.tags = Some(tags.to_vec());
        }
        if let Some(msg) = m.message {
            if msg.len() > self.ctx.limits.max_string_len {
                self.error(
                    &format!("{at}.message"),
                    format!(
                        "is {} bytes long, limit is {}",
                        msg.len(),
                        self.ctx.limits.max_string_len
                    ),
                );
            }
            level.message = Some(msg.to_string());
        }
        level
    }

    /// The closest level wins for each attribute: rule, then section, then spec.
    fn rule_meta(
        &mut self,
        raw: RawMeta<'_>,
        at: &str,
        section: &Level,
        spec: &Level,
        default_action: Action,
    ) -> RuleMeta {
        let rule = self.level(raw, at);
        let levels = [&rule, section, spec];
        RuleMeta {
            action: levels
                .iter()
                .find_map(|l| l.action)
                .unwrap_or(default_action),
            severity: levels
                .iter()
                .find_map(|l| l.severity)
                .unwrap_or(DEFAULT_SEVERITY),
            tags: levels
                .iter()
                .find_map(|l| l.tags.clone())
                .unwrap_or_default(),
            message: levels.iter().find_map(|l| l.message.clone()),
            origin: at.to_string(),
        }
    }

    fn abs_path(&mut self, s: &str, at: &str, kind: PathKind) -> Option<String> {
        let before = self.errors;
        if s.is_empty() {
            self.error(at, "must not be empty");
            return None;
        }
        if s.len() > self.ctx.limits.max_path_len {
            self.error(
                at,
                format!(
                    "is {} bytes long, limit is {}",
                    s.len(),
                    self.ctx.limits.max_path_len
                ),
            );
            return None;
        }
        if s.contains('\0') {
            self.error(at, "must not contain NUL bytes");
        }
        if !s.starts_with('/') {
            self.error(at, "must be absolute");
        }
        match kind {
            PathKind::File if s.ends_with('/') => self.error(at, "must not end with /"),
            PathKind::Dir if !s.ends_with('/') => self.error(at, "must end with /"),
            _ => {}
        }
        let inner = s.trim_start_matches('/').trim_end_matches('/');
        let segments: Vec<&str> = if inner.is_empty() {
            Vec::new()
        } else {
            inner.split('/').collect()
        };
        if segments.contains(&"..") {
            self.error(at, "must not contain .. segments");
        }
        if segments.iter().any(|seg| seg.len() > NAME_MAX) {
            self.error(at, format!("has a segment longer than {NAME_MAX} bytes"));
        }
        if segments.iter().any(|seg| seg.is_empty() || *seg == ".") || s.starts_with("//") {
            self.warn(at, "is not normalized (empty or . segments)");
        }
        (self.errors == before).then(|| s.to_string())
    }

    fn pattern(&mut self, s: &str, at: &str) -> Option<String> {
        let before = self.errors;
        if s.is_empty() {
            self.error(at, "must not be empty");
            return None;
        }
        if s.len() > self.ctx.limits.max_path_len {
            self.error(
                at,
                format!(
                    "is {} bytes long, limit is {}",
                    s.len(),
                    self.ctx.limits.max_path_len
                ),
            );
            return None;
        }
        if s.contains('\0') {
            self.error(at, "must not contain NUL bytes");
        }
        if matches_everything(s) {
            self.error(at, "matches every path; name what to match");
        } else if !s.starts_with('/') {
            self.error(at, "must be absolute");
        }
        if s.split('/').any(|seg| seg == "..") {
            self.error(at, "must not contain .. segments");
        }
        (self.errors == before).then(|| s.to_string())
    }

    fn sources(&mut self, list: Option<&[RawSource]>, at: &str) -> Vec<Source> {
        let list = list.unwrap_or_default();
        let at = format!("{at}.fromSource");
        if list.len() > self.ctx.limits.max_list_len {
            self.error(
                &at,
                format!(
                    "has {} entries, limit is {}",
                    list.len(),
                    self.ctx.limits.max_list_len
                ),
            );
            return Vec::new();
        }
        let mut out: Vec<Source> = Vec::new();
        for (j, s) in list.iter().enumerate() {
            let sat = format!("{at}[{j}]");
            let source = match (&s.path, &s.dir) {
                (Some(p), None) => {
                    if s.recursive.is_some() {
                        self.error(&format!("{sat}.recursive"), "applies only to dir");
                    }
                    self.abs_path(p, &format!("{sat}.path"), PathKind::File)
                        .map(Source::Path)
                }
                (None, Some(d)) => {
                    self.abs_path(d, &format!("{sat}.dir"), PathKind::Dir)
                        .map(|dir| Source::Directory {
                            dir,
                            recursive: s.recursive.unwrap_or(false),
                        })
                }
                (Some(_), Some(_)) => {
                    self.error(&sat, "set either path or dir, not both");
                    None
                }
                (None, None) => {
                    self.error(&sat, "must set path or dir");
                    None
                }
            };
            if let Some(source) = source {
                if let Some(k) = out.iter().position(|o| *o == source) {
                    self.warn(&sat, format!("duplicates {at}[{k}]"));
                } else {
                    out.push(source);
                }
            }
        }
        out
    }

    fn selector(&mut self, s: Option<&RawSelector>) -> Selector {
        let mut out = Selector::default();
        let Some(s) = s else {
            // An inline pod policy without a selector naturally covers its own pod.
            if *self.ctx.scope == Scope::Namespace {
                self.warn(
                    "spec.selector",
                    "is missing: the policy applies to every container in its namespace",
                );
            }
            return out;
        };
        let limits = self.ctx.limits;
        if let Some(labels) = &s.match_labels {
            let at = "spec.selector.matchLabels";
            if labels.len() > limits.max_list_len {
                self.error(
                    at,
                    format!(
                        "has {} labels, limit is {}",
                        labels.len(),
                        limits.max_list_len
                    ),
                );
            }
            for (k, v) in labels {
                if k.trim().is_empty() {
                    self.error(at, "label keys must not be empty");
                } else if k.len() > limits.max_string_len || v.len() > limits.max_string_len {
                    self.error(
                        &format!("{at}.{k}"),
                        format!("is longer than {} bytes", limits.max_string_len),
                    );
                } else {
                    if k == CONTAINER_NAME_KEY {
                        self.container_names(v, &format!("{at}.{k}"));
                    }
                    out.match_labels.insert(k.clone(), v.clone());
                }
            }
        }
        let exprs = s.match_expressions.as_deref().unwrap_or_default();
        if exprs.len() > limits.max_list_len {
            self.error(
                "spec.selector.matchExpressions",
                format!(
                    "has {} expressions, limit is {}",
                    exprs.len(),
                    limits.max_list_len
                ),
            );
            return out;
        }
        for (i, e) in exprs.iter().enumerate() {
            let at = format!("spec.selector.matchExpressions[{i}]");
            let key = match e.key.as_deref().map(str::trim) {
                None | Some("") => {
                    self.error(&format!("{at}.key"), "is required");
                    None
                }
                Some(k) => Some(k.to_string()),
            };
            let operator = match e.operator.as_deref() {
                None => {
                    self.error(&format!("{at}.operator"), "is required");
                    None
                }
                Some("In") => Some(Operator::In),
                Some("NotIn") => Some(Operator::NotIn),
                Some(other) => {
                    self.error(
                        &format!("{at}.operator"),
                        format!("unsupported operator {other}, expected In or NotIn"),
                    );
                    None
                }
            };
            let values = e.values.as_deref().unwrap_or_default();
            if values.is_empty() {
                self.error(&format!("{at}.values"), "must list at least one value");
            } else if values.len() > limits.max_list_len {
                self.error(
                    &format!("{at}.values"),
                    format!(
                        "has {} values, limit is {}",
                        values.len(),
                        limits.max_list_len
                    ),
                );
                continue;
            }
            let (Some(key), Some(operator)) = (key, operator) else {
                continue;
            };
            if key == LABEL_EXPRESSION_KEY {
                let mut labels = Vec::new();
                for (j, v) in values.iter().enumerate() {
                    match v.split_once('=') {
                        Some((k, val)) if !k.trim().is_empty() => {
                            if k.trim() == CONTAINER_NAME_KEY {
                                self.container_names(val, &format!("{at}.values[{j}]"));
                            }
                            labels.push((k.trim().to_string(), val.trim().to_string()));
                        }
                        _ => {
                            self.error(&format!("{at}.values[{j}]"), "must have the form key=value")
                        }
                    }
                }
                out.match_expressions
                    .push(Expression::Labels { operator, labels });
            } else {
                if key == CONTAINER_NAME_KEY {
                    for (j, v) in values.iter().enumerate() {
                        self.container_names(v, &format!("{at}.values[{j}]"));
                    }
                }
                out.match_expressions.push(Expression::Key {
                    key,
                    operator,
                    values: values.to_vec(),
                });
            }
        }
        out
    }

    fn container_names(&mut self, value: &str, at: &str) {
        if let ContainerNames::Regex(pattern) = ContainerNames::classify(value) {
            if let Err(e) = compile_regex(pattern) {
                // The library's message spans lines (pattern, caret, reason): keep the reason.
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or("").trim();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                self.error(at, format!("invalid regular expression: {reason}"));
            }
        }
    }

    fn empty_section(&mut self, at: &str, lists: &[usize], names: &str) {
        if lists.iter().all(|n| *n == 0) {
            self.error(at, format!("has no rules: set at least one of {names}"));
        }
    }

    fn process(&mut self, p: &RawProcess, spec: &Level) -> Vec<ProcessRule> {
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
    fn whole_tree(&mut self, dir: &str, recursive: Option<bool>, action: Action, at: &str) {
        if dir == "/" && recursive == Some(true) && action != Action::Allow {
            self.warn(
                &format!("{at}.dir"),
                format!("/ with recursive matches every path, and the action is {action}"),
            );
        }
    }

    fn file(&mut self, f: &RawFile, spec: &Level) -> Vec<FileRule> {
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

    fn network(&mut self, n: &RawNetwork, spec: &Level) -> Vec<NetworkRule> {
        let base = "spec.network";
        let section = self.level(n.meta(), base);
        let protocols = n.match_protocols.as_deref().unwrap_or_default();
        self.empty_section(base, &[protocols.len()], "matchProtocols");
        let mut out = Vec::new();
        for (i, r) in protocols.iter().enumerate() {
            let at = format!("{base}.matchProtocols[{i}]");
            let protocol = match r.protocol.as_deref() {
                None => {
                    self.error(&format!("{at}.protocol"), "is required");
                    None
                }
                Some(p) => {
                    let parsed = Protocol::parse(p);
                    if parsed.is_none() {
                        self.error(
                            &format!("{at}.protocol"),
                            format!("unknown protocol {p}, expected one of tcp, udp, icmp, raw"),
                        );
                    }
                    parsed
                }
            };
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

    fn capabilities(&mut self, c: &RawCapabilities, spec: &Level) -> Vec<CapabilityRule> {
        let base = "spec.capabilities";
        let section = self.level(c.meta(), base);
        let caps = c.match_capabilities.as_deref().unwrap_or_default();
        self.empty_section(base, &[caps.len()], "matchCapabilities");
        let mut out = Vec::new();
        for (i, r) in caps.iter().enumerate() {
            let at = format!("{base}.matchCapabilities[{i}]");
            let capability = match r.capability.as_deref() {
                None => {
                    self.error(&format!("{at}.capability"), "is required");
                    None
                }
                Some(name) => {
                    let parsed = Capability::parse(name);
                    if parsed.is_none() {
                        self.error(
                            &format!("{at}.capability"),
                            format!("unknown capability {name}"),
                        );
                    }
                    parsed
                }
            };
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

    fn syscall_names(&mut self, list: Option<&[String]>, at: &str, required: bool) -> Vec<String> {
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

    fn syscalls(&mut self, s: &RawSyscalls, spec: &Level) -> Vec<SyscallRule> {
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

    /// Within one policy, the same target (with the same sources) must not carry two actions;
    /// the same rule twice is only worth a warning.
    fn overlaps(&mut self, items: Vec<(String, String, &RuleMeta)>) {
        let mut seen: HashMap<String, (String, &RuleMeta)> = HashMap::new();
        for (key, detail, meta) in items {
            if let Some((prev_detail, prev)) = seen.get(&key) {
                if prev.action != meta.action {
                    self.error(
                        &meta.origin,
                        format!(
                            "conflicting actions on the same target: {} here, {} at {}",
                            meta.action, prev.action, prev.origin
                        ),
                    );
                } else if *prev_detail == detail {
                    self.warn(&meta.origin, format!("duplicates {}", prev.origin));
                }
            } else {
                seen.insert(key, (detail, meta));
            }
        }
    }
}

fn sorted(sources: &[Source]) -> Vec<&Source> {
    let mut v: Vec<&Source> = sources.iter().collect();
    v.sort();
    v
}

fn raw_rule_count(spec: &crate::raw::RawSpec) -> usize {
    fn len<T>(v: &Option<Vec<T>>) -> usize {
        v.as_ref().map_or(0, Vec::len)
    }
    let mut n = 0;
    if let Some(p) = &spec.process {
        n += len(&p.match_paths) + len(&p.match_directories) + len(&p.match_patterns);
    }
    if let Some(f) = &spec.file {
        n += len(&f.match_paths) + len(&f.match_directories) + len(&f.match_patterns);
    }
    if let Some(net) = &spec.network {
        n += len(&net.match_protocols);
    }
    if let Some(c) = &spec.capabilities {
        n += len(&c.match_capabilities);
    }
    if let Some(s) = &spec.syscalls {
        n += len(&s.match_syscalls) + len(&s.match_paths);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("wordpress-mysql"));
        assert!(!is_dns_label("Wordpress"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("ksp.wordpress-block"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain(""));
    }

    #[test]
    fn everything_patterns() {
        assert!(matches_everything("*"));
        assert!(matches_everything("/**"));
        assert!(matches_everything("**"));
        assert!(matches_everything("/*/**"));
        assert!(!matches_everything("/*"));
        assert!(!matches_everything("/**/*.sh"));
        assert!(!matches_everything("/etc/**"));
    }
}
