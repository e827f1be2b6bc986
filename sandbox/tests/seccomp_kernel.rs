//! The default seccomp profile on the running kernel: compiled to BPF, installed in a forked
//! child (seccomp is irreversible), and probed syscall by syscall. Needs no privilege to
//! install the filter, but the probes are meant for root, as in CI: as root every refused
//! syscall below would otherwise get past the permission checks, so EPERM can only come
//! from the filter.

mod bpf;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use palisade_sandbox::capabilities::DEFAULT_CAPABILITIES;
use palisade_sandbox::seccomp::{default_profile, Arch};

const CLONE_NEWUSER: libc::c_long = 0x1000_0000;
const ADDR_NO_RANDOMIZE: libc::c_long = 0x0004_0000;
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

enum Expect {
    Errno(i32),
    Success,
}

struct Probe<'a> {
    name: &'static str,
    call: Box<dyn Fn() -> libc::c_long + 'a>,
    expect: Expect,
}

impl<'a> Probe<'a> {
    fn new(name: &'static str, expect: Expect, call: impl Fn() -> libc::c_long + 'a) -> Self {
        Probe {
            name,
            call: Box::new(call),
            expect,
        }
    }

    /// A call the filter must refuse with EPERM.
    fn refused(name: &'static str, call: impl Fn() -> libc::c_long + 'a) -> Self {
        Self::new(name, Expect::Errno(libc::EPERM), call)
    }

    /// A call that must go through.
    fn works(name: &'static str, call: impl Fn() -> libc::c_long + 'a) -> Self {
        Self::new(name, Expect::Success, call)
    }
}

/// What a failing probe reports through the pipe: its index, errno and return value.
const RECORD: usize = 16;

fn default_filter() -> Result<Vec<libc::sock_filter>> {
    let arch = Arch::host().context("no profile for this architecture")?;
    let bounding: BTreeSet<String> = DEFAULT_CAPABILITIES
        .iter()
        .filter(|c| **c != "CAP_NET_RAW")
        .map(|c| (*c).to_owned())
        .collect();
    bpf::compile(&default_profile(arch, &bounding, false)).map_err(anyhow::Error::msg)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `probes` in a forked child under `prog`; the child does only raw syscalls, so it is
/// safe to fork from the multithreaded test harness.
fn run_probes(prog: &[libc::sock_filter], probes: &[Probe<'_>]) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the child only calls async-signal-safe functions and raw syscalls, then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        child(prog, probes, std::os::fd::AsRawFd::as_raw_fd(&write_end));
    }
    drop(write_end);

    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid: {}", std::io::Error::last_os_error());
    }
    let mut record = Vec::new();
    std::fs::File::from(read_end).read_to_end(&mut record)?;

    if libc::WIFSIGNALED(status) {
        bail!("probe child killed by signal {}", libc::WTERMSIG(status));
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        2 => bail!("installing the filter failed: errno {}", errno_of(&record)),
        _ if record.len() == RECORD => {
            let index = u32::from_ne_bytes(record[0..4].try_into()?) as usize;
            let ret = i64::from_ne_bytes(record[8..16].try_into()?);
            let probe = probes.get(index).context("probe index out of range")?;
            let wanted = match probe.expect {
                Expect::Errno(e) => format!("errno {e}"),
                Expect::Success => "success".to_owned(),
            };
            bail!(
                "probe {:?}: wanted {wanted}, got return {ret} with errno {}",
                probe.name,
                errno_of(&record)
            )
        }
        code => bail!("probe child exited {code} without a report"),
    }
}

fn errno_of(record: &[u8]) -> i32 {
    record
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(-1)
}

