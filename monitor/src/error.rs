//! The crate's errors: [`PinError`] for the node's program set (loading, pinning, releasing)
//! and [`MonitorError`] for a shim's handle and its watches, which wraps the others.

use std::io;
use std::path::PathBuf;

use crate::cgroup::CgroupError;
use crate::rules::RuleError;

/// Why the node's programs could not be loaded, opened or released.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("mount {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bpffs {0}: not a bpf filesystem")]
    NotBpffs(PathBuf),
    #[error("pin dir {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pin dir {path}: lock: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bpf object: {what}: {source}")]
    Load {
        what: String,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("holders map: all {0} holder slots are taken by live processes")]
    Full(u32),
}

/// Errors of the monitor handle and its watches.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("ring buffer of {size} bytes: {source}")]
    Ring {
        size: u32,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("event reader thread: {0}")]
    Thread(#[source] io::Error),
    #[error("container {container}: cgroup {cgroup_id} is already watched")]
    AlreadyWatched { container: String, cgroup_id: u64 },
    #[error("container {container}: {what}: {source}")]
    Map {
        container: String,
        what: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("container {container}: rule {rule}: severity {severity}: must be between 1 and 10")]
    Severity {
        container: String,
        rule: String,
        severity: u8,
    },
    #[error("container {container}: {what}")]
    Unsupported {
        container: String,
        what: &'static str,
    },
    /// A file deny rule on a node where BPF-LSM is not in force: nothing could refuse the
    /// open, so the container must not run as if it were protected.
    #[error(
        "container {container}: file rule {rule} needs BPF-LSM, which is not in force on this node \
         ({reason}); refused"
    )]
    NoBpfLsm {
        container: String,
        rule: String,
        reason: &'static str,
    },
    #[error("container {container}: no free container slot in this handle")]
    Slots { container: String },
    #[error("container {container}: attach {program} to {path}: {source}")]
    Attach {
        container: String,
        program: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A [`PinError::Load`] naming what was being loaded or attached, for `map_err`.
pub(crate) fn load_err(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> PinError {
    let what = what.into();
    move |source| PinError::Load { what, source }
}
