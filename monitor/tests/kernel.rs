//! The monitor against the running kernel (root): attribution, exec kill, connect refusal,
//! shared pins and their release, and ring overruns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use palisade_events::Action as EventAction;
use palisade_monitor::{
    cgroup_id_of_dir, cleanup_stale, unified_mount, ConnectRule, ContainerRef, ContainerRules,
    Enforcer, EventKind, ExecRule, HookFloor, MonitorConfig, MonitorEvent, NodeMonitor, SockClass,
    SockRule, SyscallHook, Watch,
};

/// A cgroup of the unified hierarchy for one test; removed (after killing what is left in it)
/// when dropped.
struct TestCgroup {
    path: PathBuf,
    procs: CString,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let path = unified_mount().unwrap().join(format!(
            "palisade-monitor-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        let procs = CString::new(path.join("cgroup.procs").to_str().unwrap()).unwrap();
        TestCgroup { path, procs }
    }

    fn id(&self) -> u64 {
        cgroup_id_of_dir(&self.path).unwrap()
    }

    fn container(&self, pod: &str) -> ContainerRef {
        ContainerRef {
            cgroup_id: self.id(),
            namespace: "test".into(),
            pod: pod.into(),
            container: "c".into(),
            container_id: format!("id-{pod}"),
            image: "busybox".into(),
            cgroup_dir: Some(self.path.clone()),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.parse::<i32>().ok()) {
                // SAFETY: signalling a pid we placed in our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A private pin root; whatever is left under it is removed when dropped.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(name: &str) -> Self {
        PinRoot(PathBuf::from(format!(
            "/sys/fs/bpf/palisade-test-{}-{name}",
            std::process::id()
        )))
    }

    fn config(&self) -> MonitorConfig {
        MonitorConfig {
            pin_root: self.0.clone(),
            ..Default::default()
        }
    }

    /// With `raw`, the raw sys_exit syscall program kernels before 5.15 get.
    fn config_for(&self, raw: bool) -> MonitorConfig {
        MonitorConfig {
            syscall_hook: hook(raw),
            ..self.config()
        }
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The handle runs the syscall program asked for: the forced raw sys_exit one, or the
/// exit-tracepoint one where the kernel takes it (5.15 and later; before, the loader falls
/// back to raw sys_exit).
fn assert_hook(monitor: &NodeMonitor, raw: bool) {
    let want = if kernel_at_least(5, 15) {
        hook(raw)
    } else {
        SyscallHook::RawSysExit
    };
    assert_eq!(monitor.features().syscall_hook, want);
}

/// Whether the running kernel's release is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

/// The enforcer the monitor chose for exec deny rules, checked against what the kernel offers:
/// BPF-LSM only where the monitor found it in force (and `bpf` is an active LSM), the kill at
/// exec otherwise.
fn exec_enforcer(monitor: &NodeMonitor, watch: &Watch) -> Enforcer {
    let chosen = watch.enforcement()[0].enforcer;
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let listed = lsms.trim().split(',').any(|l| l == "bpf");
    let want = if monitor.features().bpf_lsm {
        assert!(
            listed,
            "bpf-lsm claimed without bpf among the LSMs ({lsms})"
        );
        Enforcer::BpfLsm
    } else {
        Enforcer::BpfExecKill
    };
    assert_eq!(chosen, want, "lsms: {lsms}");
    chosen
}

/// Asserts that a child's exec (wait status `st`) was stopped by `enforcer`: killed before the
/// binary ran, or refused with EPERM while the child's own image went on.
fn assert_exec_stopped(enforcer: Enforcer, st: i32, what: &str) {
    match enforcer {
        Enforcer::BpfExecKill => {
            assert_eq!(killed_by(st), Some(libc::SIGKILL), "{what}: status {st:#x}")
        }
        Enforcer::BpfLsm => assert_eq!(exited(st), Some(libc::EPERM), "{what}: status {st:#x}"),
        other => panic!("{what}: exec rule enforced by {other:?}"),
    }
}

/// The raw sys_exit program (the default) or the exit-tracepoint one.
fn hook(raw: bool) -> SyscallHook {
    if raw {
        SyscallHook::RawSysExit
    } else {
        SyscallHook::ExitTracepoints
    }
}

/// What a forked child does; everything is prepared before the fork so that the child only
/// makes raw syscalls (the test process has threads).
enum Act {
    Exec {
        path: CString,
        argv: Vec<CString>,
    },
    Open {
        path: CString,
        times: u32,
    },
    Connect {
        addr: libc::sockaddr_in,
    },
    Connect6 {
        addr: libc::sockaddr_in6,
    },
    /// A plain function of raw syscalls; its return value is the exit code.
    Call(fn() -> i32),
}

/// Forks a child that joins `cgroup` (when given), drops to `uid` (when given), performs the
/// action and exits with 0 or the errno. Returns the pid and, for `Exec`, a pipe with its
/// stdout.
fn spawn(cgroup: Option<&TestCgroup>, uid: Option<u32>, act: &Act) -> (i32, std::fs::File) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let argv_ptrs: Vec<*const libc::c_char> = match act {
        Act::Exec { argv, .. } => argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        _ => vec![std::ptr::null()],
    };
    let procs = cgroup.map(|c| c.procs.as_ptr());
    // SAFETY: the child only calls async-signal-safe functions before exec or _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: raw syscalls on prepared data, then _exit: no allocation, no locks.
        unsafe {
            let fail = |code: i32| -> ! { libc::_exit(code) };
            let errno = || *libc::__errno_location();
            if let Some(p) = procs {
                let fd = libc::open(p, libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(100);
                }
                libc::close(fd);
            }
            if let Some(u) = uid {
                if libc::setgid(u) != 0 || libc::setuid(u) != 0 {
                    fail(101);
                }
            }
            libc::dup2(fds[1], 1);
            match act {
                Act::Exec { path, .. } => {
                    libc::execv(path.as_ptr(), argv_ptrs.as_ptr());
                    fail(errno());
                }
                Act::Open { path, times } => {
                    for _ in 0..*times {
                        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                        if fd < 0 {
                            fail(errno());
                        }
                        libc::close(fd);
                    }
                    fail(0);
                }
                Act::Connect { addr } => {
                    let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    let rc = libc::connect(
                        s,
                        (addr as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                    fail(if rc == 0 { 0 } else { errno() });
                }
                Act::Connect6 { addr } => {
                    let s = libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0);
                    let rc = libc::connect(
                        s,
                        (addr as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as u32,
                    );
                    fail(if rc == 0 { 0 } else { errno() });
                }
                Act::Call(f) => fail(f()),
            }
        }
    }
    // SAFETY: closing our copy of the write end; the read end becomes a File we own.
    unsafe { libc::close(fds[1]) };
    let out = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    (pid, out)
}

/// Waits for a child; returns the raw wait status.
fn wait(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn run(cgroup: Option<&TestCgroup>, uid: Option<u32>, act: &Act) -> (i32, i32) {
    let (pid, _out) = spawn(cgroup, uid, act);
    (pid, wait(pid))
}

fn exited(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn killed_by(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

fn exec(path: &str, argv: &[&str]) -> Act {
    Act::Exec {
        path: CString::new(path).unwrap(),
        argv: argv.iter().map(|a| CString::new(*a).unwrap()).collect(),
    }
}

fn open(path: &Path, times: u32) -> Act {
    Act::Open {
        path: CString::new(path.to_str().unwrap()).unwrap(),
        times,
    }
}

fn connect(addr: SocketAddr) -> Act {
    let v4 = match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => {
            return Act::Connect6 {
                addr: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as u16,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: 0,
                },
            }
        }
    };
    Act::Connect {
        addr: libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        },
    }
}

/// Collects events until one satisfies `want` (returning everything seen) or the time is up.
fn until(
    rx: &Receiver<MonitorEvent>,
    what: &str,
    want: impl Fn(&MonitorEvent) -> bool,
) -> (MonitorEvent, Vec<MonitorEvent>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(100)) {
            if want(&e) {
                return (e, seen);
            }
            seen.push(e);
        }
    }
    panic!(
        "no {what} event within 10 s; saw {:#?}",
        seen.iter()
            .map(|e| (&e.process.pid, &e.kind))
            .collect::<Vec<_>>()
    );
}

/// A scratch directory readable by everyone, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("palisade-monitor-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn events_are_attributed_to_the_watched_cgroup_only() {
    check_attribution(false);
}

/// The same with the raw sys_exit program kernels before 5.15 get.
#[test]
fn events_are_attributed_to_the_watched_cgroup_only_with_raw_sys_exit() {
    check_attribution(true);
}

fn check_attribution(raw: bool) {
    let name = if raw { "attr-raw" } else { "attr" };
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let scratch = Scratch::new(name);
    let readable = scratch.0.join("readable");
    std::fs::write(&readable, "x").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = scratch.0.join("secret");
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = listener.local_addr().unwrap();

    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config_for(raw), tx).unwrap();
    assert_hook(&monitor, raw);
    let rules = ContainerRules {
        report_all_opens: true,
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("attr"), rules).unwrap();
    assert_eq!(watch.stats().events, 0);

