//! Recording a learning container's system calls and capability checks (`bpf/learn.h`): the
//! calls its processes make and the capabilities the kernel checks for them appear in its
//! table, an unwatched process's do not; the learning programs are attached once for the node
//! while any holder has a learning container, and go with the node's last one.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use libbpf_rs::query::LinkInfoIter;
use libbpf_rs::Program;
use palisade_monitor::{CapabilitiesSeen, CapabilityHook, ContainerRules, NodeMonitor};

use crate::harness::*;

const CAP_CHOWN: u8 = 0;
const CAP_NET_RAW: u8 = 13;
const CAP_SYS_NICE: u8 = 23;

/// In a forked child: two calls nothing else in the child's path makes.
fn getpriority_and_getpgid() -> i32 {
    // SAFETY: plain calls on this child.
    unsafe {
        libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0);
        libc::syscall(libc::SYS_getpgid, 0);
    }
    0
}

/// In a forked child outside the watched cgroup: a call the learning child never makes, and
/// a capability check it never passes (CAP_SYS_NICE, granted to this root process).
fn getsid_and_nice() -> i32 {
    // SAFETY: plain calls on this child.
    unsafe {
        libc::syscall(libc::SYS_getsid, 0);
        if libc::setpriority(libc::PRIO_PROCESS, 0, -20) != 0 {
            return 10;
        }
    }
    0
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In a forked child of the learning cgroup: a chown of a memfd to another owner (CAP_CHOWN)
/// and a raw socket (CAP_NET_RAW), both granted to root; then CAP_SYS_NICE dropped from the
/// effective set and a raise of priority, which it needs and is refused. The exit code says
/// which step failed.
fn chown_raw_socket_and_refused_nice() -> i32 {
    // SAFETY: plain calls on this child with its own stack data.
    unsafe {
        let fd = libc::memfd_create(c"learn-cap".as_ptr(), 0);
        if fd < 0 || libc::fchown(fd, 1, 1) != 0 {
            return 11;
        }
        if libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) < 0 {
            return 12;
        }
        let mut header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return 13;
        }
        data[0].effective &= !(1u32 << CAP_SYS_NICE);
        if libc::syscall(libc::SYS_capset, &mut header, data.as_mut_ptr()) != 0 {
            return 14;
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, -20) == 0 {
            return 15;
        }
    }
    0
}

const CAP_FOWNER: u8 = 3;

/// In a forked child of the learning cgroup named as runc's init names itself: a raise of
/// priority (CAP_SYS_NICE, granted to this root process): the runtime's check.
fn nice_as_runc_init() -> i32 {
    // SAFETY: plain calls on this child.
    unsafe {
        if libc::prctl(libc::PR_SET_NAME, c"runc:[2:INIT]".as_ptr()) != 0 {
            return 20;
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, -20) != 0 {
            return 21;
        }
    }
    0
}

/// In a forked child of the learning cgroup named as palisade-init runs: a mode change of a
/// memfd given to another owner (CAP_FOWNER; the chown's CAP_CHOWN is the workload's too).
fn fowner_as_palisade_init() -> i32 {
    // SAFETY: plain calls on this child with its own stack data.
    unsafe {
        if libc::prctl(libc::PR_SET_NAME, c"palisade-init".as_ptr()) != 0 {
            return 30;
        }
        let fd = libc::memfd_create(c"learn-rt".as_ptr(), 0);
        if fd < 0 || libc::fchown(fd, 1, 1) != 0 {
            return 31;
        }
        if libc::fchmod(fd, 0o600) != 0 {
            return 32;
        }
    }
    0
}

fn has(mask: u64, cap: u8) -> bool {
    CapabilitiesSeen::numbers(mask).any(|n| n == cap)
}

