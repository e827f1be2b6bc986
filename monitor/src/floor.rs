//! Empty programs on the monitor's syscall hooks, to measure what the kernel itself charges
//! for such a hook (the floor under the monitor's cost), beside the monitor in the same run.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;
use tracing::warn;

use crate::error::{load_err, PinError};
use crate::kernel::{tracepoint_exists, SyscallHook};
use crate::skel::floor::FloorSkelBuilder;

/// Empty programs attached where the monitor's syscall program would be, for as long as this
/// value lives. Nothing is pinned: dropping it detaches them.
pub struct HookFloor {
    _links: Vec<Link>,
}

impl HookFloor {
    /// Attaches an empty program to every watched syscall's exit tracepoint
    /// ([`SyscallHook::ExitTracepoints`]) or to the raw `sys_exit` tracepoint
    /// ([`SyscallHook::RawSysExit`]). There is no floor for [`SyscallHook::Fexit`] (asking
    /// for one is an error): its programs cost nothing to the syscalls they do not watch.
    pub fn attach(hook: SyscallHook) -> Result<Self, PinError> {
        if hook == SyscallHook::Fexit {
            return Err(PinError::Load {
                what: "hook floor for fexit (none: only tracepoint hooks have one)".to_string(),
                source: libbpf_rs::Error::from(std::io::Error::from(
                    std::io::ErrorKind::Unsupported,
                )),
            });
        }
        let mut storage = MaybeUninit::uninit();
        let mut open = FloorSkelBuilder::default()
            .open(&mut storage)
            .map_err(load_err("open floor programs"))?;
        let raw = hook == SyscallHook::RawSysExit;
        open.progs.floor_sys_exit.set_autoload(!raw);
        open.progs.floor_sys_exit_raw.set_autoload(raw);
        let skel = open.load().map_err(load_err("load floor programs"))?;
        let mut links = Vec::new();
        if raw {
            links.push(
                skel.progs
                    .floor_sys_exit_raw
                    .attach()
                    .map_err(load_err("attach floor_sys_exit_raw"))?,
            );
        } else {
            for sys in crate::event::WATCHED_SYSCALLS {
                let event = format!("sys_exit_{sys}");
                if !tracepoint_exists(&format!("syscalls/{event}")) {
                    warn!(tracepoint = %event, "tracepoint missing on this kernel, not attached");
                    continue;
                }
                links.push(
                    skel.progs
                        .floor_sys_exit
                        .attach_tracepoint(libbpf_rs::TracepointCategory::Syscalls, &event)
                        .map_err(load_err(format!("attach floor_sys_exit to {event}")))?,
                );
            }
        }
        Ok(HookFloor { _links: links })
    }
}
