//! `palisade-probe OP [ARG]`: tries one privileged operation and says what the kernel answered.
//!
//! The security suite copies it into the busybox test image (the xtask compiles this file alone
//! with rustc as a static binary, so it uses no crates): busybox has no keyctl, bpf or
//! perf_event_open applets. It prints `allowed` and exits 0 when the call succeeded, or
//! `denied errno=N NAME` and exits 1 when it failed; 2 is a usage error. The file writes
//! busybox cannot make take a path: `truncate PATH` (truncate(2)), `otrunc PATH` (an
//! `O_RDONLY|O_TRUNC` open), `bindunix PATH` (a unix socket bound at PATH); and `read PATH`
//! (a plain `O_RDONLY` open by the probe itself, for file rules limited to a source binary).
//!
//! The benchmarks use two more commands: `palisade-probe loop OP N` times N iterations of one
//! operation (`getpid`, `open`, `exec`, `connect`, `udp`) after N/20 unmeasured ones and prints
//! one line, `loop op=OP iterations=N ns_per_op=F cpu_ns_per_op=F total_ns=T` (wall clock, and
//! CPU time of the process and its children); `palisade-probe noop` exits 0 at once (the
//! program the exec loop runs).

use std::ffi::{c_char, c_int, c_long, c_void};
use std::process::ExitCode;

extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn __errno_location() -> *mut c_int;
    fn geteuid() -> u32;
    fn getuid() -> u32;
    fn setuid(uid: u32) -> c_int;
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn truncate(path: *const c_char, length: i64) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fork() -> c_int;
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
    fn getrusage(who: c_int, usage: *mut c_void) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: u64,
        data: *const c_void,
    ) -> c_int;
}

// x86_64 system call numbers.
const SYS_PTRACE: c_long = 101;
const SYS_INIT_MODULE: c_long = 175;
const SYS_UNSHARE: c_long = 272;
const SYS_PERF_EVENT_OPEN: c_long = 298;
const SYS_KEYCTL: c_long = 250;
const SYS_BPF: c_long = 321;
const SYS_GETPID: c_long = 39;
const SYS_GETPPID: c_long = 110;

const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;
const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const PTRACE_ATTACH: c_long = 16;
const PTRACE_DETACH: c_long = 17;
const CLONE_NEWUSER: c_long = 0x1000_0000;
const AF_INET: c_int = 2;
const SOCK_STREAM: c_int = 1;
const SOCK_DGRAM: c_int = 2;
const SOCK_RAW: c_int = 3;
const IPPROTO_ICMP: c_int = 1;
const O_RDONLY_CLOEXEC: c_int = 0o2000000;
const O_TRUNC: c_int = 0o1000;
const SOL_SOCKET: c_int = 1;
const SO_LINGER: c_int = 13;
const RUSAGE_SELF: c_int = 0;
const RUSAGE_CHILDREN: c_int = -1;

fn errno() -> c_int {
    // SAFETY: glibc's thread-local errno is always a valid pointer.
    unsafe { *__errno_location() }
}

fn errno_name(e: c_int) -> &'static str {
    match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        13 => "EACCES",
        22 => "EINVAL",
        30 => "EROFS",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        _ => "E?",
    }
}

/// The outcome of a call returning -1 on failure.
fn report(ret: c_long) -> u8 {
    if ret < 0 {
        let e = errno();
        println!("denied errno={e} {}", errno_name(e));
        1
    } else {
        println!("allowed");
        0
    }
}

