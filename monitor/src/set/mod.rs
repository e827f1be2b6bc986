//! One set of programs and maps per node, pinned under bpffs and shared by every shim: the
//! first holder loads and pins, each holder registers in the pinned `holders` map, and the last
//! live holder out unpins everything. A holder whose process is dead does not count.
//!
//! [`load`] loads, attaches and opens the set; [`pin`] names its directory, takes the root lock
//! and removes pins; [`park`] detaches a set for the next holder to attach again; [`holders`]
//! keeps who holds the set, with each holder's ring.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use libbpf_rs::MapHandle;

use crate::kernel::{CapabilityHook, SyscallHook};
use crate::skel::monitor::types;

pub(crate) mod holders;
pub(crate) mod learn;
pub(crate) mod load;
pub(crate) mod park;
pub(crate) mod pin;

/// Handles on the pinned maps and programs, as every holder sees them.
#[derive(Debug)]
pub(crate) struct NodeMaps {
    /// The set's pin directory.
    pub dir: PathBuf,
    /// The read-only data the programs were loaded with.
    pub config: types::rodata,
    /// The exec deny rules are enforced by the BPF-LSM program (attached and pinned).
    pub lsm: bool,
    /// The syscall hook the loader chose (told by `syscall_hook` in the pinned config).
    pub syscall_hook: SyscallHook,
    /// Watched syscalls that hook cannot see on this kernel (no tracepoint, no entry point).
    pub missing_syscalls: Vec<String>,
    pub containers: MapHandle,
    pub rings: MapHandle,
    pub deny_exec: MapHandle,
    pub deny_connect: MapHandle,
    pub holders: MapHandle,
    pub sock_rules: MapHandle,
    /// File deny rules, read by the BPF-LSM `file_open` program (when `lsm`).
    pub deny_file: MapHandle,
    pub deny_glob: MapHandle,
    pub glob_slots: MapHandle,
    /// The credential files of each container, by device and inode (creds.h).
    pub cred_files: MapHandle,
    /// Learning cgroups' tables of system calls seen and capabilities checked (learn.h).
    pub learn_syscalls: MapHandle,
    /// The pinned program that fills the system calls, attached while the node learns.
    pub learn_prog: Option<OwnedFd>,
    /// The pinned program that fills the capabilities, when this kernel offers a hook.
    pub learn_cap: Option<(CapabilityHook, OwnedFd)>,
    /// The pinned `sock_create` program, when this kernel loaded it.
    pub sock_create: Option<OwnedFd>,
    pub cgroup_progs: Vec<(
        &'static str,
        libbpf_rs::libbpf_sys::bpf_attach_type,
        OwnedFd,
    )>,
}

/// Milliseconds with a fraction, for the timings in the logs.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
