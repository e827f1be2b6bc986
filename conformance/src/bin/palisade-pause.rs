//! Pod sandbox ("pause") program for the test images: sleeps, reaps children, exits on SIGTERM/SIGINT.
//!
//! Uses only std and a few libc declarations so the xtask can compile this one
//! file with plain `rustc` into a static binary, without building any crate.

use std::ffi::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const ECHILD: c_int = 10;

extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn pause() -> c_int;
    fn _exit(code: c_int) -> !;
}

extern "C" fn on_stop(_signum: c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(0) }
}

/// A handler (not SIG_IGN) so that SIGCHLD interrupts `pause` and we go back to reaping.
extern "C" fn on_child(_signum: c_int) {}

fn main() {
    // SAFETY: the handler only calls an async-signal-safe function.
    unsafe {
        signal(SIGTERM, on_stop);
        signal(SIGINT, on_stop);
        signal(SIGCHLD, on_child);
    }
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid pointer for the duration of the call.
        let pid = unsafe { waitpid(-1, &mut status, 0) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(ECHILD) {
            // No children: sleep until a signal arrives (SIGCHLD wakes us to reap).
            // SAFETY: pause has no preconditions.
            unsafe { pause() };
        }
    }
}