    // The same actions from outside the cgroup first: none of them may come through.
    let (outside_exec, st) = run(None, None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    let (outside_open, st) = run(None, None, &open(&readable, 1));
    assert_eq!(exited(st), Some(0));
    let (outside_connect, st) = run(None, None, &connect(dest));
    assert_eq!(exited(st), Some(0));

    let (pid, st) = run(Some(&cg), None, &exec("/bin/true", &["true", "--marker"]));
    assert_eq!(exited(st), Some(0));
    let (ev, before) = until(&rx, "exec", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exec { .. })
    });
    let outsiders = [outside_exec, outside_open, outside_connect].map(|p| p as u32);
    assert!(
        before.iter().all(|e| !outsiders.contains(&e.process.pid)),
        "an event of a process outside the cgroup arrived"
    );
    assert_eq!(ev.slot, watch.slot());
    assert_eq!(ev.container.pod, "attr");
    assert_eq!(ev.process.uid, 0);
    assert_eq!(ev.process.ppid, std::process::id());
    let EventKind::Exec {
        filename,
        args,
        entrypoint,
        killed,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    assert_eq!(filename, "/bin/true");
    assert_eq!(args, &["true", "--marker"]);
    assert!(
        *entrypoint,
        "the first exec of the container is its entrypoint"
    );
    assert!(!killed);
    assert!(!ev.parent_binary.is_empty(), "parent binary is known");

    let (pid, st) = run(Some(&cg), None, &open(&readable, 1));
    assert_eq!(exited(st), Some(0));
    let (ev, _) = until(&rx, "open", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Open { .. })
    });
    let EventKind::Open {
        path,
        flags,
        result,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    assert_eq!(Path::new(path), readable);
    assert_eq!(*flags & 3, 0, "read-only open");
    assert!(*result >= 0, "open succeeded: {result}");
    assert!(ev.findings.is_empty(), "a plain read is no finding");

    let (pid, st) = run(Some(&cg), Some(65534), &open(&secret, 1));
    assert_eq!(exited(st), Some(libc::EACCES));
    let (ev, _) = until(&rx, "denied open", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Open { .. })
    });
    assert_eq!(ev.process.uid, 65534);
    let EventKind::Open { result, .. } = &ev.kind else {
        unreachable!()
    };
    assert_eq!(*result, -(libc::EACCES as i64));
    assert_eq!(ev.findings[0].rule, "file-access-denied");
    let schema = ev.to_events("node-test");
    assert_eq!(schema[0].evidence["denied"], true);
    assert_eq!(schema[0].workload.container_id, "id-attr");

    let (pid, st) = run(Some(&cg), None, &connect(dest));
    assert_eq!(exited(st), Some(0));
    let (ev, _) = until(&rx, "connect", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        ev.kind,
        EventKind::Connect {
            addr: Some(dest),
            result: 0
        }
    );

    // A second exec is no longer the entrypoint; a shell there is flagged.
    let (pid, st) = run(Some(&cg), None, &exec("/bin/sh", &["sh", "-c", "exit 3"]));
    assert_eq!(exited(st), Some(3));
    let (ev, _) = until(&rx, "shell exec", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exec { .. })
    });
    assert_eq!(ev.findings[0].rule, "shell-in-container");
    let (ev, _) = until(&rx, "exit", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exit { .. })
    });
    assert_eq!(ev.kind, EventKind::Exit { code: 3 << 8 });
    assert!(watch.stats().events >= 6);
    assert_eq!(watch.stats().drops, 0);

    // Dropping the watch stops the events of the cgroup.
    drop(watch);
    let (pid, _) = run(Some(&cg), None, &exec("/bin/true", &["true"]));
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(e) = rx.try_recv() {
        assert_ne!(
            e.process.pid, pid as u32,
            "event after the watch was dropped"
        );
    }
}

