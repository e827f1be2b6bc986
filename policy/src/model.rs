//! Validated policy types: what a `KubeArmorPolicy` means once every field has been checked.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{Capability, Protocol};
use crate::selector::Selector;

/// Namespace given to policies whose metadata names none, as `kubectl apply` would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Severity given to rules when no level of the policy sets one (KubeArmor's default).
pub const DEFAULT_SEVERITY: u8 = 1;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Permit; the first Allow rule of a kind turns that kind into an allow-list.
    Allow,
    /// Permit and report.
    Audit,
    /// Deny and report.
    Block,
}

impl Action {
    /// Exact spelling only, as KubeArmor's CRD enforces.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Allow" => Some(Self::Allow),
            "Audit" => Some(Self::Audit),
            "Block" => Some(Self::Block),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Audit => "Audit",
            Self::Block => "Block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a policy: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a policy came from, which bounds the workloads it can select.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A cluster object: applies to every pod in its namespace that the selector matches.
    Namespace,
    /// Inline in a pod annotation: applies to that pod only (and its selector still filters containers).
    Pod { pod_name: String },
}

/// A path-like match: one file, or a directory (`dir` ends with `/`) with or without its subtree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Path(String),
    Directory { dir: String, recursive: bool },
}

impl PathMatch {
    /// Whether `path` (absolute, normalized) falls under this match.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Path(p) => p == path,
            Self::Directory { dir, recursive } => match path.strip_prefix(dir.as_str()) {
                Some(rest) => !rest.is_empty() && (*recursive || !rest.contains('/')),
                None => false,
            },
        }
    }
}

/// A `fromSource` entry: the rule applies only to what these binaries do.
pub type Source = PathMatch;

/// The attributes every rule carries once spec, section and rule levels are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleMeta {
    pub action: Action,
    pub severity: u8,
    pub tags: Vec<String>,
    pub message: Option<String>,
    /// Field path of the rule in its policy (`spec.file.matchPaths[0]`), for reports.
    pub origin: String,
}

/// What a file rule matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTarget {
    Path(String),
    Directory {
        dir: String,
        recursive: bool,
    },
    /// A glob: `*` and `?` stay within one path segment, `**` crosses segments.
    Pattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRule {
    pub target: FileTarget,
    /// Reads permitted, writes are what the rule is about.
    pub read_only: bool,
    /// Only the file's owner is permitted.
    pub owner_only: bool,
    pub from_source: Vec<Source>,
    pub meta: RuleMeta,
}

/// What a process rule matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessTarget {
    Path(String),
    /// The process name (`comm`), not a path.
    ExecName(String),
    Directory {
        dir: String,
        recursive: bool,
    },
    Pattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRule {
    pub target: ProcessTarget,
    pub owner_only: bool,
    pub from_source: Vec<Source>,
    pub meta: RuleMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkRule {
    pub protocol: Protocol,
    pub from_source: Vec<Source>,
    pub meta: RuleMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapabilityRule {
    pub capability: Capability,
    pub from_source: Vec<Source>,
    pub meta: RuleMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyscallRule {
    /// Canonical system call names, sorted and without repeats.
    pub syscalls: Vec<String>,
    /// `syscalls.matchPaths`: only calls whose path argument falls here.
    pub target: Option<PathMatch>,
    pub from_source: Vec<Source>,
    pub meta: RuleMeta,
}

/// A validated `KubeArmorPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: PolicyId,
    pub scope: Scope,
    /// False for `spec.status: Inactive`: parsed and checked, never selected.
    pub active: bool,
    pub selector: Selector,
    pub process: Vec<ProcessRule>,
    pub file: Vec<FileRule>,
    pub network: Vec<NetworkRule>,
    pub capabilities: Vec<CapabilityRule>,
    pub syscalls: Vec<SyscallRule>,
    /// Parts of the policy palisade does not enforce at all (such as `spec.apparmor`).
    pub unenforced: Vec<String>,
}

impl Policy {
    pub fn rule_count(&self) -> usize {
        self.process.len()
            + self.file.len()
            + self.network.len()
            + self.capabilities.len()
            + self.syscalls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_parse_is_exact() {
        for (text, action) in [
            ("Allow", Action::Allow),
            ("Audit", Action::Audit),
            ("Block", Action::Block),
        ] {
            assert_eq!(Action::parse(text), Some(action));
            assert_eq!(action.to_string(), text);
        }
        assert_eq!(Action::parse("block"), None);
    }

    #[test]
    fn path_match_respects_recursion() {
        let flat = PathMatch::Directory {
            dir: "/etc/".into(),
            recursive: false,
        };
        let deep = PathMatch::Directory {
            dir: "/etc/".into(),
            recursive: true,
        };
        assert!(flat.matches("/etc/passwd"));
        assert!(!flat.matches("/etc/ssl/cert.pem"));
        assert!(deep.matches("/etc/ssl/cert.pem"));
        assert!(!deep.matches("/etc/"));
        assert!(!deep.matches("/etcetera"));
        let file = PathMatch::Path("/bin/sh".into());
        assert!(file.matches("/bin/sh"));
        assert!(!file.matches("/bin/shx"));
    }

    #[test]
    fn policy_id_displays_namespace_and_name() {
        let id = PolicyId {
            namespace: "ns".into(),
            name: "p".into(),
        };
        assert_eq!(id.to_string(), "ns/p");
    }
}
