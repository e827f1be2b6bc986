#![doc = include_str!("../README.md")]

mod cgroup;
mod detect;
mod egress;
mod enforce;
mod error;
mod event;
mod execs;
mod floor;
mod handle;
mod kernel;
mod raw;
mod reader;
mod rules;
mod set;
mod shared;
mod skel;
mod watch;

pub use cgroup::{
    cgroup_dir_of_pid, cgroup_id_of_dir, cgroup_id_of_pid, find_cgroup_dir, unified_mount,
    CgroupError,
};
pub use detect::{normalize_path, MINER_PORTS};
pub use egress::{EgressList, EgressPeer};
pub use error::{MonitorError, PinError};
pub use event::{EventKind, FileOp, Finding, MonitorEvent, ProcessInfo, Syscall, WATCHED_SYSCALLS};
pub use floor::HookFloor;
pub use handle::{cleanup_stale, unload_parked, Features, MonitorConfig, NodeMonitor};
pub use kernel::{bpf_lsm_in_force, bpf_trampolines_work, CapabilityHook, SyscallHook};
pub use rules::{
    open_in_root, seccomp_refused, AuditOn, AuditRule, AuditTarget, ConnectRule, ContainerRef,
    ContainerRules, Enforcer, ExecRule, FileRule, FileTarget, IdMaps, IdRange, RuleEnforcement,
    RuleError, SockClass, SockRule, MAX_SECRET_MOUNTS, MAX_SOCK_SOURCES,
};
pub use shared::EventSink;
pub use watch::{CapabilitiesSeen, Watch, WatchReader, WatchStats};

/// Sends libbpf's own messages (verifier logs, probe failures) to `tracing` under the target
/// `libbpf` instead of stderr. libbpf has one printer per process, so the binary (not this
/// library) decides, once at start-up. Warnings are logged at info: the monitor turns every
/// failure that matters into an error of its own, while the expected ones (the BPF-LSM probe
/// on kernels that refuse it) would otherwise read as problems.
pub fn route_libbpf_logs_to_tracing() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::info!(target: "libbpf", "{msg}"),
            _ => tracing::debug!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, print)));
}
