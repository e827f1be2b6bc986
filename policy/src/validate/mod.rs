//! Validation: turns a raw document into a [`Policy`], reporting every problem with its field path.

pub mod limits;
mod paths;
mod rules;
mod selector;

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::model::{
    Action, Policy, PolicyId, RuleMeta, Scope, Source, DEFAULT_NAMESPACE, DEFAULT_SEVERITY,
};
use crate::raw::{HasMeta, RawMeta, RawMetadata, RawPolicy};
use limits::Limits;

pub const API_VERSION: &str = "security.kubearmor.com/v1";
pub const KIND: &str = "KubeArmorPolicy";

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

    /// An error at `path` when a list of `len` `what` is longer than `limit`; whether it was.
    fn over_count(&mut self, path: &str, len: usize, what: &str, limit: usize) -> bool {
        let over = len > limit;
        if over {
            self.error(path, format!("has {len} {what}, limit is {limit}"));
        }
        over
    }

    /// An error at `path` when a text of `len` bytes is longer than `limit`; whether it was.
    fn over_length(&mut self, path: &str, len: usize, limit: usize) -> bool {
        let over = len > limit;
        if over {
            self.error(path, format!("is {len} bytes long, limit is {limit}"));
        }
        over
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
        if self.over_count("spec", total, "rules", self.ctx.limits.max_rules) {
            return None;
        }

        let process = self.section(spec.process.as_ref(), &spec_level, Self::process);
        let file = self.section(spec.file.as_ref(), &spec_level, Self::file);
        let network = self.section(spec.network.as_ref(), &spec_level, Self::network);
        let capabilities =
            self.section(spec.capabilities.as_ref(), &spec_level, Self::capabilities);
        let syscalls = self.section(spec.syscalls.as_ref(), &spec_level, Self::syscalls);

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

    /// Checks one rule section when the spec has it; a missing section has no rules.
    fn section<S, R>(
        &mut self,
        raw: Option<&S>,
        spec: &Level,
        check: impl FnOnce(&mut Self, &S, &Level) -> Vec<R>,
    ) -> Vec<R> {
        raw.map(|r| check(self, r, spec)).unwrap_or_default()
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
            self.over_count(
                &format!("{at}.tags"),
                tags.len(),
                "tags",
                limits.max_list_len,
            );
            for (i, t) in tags.iter().enumerate() {
                let path = format!("{at}.tags[{i}]");
                if t.trim().is_empty() {
                    self.error(&path, "must not be empty");
                } else {
                    self.over_length(&path, t.len(), limits.max_string_len);
                }
            }
            level.tags = Some(tags.to_vec());
        }
        if let Some(msg) = m.message {
            let limit = self.ctx.limits.max_string_len;
            self.over_length(&format!("{at}.message"), msg.len(), limit);
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
}