fn child(prog: &[libc::sock_filter], probes: &[Probe<'_>], report: libc::c_int) -> ! {
    let send = |index: u32, errno: i32, ret: i64| {
        let mut record = [0u8; RECORD];
        record[0..4].copy_from_slice(&index.to_ne_bytes());
        record[4..8].copy_from_slice(&errno.to_ne_bytes());
        record[8..16].copy_from_slice(&ret.to_ne_bytes());
        // SAFETY: writes the stack buffer to the pipe.
        unsafe { libc::write(report, record.as_ptr().cast(), RECORD) };
    };
    if let Err(e) = bpf::install(prog) {
        send(u32::MAX, e.raw_os_error().unwrap_or(0), -1);
        // SAFETY: leaves the forked child without running the parent's destructors.
        unsafe { libc::_exit(2) };
    }
    for (index, probe) in probes.iter().enumerate() {
        let ret = (probe.call)();
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        let ok = match probe.expect {
            Expect::Errno(e) => ret == -1 && errno == e,
            Expect::Success => ret >= 0,
        };
        if !ok {
            send(index as u32, errno, ret);
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// A raw `clone` that behaves like fork; the new child leaves at once, the caller reaps it
/// and returns 0 when it exited with status 7.
fn raw_clone(flags: libc::c_long) -> libc::c_long {
    // SAFETY: a fork-like clone (no CLONE_VM, child on a copy of the stack); the child only
    // calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if pid == 0 {
        // SAFETY: leaves the new child at once.
        unsafe { libc::_exit(7) };
    }
    if pid < 0 {
        return pid;
    }
    let mut status = 0;
    // SAFETY: reaps the child created above.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7 {
        0
    } else {
        -1
    }
}

/// mknodat(AT_FDCWD, `path`, `kind` | 0600, `dev`).
fn mknod(path: &CString, kind: libc::mode_t, dev: libc::dev_t) -> libc::c_long {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_mknodat,
            libc::AT_FDCWD,
            path.as_ptr(),
            kind | 0o600,
            dev,
        )
    }
}

