//! Parked sets: detached when the last holder left, still loaded and pinned, for the next
//! holder to attach again without loading (docs/monitor.md, "Parked programs").

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapHandle, Program};
use tracing::{info, warn};

use super::ms;
use super::pin::{attached_per_container, pin_fd, remove_pins, unpin_entries, version_dir};
use crate::error::PinError;
use crate::kernel::release_at_least;

/// Whether `dir` holds a parked set: complete, no link pinned, its programs pinned.
pub(crate) fn is_parked(dir: &Path) -> bool {
    let no_links = fs::read_dir(dir.join("links")).map_or(true, |mut e| e.next().is_none());
    dir.join("maps/config").exists() && no_links && dir.join("progs/on_exec").exists()
}

/// Parks the set of `dir` when no holder is left: its links are unpinned, which detaches every
/// program (nothing runs on any syscall of the node any more), while the loaded programs and
/// their maps stay pinned for the next holder to attach again without loading and verifying
/// them (docs/monitor.md, "Parked programs"). The processes the programs remembered are
/// forgotten, as their exits will not be seen. Only for a set of the raw sys_exit or the fexit
/// programs: the exit-tracepoint program's links are perf events, which cannot be attached
/// again from a pin here. Returns false, having done nothing, for a set whose programs are not
/// pinned (loaded by a build before parking), and for a set with a trampoline program (BPF-LSM
/// or fexit) the kernel would not attach again (before 5.13 a trampoline program is attached
/// once: a second attach fails with ENOENT), which the caller then removes.
pub(crate) fn park(dir: &Path) -> Result<bool, PinError> {
    if !dir.join("progs/on_exec").exists() {
        return Ok(false);
    }
    if has_trampoline_programs(dir) && !release_at_least(5, 13) {
        return Ok(false);
    }
    unpin_entries(&dir.join("links"))?;
    let procs = dir.join("maps/procs");
    if let Ok(map) = MapHandle::from_pinned_path(&procs) {
        for key in map.keys().collect::<Vec<_>>() {
            let _ = map.delete(&key);
        }
    }
    Ok(true)
}

/// Whether the set of `dir` pinned a program that sits on a BPF trampoline: a BPF-LSM
/// (`lsm_*`) or fexit (`fexit_*`) program.
pub(crate) fn has_trampoline_programs(dir: &Path) -> bool {
    fs::read_dir(dir.join("progs")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| is_trampoline_program(&e.file_name().to_string_lossy()))
    })
}

/// Whether the program pinned as `name` is attached through a BPF trampoline.
fn is_trampoline_program(name: &str) -> bool {
    name.starts_with("lsm_") || name.starts_with("fexit_")
}

/// Attaches the programs of a parked set again, from their pins (the BTF-typed tracepoint,
/// fexit and LSM programs: the cgroup ones are attached per container anyway), and pins the
/// new links.
pub(crate) fn reattach(dir: &Path) -> Result<(), PinError> {
    let started = Instant::now();
    let progs = dir.join("progs");
    let entries = fs::read_dir(&progs).map_err(|source| PinError::Dir {
        path: progs.clone(),
        source,
    })?;
    let mut attached = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if attached_per_container(&name) {
            continue;
        }
        let path = e.path();
        let prog = Program::fd_from_pinned_path(&path).map_err(|source| PinError::Pin {
            path: path.clone(),
            source,
        })?;
        let fd = attach_again(prog.as_raw_fd());
        if fd < 0 {
            return Err(PinError::Load {
                what: format!("attach parked {name} again"),
                source: libbpf_rs::Error::from(io::Error::from_raw_os_error(-fd)),
            });
        }
        // SAFETY: the kernel just returned this link fd, owned by nobody else.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        pin_fd(link.as_fd(), &dir.join("links").join(&name))?;
        attached += 1;
    }
    info!(
        dir = %dir.display(),
        programs = attached,
        attach_ms = ms(started.elapsed()),
        "parked monitor programs attached again"
    );
    Ok(())
}

/// How long a program's attach is retried while its previous link is still being released.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Attaches a BTF-typed program again (it names its own attach point: no tracepoint name is
/// passed); the link fd, or the negative errno. The links a park unpinned are released after
/// an RCU grace period, and until then 5.10 refuses the same program on the same tracepoint
/// (EEXIST), and a trampoline still holding the program refuses it again (EBUSY): those
/// answers are retried for a moment.
fn attach_again(prog_fd: i32) -> i32 {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        // SAFETY: a valid program fd and a null name, which the kernel accepts for these.
        let fd =
            unsafe { libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), prog_fd) };
        if (fd != -libc::EEXIST && fd != -libc::EBUSY) || Instant::now() >= deadline {
            return fd;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The parked sets under `root`, of every build and mode, sorted.
pub(crate) fn parked_sets(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut parked: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|source| PinError::Dir {
            path: root.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_parked(p))
        .collect();
    parked.sort();
    Ok(parked)
}

/// Removes the parked sets of other builds under `root` (no holder of this build will attach
/// them again); this build's sets of other modes stay.
pub(crate) fn remove_other_builds_parked(root: &Path) {
    let this_build = version_dir(root)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for path in parked_sets(root).unwrap_or_default() {
        let ours = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&this_build));
        if !ours {
            match remove_pins(&path) {
                Ok(()) => info!(dir = %path.display(), "removed another build's parked programs"),
                Err(e) => warn!(error = %e, "remove another build's parked programs"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_and_fexit_programs_are_the_trampoline_ones() {
        let trampolines = ["lsm_exec", "lsm_file_open", "fexit_openat", "fexit_seccomp"];
        for name in trampolines {
            assert!(is_trampoline_program(name), "{name}");
        }
        for name in ["on_exec", "on_sys_exit_raw", "connect4"] {
            assert!(!is_trampoline_program(name), "{name}");
        }
    }
}
