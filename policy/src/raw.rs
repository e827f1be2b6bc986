//! The policy document exactly as users write it (KubeArmor's `KubeArmorPolicy`), before validation.
//!
//! Structure is strict (unknown fields are rejected) but values stay loose (strings and plain
//! integers) so that validation can report every bad value with its path instead of stopping at
//! the first one. `schema/kubearmor-policy.schema.json` describes the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One YAML document: a `KubeArmorPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPolicy {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: Option<RawMetadata>,
    pub spec: Option<RawSpec>,
    /// Written by the cluster (`kubectl get -o yaml`); carried, never used.
    pub status: Option<RawStatus>,
}

/// The subset of Kubernetes object metadata a policy file may carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMetadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    // Server-set fields, accepted so that exported policies load as they are.
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<RawExpression>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpression {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

/// A `fromSource` entry: the binary (or directory of binaries) a rule is restricted to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub path: Option<String>,
    pub dir: Option<String>,
    pub recursive: Option<bool>,
}

/// The fields every rule and every section may set; the closest one wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawMeta<'a> {
    pub severity: Option<i64>,
    pub tags: Option<&'a [String]>,
    pub message: Option<&'a str>,
    pub action: Option<&'a str>,
}

/// Implemented by every struct that carries severity, tags, message and action.
pub trait HasMeta {
    fn meta(&self) -> RawMeta<'_>;
}

/// Declares raw structs that carry, after their own fields, the four fields every rule and every
/// section may set (`severity`, `tags`, `message`, `action`), and their `HasMeta`.
macro_rules! with_meta {
    ($($(#[$doc:meta])* pub struct $name:ident { $($(#[$fdoc:meta])* pub $field:ident: $ty:ty,)* })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            pub severity: Option<i64>,
            pub tags: Option<Vec<String>>,
            pub message: Option<String>,
            pub action: Option<String>,
        }

        has_meta!($name);
    )*};
}

/// `HasMeta` for a struct with the four meta fields.
macro_rules! has_meta {
    ($name:ident) => {
        impl HasMeta for $name {
            fn meta(&self) -> RawMeta<'_> {
                RawMeta {
                    severity: self.severity,
                    tags: self.tags.as_deref(),
                    message: self.message.as_deref(),
                    action: self.action.as_deref(),
                }
            }
        }
    };
}

// `status` follows the meta fields, as in KubeArmor's schema: serde names the fields in this
// order when it rejects an unknown one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSpec {
    pub selector: Option<RawSelector>,
    pub process: Option<RawProcess>,
    pub file: Option<RawFile>,
    pub network: Option<RawNetwork>,
    pub capabilities: Option<RawCapabilities>,
    pub syscalls: Option<RawSyscalls>,
    /// A raw AppArmor profile; palisade has no AppArmor enforcer.
    pub apparmor: Option<String>,
    pub severity: Option<i64>,
    pub tags: Option<Vec<String>>,
    pub message: Option<String>,
    pub action: Option<String>,
    /// `Active` (default) or `Inactive`.
    pub status: Option<String>,
}

has_meta!(RawSpec);

with_meta! {
    pub struct RawProcess {
        pub match_paths: Option<Vec<RawProcessPath>>,
        pub match_directories: Option<Vec<RawProcessDirectory>>,
        pub match_patterns: Option<Vec<RawProcessPattern>>,
    }

    pub struct RawProcessPath {
        pub path: Option<String>,
        /// Match by process name instead of path (newer KubeArmor releases).
        pub execname: Option<String>,
        pub owner_only: Option<bool>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawProcessDirectory {
        pub dir: Option<String>,
        pub recursive: Option<bool>,
        pub owner_only: Option<bool>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawProcessPattern {
        pub pattern: Option<String>,
        pub owner_only: Option<bool>,
    }

    pub struct RawFile {
        pub match_paths: Option<Vec<RawFilePath>>,
        pub match_directories: Option<Vec<RawFileDirectory>>,
        pub match_patterns: Option<Vec<RawFilePattern>>,
    }

    pub struct RawFilePath {
        pub path: Option<String>,
        pub read_only: Option<bool>,
        pub owner_only: Option<bool>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawFileDirectory {
        pub dir: Option<String>,
        pub recursive: Option<bool>,
        pub read_only: Option<bool>,
        pub owner_only: Option<bool>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawFilePattern {
        pub pattern: Option<String>,
        pub read_only: Option<bool>,
        pub owner_only: Option<bool>,
    }

    pub struct RawNetwork {
        pub match_protocols: Option<Vec<RawProtocol>>,
    }

    pub struct RawProtocol {
        pub protocol: Option<String>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawCapabilities {
        pub match_capabilities: Option<Vec<RawCapability>>,
    }

    pub struct RawCapability {
        pub capability: Option<String>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawSyscalls {
        pub match_syscalls: Option<Vec<RawSyscallMatch>>,
        pub match_paths: Option<Vec<RawSyscallPath>>,
    }

    pub struct RawSyscallMatch {
        pub syscall: Option<Vec<String>>,
        pub from_source: Option<Vec<RawSource>>,
    }

    pub struct RawSyscallPath {
        pub path: Option<String>,
        pub recursive: Option<bool>,
        pub syscall: Option<Vec<String>>,
        pub from_source: Option<Vec<RawSource>>,
    }
}
