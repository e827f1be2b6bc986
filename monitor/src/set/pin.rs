//! The pins of a set: its directory (per build), the node-wide lock over the pin root, pinning
//! one object, and removing a set's pins.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::PinError;

/// The cgroup sock_addr programs, attached per container, with their attach types.
pub(crate) const CGROUP_PROGS: &[(&str, libbpf_rs::libbpf_sys::bpf_attach_type)] = &[
    ("connect4", libbpf_rs::libbpf_sys::BPF_CGROUP_INET4_CONNECT),
    ("connect6", libbpf_rs::libbpf_sys::BPF_CGROUP_INET6_CONNECT),
    ("sendmsg4", libbpf_rs::libbpf_sys::BPF_CGROUP_UDP4_SENDMSG),
    ("sendmsg6", libbpf_rs::libbpf_sys::BPF_CGROUP_UDP6_SENDMSG),
];

/// The cgroup sock program checking socket creation, attached per container with socket
/// rules; optional: a kernel refusing it still gets the rest.
pub(crate) const SOCK_PROG: (&str, libbpf_rs::libbpf_sys::bpf_attach_type) = (
    "sock_create",
    libbpf_rs::libbpf_sys::BPF_CGROUP_INET_SOCK_CREATE,
);

/// The program recording a learning container's system calls (`bpf/learn.h`), attached while
/// the node has a learning container, not by the loader.
pub(crate) const LEARN_PROG: &str = "learn_sys_enter";

/// The programs recording a learning container's capability checks (`bpf/learn.h`): fexit on
/// `cap_capable`, or its tracepoint; the loader loads one of them at most. Attached like
/// [`LEARN_PROG`].
pub(crate) const LEARN_CAP_FEXIT: &str = "learn_cap_fexit";
pub(crate) const LEARN_CAP_TP: &str = "learn_cap_tp";

/// The programs attached per container (to its cgroup) or while the node learns, not by the
/// loader (nor again when a parked set is attached).
pub(crate) fn attached_per_container(name: &str) -> bool {
    name == SOCK_PROG.0
        || name == LEARN_PROG
        || name == LEARN_CAP_FEXIT
        || name == LEARN_CAP_TP
        || CGROUP_PROGS.iter().any(|(n, _)| *n == name)
}

/// Exclusive lock over the pin root; dropping it closes the fd and releases the lock.
pub(crate) struct RootLock {
    _fd: OwnedFd,
}

/// The directory of this build's pins: the object's hash is part of the name, so shims built
/// from different programs never share maps with mismatched layouts.
pub(crate) fn version_dir(root: &Path) -> PathBuf {
    // The object's FNV-1a hash is taken by build.rs: hashing it here would page the whole
    // embedded object into every shim that only joins.
    let hash = env!("PALISADE_BPF_HASH");
    // bpffs refuses names with dots.
    let version = env!("CARGO_PKG_VERSION").replace('.', "_");
    root.join(format!("v{version}-{hash}"))
}

/// Takes the node-wide lock: flock on the pin root directory (bpffs holds no regular files,
/// and the root itself is never removed, so it is a stable lock object).
pub(crate) fn lock_root(root: &Path) -> Result<RootLock, PinError> {
    fs::create_dir_all(root).map_err(|source| PinError::Dir {
        path: root.to_path_buf(),
        source,
    })?;
    let c = CString::new(root.as_os_str().as_bytes()).map_err(|_| PinError::Dir {
        path: root.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: c is a valid path; the returned fd is checked before use.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(PinError::Lock {
            path: root.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(PinError::Lock {
            path: root.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(RootLock { _fd: fd })
}

pub(crate) fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<(), PinError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| PinError::Pin {
        path: path.to_path_buf(),
        source: libbpf_rs::Error::from(io::Error::from(io::ErrorKind::InvalidInput)),
    })?;
    // SAFETY: valid fd and NUL-terminated path.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if rc != 0 {
        return Err(PinError::Pin {
            path: path.to_path_buf(),
            source: libbpf_rs::Error::from(io::Error::last_os_error()),
        });
    }
    Ok(())
}

/// Removes every pin of `dir` and the directory: links first (detaching the programs), then
/// programs and maps. Objects still referenced by an open fd live on until it is closed.
pub(crate) fn remove_pins(dir: &Path) -> Result<(), PinError> {
    for sub in ["links", "progs", "maps"] {
        let p = dir.join(sub);
        unpin_entries(&p)?;
        if p.exists() {
            fs::remove_dir(&p).map_err(|source| PinError::Dir { path: p, source })?;
        }
    }
    if dir.exists() {
        fs::remove_dir(dir).map_err(|source| PinError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Unpins every entry of the directory `dir` (none when it does not exist).
pub(crate) fn unpin_entries(dir: &Path) -> Result<(), PinError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            fs::remove_file(e.path()).map_err(|source| PinError::Dir {
                path: e.path(),
                source,
            })?;
        }
    }
    Ok(())
}