#[test]
fn exec_of_a_denied_binary_is_killed_by_inode_not_by_name() {
    let root = PinRoot::new("kill");
    let cg = TestCgroup::new("kill");
    let scratch = Scratch::new("kill");
    // A hard link shares the inode under another name (and comm); a copy of `true` named `id`
    // has the forbidden name but another inode. Hard links need the same filesystem.
    let link = PathBuf::from(format!(
        "/usr/bin/.palisade-test-{}-renamed",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link("/usr/bin/id", &link).unwrap();
    struct Unlink(PathBuf);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unlink = Unlink(link.clone());
    let fake_id = scratch.0.join("id");
    std::fs::copy("/bin/true", &fake_id).unwrap();

    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id".into(),
            path: "/usr/bin/id".into(),
            from_parent: None,
            severity: 9,
            message: "id is not allowed".into(),
        }],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("kill"), rules).unwrap();
    let enforcer = exec_enforcer(&monitor, &watch);

    let (pid, mut out) = spawn(Some(&cg), None, &exec("/usr/bin/id", &["id"]));
    let st = wait(pid);
    assert_exec_stopped(enforcer, st, "id");
    let mut printed = String::new();
    out.read_to_string(&mut printed).unwrap();
    assert_eq!(printed, "", "id ran before it was stopped");
    let (ev, _) = until(&rx, "denied exec", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exec { .. })
    });
    let EventKind::Exec {
        killed,
        refused,
        deny_rule,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    let lsm = enforcer == Enforcer::BpfLsm;
    assert_eq!((*killed, *refused), (!lsm, lsm));
    assert_eq!(deny_rule.as_deref(), Some("no-id"));
    let f = &ev.findings[0];
    let action = if lsm {
        EventAction::Block
    } else {
        EventAction::Kill
    };
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-id", action, enforcer.as_str())
    );

    let link_name = link.file_name().unwrap().to_str().unwrap().to_string();
    let (_, st) = run(
        Some(&cg),
        None,
        &exec(link.to_str().unwrap(), &[&link_name]),
    );
    assert_exec_stopped(enforcer, st, "renamed hard link");

    let (_, st) = run(Some(&cg), None, &exec(fake_id.to_str().unwrap(), &["id"]));
    assert_eq!(
        exited(st),
        Some(0),
        "a copy of true named id is not the denied inode"
    );
    let (_, st) = run(Some(&cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));

    // The same binary outside the cgroup runs.
    let (_, st) = run(None, None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(st), Some(0));
    assert_eq!(watch.rule_hits(), vec![("no-id".to_string(), 2)]);
}

#[test]
fn connect_to_a_denied_destination_is_refused_with_eperm() {
    let root = PinRoot::new("connect");
    let cg = TestCgroup::new("connect");
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = denied.local_addr().unwrap();
    let b = allowed.local_addr().unwrap();

    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        deny_connect: vec![ConnectRule {
            name: "no-port-a".into(),
            addr: a.ip(),
            prefix_len: 32,
            port: Some(a.port()),
            only_from: None,
            severity: 7,
            message: String::new(),
        }],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("connect"), rules).unwrap();
    assert_eq!(watch.enforcement()[0].enforcer, Enforcer::BpfSockAddr);

    let (pid, st) = run(Some(&cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM), "connect to the denied port");
    let (_, st) = run(Some(&cg), None, &connect(b));
    assert_eq!(exited(st), Some(0), "connect to the other port");
    let (_, st) = run(None, None, &connect(a));
    assert_eq!(
        exited(st),
        Some(0),
        "outside the cgroup the rule does not apply"
    );

    let (ev, _) = until(&rx, "refused connect", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        ev.kind,
        EventKind::Connect {
            addr: Some(a),
            result: -(libc::EPERM as i64)
        }
    );
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-port-a", EventAction::Block, "bpf-sock-addr")
    );
    assert_eq!(watch.rule_hits(), vec![("no-port-a".to_string(), 1)]);

    // Dropping the watch detaches the hook.
    drop(watch);
    let (_, st) = run(Some(&cg), None, &connect(a));
    assert_eq!(exited(st), Some(0));
}

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

