//! The node's shared programs: holders sharing the pins, the last one out unloading or
//! parking them, a parked set attached again (or loaded anew when it cannot be), and the
//! empty programs of the hook floor.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use palisade_monitor::{
    cleanup_stale, ContainerRules, HookFloor, MonitorConfig, NodeMonitor, SyscallHook,
};

use crate::harness::*;

/// The id of the program behind a pinned program or link (from its fdinfo); the fd is closed
/// before returning so that it does not keep the program alive.
fn pinned_prog_id(path: &Path) -> u32 {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; the fd is closed below.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "{}: not pinned", path.display());
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    info.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .unwrap_or_else(|| panic!("{}: no prog_id in {info}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn prog_loaded(id: u32) -> bool {
    // SAFETY: asks the kernel for an fd by id; closed right away.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd >= 0 {
        // SAFETY: closing the fd just obtained.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// Whether no program of `ids` is `still` (attached, loaded) within `limit`: a link whose pin
/// is removed is released, and a program unloaded, once an RCU grace period has passed (5.10
/// takes longer than later kernels), so the kernel gets a moment.
fn gone_within(ids: &[u32], still: fn(u32) -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while ids.iter().any(|&id| still(id)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether no link runs any program of `ids` within `limit`.
fn detached_within(ids: &[u32], limit: Duration) -> bool {
    gone_within(ids, prog_attached, limit)
}

/// Whether every program of `ids` is unloaded within `limit`.
fn unloaded_within(ids: &[u32], limit: Duration) -> bool {
    gone_within(ids, prog_loaded, limit)
}

#[test]
fn holders_share_pins_and_the_last_one_out_unloads() {
    let root = PinRoot::new("pins");
    let (tx, _rx) = sync_channel(16);
    let unload = MonitorConfig {
        keep_loaded: false,
        ..root.config()
    };
    let first = NodeMonitor::open(unload.clone(), tx.clone()).unwrap();
    let second = NodeMonitor::open(unload.clone(), tx.clone()).unwrap();
    assert!(first.features().loaded);
    assert!(
        !second.features().loaded,
        "the second holder reuses the pins"
    );
    assert_eq!(first.pin_dir(), second.pin_dir());
    let dir = first.pin_dir().to_path_buf();
    assert!(dir.join("maps/containers").exists());
    let programs = [
        pinned_prog_id(&dir.join("links/on_exec")),
        pinned_prog_id(&dir.join("progs/connect4")),
    ];
    assert!(programs.iter().all(|&id| prog_loaded(id)));
    assert!(!first.features().bpf_lsm || second.features().bpf_lsm);
    drop(first);
    assert!(dir.join("links").exists(), "one holder is left");
    drop(second);
    assert!(!dir.exists(), "the last holder out unpins everything");
    assert!(
        unloaded_within(&programs, Duration::from_secs(5)),
        "programs {programs:?} still loaded"
    );

    // A holder killed with SIGKILL leaves its pins, and the next holder or cleanup frees them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-monitor"))
        .args(["hold", root.0.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut child = Reap(child);
    assert!(line.starts_with("ready "), "holder said {line:?}");
    let held = PathBuf::from(line.trim_start_matches("ready ").trim());
    assert_eq!(held, dir);
    assert!(
        !cleanup_stale(&root.config()).unwrap(),
        "a live holder keeps the pins"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        dir.exists(),
        "a killed holder's pins stay until someone cleans up"
    );
    let third = NodeMonitor::open(unload, tx).unwrap();
    assert!(!third.features().loaded);
    drop(third);
    assert!(!dir.exists(), "the dead holder no longer counts");
}

#[test]
fn the_last_holder_parks_the_programs_and_the_next_attaches_them_again() {
    // The loader's warnings (why a parked set was not attached again) in the test's output.
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let root = PinRoot::new("park");
    let cg = TestCgroup::new("park");
    let (tx, rx) = sync_channel(4096);
    let first = NodeMonitor::open(root.config(), tx.clone()).unwrap();
    assert!(first.features().loaded && !first.features().reattached);
    let dir = first.pin_dir().to_path_buf();
    // The syscall program this set runs: the fexit one on openat, or the raw sys_exit one.
    let sys_name = syscall_prog_name(&first);
    if trampoline_set(&first) && !kernel_at_least(5, 13) {
        // Before 5.13 a trampoline program (BPF-LSM, fexit) is attached once: such a set is
        // unloaded, not parked.
        let tramp = if first.features().bpf_lsm {
            "progs/lsm_exec"
        } else {
            "progs/fexit_openat"
        };
        let tramp_prog = pinned_prog_id(&dir.join(tramp));
        drop(first);
        assert!(
            !dir.exists(),
            "a set with a trampoline program 5.10 cannot attach again is parked"
        );
        assert!(
            unloaded_within(&[tramp_prog], Duration::from_secs(10)),
            "the trampoline program is unloaded"
        );
        return;
    }
    let exec_prog = pinned_prog_id(&dir.join("progs/on_exec"));
    let sys_prog = pinned_prog_id(&dir.join("progs").join(sys_name));
    drop(first);

    // Parked: no link is left (nothing runs on the node's syscalls), the programs and maps
    // stay loaded under their pins.
    assert!(dir.join("maps/config").exists(), "the set is still pinned");
    let links: Vec<_> = std::fs::read_dir(dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(links.is_empty(), "links left on a parked set: {links:?}");
    assert!(prog_loaded(exec_prog) && prog_loaded(sys_prog));
    assert!(
        detached_within(&[exec_prog, sys_prog], Duration::from_secs(10)),
        "a parked program is still attached"
    );

    // The next holder attaches the same programs again, without loading, and they report.
    let second = NodeMonitor::open(root.config(), tx.clone()).unwrap();
    assert!(!second.features().loaded && second.features().reattached);
    assert_eq!(pinned_prog_id(&dir.join("links/on_exec")), exec_prog);
    assert_eq!(pinned_prog_id(&dir.join("links").join(sys_name)), sys_prog);
    let _watch = second
        .watch(cg.container("parked"), ContainerRules::default())
        .unwrap();
    let (pid, st) = run(Some(&cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    until(&rx, "exec after reattaching", |e| {
        e.process.pid == pid as u32 && e.kind.name() == "exec"
    });
    assert!(prog_attached(exec_prog) && prog_attached(sys_prog));
    let third = NodeMonitor::open(root.config(), tx).unwrap();
    assert!(!third.features().loaded && !third.features().reattached);
    drop(third);
    drop(_watch);
    drop(second);
    assert!(pins_parked(&dir), "parked again by the last holder");

    // Another build's parked set goes when this build loads; a cleanup unloads a parked set.
    let other = root.0.join("v0_0_0-0000000000000000-enforce-fx");
    std::fs::rename(&dir, &other).unwrap();
    let fresh = NodeMonitor::open(root.config(), sync_channel(16).0).unwrap();
    assert!(fresh.features().loaded);
    assert!(!other.exists(), "the other build's parked set is removed");
    drop(fresh);
    assert!(cleanup_stale(&root.config()).unwrap());
    assert!(!dir.exists(), "cleanup removes a parked set");

    // An uninstall unloads parked sets of every mode and leaves those with a live holder.
    let audit = MonitorConfig {
        enforce: false,
        ..root.config()
    };
    drop(NodeMonitor::open(audit.clone(), sync_channel(16).0).unwrap());
    let live = NodeMonitor::open(root.config(), sync_channel(16).0).unwrap();
    let parked = palisade_monitor::unload_parked(&root.0, true).unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(
        parked[0].to_string_lossy().ends_with("-audit-fx"),
        "{parked:?}"
    );
    assert!(parked[0].exists(), "a dry run removes nothing");
    assert_eq!(
        palisade_monitor::unload_parked(&root.0, false).unwrap(),
        parked
    );
    assert!(!parked[0].exists());
    assert!(
        live.pin_dir().join("links/on_exec").exists(),
        "the live set stays"
    );

    // The exit-tracepoint program's perf links cannot be attached again: that set is unloaded.
    // Before 5.15 the loader falls back to the raw sys_exit program, and that set parks.
    let tp = NodeMonitor::open(
        root.config_for(SyscallHook::ExitTracepoints),
        sync_channel(16).0,
    )
    .unwrap();
    assert_hook(&tp, SyscallHook::ExitTracepoints);
    let tp_hook = tp.features().syscall_hook;
    let tp_dir = tp.pin_dir().to_path_buf();
    drop(tp);
    if tp_hook == SyscallHook::ExitTracepoints {
        assert!(!tp_dir.exists(), "an exit-tracepoint set is not parked");
    } else {
        assert!(
            pins_parked(&tp_dir),
            "a raw sys_exit set asked as exit-tracepoint is parked"
        );
    }
    assert!(
        unloaded_within(&[exec_prog], Duration::from_secs(5)),
        "the renamed set's program is unloaded"
    );
}

#[test]
fn a_parked_set_that_cannot_be_attached_again_is_loaded_anew() {
    let root = PinRoot::new("park-bad");
    let (tx, _rx) = sync_channel(16);
    let first = NodeMonitor::open(root.config(), tx.clone()).unwrap();
    let dir = first.pin_dir().to_path_buf();
    let old_exec = pinned_prog_id(&dir.join("progs/on_exec"));
    let unparkable = trampoline_set(&first) && !kernel_at_least(5, 13);
    drop(first);
    if unparkable {
        // Before 5.13 a set with a trampoline program is never parked (see the test above).
        assert!(
            !dir.exists(),
            "a set with a trampoline program 5.10 cannot attach again is parked"
        );
        return;
    }
    assert!(pins_parked(&dir));
    // A pin under progs/ that is not a program: attaching it again fails midway.
    let map = libbpf_rs::MapHandle::from_pinned_path(dir.join("maps/holders")).unwrap();
    let bogus = CString::new(dir.join("progs/on_zz").to_str().unwrap()).unwrap();
    // SAFETY: a valid map fd and a NUL-terminated path.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(map.as_fd().as_raw_fd(), bogus.as_ptr()) };
    assert_eq!(rc, 0);
    drop(map);

    let second = NodeMonitor::open(root.config(), tx).unwrap();
    assert!(
        second.features().loaded,
        "loaded anew: {:?}",
        second.features()
    );
    assert!(!dir.join("progs/on_zz").exists(), "the broken set is gone");
    let new_exec = pinned_prog_id(&dir.join("links/on_exec"));
    assert_ne!(new_exec, old_exec);
    assert!(prog_attached(new_exec));
    drop(second);
    assert!(
        unloaded_within(&[old_exec], Duration::from_secs(5)),
        "the broken set's programs are unloaded"
    );
}

/// Whether the handle's set has programs on BPF trampolines (BPF-LSM or fexit).
fn trampoline_set(monitor: &NodeMonitor) -> bool {
    monitor.features().bpf_lsm || monitor.features().syscall_hook == SyscallHook::Fexit
}

/// The pinned name of the handle's program for openat: `fexit_openat` or `on_sys_exit_raw`.
fn syscall_prog_name(monitor: &NodeMonitor) -> &'static str {
    match monitor.features().syscall_hook {
        SyscallHook::Fexit => "fexit_openat",
        SyscallHook::RawSysExit => "on_sys_exit_raw",
        SyscallHook::ExitTracepoints => "on_sys_exit",
    }
}

/// Whether any BPF link of the kernel holds program `id`.
fn prog_attached(id: u32) -> bool {
    use libbpf_rs::libbpf_sys as sys;
    let mut next = 0u32;
    // SAFETY: the id walk and info calls get valid pointers; each fd is closed.
    unsafe {
        while sys::bpf_link_get_next_id(next, &mut next) == 0 {
            let fd = sys::bpf_link_get_fd_by_id(next);
            if fd < 0 {
                continue;
            }
            let mut info: sys::bpf_link_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<sys::bpf_link_info>() as u32;
            let rc = sys::bpf_link_get_info_by_fd(fd, &mut info, &mut len);
            libc::close(fd);
            if rc == 0 && info.prog_id == id {
                return true;
            }
        }
    }
    false
}

/// A complete set with no link pinned.
fn pins_parked(dir: &Path) -> bool {
    dir.join("maps/config").exists()
        && std::fs::read_dir(dir.join("links"))
            .map(|mut e| e.next().is_none())
            .unwrap_or(false)
}

/// Ids of the loaded programs named `name`.
fn programs_named(name: &str) -> Vec<u32> {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| p.name.to_str() == Some(name))
        .map(|p| p.id)
        .collect()
}

#[test]
fn the_hook_floor_attaches_empty_programs_and_drops_them() {
    for (hook, name) in [
        (SyscallHook::ExitTracepoints, "floor_sys_exit"),
        // the kernel keeps 15 bytes of a program's name
        (SyscallHook::RawSysExit, "floor_sys_exit_"),
    ] {
        let floor = HookFloor::attach(hook).unwrap();
        let ids = programs_named(name);
        assert_eq!(ids.len(), 1, "{name}: {ids:?}");
        drop(floor);
        assert!(
            unloaded_within(&ids[..1], Duration::from_secs(10)),
            "{name} still loaded 10 s after the drop"
        );
    }
}
