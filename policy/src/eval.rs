//! Reference decisions on a compiled policy: the precise meaning of actions, fromSource and posture,
//! for the monitor to follow and for tests to pin down.

use serde::{Deserialize, Serialize};

use crate::compile::{CompiledPolicy, CompiledRule};
use crate::model::{Action, FileTarget, PolicyId, ProcessTarget, RuleMeta, Source};
use crate::names::{Capability, Protocol};

/// The kernel truncates process names to this many bytes (`TASK_COMM_LEN - 1`).
const COMM_LEN: usize = 15;

/// A file operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAccess<'a> {
    pub path: &'a str,
    pub write: bool,
    /// Whether the caller owns the file (for `ownerOnly`).
    pub by_owner: bool,
    /// Executable of the calling process, if known.
    pub source: Option<&'a str>,
}

/// An `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec<'a> {
    pub path: &'a str,
    pub by_owner: bool,
    /// Executable of the calling (parent) process, if known.
    pub source: Option<&'a str>,
}

/// A rule that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: PolicyId,
    pub origin: String,
}

/// The outcome for one operation, with the rules that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `Allow` (permit silently), `Audit` (permit and report) or `Block` (deny and report).
    pub action: Action,
    /// Rules that decided; empty when the posture did.
    pub rules: Vec<RuleRef>,
}

/// Glob match as KubeArmor's `matchPatterns` (AppArmor's globs, which KubeArmor hands the
/// pattern to): `*` is any run of characters but `/`, `?` one character but `/`, `**` any run
/// of characters `/` included, everything else literal. The one matcher of the workspace: the
/// shim expands a pattern to a container's files with it too. `**` matches characters, not
/// whole directories: `/etc/**/*.key` needs the `/` after `**` in the path, so it covers
/// `/etc/ssl/a.key` but not `/etc/a.key` (`/etc/**.key` covers both).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    enum Tok {
        Lit(u8),
        One,
        Star,
        DoubleStar,
    }
    let p = pattern.as_bytes();
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                toks.push(Tok::DoubleStar);
                while p.get(i) == Some(&b'*') {
                    i += 1;
                }
                continue;
            }
            b'*' => toks.push(Tok::Star),
            b'?' => toks.push(Tok::One),
            c => toks.push(Tok::Lit(c)),
        }
        i += 1;
    }
    let s = path.as_bytes();
    // reach[j]: the tokens so far can consume exactly s[..j].
    let mut reach = vec![false; s.len() + 1];
    reach[0] = true;
    for tok in &toks {
        let mut next = vec![false; s.len() + 1];
        match tok {
            Tok::Lit(c) => {
                for j in 0..s.len() {
                    next[j + 1] = reach[j] && s[j] == *c;
                }
            }
            Tok::One => {
                for j in 0..s.len() {
                    next[j + 1] = reach[j] && s[j] != b'/';
                }
            }
            Tok::Star | Tok::DoubleStar => {
                let crosses = matches!(tok, Tok::DoubleStar);
                next[0] = reach[0];
                for j in 0..s.len() {
                    next[j + 1] = reach[j + 1] || (next[j] && (crosses || s[j] != b'/'));
                }
            }
        }
        reach = next;
    }
    reach[s.len()]
}

fn source_matches(sources: &[Source], source: Option<&str>) -> bool {
    sources.is_empty() || source.is_some_and(|s| sources.iter().any(|m| m.matches(s)))
}

fn file_target_matches(t: &FileTarget, path: &str) -> bool {
    match t {
        FileTarget::Path(p) => p == path,
        FileTarget::Directory { dir, recursive } => crate::model::PathMatch::Directory {
            dir: dir.clone(),
            recursive: *recursive,
        }
        .matches(path),
        FileTarget::Pattern(g) => glob_match(g, path),
    }
}

fn process_target_matches(t: &ProcessTarget, path: &str) -> bool {
    match t {
        ProcessTarget::Path(p) => p == path,
        ProcessTarget::ExecName(name) => {
            let base = path.rsplit('/').next().unwrap_or(path);
            let comm = &base.as_bytes()[..base.len().min(COMM_LEN)];
            let want = &name.as_bytes()[..name.len().min(COMM_LEN)];
            comm == want
        }
        ProcessTarget::Directory { dir, recursive } => crate::model::PathMatch::Directory {
            dir: dir.clone(),
            recursive: *recursive,
        }
        .matches(path),
        ProcessTarget::Pattern(g) => glob_match(g, path),
    }
}