/// Whether no link runs any program of `ids` within `limit`: a link whose pin is removed is
/// released once an RCU grace period has passed (5.10 takes longer than later kernels), so the
/// kernel gets a moment.
fn detached_within(ids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while ids.iter().any(|&id| prog_attached(id)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether every program of `ids` is unloaded within `limit`: unloading is asynchronous (RCU),
/// so the kernel gets a moment.
fn unloaded_within(ids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while ids.iter().any(|&id| prog_loaded(id)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
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
    if first.features().bpf_lsm && !kernel_at_least(5, 13) {
        // Before 5.13 a BPF-LSM program is attached once: such a set is unloaded, not parked.
        let lsm_prog = pinned_prog_id(&dir.join("progs/lsm_exec"));
        drop(first);
        assert!(
            !dir.exists(),
            "a set with an lsm program 5.10 cannot attach again is parked"
        );
        assert!(
            unloaded_within(&[lsm_prog], Duration::from_secs(10)),
            "the lsm program is unloaded"
        );
        return;
    }
    let exec_prog = pinned_prog_id(&dir.join("progs/on_exec"));
    let sys_prog = pinned_prog_id(&dir.join("progs/on_sys_exit_raw"));
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
    assert_eq!(pinned_prog_id(&dir.join("links/on_sys_exit_raw")), sys_prog);
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
    let other = root.0.join("v0_0_0-0000000000000000-enforce-raw");
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
        parked[0].to_string_lossy().ends_with("-audit-raw"),
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
    let tp = NodeMonitor::open(root.config_for(false), sync_channel(16).0).unwrap();
    assert_hook(&tp, false);
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
    let unparkable = first.features().bpf_lsm && !kernel_at_least(5, 13);
    drop(first);
    if unparkable {
        // Before 5.13 a set with the BPF-LSM program is never parked (see the test above).
        assert!(
            !dir.exists(),
            "a set with an lsm program 5.10 cannot attach again is parked"
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

#[test]
fn overruns_of_a_tiny_ring_are_counted() {
    let root = PinRoot::new("ring");
    let cg = TestCgroup::new("ring");
    let (tx, _rx) = sync_channel(1 << 16);
    let config = MonitorConfig {
        ring_size: 4096,
        ..root.config()
    };
    let monitor = NodeMonitor::open(config, tx).unwrap();
    let rules = ContainerRules {
        report_all_opens: true,
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("ring"), rules).unwrap();
    let (_, st) = run(Some(&cg), None, &open(Path::new("/etc/hostname"), 20_000));
    assert_eq!(exited(st), Some(0));
    let stats = watch.stats();
    assert!(stats.drops > 0, "no drop counted: {stats:?}");
    assert!(stats.events > 0, "some events fit: {stats:?}");
}

fn escape_attempts() -> i32 {
    // SAFETY: raw syscalls in a forked child that exits right after.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUTS) != 0 {
            return 10;
        }
        let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if s < 0 {
            return 11;
        }
        libc::close(s);
        if libc::setuid(0) != 0 {
            return 12;
        }
    }
    0
}

#[test]
fn built_in_detections_fire_on_real_syscalls_after_the_entrypoint() {
    check_built_in_detections(false);
}

/// The same with the raw sys_exit program kernels before 5.15 get.
#[test]
fn built_in_detections_fire_on_real_syscalls_after_the_entrypoint_with_raw_sys_exit() {
    check_built_in_detections(true);
}

fn check_built_in_detections(raw: bool) {
    let name = if raw { "builtin-raw" } else { "builtin" };
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config_for(raw), tx).unwrap();
    assert_hook(&monitor, raw);
    let _watch = monitor
        .watch(cg.container("builtin"), ContainerRules::default())
        .unwrap();

    // Before the entrypoint the same calls are the runtime's set-up: reported, not flagged.
    let (early, st) = run(Some(&cg), None, &Act::Call(escape_attempts));
    assert_eq!(exited(st), Some(0));
    let (ev, _) = until(&rx, "early unshare", |e| {
        e.process.pid == early as u32 && e.kind.name() == "unshare"
    });
    assert!(ev.findings.is_empty(), "{:?}", ev.findings);

    let (_, st) = run(Some(&cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    // The same calls from a program the container runs (it entered by exec, as its own code
    // does, not from outside as runc init does).
    let probe = env!("CARGO_BIN_EXE_palisade-monitor");
    let (pid, st) = run(
        Some(&cg),
        None,
        &exec(probe, &["palisade-monitor", "detect-probe"]),
    );
    assert_eq!(exited(st), Some(0));
    let mut rules = Vec::new();
    for kind in ["unshare", "socket", "setuid"] {
        let (ev, _) = until(&rx, kind, |e| {
            e.process.pid == pid as u32 && e.kind.name() == kind
        });
        rules.extend(ev.findings.iter().map(|f| f.rule.clone()));
        if kind == "socket" {
            let EventKind::Socket {
                domain,
                kind,
                result,
                ..
            } = ev.kind
            else {
                unreachable!()
            };
            assert_eq!((domain, kind & 0xf), (libc::AF_PACKET, libc::SOCK_RAW));
            assert!(result >= 0);
        }
    }
    assert_eq!(rules, ["namespace-change", "raw-socket", "privilege-gain"]);
}

#[test]
fn from_source_lets_only_the_named_executable_connect() {
    let root = PinRoot::new("source");
    let cg = TestCgroup::new("source");
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // The forked children run this test binary's image (they do not exec): a rule whose
    // source is this binary lets them through, a rule whose source is /bin/true does not.
    let me = std::env::current_exe().unwrap();
    let rule = |name: &str, port: u16, only_from: &Path| ConnectRule {
        name: name.into(),
        addr: "127.0.0.1".parse().unwrap(),
        prefix_len: 32,
        port: Some(port),
        only_from: Some(only_from.to_path_buf()),
        severity: 6,
        message: String::new(),
    };
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        deny_connect: vec![
            rule("only-true", a.port(), Path::new("/bin/true")),
            rule("only-me", b.port(), &me),
        ],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("source"), rules).unwrap();
    for e in watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfSockAddr, "{e:?}");
    }

    let (refused, st) = run(Some(&cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM), "not /bin/true: refused");
    let (allowed, st) = run(Some(&cg), None, &connect(b));
    assert_eq!(exited(st), Some(0), "the named executable connects");
    assert_eq!(
        watch.rule_hits(),
        vec![("only-true".to_string(), 1), ("only-me".to_string(), 0)]
    );
    let (ev, _) = until(&rx, "refused connect", |e| {
        e.process.pid == refused as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(ev.findings[0].rule, "only-true");
    assert_eq!(ev.findings[0].action, EventAction::Block);
    let (ev, _) = until(&rx, "allowed connect", |e| {
        e.process.pid == allowed as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert!(
        ev.findings.iter().all(|f| f.rule != "only-me"),
        "the allowed source is not reported: {:?}",
        ev.findings
    );
}

#[test]
fn ipv6_connect_rules_use_the_connect6_hook() {
    let root = PinRoot::new("v6");
    let cg = TestCgroup::new("v6");
    let Ok(denied) = TcpListener::bind("[::1]:0") else {
        panic!("no IPv6 loopback on this machine")
    };
    let allowed = TcpListener::bind("[::1]:0").unwrap();
    let (a, b) = (denied.local_addr().unwrap(), allowed.local_addr().unwrap());
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        deny_connect: vec![ConnectRule {
            name: "no-v6-a".into(),
            addr: "::1".parse().unwrap(),
            prefix_len: 128,
            port: Some(a.port()),
            only_from: None,
            severity: 5,
            message: String::new(),
        }],
        ..Default::default()
    };
    let _watch = monitor.watch(cg.container("v6"), rules).unwrap();
    let (pid, st) = run(Some(&cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM));
    let (_, st) = run(Some(&cg), None, &connect(b));
    assert_eq!(exited(st), Some(0));
    let (ev, _) = until(&rx, "refused v6 connect", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        ev.kind,
        EventKind::Connect {
            addr: Some(a),
            result: -(libc::EPERM as i64)
        }
    );
}

#[test]
fn audit_mode_reports_deny_rules_without_killing_or_refusing() {
    let root = PinRoot::new("audit");
    let cg = TestCgroup::new("audit");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = listener.local_addr().unwrap();
    let (tx, rx) = sync_channel(4096);
    let config = MonitorConfig {
        enforce: false,
        ..root.config()
    };
    let monitor = NodeMonitor::open(config, tx).unwrap();
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id".into(),
            path: "/usr/bin/id".into(),
            from_parent: None,
            severity: 9,
            message: String::new(),
        }],
        deny_connect: vec![ConnectRule {
            name: "no-dest".into(),
            addr: dest.ip(),
            prefix_len: 32,
            port: None,
            only_from: None,
            severity: 5,
            message: String::new(),
        }],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("audit"), rules).unwrap();
    assert!(watch
        .enforcement()
        .iter()
        .all(|e| e.enforcer == Enforcer::AuditOnly));
    let (pid, mut out) = spawn(Some(&cg), None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(wait(pid)), Some(0), "audit mode does not kill");
    let mut printed = String::new();
    out.read_to_string(&mut printed).unwrap();
    assert!(printed.starts_with("uid=0"), "{printed:?}");
    let (ev, _) = until(&rx, "audited exec", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exec { .. })
    });
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-id", EventAction::Audit, "audit-only")
    );
    let (pid, st) = run(Some(&cg), None, &connect(dest));
    assert_eq!(exited(st), Some(0), "audit mode does not refuse");
    let (ev, _) = until(&rx, "audited connect", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(ev.findings[0].rule, "no-dest");
    assert_eq!(ev.findings[0].action, EventAction::Audit);
    assert_eq!(
        watch.rule_hits(),
        vec![("no-id".to_string(), 1), ("no-dest".to_string(), 1)],
        "the kernel still matched both"
    );
}

