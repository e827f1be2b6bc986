#![doc = include_str!("../README.md")]

pub mod capabilities;
pub mod config;
pub mod contract;
pub mod enforce;
mod harden;
pub mod install;
pub mod kernel;
pub mod paths;
pub mod seccomp;
pub mod spec;
pub mod strict;

pub use config::HardeningConfig;
pub use contract::{Override, COMPAT_RUNTIME_CLASS};
pub use enforce::{
    enforce, EnforceError, Enforcement, Enforcer, MonitorRule, MonitorRules, MonitorTarget,
    RuleEnforcement, RuleKind,
};
pub use harden::{harden_spec, HardenError, HardeningReport, CONTAINER_TYPE_ANNOTATION};
pub use kernel::KernelFeatures;
pub use strict::StrictConfig;

/// `names` as owned strings, in the collection the unit test wants.
#[cfg(test)]
fn owned<C: FromIterator<String>>(names: &[&str]) -> C {
    names.iter().map(|n| (*n).to_owned()).collect()
}
