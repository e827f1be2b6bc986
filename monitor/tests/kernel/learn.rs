//! Recording a learning container's system calls (`bpf/learn.h`): the calls its processes make
//! appear in its table, an unwatched process's do not, and the learning program is attached
//! only while the holder has a learning container.

use palisade_monitor::ContainerRules;

use crate::harness::*;

/// In a forked child: two calls nothing else in the child's path makes.
fn getpriority_and_getpgid() -> i32 {
    // SAFETY: plain calls on this child.
    unsafe {
        libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0);
        libc::syscall(libc::SYS_getpgid, 0);
    }
    0
}

/// In a forked child outside the watched cgroup: a call the learning child never makes.
fn getsid() -> i32 {
    // SAFETY: a plain call on this child.
    unsafe { libc::syscall(libc::SYS_getsid, 0) };
    0
}

#[test]
fn a_learning_cgroups_syscalls_are_recorded_and_no_one_elses() {
    let rules = ContainerRules {
        record_syscalls: true,
        ..Default::default()
    };
    let w = Watched::new("learn", rules);
    assert!(w.monitor.learning(), "the learning program is attached");
    let (_, st) = run(Some(&w.cg), None, &Act::Call(getpriority_and_getpgid));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(None, None, &Act::Call(getsid));
    assert_eq!(exited(st), Some(0));
    let (_, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));

    let seen = w
        .watch
        .syscalls_seen()
        .expect("a learning watch has a table");
    let has = |nr: libc::c_long| seen.contains(&(nr as u32));
    for (name, nr) in [
        ("getpriority", libc::SYS_getpriority),
        ("getpgid", libc::SYS_getpgid),
        ("execve", libc::SYS_execve),
        ("exit_group", libc::SYS_exit_group),
    ] {
        assert!(has(nr), "{name} ({nr}) not recorded: {seen:?}");
    }
    assert!(
        !has(libc::SYS_getsid),
        "getsid, made by an unwatched process only, recorded: {seen:?}"
    );

    // A watch that does not learn has no table, and the program goes with the last learner.
    let plain = TestCgroup::new("learn-plain");
    let other = w
        .monitor
        .watch(plain.container("learn-plain"), ContainerRules::default())
        .unwrap();
    assert_eq!(other.syscalls_seen(), None);
    let Watched {
        watch, monitor, cg, ..
    } = w;
    drop(watch);
    assert!(!monitor.learning(), "detached with the last learner");
    drop(other);
    drop(plain);
    drop(cg);
}