fn serve_one_connection() -> i32 {
    // SAFETY: raw socket calls in a forked child that exits right after.
    unsafe {
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(l, (&addr as *const libc::sockaddr_in).cast(), len) != 0 {
            return 20;
        }
        if libc::listen(l, 4) != 0 {
            return 21;
        }
        if libc::getsockname(l, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return 22;
        }
        let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if libc::connect(c, (&addr as *const libc::sockaddr_in).cast(), len) != 0 {
            return 23;
        }
        let mut peer: libc::sockaddr_in = std::mem::zeroed();
        let mut plen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::accept(l, (&mut peer as *mut libc::sockaddr_in).cast(), &mut plen) < 0 {
            return 24;
        }
    }
    0
}

#[test]
fn bind_listen_and_accept_are_reported_with_addresses() {
    check_server_calls(false);
}

/// The same with the raw sys_exit program kernels before 5.15 get.
#[test]
fn bind_listen_and_accept_are_reported_with_addresses_with_raw_sys_exit() {
    check_server_calls(true);
}

fn check_server_calls(raw: bool) {
    let name = if raw { "server-raw" } else { "server" };
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config_for(raw), tx).unwrap();
    assert_hook(&monitor, raw);
    let _watch = monitor
        .watch(cg.container("server"), ContainerRules::default())
        .unwrap();
    let (pid, st) = run(Some(&cg), None, &Act::Call(serve_one_connection));
    assert_eq!(exited(st), Some(0));
    let mine = |kind: &'static str| {
        move |e: &MonitorEvent| e.process.pid == pid as u32 && e.kind.name() == kind
    };
    let (bind, _) = until(&rx, "bind", mine("bind"));
    let EventKind::Bind {
        addr: Some(bound),
        result: 0,
    } = bind.kind
    else {
        panic!("{:?}", bind.kind)
    };
    assert_eq!(bound, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
    let (listen, _) = until(&rx, "listen", mine("listen"));
    assert!(
        matches!(
            listen.kind,
            EventKind::Listen {
                backlog: 4,
                result: 0,
                ..
            }
        ),
        "{:?}",
        listen.kind
    );
    let (connect_ev, _) = until(&rx, "connect", mine("connect"));
    let EventKind::Connect {
        addr: Some(server),
        result: 0,
    } = connect_ev.kind
    else {
        panic!("{:?}", connect_ev.kind)
    };
    let (accept, _) = until(&rx, "accept", mine("accept"));
    let EventKind::Accept {
        peer: Some(peer),
        result,
    } = accept.kind
    else {
        panic!("{:?}", accept.kind)
    };
    assert!(result >= 0);
    assert_eq!(peer.ip(), server.ip());
    assert_ne!(peer.port(), server.port(), "the peer is the client side");
}

