#![doc = include_str!("../README.md")]

mod monitor_skel {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, warnings)]
    include!(concat!(env!("OUT_DIR"), "/monitor.skel.rs"));
}
mod probe_skel {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, warnings)]
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

mod cgroup;
mod detect;
mod event;
mod monitor;
mod pins;
mod raw;
mod rules;

pub use cgroup::{
    cgroup_dir_of_pid, cgroup_id_of_dir, cgroup_id_of_pid, find_cgroup_dir, unified_mount,
    CgroupError,
};
pub use detect::MINER_PORTS;
pub use event::{EventKind, Finding, MonitorEvent, ProcessInfo, Syscall, WATCHED_SYSCALLS};
pub use monitor::{
    cleanup_stale, Features, MonitorConfig, MonitorError, NodeMonitor, Watch, WatchStats,
};
pub use pins::PinError;
pub use rules::{
    ConnectRule, ContainerRef, ContainerRules, Enforcer, ExecRule, RuleEnforcement, RuleError,
};