/// getpid through the 32-bit x86 entry (`int $0x80`, ia32 number 20) of this 64-bit process:
/// a seccomp filter that names only x86_64 kills the process here (SIGSYS).
#[cfg(target_arch = "x86_64")]
fn compat32() -> u8 {
    let ret: i64;
    // SAFETY: ia32 getpid takes no arguments and touches no memory; the kernel preserves
    // every register but eax across int 0x80.
    unsafe { std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack)) };
    if ret > 0 {
        println!("allowed");
        0
    } else {
        println!("denied errno={} {}", -ret, errno_name(-ret as c_int));
        1
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn compat32() -> u8 {
    println!("compat32: only on x86_64");
    2
}

fn probe(op: &str, arg: Option<&str>) -> u8 {
    // SAFETY: each call gets valid pointers to live buffers or null where the kernel accepts it.
    unsafe {
        match op {
            "keyctl" => report(syscall(
                SYS_KEYCTL,
                KEYCTL_JOIN_SESSION_KEYRING,
                c"palisade-probe".as_ptr(),
            )),
            "bpf" => {
                // union bpf_attr for BPF_MAP_CREATE: type, key_size, value_size, max_entries.
                let mut attr = [0u32; 32];
                attr[0] = BPF_MAP_TYPE_ARRAY;
                attr[1] = 4;
                attr[2] = 4;
                attr[3] = 1;
                report(syscall(
                    SYS_BPF,
                    BPF_MAP_CREATE,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                ))
            }
            "perf_event_open" => {
                // struct perf_event_attr: type (u32), size (u32), config (u64), ...; software
                // cpu-clock for this process on any cpu.
                let mut attr = [0u8; 128];
                attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
                attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
                report(syscall(
                    SYS_PERF_EVENT_OPEN,
                    attr.as_mut_ptr(),
                    0 as c_long,
                    -1 as c_long,
                    -1 as c_long,
                    0 as c_long,
                ))
            }
            "init_module" => {
                let image = [0u8; 64];
                report(syscall(
                    SYS_INIT_MODULE,
                    image.as_ptr(),
                    image.len(),
                    c"".as_ptr(),
                ))
            }
            "ptrace" => {
                let Some(pid) = arg.and_then(|a| a.parse::<c_long>().ok()) else {
                    eprintln!("ptrace needs a pid");
                    return 2;
                };
                let r = syscall(SYS_PTRACE, PTRACE_ATTACH, pid, 0 as c_long, 0 as c_long);
                let code = report(r);
                if r == 0 {
                    syscall(SYS_PTRACE, PTRACE_DETACH, pid, 0 as c_long, 0 as c_long);
                }
                code
            }
            "unshare" => report(syscall(SYS_UNSHARE, CLONE_NEWUSER)),
            "compat32" => compat32(),
            "mount" => report(c_long::from(mount(
                c"palisade-probe".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ))),
            // The writes busybox has no applet for: truncate(2) by path (no open for writing),
            // an O_RDONLY|O_TRUNC open, a unix socket bound in the filesystem; and a plain
            // O_RDONLY open (`read`), made by this binary itself for fromSource rules.
            "truncate" | "otrunc" | "read" | "bindunix" => {
                let Some(path) = arg.and_then(|a| std::ffi::CString::new(a).ok()) else {
                    eprintln!("{op} needs a path");
                    return 2;
                };
                match op {
                    "truncate" => report(c_long::from(truncate(path.as_ptr(), 0))),
                    "otrunc" | "read" => {
                        let flags = if op == "read" { 0 } else { O_TRUNC };
                        let fd = open(path.as_ptr(), O_RDONLY_CLOEXEC | flags);
                        if fd >= 0 {
                            close(fd);
                        }
                        report(c_long::from(fd))
                    }
                    _ => match std::os::unix::net::UnixListener::bind(arg.unwrap_or("")) {
                        Ok(_) => report(0),
                        Err(e) => {
                            let e = e.raw_os_error().unwrap_or(0);
                            println!("denied errno={e} {}", errno_name(e));
                            1
                        }
                    },
                }
            }
            "rawsock" => report(c_long::from(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP))),
            "tcpsock" => report(c_long::from(socket(AF_INET, SOCK_STREAM, 0))),
            "udpsock" => report(c_long::from(socket(AF_INET, SOCK_DGRAM, 0))),
            // Run from a setuid-root copy: the effective uid says whether exec raised it.
            "setuid" => {
                let (uid, euid) = (getuid(), geteuid());
                print!("uid={uid} euid={euid} ");
                if euid != 0 {
                    println!("denied errno=1 EPERM");
                    return 1;
                }
                report(c_long::from(setuid(0)))
            }
            _ => {
                eprintln!("unknown op {op}");
                2
            }
        }
    }
}

/// The file the open loop opens: CRI bind-mounts it into every container.
const OPEN_PATH: &std::ffi::CStr = c"/etc/hostname";

/// One iteration of a benchmark loop.
enum LoopOp {
    Getpid,
    /// What the kernel matrix's bench times in a process outside any container.
    Getppid,
    Open,
    /// fork, exec of this binary with `noop`, wait: what a shell does for every command.
    Exec(std::ffi::CString),
    /// TCP connect to a listener on loopback, accept, close (RST, so no TIME_WAIT piles up).
    Connect(std::net::TcpListener, std::net::SocketAddr),
    /// UDP socket, connect, close: no handshake, only the socket calls.
    Udp {
        addr: std::net::SocketAddr,
        _target: std::net::UdpSocket,
    },
}