/// `ownerOnly` (allow the owner only): an Allow rule covers the owner, Block and Audit cover the rest.
fn owner_condition(owner_only: bool, action: Action, by_owner: bool) -> bool {
    !owner_only || (action == Action::Allow) == by_owner
}

/// `readOnly` (allow reads only): an Allow rule covers reads, Block and Audit cover writes.
fn read_only_condition(read_only: bool, action: Action, write: bool) -> bool {
    !read_only || (action == Action::Allow) != write
}

/// The decision rule shared by every kind; see the README for the prose version.
fn decide<'r, R: 'r>(
    matching: impl Iterator<Item = (&'r CompiledRule<R>, &'r RuleMeta, bool)>,
    posture: Action,
) -> Decision {
    let matching: Vec<_> = matching.collect();
    // Rules naming the acting binary in fromSource are more specific and decide alone.
    let specific = matching.iter().any(|(_, _, has_source)| *has_source);
    let decisive: Vec<_> = matching
        .into_iter()
        .filter(|(_, _, has_source)| *has_source == specific)
        .collect();
    let refs = |action: Action| -> Vec<RuleRef> {
        decisive
            .iter()
            .filter(|(_, m, _)| m.action == action)
            .map(|(r, m, _)| RuleRef {
                policy: r.policy.clone(),
                origin: m.origin.clone(),
            })
            .collect()
    };
    let blocked = refs(Action::Block);
    if !blocked.is_empty() {
        return Decision {
            action: Action::Block,
            rules: blocked,
        };
    }
    let allowed = refs(Action::Allow);
    let audited = refs(Action::Audit);
    if !allowed.is_empty() {
        let action = if audited.is_empty() {
            Action::Allow
        } else {
            Action::Audit
        };
        return Decision {
            action,
            rules: allowed.into_iter().chain(audited).collect(),
        };
    }
    if posture != Action::Allow {
        return Decision {
            action: posture,
            rules: audited,
        };
    }
    if !audited.is_empty() {
        return Decision {
            action: Action::Audit,
            rules: audited,
        };
    }
    Decision {
        action: Action::Allow,
        rules: Vec::new(),
    }
}

impl CompiledPolicy {
    /// What the policy says about a file access.
    pub fn decide_file(&self, a: &FileAccess<'_>) -> Decision {
        let matching = self.file.iter().filter_map(|r| {
            let rule = &r.rule;
            let action = rule.meta.action;
            let hit = file_target_matches(&rule.target, a.path)
                && read_only_condition(rule.read_only, action, a.write)
                && owner_condition(rule.owner_only, action, a.by_owner)
                && source_matches(&rule.from_source, a.source);
            hit.then_some((r, &rule.meta, !rule.from_source.is_empty()))
        });
        decide(matching, self.posture.file)
    }

    /// What the policy says about executing a binary.
    pub fn decide_exec(&self, e: &Exec<'_>) -> Decision {
        let matching = self.process.iter().filter_map(|r| {
            let rule = &r.rule;
            let hit = process_target_matches(&rule.target, e.path)
                && owner_condition(rule.owner_only, rule.meta.action, e.by_owner)
                && source_matches(&rule.from_source, e.source);
            hit.then_some((r, &rule.meta, !rule.from_source.is_empty()))
        });
        decide(matching, self.posture.process)
    }

    /// What the policy says about opening a socket of `protocol`.
    pub fn decide_socket(&self, protocol: Protocol, source: Option<&str>) -> Decision {
        let matching = self.network.iter().filter_map(|r| {
            let hit = r.rule.protocol == protocol && source_matches(&r.rule.from_source, source);
            hit.then_some((r, &r.rule.meta, !r.rule.from_source.is_empty()))
        });
        decide(matching, self.posture.network)
    }

