//! The system-call floor: what the start-up and exit path of every container needs, whatever
//! the workload does, so that a learned profile never misses it.
//!
//! The container's seccomp filter is loaded by runc's init just before it executes the
//! container's first program (or `palisade-init`, which applies landlock and then executes
//! it), so these calls happen under the filter without the workload asking for them:
//! - runc's last steps after loading the filter: closing and marking descriptors, the
//!   synchronisation write, `execve`, and, when `noNewPrivileges` is off and the filter goes in
//!   earlier, dropping to the container's user (`setgroups`, `setgid`, `setuid`, `capset`);
//! - `palisade-init`: `prctl`, the landlock calls, `execve`/`execveat`;
//! - the dynamic loader and the C library's start-up: mapping, `brk`, thread and signal set-up,
//!   `getrandom`, reading the libraries;
//! - every process's exit: `exit`, `exit_group`, and `rt_sigreturn` for signal handlers.
//!
//! [`RUNTIME_AFTER_FILTER`] is the rest of runc's init after an early filter, which a recording
//! that began after `runc create` cannot see; every export and the shim's narrowing add it too.
//!
//! The list is the sandbox's `STARTUP_SYSCALLS` (what its seccomp allow-lists always keep) plus
//! the exit path and the loader calls that list leaves to the workload's own rules. Names are
//! the union of the x86_64 and arm64 tables; runtimes skip the names an architecture lacks.

/// System calls every exported profile allows (sorted, unique).
pub const SYSCALL_FLOOR: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "close",
    "close_range",
    "dup3",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fcntl",
    "fstat",
    "futex",
    "getcwd",
    "getegid",
    "geteuid",
    "getgid",
    "getpid",
    "getppid",
    "getrandom",
    "gettid",
    "getuid",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lseek",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "restart_syscall",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setuid",
    "sigaltstack",
    "statx",
    "uname",
    "write",
];

/// What runc's init does after loading the container's filter and before it executes the
/// container's program, that the recording may not see: with `noNewPrivileges` off, runc
/// loads the filter before it waits for `runc start`, so these calls happen before the shim
/// watches the container. `chdir` (to the process's working directory) is made on every start:
/// without it the shim's real-runc test of `profile_seccomp` fails (`chdir to cwd ("/") set in config.json
/// failed: operation not permitted`). The others are runc's Go runtime in that window, made
/// or not depending on timing and on the container's user (a new thread, a preemption signal,
/// the per-thread set*id calls Go makes on every thread, its poller).
pub const RUNTIME_AFTER_FILTER: &[&str] = &[
    "chdir",
    "clone",
    "epoll_ctl",
    "epoll_pwait",
    "sched_yield",
    "setresgid",
    "setresuid",
    "tgkill",
];

/// Whether a capability the kernel checked and granted in a learning container was the
/// runtime's rather than its workload's, given the capabilities the container's own sets hold
/// (`held`: the union of the spec's five sets, after hardening).
///
/// The kernel's capability table is the container's cgroup's, not a process's: runc's init is
/// in it from `runc start` on (and enters it again for each CRI exec), and it holds every
/// capability until it applies the container's sets, just before it executes the container's
/// program: looking the user up, `setgroups`/`setgid`/`setuid` and the bounding set's cut are
/// checked then (a recording of the CRI suite on this project's host, 2026-12-07, held
/// `sys_admin` and `dac_read_search`, which no container of the default set holds). A
/// capability outside the
/// container's sets cannot have been granted to its workload (no exec gains one beyond the
/// bounding set), so it was the runtime's: recorded as such, never exported, so that an export
/// does not grant `sys_admin` to every workload. One the container holds is told apart by the
/// kernel's table itself, which keeps the checks of a task carrying the runtime's name apart
/// (`shim/src/profile_caps.rs`).
pub fn runtime_capability(
    capability: palisade_policy::Capability,
    held: &std::collections::BTreeSet<palisade_policy::Capability>,
) -> bool {
    !held.contains(&capability)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_outside_the_containers_sets_is_the_runtimes() {
        let cap = |n: &str| palisade_policy::Capability::parse(n).unwrap();
        let held = ["chown", "setuid", "setgid", "setpcap", "dac_override"]
            .map(cap)
            .into();
        assert!(runtime_capability(cap("sys_admin"), &held));
        assert!(runtime_capability(cap("dac_read_search"), &held));
        assert!(!runtime_capability(cap("setuid"), &held));
        assert!(!runtime_capability(cap("chown"), &held));
    }

    #[test]
    fn floor_is_sorted_known_and_holds_the_exit_path() {
        let mut sorted = SYSCALL_FLOOR.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, SYSCALL_FLOOR, "sorted and unique");
        for name in SYSCALL_FLOOR {
            assert!(
                palisade_policy::names::syscall(name).is_some(),
                "{name} is not a known system call"
            );
        }
        for needed in [
            "exit",
            "exit_group",
            "execve",
            "rt_sigreturn",
            "landlock_restrict_self",
        ] {
            assert!(SYSCALL_FLOOR.contains(&needed), "{needed}");
        }
    }

    #[test]
    fn runtime_list_is_sorted_and_known() {
        let mut sorted = RUNTIME_AFTER_FILTER.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, RUNTIME_AFTER_FILTER);
        for n in RUNTIME_AFTER_FILTER {
            assert!(palisade_policy::names::syscall(n).is_some(), "{n}");
        }
    }

    /// The sandbox's start-up list is what its own allow-lists always keep; the floor must
    /// never hold less (read from its source, so that a name added there fails here).
    #[test]
    fn floor_holds_the_sandbox_startup_list() {
        let source = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sandbox/src/enforce/syscalls.rs"
        ));
        let (_, rest) = source.split_once("pub const STARTUP_SYSCALLS").unwrap();
        let (_, list) = rest.split_once("= [").unwrap();
        let (list, _) = list.split_once("];").unwrap();
        let names: Vec<&str> = list
            .split(',')
            .map(|n| n.trim().trim_matches('"'))
            .filter(|n| !n.is_empty())
            .collect();
        assert!(names.len() > 30, "{names:?}");
        for name in names {
            assert!(
                SYSCALL_FLOOR.contains(&name),
                "{name} is missing from the floor"
            );
        }
    }
}
