//! Where the syscalls are watched: with fexit chosen, no program of the set sits on a syscall
//! tracepoint (which would put every syscall of the node on the kernel's slow path), and the
//! events still arrive, a call seccomp refused before it ran among them; where the kernel
//! refuses trampolines, the fallback is the one raw sys_exit link.

use std::os::unix::fs::PermissionsExt;

use palisade_monitor::{ContainerRules, EventKind, Syscall, SyscallHook};

use crate::harness::*;

/// What the kernel says of one BPF link (its fdinfo).
#[derive(Debug)]
struct LinkInfo {
    kind: String,
    prog_id: u32,
    tp_name: Option<String>,
}

/// Every BPF link of the kernel, walked by id.
fn kernel_links() -> Vec<LinkInfo> {
    use libbpf_rs::libbpf_sys as sys;
    let mut out = Vec::new();
    let mut next = 0u32;
    // SAFETY: the id walk gets a valid pointer; each fd is closed after its fdinfo is read.
    while unsafe { sys::bpf_link_get_next_id(next, &mut next) } == 0 {
        // SAFETY: an fd by id, closed below.
        let fd = unsafe { sys::bpf_link_get_fd_by_id(next) };
        if fd < 0 {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        // SAFETY: closing the fd obtained above.
        unsafe { libc::close(fd) };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        out.push(LinkInfo {
            kind: field("link_type:").unwrap_or_default(),
            prog_id: field("prog_id:").and_then(|v| v.parse().ok()).unwrap_or(0),
            tp_name: field("tp_name:"),
        });
    }
    out
}

/// The ids of the programs a set pinned (every program it attached: the loader pins each).
fn set_programs(dir: &std::path::Path) -> Vec<(String, u32)> {
    std::fs::read_dir(dir.join("progs"))
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let c = std::ffi::CString::new(e.path().to_str().unwrap()).unwrap();
            // SAFETY: a valid path; the fd is closed below.
            let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
            assert!(fd >= 0, "{name}: not pinned");
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            // SAFETY: closing the fd opened above.
            unsafe { libc::close(fd) };
            let id = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            (name, id)
        })
        .collect()
}

/// A link that puts syscalls on the slow path: a syscall tracepoint (a perf event link) or the
/// raw sys_enter/sys_exit tracepoints.
fn is_syscall_tracepoint(l: &LinkInfo) -> bool {
    l.kind == "perf"
        || l.kind == "perf_event"
        || (l.kind == "raw_tracepoint"
            && matches!(l.tp_name.as_deref(), Some("sys_exit" | "sys_enter")))
}

/// In a forked child: a seccomp filter that refuses unshare with EPERM (no_new_privs first, so
/// no privilege is needed), then unshare, which must fail. Raw calls only.
fn unshare_under_seccomp() -> i32 {
    const NR: u32 = libc::SYS_unshare as u32;
    let filter = [
        // load the syscall number
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: NR,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain calls on this child; the filter outlives the seccomp call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return 10;
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return 11;
        }
        if libc::unshare(libc::CLONE_NEWUTS) == 0 {
            return 12;
        }
        if *libc::__errno_location() != libc::EPERM {
            return 13;
        }
    }
    0
}

/// Asked for fexit (the default): where the kernel's trampolines work the set attaches no
/// syscall tracepoint at all, only trampoline and scheduler links; elsewhere its one syscall
/// link is the raw sys_exit tracepoint. In both, an open and a call seccomp refused arrive.
#[test]
fn fexit_sets_attach_no_syscall_tracepoint_and_still_report() {
    let scratch = Scratch::new("hooks");
    let file = scratch.0.join("created");
    let rules = ContainerRules {
        report_all_opens: true,
        ..Default::default()
    };
    let w = Watched::on_hook("hooks", SyscallHook::Fexit, rules);
    let hook = w.monitor.features().syscall_hook;
    let ours = set_programs(w.monitor.pin_dir());
    let links: Vec<LinkInfo> = kernel_links()
        .into_iter()
        .filter(|l| ours.iter().any(|(_, id)| *id == l.prog_id))
        .collect();
    let name_of = |id: u32| {
        ours.iter()
            .find(|(_, i)| *i == id)
            .map(|(n, _)| n.as_str())
            .unwrap_or("?")
    };
    let on_syscall_tp: Vec<&str> = links
        .iter()
        .filter(|l| is_syscall_tracepoint(l))
        .map(|l| name_of(l.prog_id))
        .collect();
    match hook {
        SyscallHook::Fexit => {
            assert!(
                on_syscall_tp.is_empty(),
                "fexit chosen, yet on a syscall tracepoint: {on_syscall_tp:?} ({links:#?})"
            );
            assert!(
                !ours.iter().any(|(n, _)| n.starts_with("on_sys_exit")),
                "a syscall tracepoint program is loaded: {ours:?}"
            );
            // __secure_computing's program: one of two, by the kernel's signature
            let seccomp = if ours.iter().any(|(n, _)| n == "fexit_seccomp_void") {
                "fexit_seccomp_void"
            } else {
                "fexit_seccomp"
            };
            for want in ["fexit_openat", "fexit_unshare", seccomp] {
                let (_, id) = ours
                    .iter()
                    .find(|(n, _)| n == want)
                    .unwrap_or_else(|| panic!("{want} not in the set: {ours:?}"));
                assert!(
                    links
                        .iter()
                        .any(|l| l.prog_id == *id && l.kind == "tracing"),
                    "{want} is not attached through a trampoline: {links:#?}"
                );
            }
        }
        SyscallHook::RawSysExit => {
            // The walk above sees tracepoints: the fallback's own link is one of them.
            assert_eq!(on_syscall_tp, ["on_sys_exit_raw"], "{links:#?}");
        }
        SyscallHook::ExitTracepoints => panic!("fexit asked, exit tracepoints chosen"),
    }

    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    let (pid, st) = run(
        Some(&w.cg),
        None,
        &Act::Open {
            path: path.clone(),
            times: 1,
        },
    );
    // A missing file: the open fails, and the failure is reported with its result.
    assert_eq!(exited(st), Some(libc::ENOENT), "status {st:#x}");
    let (ev, _) = until(&w.rx, "failed open", |e| {
        e.process.pid == pid as u32
            && matches!(&e.kind, EventKind::Open { path, .. } if path == file.to_str().unwrap())
    });
    assert!(
        matches!(ev.kind, EventKind::Open { result, .. } if result == -i64::from(libc::ENOENT)),
        "{ev:#?}"
    );
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (pid, st) = run(Some(&w.cg), None, &Act::Open { path, times: 1 });
    assert_eq!(exited(st), Some(0), "status {st:#x}");
    let (ev, _) = until(&w.rx, "open", |e| {
        e.process.pid == pid as u32
            && matches!(&e.kind, EventKind::Open { path, .. } if path == file.to_str().unwrap())
    });
    assert!(
        matches!(ev.kind, EventKind::Open { result, .. } if result >= 0),
        "{ev:#?}"
    );

    let (pid, st) = run(Some(&w.cg), None, &Act::Call(unshare_under_seccomp));
    assert_eq!(exited(st), Some(0), "status {st:#x}");
    let (ev, _) = until(&w.rx, "unshare refused by seccomp", |e| {
        e.process.pid == pid as u32
            && matches!(
                &e.kind,
                EventKind::Syscall {
                    call: Syscall::Unshare,
                    ..
                }
            )
    });
    assert!(
        matches!(ev.kind, EventKind::Syscall { result, args, .. }
            if result == -i64::from(libc::EPERM) && args[0] == libc::CLONE_NEWUTS as u64),
        "{ev:#?}"
    );
}
