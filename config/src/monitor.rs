//! The `[monitor]` table: the node's eBPF monitor as this configuration's shims use it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The shim configuration's `[monitor]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorSettings {
    /// Watch every container with the node's eBPF programs.
    pub enabled: bool,
    /// Where the shared programs are pinned.
    pub pin_root: PathBuf,
    /// Kill/refuse for Block rules; off reports only.
    pub enforce: bool,
    /// Run containers unwatched (reported) when the monitor cannot start, instead of refusing
    /// the containers whose rules need it.
    pub allow_unmonitored: bool,
    /// This shim's event ring (a power of two); the kernel filters events per container, so a
    /// pod's ring can be small. Overruns are counted and reported.
    pub ring_bytes: u32,
    /// Where the syscalls are watched: `fexit` (the default: fexit programs on the watched
    /// syscalls' entry points where the kernel's BPF trampolines work, no syscall tracepoint;
    /// the raw `sys_exit` tracepoint where they do not), `raw-sys-exit` (one link on the raw
    /// `sys_exit` tracepoint) or `exit-tracepoints` (one link per watched syscall; a node's
    /// first pod after a teardown waits for the kernel's release of the previous links).
    pub syscall_hook: HookSetting,
    /// When the node's last palisade pod goes, park the programs (detached, still loaded)
    /// so that the next first pod does not load and verify them again; their maps keep
    /// about 14 MiB of kernel memory meanwhile. `palisade-monitor cleanup` unloads them.
    pub keep_loaded: bool,
}

/// The `[monitor] syscall_hook` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookSetting {
    #[default]
    Fexit,
    RawSysExit,
    ExitTracepoints,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            enabled: true,
            pin_root: PathBuf::from("/sys/fs/bpf/palisade"),
            enforce: true,
            allow_unmonitored: true,
            ring_bytes: 128 * 1024,
            syscall_hook: HookSetting::Fexit,
            keep_loaded: true,
        }
    }
}