/// keyctl(KEYCTL_GET_KEYRING_ID, the session keyring): reads an id, creates nothing.
fn session_keyring() -> libc::c_long {
    // SAFETY: integer arguments only.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn default_profile_refuses_what_it_claims_on_the_running_kernel() -> Result<()> {
    assert!(is_root(), "this test needs root (CI runs as root)");
    let prog = default_filter()?;
    let dir = tempfile::tempdir()?;
    let device = cstr(&dir.path().join("null-device").to_string_lossy());
    let fifo = cstr(&dir.path().join("fifo").to_string_lossy());
    let socket_node = cstr(&dir.path().join("socket-node").to_string_lossy());
    let missing = cstr("/nonexistent-palisade-probe");
    let missing2 = cstr("/nonexistent-palisade-probe-2");
    let tmpfs = cstr("tmpfs");
    let dev_null = cstr("/dev/null");
    let module = cstr("palisade_no_such_module");
    let empty = cstr("");
    let user_key = cstr("user");

    use libc::{syscall as sys, AT_FDCWD};
    // SAFETY (every probe): raw syscalls with arguments that are harmless even if the filter
    // let them through: missing paths, bad descriptors, null or invalid pointers the
    // kernel checks, invalid magic numbers.
    let probes: Vec<Probe<'_>> = vec![
        Probe::refused("unshare(CLONE_NEWUSER)", || unsafe {
            sys(libc::SYS_unshare, CLONE_NEWUSER)
        }),
        Probe::refused("clone(CLONE_NEWUSER)", || raw_clone(CLONE_NEWUSER)),
        Probe::new("clone3", Expect::Errno(libc::ENOSYS), || unsafe {
            sys(libc::SYS_clone3, 0usize, 0usize)
        }),
        Probe::refused("setns", || unsafe { sys(libc::SYS_setns, -1, 0) }),
        Probe::refused("mount", || unsafe {
            sys(
                libc::SYS_mount,
                tmpfs.as_ptr(),
                missing.as_ptr(),
                tmpfs.as_ptr(),
                0,
                0usize,
            )
        }),
        Probe::refused("umount2", || unsafe {
            sys(libc::SYS_umount2, missing.as_ptr(), 0)
        }),
        Probe::refused("pivot_root", || unsafe {
            sys(libc::SYS_pivot_root, missing.as_ptr(), missing2.as_ptr())
        }),
        Probe::refused("keyctl", session_keyring),
        Probe::refused("add_key", || unsafe {
            sys(
                libc::SYS_add_key,
                user_key.as_ptr(),
                0usize,
                0usize,
                0usize,
                KEY_SPEC_SESSION_KEYRING,
            )
        }),
        Probe::refused("request_key", || unsafe {
            sys(libc::SYS_request_key, user_key.as_ptr(), 0usize, 0usize, 0)
        }),
        Probe::refused("bpf", || unsafe { sys(libc::SYS_bpf, 0, 0usize, 0) }),
        Probe::refused("perf_event_open", || unsafe {
            sys(libc::SYS_perf_event_open, 0usize, 0, -1, -1, 0)
        }),
        Probe::refused("io_uring_setup", || unsafe {
            sys(libc::SYS_io_uring_setup, 1, 0usize)
        }),
        Probe::refused("ptrace", || unsafe {
            sys(libc::SYS_ptrace, libc::PTRACE_CONT, 0x7fff_fff0, 0, 0)
        }),
        Probe::refused("mknodat(S_IFCHR)", || {
            mknod(&device, libc::S_IFCHR, libc::makedev(1, 3))
        }),
        Probe::refused("mknodat(S_IFBLK)", || {
            mknod(&device, libc::S_IFBLK, libc::makedev(7, 0))
        }),
        Probe::refused("init_module", || unsafe {
            sys(libc::SYS_init_module, 0usize, 0usize, empty.as_ptr())
        }),
        Probe::refused("finit_module", || unsafe {
            sys(libc::SYS_finit_module, -1, empty.as_ptr(), 0)
        }),
        Probe::refused("delete_module", || unsafe {
            sys(libc::SYS_delete_module, module.as_ptr(), 0)
        }),
        Probe::refused("kexec_load", || unsafe {
            sys(
                libc::SYS_kexec_load,
                0usize,
                0usize,
                0usize,
                0xdead_0000usize,
            )
        }),
        Probe::refused("open_by_handle_at", || unsafe {
            sys(libc::SYS_open_by_handle_at, -1, 0usize, 0)
        }),
        Probe::refused("swapon", || unsafe {
            sys(libc::SYS_swapon, missing.as_ptr(), 0)
        }),
        Probe::refused("swapoff", || unsafe {
            sys(libc::SYS_swapoff, missing.as_ptr())
        }),
        Probe::refused("reboot (bad magic)", || unsafe {
            sys(libc::SYS_reboot, 0, 0, 0, 0usize)
        }),
        Probe::refused("acct", || unsafe { sys(libc::SYS_acct, missing.as_ptr()) }),
        Probe::refused("userfaultfd", || unsafe {
            sys(libc::SYS_userfaultfd, libc::O_CLOEXEC)
        }),
        Probe::refused("sethostname (too long)", || unsafe {
            sys(libc::SYS_sethostname, empty.as_ptr(), 100_000usize)
        }),
        Probe::refused("personality(ADDR_NO_RANDOMIZE)", || unsafe {
            sys(libc::SYS_personality, ADDR_NO_RANDOMIZE)
        }),
        // What ordinary programs do must keep working.
        Probe::works("personality(query)", || unsafe {
            sys(libc::SYS_personality, 0xffff_ffffusize)
        }),
        Probe::works("getpid", || unsafe { sys(libc::SYS_getpid) }),
        Probe::works("openat + write + close", || unsafe {
            let fd = sys(
                libc::SYS_openat,
                AT_FDCWD,
                dev_null.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return fd;
            }
            let n = sys(libc::SYS_write, fd, b"x".as_ptr(), 1usize);
            sys(libc::SYS_close, fd);
            if n == 1 {
                0
            } else {
                -1
            }
        }),
        Probe::works("clone without namespace flags (fork)", || raw_clone(0)),
        Probe::works("mknodat(S_IFIFO)", || mknod(&fifo, libc::S_IFIFO, 0)),
        Probe::works("mknodat(S_IFSOCK)", || {
            mknod(&socket_node, libc::S_IFSOCK, 0)
        }),
        Probe::works("getrandom", || unsafe {
            let mut buf = [0u8; 8];
            sys(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0)
        }),
    ];
    run_probes(&prog, &probes)?;

    // The allowed mknod really made a FIFO; the refused one made no device.
    let meta = std::fs::symlink_metadata(dir.path().join("fifo"))?;
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    assert!(!dir.path().join("null-device").exists());
    Ok(())
}

