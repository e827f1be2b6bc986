//! What the file rule tests share (`file_rules`, `file_ops`, `file_globs`): the rule they
//! build, the tree of files each names (made before, removed after), the raw calls their
//! forked children make, and the wait for a refusal's report.

use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use palisade_monitor::{EventKind, FileOp, FileRule, FileTarget, MonitorEvent};

use crate::harness::{until, Watched};

/// A file Block rule on `target` with no conditions.
pub fn rule(name: &str, target: FileTarget) -> FileRule {
    FileRule {
        name: name.into(),
        target,
        read_only: false,
        owner_only: false,
        from_source: None,
        root: None,
        severity: 6,
        message: String::new(),
    }
}

/// A test's tree under a fixed root (so that the forked children use constant paths): made
/// afresh, removed when dropped.
pub struct Tree(pub &'static str);

impl Tree {
    /// `dirs` made, `files` written mode 0o666, then the root and `modes`' directories given
    /// their modes.
    pub fn new(root: &'static str, dirs: &[&str], files: &[&str], modes: &[(&str, u32)]) -> Self {
        let t = Tree(root);
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path(d)).unwrap();
        }
        for f in files {
            std::fs::write(t.path(f), "xyz").unwrap();
            std::fs::set_permissions(t.path(f), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        for (d, mode) in modes {
            std::fs::set_permissions(t.path(d), std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        t
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        PathBuf::from(self.0).join(rel)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// 0 when the call returned 0, else its errno.
pub fn rc(r: i32) -> i32 {
    if r == 0 {
        0
    } else {
        // SAFETY: reading this thread's errno.
        unsafe { *libc::__errno_location() }
    }
}

/// 0 when `p` opens with `flags` (mode 0o644 when it creates), else the errno. Raw syscalls
/// only.
pub fn try_open(p: &CStr, flags: i32) -> i32 {
    // SAFETY: a NUL-terminated constant path; the fd is closed at once.
    unsafe {
        let fd = libc::open(p.as_ptr(), flags, 0o644);
        if fd < 0 {
            return *libc::__errno_location();
        }
        libc::close(fd);
    }
    0
}

/// Waits for the report of rule `name` refusing `op` to process `pid` (`what` names the case
/// in failures): refused, blocked, by bpf-lsm, the operation in its evidence.
pub fn refused(w: &Watched, pid: i32, name: &str, op: FileOp, what: &str) -> MonitorEvent {
    let (ev, _) = until(&w.rx, what, |e| {
        e.process.pid == pid as u32
            && matches!(&e.kind, EventKind::FileDenied { rule: Some(r), op: o, .. }
                if r == name && *o == op)
    });
    assert!(
        matches!(ev.kind, EventKind::FileDenied { refused: true, .. }),
        "{what}: {:?}",
        ev.kind
    );
    let f = ev
        .findings
        .iter()
        .find(|f| f.rule == name)
        .expect("finding");
    assert_eq!(f.enforcer, "bpf-lsm", "{what}: {f:?}");
    assert_eq!(f.action, palisade_events::Action::Block, "{what}: {f:?}");
    let e = ev.to_events("node");
    assert_eq!(e[0].evidence["op"], op.as_str(), "{what}: {e:?}");
    ev
}