#[test]
fn a_cgroup_is_watched_once_and_a_failed_watch_leaves_nothing() {
    let root = PinRoot::new("once");
    let cg = TestCgroup::new("once");
    let (tx, _rx) = sync_channel(16);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let bad = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "missing".into(),
            path: "/nonexistent/palisade".into(),
            from_parent: None,
            severity: 5,
            message: String::new(),
        }],
        ..Default::default()
    };
    let err = monitor.watch(cg.container("once"), bad).err().unwrap();
    assert!(
        err.to_string()
            .contains("rule missing: /nonexistent/palisade"),
        "{err}"
    );
    let first = monitor
        .watch(cg.container("once"), ContainerRules::default())
        .unwrap();
    let again = monitor.watch(cg.container("once"), ContainerRules::default());
    assert!(
        matches!(
            again,
            Err(palisade_monitor::MonitorError::AlreadyWatched { .. })
        ),
        "{:?}",
        again.err()
    );
    drop(first);
    monitor
        .watch(cg.container("once"), ContainerRules::default())
        .unwrap();
}

/// An overlay mount like a container's root filesystem; unmounted and removed when dropped.
struct Overlay {
    base: PathBuf,
    merged: PathBuf,
}

impl Overlay {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let base = std::env::temp_dir().join(format!("palisade-ovl-{}-{name}", std::process::id()));
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        for (from, to) in files {
            std::fs::copy(from, base.join("lower").join(to)).unwrap();
        }
        let merged = base.join("merged");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let target = CString::new(merged.to_str().unwrap()).unwrap();
        let data = CString::new(opts).unwrap();
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount overlay: {}", std::io::Error::last_os_error());
        Overlay { base, merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let target = CString::new(self.merged.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the overlay mounted in new().
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn exec_rules_match_binaries_on_an_overlay_root_filesystem() {
    let root = PinRoot::new("ovl");
    let cg = TestCgroup::new("ovl");
    let ovl = Overlay::new("exec", &[("/usr/bin/id", "id"), ("/bin/true", "true")]);
    let (tx, _rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id".into(),
            path: ovl.merged.join("id"),
            from_parent: None,
            severity: 8,
            message: String::new(),
        }],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("ovl"), rules).unwrap();
    let enforcer = exec_enforcer(&monitor, &watch);
    let id = ovl.merged.join("id");
    let (_, st) = run(Some(&cg), None, &exec(id.to_str().unwrap(), &["id"]));
    assert_exec_stopped(enforcer, st, "id on the overlay");
    let t = ovl.merged.join("true");
    let (_, st) = run(Some(&cg), None, &exec(t.to_str().unwrap(), &["true"]));
    assert_eq!(exited(st), Some(0));
}

#[test]
fn exec_rules_with_a_source_apply_only_under_that_parent() {
    let root = PinRoot::new("parent");
    let cg = TestCgroup::new("parent");
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id-from-sh".into(),
            path: "/usr/bin/id".into(),
            from_parent: Some(sh),
            severity: 7,
            message: String::new(),
        }],
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("parent"), rules).unwrap();
    let enforcer = exec_enforcer(&monitor, &watch);

    // Started by this test binary: the rule does not apply.
    let (_, st) = run(Some(&cg), None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(st), Some(0));
    // Started by sh (not its last command, so sh forks for it): stopped; sh goes on.
    let (shell, st) = run(
        Some(&cg),
        None,
        &exec("/bin/sh", &["sh", "-c", "/usr/bin/id; exit 7"]),
    );
    assert_eq!(exited(st), Some(7), "sh itself runs on");
    let (ev, _) = until(&rx, "id under sh", |e| {
        e.process.ppid == shell as u32
            && matches!(&e.kind, EventKind::Exec { filename, .. } if filename == "/usr/bin/id")
    });
    let EventKind::Exec {
        killed, refused, ..
    } = ev.kind
    else {
        unreachable!()
    };
    let lsm = enforcer == Enforcer::BpfLsm;
    assert_eq!((killed, refused), (!lsm, lsm));
    assert_eq!(watch.rule_hits(), vec![("no-id-from-sh".to_string(), 1)]);
}

/// Creates one socket and closes it: 0, or the errno of `socket()`.
fn make_socket(family: i32, kind: i32, protocol: i32) -> i32 {
    // SAFETY: raw socket calls in a forked child that exits right after.
    unsafe {
        let s = libc::socket(family, kind, protocol);
        if s < 0 {
            return *libc::__errno_location();
        }
        libc::close(s);
        0
    }
}

fn tcp_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_STREAM, 0)
}

fn tcp6_socket() -> i32 {
    make_socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
}

fn udp_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

fn raw_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
}

fn sock_rule(name: &str, class: SockClass, allow_from: &[&Path], audit: bool) -> SockRule {
    SockRule {
        name: name.into(),
        class,
        allow_from: allow_from.iter().map(|p| p.to_path_buf()).collect(),
        audit_unlisted: audit,
        severity: 6,
        message: String::new(),
    }
}

