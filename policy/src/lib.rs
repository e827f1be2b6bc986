#![doc = include_str!("../README.md")]

pub mod compile;
pub mod diag;
pub mod eval;
pub mod model;
pub mod names;
pub mod parse;
pub mod raw;
pub mod select;
pub mod selector;
mod spans;
mod validate;

pub use compile::{
    compile, compile_for, Candidate, CompileOptions, CompiledPolicy, CompiledRule, DenyPosture,
    Enforcement, Enforcer, Posture,
};
pub use diag::{Diagnostic, Diagnostics, Level, Location};
pub use eval::{glob_match, Decision, Exec, FileAccess, RuleRef};
pub use model::{
    Action, CapabilityRule, FileRule, FileTarget, NetworkRule, PathMatch, Policy, PolicyId,
    ProcessRule, ProcessTarget, RuleMeta, Scope, Source, SyscallRule,
};
pub use names::{Capability, Protocol};
pub use parse::{
    parse_pod_annotation, parse_policies, parse_policies_with, Limits, Parsed,
    POD_POLICY_ANNOTATION,
};
pub use select::select;
pub use selector::{Expression, Operator, Selector, Workload};
pub use validate::{API_VERSION, KIND};