#[test]
fn the_same_probes_succeed_without_the_filter() -> Result<()> {
    // Guards the test above: a refused probe must fail because of the filter, not because
    // the machine refuses it anyway. Only the probes that are harmless when they succeed.
    assert!(is_root(), "this test needs root (CI runs as root)");
    let dir = tempfile::tempdir()?;
    let device = cstr(&dir.path().join("null-device").to_string_lossy());
    let allow_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0x7fff_0000,
    }];
    let probes: Vec<Probe<'_>> = vec![
        Probe::works("clone(CLONE_NEWUSER)", || raw_clone(CLONE_NEWUSER)),
        Probe::works("keyctl", session_keyring),
        Probe::works("mknodat(S_IFCHR)", || {
            mknod(&device, libc::S_IFCHR, libc::makedev(1, 3))
        }),
        Probe::works("personality(ADDR_NO_RANDOMIZE)", || unsafe {
            libc::syscall(libc::SYS_personality, ADDR_NO_RANDOMIZE)
        }),
    ];
    run_probes(&allow_all, &probes)
}

#[test]
fn a_real_program_runs_under_the_filter() -> Result<()> {
    let prog = default_filter()?;
    let dir = tempfile::tempdir()?;
    let script = "echo hello > f && cat f && mkfifo p && test -p p && \
                  if unshare -U true 2>/dev/null; then echo unshare-allowed; fi && \
                  if mknod c c 1 3 2>/dev/null; then echo mknod-allowed; fi && echo done";
    let mut cmd = Command::new("/usr/bin/busybox");
    cmd.args(["sh", "-c", script]).current_dir(dir.path());
    let filter = prog.clone();
    // SAFETY: the closure only calls prctl and seccomp, both async-signal-safe.
    unsafe { cmd.pre_exec(move || bpf::install(&filter)) };
    let out = cmd.output().context("run busybox under the filter")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "busybox failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hello\ndone\n");
    assert!(!dir.path().join("c").exists());
    Ok(())
}

#[test]
fn compiled_filter_checks_the_architecture_before_anything_else() -> Result<()> {
    let prog = default_filter()?;
    let ld_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    assert_eq!(
        (prog[0].code, prog[0].k),
        (ld_abs, 4),
        "loads seccomp_data.arch"
    );
    assert_eq!(
        (prog[2].code, prog[2].k),
        (ret, 0x8000_0000),
        "kills a foreign arch"
    );
    let last = prog.last().context("empty program")?;
    assert_eq!(
        (last.code, last.k),
        (ret, 0x0005_0001),
        "ends in ERRNO(EPERM)"
    );
    assert!(prog.len() <= 4096, "over BPF_MAXINSNS: {}", prog.len());
    Ok(())
}

#[test]
fn a_threaded_rust_program_runs_under_the_filter() -> Result<()> {
    let prog = default_filter()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    // libtest runs each test on a thread of its own: glibc tries clone3, gets ENOSYS and
    // falls back to clone, which the filter must let through without namespace flags.
    cmd.args([
        "--exact",
        "compiled_filter_checks_the_architecture_before_anything_else",
        "--nocapture",
    ]);
    // SAFETY: the closure only calls prctl and seccomp, both async-signal-safe.
    unsafe { cmd.pre_exec(move || bpf::install(&prog)) };
    let out = cmd
        .output()
        .context("rerun the test binary under the filter")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    Ok(())
}