impl LoopOp {
    fn new(name: &str) -> Result<Self, String> {
        Ok(match name {
            "getpid" => LoopOp::Getpid,
            "getppid" => LoopOp::Getppid,
            "open" => LoopOp::Open,
            "exec" => {
                let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
                let exe = std::ffi::CString::new(exe.into_os_string().into_encoded_bytes())
                    .map_err(|e| format!("current exe: {e}"))?;
                LoopOp::Exec(exe)
            }
            "connect" => {
                let l = std::net::TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| format!("tcp listener on 127.0.0.1: {e}"))?;
                let addr = l.local_addr().map_err(|e| format!("tcp listener: {e}"))?;
                LoopOp::Connect(l, addr)
            }
            "udp" => {
                let target = std::net::UdpSocket::bind("127.0.0.1:0")
                    .map_err(|e| format!("udp socket on 127.0.0.1: {e}"))?;
                let addr = target
                    .local_addr()
                    .map_err(|e| format!("udp socket: {e}"))?;
                LoopOp::Udp {
                    addr,
                    _target: target,
                }
            }
            other => return Err(format!("unknown loop op {other}")),
        })
    }

    fn once(&self) -> Result<(), String> {
        match self {
            // SAFETY: getpid takes no arguments.
            LoopOp::Getpid => unsafe {
                syscall(SYS_GETPID);
            },
            // SAFETY: getppid takes no arguments.
            LoopOp::Getppid => unsafe {
                syscall(SYS_GETPPID);
            },
            LoopOp::Open => {
                // SAFETY: a NUL-terminated path; the descriptor is closed at once.
                let fd = unsafe { open(OPEN_PATH.as_ptr(), O_RDONLY_CLOEXEC) };
                if fd < 0 {
                    return Err(format!("open {OPEN_PATH:?}: errno {}", errno()));
                }
                // SAFETY: fd was just opened by us.
                unsafe { close(fd) };
            }
            LoopOp::Exec(exe) => {
                let argv = [exe.as_ptr(), c"noop".as_ptr(), std::ptr::null()];
                // SAFETY: the child only calls execv and _exit (async-signal-safe); argv is
                // NUL-terminated and outlives the call.
                let pid = unsafe { fork() };
                if pid == 0 {
                    unsafe {
                        execv(exe.as_ptr(), argv.as_ptr());
                        _exit(127);
                    }
                }
                if pid < 0 {
                    return Err(format!("fork: errno {}", errno()));
                }
                let mut status: c_int = 0;
                // SAFETY: status is a valid out pointer; pid is our child.
                if unsafe { waitpid(pid, &mut status, 0) } != pid || status != 0 {
                    return Err(format!("exec {exe:?} noop: wait status {status}"));
                }
            }
            LoopOp::Connect(listener, addr) => {
                use std::os::fd::AsRawFd as _;
                let c = std::net::TcpStream::connect(addr)
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
                let linger: [c_int; 2] = [1, 0];
                // SAFETY: a valid socket and a struct linger {onoff, linger} of 8 bytes.
                unsafe {
                    setsockopt(
                        c.as_raw_fd(),
                        SOL_SOCKET,
                        SO_LINGER,
                        linger.as_ptr().cast(),
                        8,
                    )
                };
                drop(c);
                drop(s);
            }
            LoopOp::Udp { addr, .. } => {
                let s = std::net::UdpSocket::bind("127.0.0.1:0")
                    .map_err(|e| format!("udp bind: {e}"))?;
                s.connect(addr)
                    .map_err(|e| format!("udp connect {addr}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// CPU time (user + system, microseconds) used by this process and by its reaped children:
/// the work done for the loop, without the time it waited for a core.
fn cpu_us() -> i64 {
    // struct rusage: ru_utime and ru_stime (struct timeval: seconds, microseconds) first.
    let mut total = 0;
    for who in [RUSAGE_SELF, RUSAGE_CHILDREN] {
        let mut ru = [0i64; 18];
        // SAFETY: the buffer is larger than struct rusage (144 bytes on x86_64).
        if unsafe { getrusage(who, ru.as_mut_ptr().cast()) } == 0 {
            total += (ru[0] + ru[2]) * 1_000_000 + ru[1] + ru[3];
        }
    }
    total
}

/// `loop OP N`: N/20 unmeasured iterations, then N timed ones; prints the parseable line.
fn run_loop(op: &str, n: Option<&str>) -> u8 {
    let Some(n) = n.and_then(|n| n.parse::<u64>().ok()).filter(|&n| n > 0) else {
        eprintln!("usage: palisade-probe loop getpid|getppid|open|exec|connect|udp ITERATIONS");
        return 2;
    };
    let run = || -> Result<(u128, i64), String> {
        let op = LoopOp::new(op)?;
        for _ in 0..n / 20 {
            op.once()?;
        }
        let (t0, c0) = (std::time::Instant::now(), cpu_us());
        for _ in 0..n {
            op.once()?;
        }
        Ok((t0.elapsed().as_nanos(), cpu_us() - c0))
    };
    match run() {
        Ok((total, cpu)) => {
            println!(
                "loop op={op} iterations={n} ns_per_op={:.1} cpu_ns_per_op={:.1} total_ns={total}",
                total as f64 / n as f64,
                cpu as f64 * 1000.0 / n as f64
            );
            0
        }
        Err(e) => {
            eprintln!("loop {op}: {e}");
            1
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match args.first().map(String::as_str) {
        Some("noop") => ExitCode::SUCCESS,
        Some("loop") => ExitCode::from(run_loop(arg(1).unwrap_or(""), arg(2))),
        Some(op) => ExitCode::from(probe(op, arg(1))),
        None => {
            eprintln!("usage: palisade-probe OP [ARG]");
            ExitCode::from(2)
        }
    }
}