#[test]
fn a_learning_cgroups_syscalls_and_capabilities_are_recorded_and_no_one_elses() {
    let rules = ContainerRules {
        record_syscalls: true,
        ..Default::default()
    };
    let w = Watched::new("learn", rules);
    assert!(w.monitor.learning(), "the learning program is attached");
    let (_, st) = run(Some(&w.cg), None, &Act::Call(getpriority_and_getpgid));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(None, None, &Act::Call(getsid_and_nice));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(
        Some(&w.cg),
        None,
        &Act::Call(chown_raw_socket_and_refused_nice),
    );
    assert_eq!(exited(st), Some(0));
    call_in(
        &w,
        nice_as_runc_init,
        0,
        "a raise of priority named runc:[2:INIT]",
    );
    call_in(
        &w,
        fowner_as_palisade_init,
        0,
        "a chmod named palisade-init",
    );

    let seen = w
        .watch
        .syscalls_seen()
        .expect("a learning watch has a table");
    let sys = |nr: libc::c_long| seen.contains(&(nr as u32));
    for (name, nr) in [
        ("getpriority", libc::SYS_getpriority),
        ("getpgid", libc::SYS_getpgid),
        ("execve", libc::SYS_execve),
        ("exit_group", libc::SYS_exit_group),
        ("fchown", libc::SYS_fchown),
    ] {
        assert!(sys(nr), "{name} ({nr}) not recorded: {seen:?}");
    }
    assert!(
        !sys(libc::SYS_getsid),
        "getsid, made by an unwatched process only, recorded: {seen:?}"
    );

    let hook = w.monitor.features().capability_hook;
    eprintln!("capability hook: {hook:?}");
    // cap_capable has kept its four parameters from 5.10 on: a kernel with trampolines or the
    // tracepoint has a hook, and the loader must not have dropped it.
    let tracepoint = Path::new("/sys/kernel/tracing/events/capability/cap_capable").exists();
    if tracepoint || palisade_monitor::bpf_trampolines_work() {
        assert!(
            hook.is_some(),
            "the kernel offers a capability hook, none loaded"
        );
    }
    match w.watch.capabilities_seen() {
        None => assert_eq!(hook, None, "a capability hook and no capabilities read"),
        Some(caps) => {
            assert!(hook.is_some(), "capabilities read without a hook");
            assert!(has(caps.granted, CAP_CHOWN), "chown not granted: {caps:?}");
            assert!(
                has(caps.granted, CAP_NET_RAW),
                "net_raw not granted: {caps:?}"
            );
            assert!(
                has(caps.refused, CAP_SYS_NICE),
                "sys_nice, dropped then needed, not refused: {caps:?}"
            );
            assert!(
                !has(caps.granted, CAP_SYS_NICE),
                "sys_nice, granted to an unwatched process and to one named as runc's init \
                 only, recorded as the workload's: {caps:?}"
            );
            // The runtime's checks (a task named as runc's init or palisade-init) are kept
            // apart from the workload's.
            assert!(
                has(caps.runtime, CAP_SYS_NICE),
                "sys_nice of runc:[2:INIT] not the runtime's: {caps:?}"
            );
            assert!(
                has(caps.runtime, CAP_FOWNER),
                "fowner of palisade-init not the runtime's: {caps:?}"
            );
            assert!(
                !has(caps.granted, CAP_FOWNER),
                "fowner, granted to palisade-init only, recorded as the workload's: {caps:?}"
            );
            assert!(
                !has(caps.runtime, CAP_NET_RAW),
                "net_raw, the workload's only, recorded as the runtime's: {caps:?}"
            );
        }
    }

    // A watch that does not learn has no table, and the program goes with the last learner.
    let plain = TestCgroup::new("learn-plain");
    let other = w
        .monitor
        .watch(plain.container("learn-plain"), ContainerRules::default())
        .unwrap();
    assert_eq!(other.syscalls_seen(), None);
    assert_eq!(other.capabilities_seen(), None);
    let Watched {
        watch, monitor, cg, ..
    } = w;
    drop(watch);
    assert!(!monitor.learning(), "detached with the last learner");
    drop(other);
    drop(plain);
    drop(cg);
}