    /// What the policy says about using `capability`.
    pub fn decide_capability(&self, capability: Capability, source: Option<&str>) -> Decision {
        let matching = self.capabilities.iter().filter_map(|r| {
            let hit =
                r.rule.capability == capability && source_matches(&r.rule.from_source, source);
            hit.then_some((r, &r.rule.meta, !r.rule.from_source.is_empty()))
        });
        decide(matching, self.posture.capabilities)
    }

    /// What the policy says about a system call, with its path argument if it has one.
    pub fn decide_syscall(
        &self,
        syscall: &str,
        path: Option<&str>,
        source: Option<&str>,
    ) -> Decision {
        let matching = self.syscalls.iter().filter_map(|r| {
            let rule = &r.rule;
            let names = rule.syscalls.is_empty() || rule.syscalls.iter().any(|s| s == syscall);
            let target = match (&rule.target, path) {
                (None, _) => true,
                (Some(t), Some(p)) => t.matches(p),
                (Some(_), None) => false,
            };
            let hit = names && target && source_matches(&rule.from_source, source);
            hit.then_some((r, &rule.meta, !rule.from_source.is_empty()))
        });
        decide(matching, self.posture.syscalls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns, paths, and whether the one matches the other.
    const GLOB_CASES: &[(&str, &str, bool)] = &[
        ("/etc/*.conf", "/etc/a.conf", true),
        ("/etc/*.conf", "/etc/x/a.conf", false),
        ("/etc/**.conf", "/etc/x/a.conf", true),
        ("/**/*.sh", "/a/b/c.sh", true),
        ("/tmp/?", "/tmp/a", true),
        ("/tmp/?", "/tmp/ab", false),
        ("/tmp/?", "/tmp//", false),
        ("/var/log/**", "/var/log/a/b/c", true),
        ("/var/log/**", "/var/lib/x", false),
        ("/exact", "/exact", true),
        ("/exact", "/exactly", false),
        // `**` then `/`: at least one directory between (AppArmor's reading, KubeArmor's)
        ("/etc/**/*.key", "/etc/ssl/a.key", true),
        ("/etc/**/*.key", "/etc/ssl/private/a.key", true),
        ("/etc/**/*.key", "/etc/c.key", false),
        ("/etc/**.key", "/etc/c.key", true),
        ("/etc/**.key", "/etc/ssl/a.key", true),
        ("/etc/**.key", "/etc/ssl/a.key/x", false),
        // a `*` segment needs at least nothing, not a missing directory
        ("/home/*/secret", "/home/bob/secret", true),
        ("/home/*/secret", "/home/secret", false),
        ("/root/.ssh/id_?sa", "/root/.ssh/id_rsa", true),
        ("/root/.ssh/id_?sa", "/root/.ssh/id_ecdsa", false),
        ("/etc/*hado?", "/etc/shadow", true),
        ("/etc/*hado?", "/etc/gshadow", true),
        // `[` has no meaning in matchPatterns here: literal
        ("/etc/[ab]", "/etc/[ab]", true),
        ("/etc/[ab]", "/etc/a", false),
    ];

    #[test]
    fn glob_semantics() {
        for (pattern, path, want) in GLOB_CASES {
            assert_eq!(glob_match(pattern, path), *want, "{pattern} on {path}");
        }
    }

    #[test]
    fn glob_is_linear_on_hostile_patterns() {
        let pattern = "/*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_string();
        // A backtracking matcher would need on the order of 4000^13 steps here and never return;
        // the linear one answers at once (no timing is asserted: the test would hang instead).
        let path = format!("/{}", "a".repeat(4000));
        assert!(!glob_match(&pattern, &path));
    }

    #[test]
    fn read_only_and_owner_only_conditions() {
        // readOnly Block covers writes only; readOnly Allow covers reads only.
        assert!(read_only_condition(true, Action::Block, true));
        assert!(!read_only_condition(true, Action::Block, false));
        assert!(read_only_condition(true, Action::Allow, false));
        assert!(!read_only_condition(true, Action::Allow, true));
        assert!(read_only_condition(false, Action::Block, false));
        // ownerOnly Block covers non-owners; ownerOnly Allow covers owners.
        assert!(owner_condition(true, Action::Block, false));
        assert!(!owner_condition(true, Action::Block, true));
        assert!(owner_condition(true, Action::Allow, true));
        assert!(!owner_condition(true, Action::Allow, false));
    }
}
