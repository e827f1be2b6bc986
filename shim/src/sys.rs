//! The shim's raw system and allocator calls, each behind a safe function: pidfds, and the
//! glibc allocator's tuning and trimming.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

/// A process file descriptor (Linux 5.3+): signals reach the process it was opened for, never
/// a later process that reuses its pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// A pidfd for `pid`; none where the kernel has no pidfd_open (logged at debug).
    pub fn open(pid: i32) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            tracing::debug!(pid, "pidfd_open: {}", std::io::Error::last_os_error());
            return None;
        }
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `signal` to the process; `ESRCH` once it has exited.
    pub fn send_signal(&self, signal: u32) -> Result<(), nix::errno::Errno> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(nix::errno::Errno::last())
        }
    }
}

/// What the heap held when it was trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    pub in_use_kib: usize,
    pub free_kib: usize,
    /// Whether any memory went back to the kernel.
    pub trimmed: bool,
}

/// Hands the heap's free pages back to the kernel: the shim's large short-lived allocations
/// (a Create's JSON and policies, the monitor's BTF and BPF object) leave free chunks that
/// glibc would otherwise keep resident for the shim's whole life.
pub fn trim_heap() -> Heap {
    // SAFETY: mallinfo2 only reads the allocator's counters and malloc_trim only returns free
    // pages; both take the allocator's own lock.
    let (info, trimmed) = unsafe {
        let info = libc::mallinfo2();
        (info, libc::malloc_trim(0) == 1)
    };
    Heap {
        in_use_kib: info.uordblks / 1024,
        free_kib: info.fordblks / 1024,
        trimmed,
    }
}

/// One malloc arena for all of the shim's few threads: per-thread arenas cost a pod megabytes
/// of resident memory for no gain at this concurrency. Called first thing in `main`.
pub fn single_malloc_arena() {
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Milliseconds with a fraction, for the timings in the logs.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_signals_its_process_and_reports_its_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let fd = PidFd::open(pid).expect("pidfd_open on this kernel");
        assert_eq!(fd.send_signal(0), Ok(()));
        fd.send_signal(libc::SIGKILL as u32).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert_eq!(fd.send_signal(0), Err(nix::errno::Errno::ESRCH));
    }
}