#[test]
fn socket_creation_is_limited_to_the_listed_executables() {
    let root = PinRoot::new("sock");
    let cg = TestCgroup::new("sock");
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    assert!(monitor.features().sock_create, "{:?}", monitor.features());
    // The forked children run this test binary's image: listing it lets them through, listing
    // /bin/true only does not.
    let me = std::env::current_exe().unwrap();
    let rules = ContainerRules {
        sock_create: vec![
            sock_rule(
                "tcp-me",
                SockClass::Tcp,
                &[Path::new("/bin/true"), &me],
                false,
            ),
            sock_rule("udp-true", SockClass::Udp, &[Path::new("/bin/true")], false),
            sock_rule("no-raw", SockClass::Raw, &[], false),
        ],
        learning_window: None,
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("sock"), rules).unwrap();
    for e in watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfSockCreate, "{e:?}");
    }

    let (_, st) = run(Some(&cg), None, &Act::Call(tcp_socket));
    assert_eq!(exited(st), Some(0), "listed executable: tcp socket");
    let (_, st) = run(Some(&cg), None, &Act::Call(tcp6_socket));
    assert_eq!(exited(st), Some(0), "listed executable: tcp6 socket");
    let (udp, st) = run(Some(&cg), None, &Act::Call(udp_socket));
    assert_eq!(
        exited(st),
        Some(libc::EPERM),
        "unlisted executable: udp refused"
    );
    let (raw, st) = run(Some(&cg), None, &Act::Call(raw_socket));
    assert_eq!(exited(st), Some(libc::EPERM), "raw refused to everyone");
    // Outside the cgroup the rules do not apply.
    let (_, st) = run(None, None, &Act::Call(udp_socket));
    assert_eq!(exited(st), Some(0), "udp outside the cgroup");
    let (_, st) = run(None, None, &Act::Call(raw_socket));
    assert_eq!(exited(st), Some(0), "raw outside the cgroup (root)");

    assert_eq!(
        watch.rule_hits(),
        vec![
            ("tcp-me".to_string(), 0),
            ("udp-true".to_string(), 1),
            ("no-raw".to_string(), 1)
        ]
    );
    for (pid, rule, class) in [
        (udp, "udp-true", SockClass::Udp),
        (raw, "no-raw", SockClass::Raw),
    ] {
        let (ev, seen) = until(&rx, rule, |e| {
            e.process.pid == pid as u32 && matches!(e.kind, EventKind::SockCreate { .. })
        });
        let EventKind::SockCreate {
            class: got,
            refused,
            ..
        } = &ev.kind
        else {
            unreachable!()
        };
        assert_eq!((*got, *refused), (Some(class), true), "{:?}", ev.kind);
        let f = &ev.findings[0];
        assert_eq!(
            (f.rule.as_str(), f.action, f.enforcer),
            (rule, EventAction::Block, "bpf-sock-create")
        );
        assert!(
            seen.iter()
                .all(|e| !matches!(e.kind, EventKind::SockCreate { refused: false, .. })),
            "an allowed socket was reported"
        );
        let schema = ev.to_events("node");
        assert_eq!(schema[0].rule.name, rule);
        assert_eq!(schema[0].evidence["class"], class.as_str());
    }
    // Dropping the watch detaches the hook: the cgroup creates udp sockets again.
    drop(watch);
    let (_, st) = run(Some(&cg), None, &Act::Call(udp_socket));
    assert_eq!(exited(st), Some(0), "udp after the watch is gone");
}

#[test]
fn socket_rules_in_audit_report_unlisted_executables_without_refusing() {
    let root = PinRoot::new("sock-audit");
    let cg = TestCgroup::new("sock-audit");
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let rules = ContainerRules {
        sock_create: vec![sock_rule(
            "tcp-true",
            SockClass::Tcp,
            &[Path::new("/bin/true")],
            true,
        )],
        learning_window: None,
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("sock-audit"), rules).unwrap();
    assert_eq!(watch.enforcement()[0].enforcer, Enforcer::AuditOnly);
    let (pid, st) = run(Some(&cg), None, &Act::Call(tcp_socket));
    assert_eq!(exited(st), Some(0), "audit posture does not refuse");
    let (ev, _) = until(&rx, "audited socket", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::SockCreate { .. })
    });
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("tcp-true", EventAction::Audit, "audit-only")
    );
    assert_eq!(watch.rule_hits(), vec![("tcp-true".to_string(), 1)]);
}