/// How many links of the node run the program pinned at `path` (none when it is not pinned).
/// A link unpinned is freed by a kernel worker, a moment later: a count that is not yet
/// `want` is asked again for up to ten seconds (a wait, not a timing check).
fn links_of(path: &Path, want: usize) -> usize {
    let Ok(fd) = Program::fd_from_pinned_path(path) else {
        return 0;
    };
    let id = Program::id_from_fd(fd.as_fd()).unwrap();
    let count = || LinkInfoIter::default().filter(|l| l.prog_id == id).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = count();
    while n != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        n = count();
    }
    n
}

#[test]
fn two_holders_learning_share_one_attachment_until_the_last_learner() {
    let root = PinRoot::new("learn-two");
    let first = NodeMonitor::open(root.config(), sync_channel(64).0).unwrap();
    let second = NodeMonitor::open(root.config(), sync_channel(64).0).unwrap();
    assert_eq!(first.pin_dir(), second.pin_dir());
    let progs = first.pin_dir().join("progs");
    let sys_enter = progs.join("learn_sys_enter");
    let hook = first.features().capability_hook;
    let cap_prog = hook.map(|h| {
        progs.join(match h {
            CapabilityHook::Fexit => "learn_cap_fexit",
            CapabilityHook::Tracepoint => "learn_cap_tp",
        })
    });
    let cap_links = |want| cap_prog.as_deref().map(|p| links_of(p, want));
    assert!(!first.learning() && !second.learning());
    assert_eq!(links_of(&sys_enter, 0), 0, "attached before any learner");

    let learn = || ContainerRules {
        record_syscalls: true,
        ..Default::default()
    };
    let cg_a = TestCgroup::new("learn-two-a");
    let cg_b = TestCgroup::new("learn-two-b");
    let a = first.watch(cg_a.container("learn-a"), learn()).unwrap();
    assert!(first.learning() && second.learning(), "one node, one state");
    assert_eq!(links_of(&sys_enter, 1), 1);
    assert_eq!(cap_links(1), hook.map(|_| 1));
    let b = second.watch(cg_b.container("learn-b"), learn()).unwrap();
    assert_eq!(
        links_of(&sys_enter, 1),
        1,
        "the second holder attached again"
    );
    assert_eq!(cap_links(1), hook.map(|_| 1));

    // The first learner goes: the second still records through the node's one attachment.
    drop(a);
    assert!(first.learning() && second.learning());
    assert_eq!(links_of(&sys_enter, 1), 1);
    let (_, st) = run(Some(&cg_b), None, &Act::Call(getpriority_and_getpgid));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(
        Some(&cg_b),
        None,
        &Act::Call(chown_raw_socket_and_refused_nice),
    );
    assert_eq!(exited(st), Some(0));
    let seen = b.syscalls_seen().unwrap();
    assert!(seen.contains(&(libc::SYS_getpgid as u32)), "{seen:?}");
    if let Some(caps) = b.capabilities_seen() {
        assert!(has(caps.granted, CAP_NET_RAW), "{caps:?}");
    } else {
        assert_eq!(hook, None);
    }

    // The node's last learner goes: detached for both holders. A trampoline program attaches
    // once only before 5.13: the capability program's link stays there until the set goes.
    drop(b);
    assert!(!first.learning() && !second.learning());
    assert_eq!(
        links_of(&sys_enter, 0),
        0,
        "attached after the last learner"
    );
    let kept = hook == Some(CapabilityHook::Fexit) && !kernel_at_least(5, 13);
    assert_eq!(
        cap_links(usize::from(kept)),
        hook.map(|_| usize::from(kept))
    );

    // A learner again: attached again (the capability program too, or still).
    let again = first.watch(cg_a.container("learn-a2"), learn()).unwrap();
    assert_eq!(links_of(&sys_enter, 1), 1);
    assert_eq!(cap_links(1), hook.map(|_| 1));
    drop(again);
    assert_eq!(links_of(&sys_enter, 0), 0);
    drop(second);
    drop(first);
    drop(cg_a);
    drop(cg_b);
    drop(root);
}
