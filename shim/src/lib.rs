#![doc = include_str!("../README.md")]

// What other crates and the shim's integration tests use: the binary (`shim`, `sys`), the task
// service with its runtime seam and configuration (`service`, `runc`, `config`, `error`,
// `events`), the event pipeline (`report`, used by the cli's tests too), idmapped mounts, and
// the learned profile's seccomp narrowing (`profile_seccomp`, proven with real runc in tests/).
pub mod config;
pub mod error;
pub mod events;
pub mod idmap;
pub mod profile_seccomp;
pub mod report;
pub mod runc;
pub mod service;
pub mod shim;
pub mod sys;

// The rest serves the task service only.
pub(crate) mod bundle;
pub(crate) mod compromise;
pub(crate) mod contract;
pub(crate) mod cri;
pub(crate) mod gate;
pub(crate) mod labels;
pub(crate) mod logging;
pub(crate) mod monitoring;
pub(crate) mod netns;
pub(crate) mod policy;
pub(crate) mod profile;
pub(crate) mod profile_caps;
pub(crate) mod profile_exec;
pub(crate) mod profile_govern;
pub(crate) mod profile_landlock;
pub(crate) mod profile_runtime;
pub(crate) mod profile_sends;
pub(crate) mod profile_stage;
pub(crate) mod stats;
pub(crate) mod stdio;
pub(crate) mod task;
#[cfg(test)]
mod test_support;
