//! `palisade-probe OP [ARG]`: tries one privileged operation and says what the kernel answered.
//!
//! The security suite copies it into the busybox test image (the xtask compiles this file alone
//! with rustc as a static binary, so it uses no crates): busybox has no keyctl, bpf or
//! perf_event_open applets. It prints `allowed` and exits 0 when the call succeeded, or
//! `denied errno=N NAME` and exits 1 when it failed; 2 is a usage error.

use std::ffi::{c_char, c_int, c_long, c_void};
use std::process::ExitCode;

extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn __errno_location() -> *mut c_int;
    fn geteuid() -> u32;
    fn getuid() -> u32;
    fn setuid(uid: u32) -> c_int;
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
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

const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;
const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const PTRACE_ATTACH: c_long = 16;
const PTRACE_DETACH: c_long = 17;
const CLONE_NEWUSER: c_long = 0x1000_0000;
const AF_INET: c_int = 2;
const SOCK_STREAM: c_int = 1;
const SOCK_RAW: c_int = 3;
const IPPROTO_ICMP: c_int = 1;

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
            "mount" => report(c_long::from(mount(
                c"palisade-probe".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ))),
            "rawsock" => report(c_long::from(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP))),
            "tcpsock" => report(c_long::from(socket(AF_INET, SOCK_STREAM, 0))),
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first() {
        Some(op) => ExitCode::from(probe(op, args.get(1).map(String::as_str))),
        None => {
            eprintln!("usage: palisade-probe OP [ARG]");
            ExitCode::from(2)
        }
    }
}
