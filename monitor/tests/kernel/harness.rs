//! What the kernel tests share: a cgroup and a pin root of their own, forked children that
//! act in the cgroup, waiting for events, and running a check with each syscall hook.

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use palisade_monitor::{
    cgroup_id_of_dir, unified_mount, ConnectRule, ContainerRef, ContainerRules, Enforcer,
    EventKind, MonitorConfig, MonitorEvent, NodeMonitor, SyscallHook, Watch,
};

/// A cgroup of the unified hierarchy for one test; removed (after killing what is left in it)
/// when dropped.
pub struct TestCgroup {
    path: PathBuf,
    procs: CString,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = unified_mount().unwrap().join(format!(
            "palisade-monitor-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        let procs = CString::new(path.join("cgroup.procs").to_str().unwrap()).unwrap();
        TestCgroup { path, procs }
    }

    pub fn id(&self) -> u64 {
        cgroup_id_of_dir(&self.path).unwrap()
    }

    pub fn container(&self, pod: &str) -> ContainerRef {
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
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new(name: &str) -> Self {
        PinRoot(PathBuf::from(format!(
            "/sys/fs/bpf/palisade-test-{}-{name}",
            std::process::id()
        )))
    }

    pub fn config(&self) -> MonitorConfig {
        MonitorConfig {
            pin_root: self.0.clone(),
            ..Default::default()
        }
    }

    /// The default configuration asking for `hook`.
    pub fn config_for(&self, hook: SyscallHook) -> MonitorConfig {
        MonitorConfig {
            syscall_hook: hook,
            ..self.config()
        }
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The handle runs the syscall hook asked for where the kernel takes it: the raw sys_exit
/// program always; the exit-tracepoint one from 5.15 on; the fexit programs where BPF
/// trampolines attach and run. Otherwise the loader fell back to the raw sys_exit program.
pub fn assert_hook(monitor: &NodeMonitor, asked: SyscallHook) {
    let taken = match asked {
        SyscallHook::RawSysExit => true,
        SyscallHook::ExitTracepoints => kernel_at_least(5, 15),
        SyscallHook::Fexit => palisade_monitor::bpf_trampolines_work(),
    };
    let want = if taken {
        asked
    } else {
        SyscallHook::RawSysExit
    };
    assert_eq!(monitor.features().syscall_hook, want, "asked for {asked}");
}

/// Whether the running kernel's release is `major.minor` or later.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
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
pub fn exec_enforcer(monitor: &NodeMonitor, watch: &Watch) -> Enforcer {
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
pub fn assert_exec_stopped(enforcer: Enforcer, st: i32, what: &str) {
    match enforcer {
        Enforcer::BpfExecKill => {
            assert_eq!(killed_by(st), Some(libc::SIGKILL), "{what}: status {st:#x}")
        }
        Enforcer::BpfLsm => assert_eq!(exited(st), Some(libc::EPERM), "{what}: status {st:#x}"),
        other => panic!("{what}: exec rule enforced by {other:?}"),
    }
}

/// The syscall hooks the shared checks run under on this kernel ([`with_each_hook`]): the
/// hook the monitor takes here by default, and the raw sys_exit program every kernel falls back
/// to. Where BPF trampolines work (every kernel of the matrix) that is fexit and raw sys_exit;
/// where they do not (the CI host) fexit would fall back to raw sys_exit, a second run of the
/// same programs, so the exit-tracepoint variant, the other path such a node can be configured
/// for, runs in its place. Asking for fexit where trampolines are refused is checked by
/// `hooks::fexit_sets_attach_no_syscall_tracepoint_and_still_report` on every kernel.
pub fn hooks() -> [SyscallHook; 2] {
    if palisade_monitor::bpf_trampolines_work() {
        [SyscallHook::Fexit, SyscallHook::RawSysExit]
    } else {
        [SyscallHook::ExitTracepoints, SyscallHook::RawSysExit]
    }
}

/// A short name of `hook` for pin roots, cgroups and scratch directories.
pub fn hook_tag(hook: SyscallHook) -> &'static str {
    match hook {
        SyscallHook::Fexit => "fx",
        SyscallHook::ExitTracepoints => "tp",
        SyscallHook::RawSysExit => "raw",
    }
}

/// What a forked child does; everything is prepared before the fork so that the child only
/// makes raw syscalls (the test process has threads).
pub enum Act {
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
pub fn spawn(cgroup: Option<&TestCgroup>, uid: Option<u32>, act: &Act) -> (i32, std::fs::File) {
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
                Act::Connect { addr } => fail(tcp_connect(libc::AF_INET, addr)),
                Act::Connect6 { addr } => fail(tcp_connect(libc::AF_INET6, addr)),
                Act::Call(f) => fail(f()),
            }
        }
    }
    // SAFETY: closing our copy of the write end; the read end becomes a File we own.
    unsafe { libc::close(fds[1]) };
    let out = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    (pid, out)
}

/// A TCP connect from a new `family` socket to `addr` (a `sockaddr_in` or `sockaddr_in6`):
/// 0 or the errno. Raw syscalls only, for a forked child.
///
/// # Safety
/// `A` must be the socket address type of `family`.
unsafe fn tcp_connect<A>(family: libc::c_int, addr: &A) -> i32 {
    // SAFETY: raw syscalls on a valid address of the size given; the caller vouches that it
    // is of `family`'s type.
    unsafe {
        let s = libc::socket(family, libc::SOCK_STREAM, 0);
        let rc = libc::connect(
            s,
            (addr as *const A).cast(),
            std::mem::size_of::<A>() as u32,
        );
        if rc == 0 {
            0
        } else {
            *libc::__errno_location()
        }
    }
}

/// Waits for a child; returns the raw wait status.
pub fn wait(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

pub fn run(cgroup: Option<&TestCgroup>, uid: Option<u32>, act: &Act) -> (i32, i32) {
    let (pid, _out) = spawn(cgroup, uid, act);
    (pid, wait(pid))
}

/// Runs `call` (raw syscalls; its return is the exit code) in `w`'s cgroup, which must exit
/// with `want`; `what` names it in a failure. Its pid.
pub fn call_in(w: &Watched, call: fn() -> i32, want: i32, what: &str) -> i32 {
    let (pid, st) = run(Some(&w.cg), None, &Act::Call(call));
    assert_eq!(exited(st), Some(want), "{what}");
    pid
}

pub fn exited(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

pub fn killed_by(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

pub fn exec(path: &str, argv: &[&str]) -> Act {
    Act::Exec {
        path: CString::new(path).unwrap(),
        argv: argv.iter().map(|a| CString::new(*a).unwrap()).collect(),
    }
}

pub fn open(path: &Path, times: u32) -> Act {
    Act::Open {
        path: CString::new(path.to_str().unwrap()).unwrap(),
        times,
    }
}

pub fn connect(addr: SocketAddr) -> Act {
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
pub fn until(
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

/// The first event of kind `kind` ([`palisade_monitor::EventKind::name`]) from process `pid`,
/// as [`until`].
pub fn event_of(
    rx: &Receiver<MonitorEvent>,
    what: &str,
    pid: i32,
    kind: &str,
) -> (MonitorEvent, Vec<MonitorEvent>) {
    until(rx, what, |e| {
        e.process.pid == pid as u32 && e.kind.name() == kind
    })
}

/// The event of `pid`'s connect to `addr`, which ended with `errno` (0: connected); `what`
/// names it in a failure.
pub fn connect_event(
    rx: &Receiver<MonitorEvent>,
    what: &str,
    pid: i32,
    addr: SocketAddr,
    errno: i32,
) -> MonitorEvent {
    let (ev, _) = event_of(rx, what, pid, "connect");
    assert_eq!(
        ev.kind,
        EventKind::Connect {
            addr: Some(addr),
            result: -i64::from(errno)
        },
        "{what}"
    );
    ev
}

/// A connect rule refusing `dest` (that host, that port) to every executable.
pub fn deny_connect_to(name: &str, dest: SocketAddr, severity: u8) -> ConnectRule {
    ConnectRule {
        name: name.into(),
        addr: dest.ip(),
        prefix_len: if dest.is_ipv4() { 32 } else { 128 },
        port: Some(dest.port()),
        only_from: None,
        severity,
        message: String::new(),
    }
}

/// A scratch directory readable by everyone, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
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

/// Runs `check` with each syscall hook of this kernel ([`hooks`]: where the kernel refuses one,
/// the loader's fallback runs); a failure says which.
pub fn with_each_hook(check: fn(SyscallHook)) {
    for hook in hooks() {
        if let Err(panic) = std::panic::catch_unwind(|| check(hook)) {
            eprintln!("failed with the {hook} hook asked for");
            std::panic::resume_unwind(panic);
        }
    }
}

/// A monitor of its own (pin root and cgroup of their own) watching its cgroup with `rules`:
/// what most tests start with. The fields drop in their order: the watch, the monitor, the
/// events, the cgroup (killing what is left in it), the pins.
pub struct Watched {
    pub watch: Watch,
    pub monitor: NodeMonitor,
    pub rx: Receiver<MonitorEvent>,
    pub cg: TestCgroup,
    /// Kept for its drop: the pins go last.
    _root: PinRoot,
}

impl Watched {
    /// Pin root and cgroup named `name`, the container of pod `name`, the default configuration.
    pub fn new(name: &str, rules: ContainerRules) -> Self {
        Self::open(name, name, |c| c, rules)
    }

    /// [`Watched::new`] with the configuration changed by `config`.
    pub fn with(
        name: &str,
        config: impl FnOnce(MonitorConfig) -> MonitorConfig,
        rules: ContainerRules,
    ) -> Self {
        Self::open(name, name, config, rules)
    }

    /// [`Watched::new`] asking for the syscall `hook` (its pin root and cgroup then named
    /// `name-<tag>`); checks the handle runs that one, or the fallback the kernel needs.
    pub fn on_hook(name: &str, hook: SyscallHook, rules: ContainerRules) -> Self {
        let dir = format!("{name}-{}", hook_tag(hook));
        let w = Self::open(
            &dir,
            name,
            |c| MonitorConfig {
                syscall_hook: hook,
                ..c
            },
            rules,
        );
        assert_hook(&w.monitor, hook);
        w
    }

    /// A container watched on `hook` with no rules ([`Watched::on_hook`]), and the pid of
    /// `call` run in it, which must exit 0 (`what` names it in a failure).
    pub fn after_call(name: &str, hook: SyscallHook, call: fn() -> i32, what: &str) -> (Self, i32) {
        let w = Self::on_hook(name, hook, ContainerRules::default());
        let pid = call_in(&w, call, 0, what);
        (w, pid)
    }

    /// A watch opened by the caller (who needed the monitor before watching).
    pub fn from_parts(
        watch: Watch,
        monitor: NodeMonitor,
        rx: Receiver<MonitorEvent>,
        cg: TestCgroup,
        root: PinRoot,
    ) -> Self {
        Watched {
            watch,
            monitor,
            rx,
            cg,
            _root: root,
        }
    }

    fn open(
        name: &str,
        pod: &str,
        config: impl FnOnce(MonitorConfig) -> MonitorConfig,
        rules: ContainerRules,
    ) -> Self {
        let node = Unwatched::with(name, config);
        let watch = node.monitor.watch(node.cg.container(pod), rules).unwrap();
        node.watched(watch)
    }
}

/// [`Watched`] before its watch, for the tests that use the monitor first (or only try to
/// watch): a monitor with a pin root of its own, its events, and a cgroup of its own. The
/// fields drop in their order, as in [`Watched`].
pub struct Unwatched {
    pub monitor: NodeMonitor,
    pub rx: Receiver<MonitorEvent>,
    pub cg: TestCgroup,
    pub root: PinRoot,
}

impl Unwatched {
    /// Pin root and cgroup named `name`, the default configuration.
    pub fn new(name: &str) -> Self {
        Self::with(name, |c| c)
    }

    fn with(name: &str, config: impl FnOnce(MonitorConfig) -> MonitorConfig) -> Self {
        let root = PinRoot::new(name);
        let cg = TestCgroup::new(name);
        let (tx, rx) = sync_channel(4096);
        let monitor = NodeMonitor::open(config(root.config()), tx).unwrap();
        Unwatched {
            monitor,
            rx,
            cg,
            root,
        }
    }

    /// The [`Watched`] of `watch`, a watch of this monitor.
    pub fn watched(self, watch: Watch) -> Watched {
        Watched::from_parts(watch, self.monitor, self.rx, self.cg, self.root)
    }
}