#[test]
fn socket_rules_listing_too_many_binaries_refuse_the_watch() {
    let root = PinRoot::new("sock-many");
    let cg = TestCgroup::new("sock-many");
    let (tx, _rx) = sync_channel(16);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    let t = Path::new("/bin/true");
    let rules = ContainerRules {
        sock_create: vec![sock_rule("tcp", SockClass::Tcp, &[t, t, t, t, t], false)],
        ..Default::default()
    };
    let err = monitor
        .watch(cg.container("sock-many"), rules)
        .err()
        .expect("five binaries do not fit");
    assert_eq!(
        err.to_string(),
        "socket rule tcp: 5 allowed binaries, at most 4 fit in the kernel rule"
    );
    // Nothing was registered: the same cgroup can be watched again.
    let again = monitor.watch(cg.container("sock-many"), ContainerRules::default());
    assert!(again.is_ok(), "{:?}", again.err());
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

/// A monitor of its own under `root` (the raw sys_exit variant when `raw`) watching `cg` with
/// `rules`; the monitor and watch must outlive the events awaited on the receiver.
fn watch_with(
    root: &PinRoot,
    cg: &TestCgroup,
    raw: bool,
    rules: ContainerRules,
) -> (Receiver<MonitorEvent>, NodeMonitor, palisade_monitor::Watch) {
    let (tx, rx) = sync_channel(4096);
    let monitor = NodeMonitor::open(
        MonitorConfig {
            syscall_hook: hook(raw),
            ..root.config()
        },
        tx,
    )
    .unwrap();
    let watch = monitor.watch(cg.container("watched"), rules).unwrap();
    (rx, monitor, watch)
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated strings; a fresh tmpfs on a directory of our own.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs on {}", path.display());
        TmpfsMount(path)
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let c = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the tmpfs this value mounted.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn reads_on_a_secret_mount_are_reported_however_the_path_is_spelled() {
    check_secret_reads(false);
}

#[test]
fn reads_on_a_secret_mount_are_reported_however_the_path_is_spelled_with_raw_sys_exit() {
    check_secret_reads(true);
}

fn check_secret_reads(raw: bool) {
    let name = if raw { "secret-raw" } else { "secret" };
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let tmp = tempfile::tempdir().unwrap();
    let secrets = TmpfsMount::new(tmp.path().join("secrets"));
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(secrets.0.join("token"), "t").unwrap();
    std::fs::write(plain.join("token"), "p").unwrap();
    let (rx, _monitor, _watch) = watch_with(
        &root,
        &cg,
        raw,
        ContainerRules {
            secret_mounts: vec![secrets.0.clone()],
            ..ContainerRules::default()
        },
    );
    // relative to the mount, a lookalike off it, then a spelling no prefix test expects
    let script = format!(
        "cd {s} && cat token >/dev/null && cat ../plain/token >/dev/null && cat {t}/./secrets//token >/dev/null",
        s = secrets.0.display(),
        t = tmp.path().display()
    );
    let (_, st) = run(Some(&cg), None, &exec("/bin/sh", &["sh", "-c", &script]));
    assert_eq!(exited(st), Some(0));
    let is_open = |e: &MonitorEvent, want: &str| matches!(&e.kind, EventKind::Open { path, .. } if path == want);
    let (first, _) = until(&rx, "relative secret read", |e| is_open(e, "token"));
    let spelled = format!("{}/./secrets//token", tmp.path().display());
    let (last, between) = until(&rx, "oddly spelled secret read", |e| is_open(e, &spelled));
    for ev in [&first, &last] {
        assert!(
            matches!(ev.kind, EventKind::Open { secret: true, .. }),
            "{:?}",
            ev.kind
        );
        let rules: Vec<&str> = ev.findings.iter().map(|f| f.rule.as_str()).collect();
        assert!(rules.contains(&"service-account-token-read"), "{rules:?}");
    }
    assert!(
        !between.iter().any(|e| is_open(e, "../plain/token")),
        "a read off the secret mount was reported: {between:#?}"
    );
}

const SYSDIR_ROOT: &str = "/tmp/palisade-monitor-sysdir";
const SYSDIR_ROOT_RAW: &str = "/tmp/palisade-monitor-sysdir-raw";

/// In a chroot at `root`: a write by a path relative to /etc, a write to a lookalike /etcx,
/// and a read below /etc. Raw calls only (it runs in a forked child).
fn sysdir_writes(root: &std::ffi::CStr) -> i32 {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    // SAFETY: raw system calls on NUL-terminated constants, no allocation.
    unsafe {
        if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/etc".as_ptr()) != 0 {
            return 1;
        }
        for (path, fl) in [
            (c"written", flags),
            (c"/etcx/written", flags),
            (c"hostname", libc::O_RDONLY),
        ] {
            let fd = libc::open(path.as_ptr(), fl, 0o644);
            if fd < 0 {
                return 2;
            }
            libc::close(fd);
        }
    }
    0
}

fn sysdir_writes_plain() -> i32 {
    sysdir_writes(c"/tmp/palisade-monitor-sysdir")
}

fn sysdir_writes_raw() -> i32 {
    sysdir_writes(c"/tmp/palisade-monitor-sysdir-raw")
}

#[test]
fn writes_below_system_dirs_are_judged_on_the_file_not_the_path() {
    check_sysdir_writes(false);
}

#[test]
fn writes_below_system_dirs_are_judged_on_the_file_not_the_path_with_raw_sys_exit() {
    check_sysdir_writes(true);
}

fn check_sysdir_writes(raw: bool) {
    let (name, dir, call): (_, _, fn() -> i32) = if raw {
        ("sysdir-raw", SYSDIR_ROOT_RAW, sysdir_writes_raw)
    } else {
        ("sysdir", SYSDIR_ROOT, sysdir_writes_plain)
    };
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["etc", "etcx"] {
        std::fs::create_dir_all(Path::new(dir).join(sub)).unwrap();
    }
    std::fs::write(Path::new(dir).join("etc/hostname"), "h").unwrap();
    let (rx, _monitor, _watch) = watch_with(&root, &cg, raw, ContainerRules::default());
    let (pid, st) = run(Some(&cg), None, &Act::Call(call));
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(exited(st), Some(0));
    let system_dir = |e: &MonitorEvent, want: &str| match &e.kind {
        EventKind::Open {
            path, system_dir, ..
        } if path == want && e.process.pid == pid as u32 => Some(*system_dir),
        _ => None,
    };
    let (relative, _) = until(&rx, "relative write", |e| {
        system_dir(e, "written").is_some()
    });
    let (lookalike, between) = until(&rx, "lookalike write", |e| {
        system_dir(e, "/etcx/written").is_some()
    });
    assert_eq!(system_dir(&relative, "written"), Some(true));
    assert_eq!(system_dir(&lookalike, "/etcx/written"), Some(false));
    assert!(between.is_empty(), "unexpected events: {between:#?}");
    // the read below /etc is not a write: the kernel does not even send it
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<MonitorEvent> = rx.try_iter().collect();
    assert!(
        !late.iter().any(|e| system_dir(e, "hostname").is_some()),
        "{late:#?}"
    );
}
