//! What the file rule tests share (`file_rules`, `file_ops`, `file_globs`): the rule they
//! build, the tree of files each names (made before, removed after), the raw calls their
//! forked children make, the registration with and without BPF-LSM, the table of checks and
//! the wait for a refusal's report.

use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use palisade_monitor::{
    ContainerRules, EventKind, FileOp, FileRule, FileTarget, MonitorError, MonitorEvent,
    NodeMonitor,
};

use crate::harness::{exited, run, until, Act, PinRoot, TestCgroup, Watched};

/// A registration BPF-LSM was not there for: the error, with what it was asked of (kept alive
/// for further checks; the pins go last).
pub struct NoLsm {
    pub err: MonitorError,
    pub monitor: NodeMonitor,
    pub cg: TestCgroup,
    _root: PinRoot,
}

/// Registers `rules` for a test container `name`. Where BPF-LSM is in force: the container
/// watched. Elsewhere the registration must be refused for want of BPF-LSM, with the reason
/// in its message: that refusal.
pub fn register(name: &str, rules: ContainerRules) -> Result<Watched, Box<NoLsm>> {
    let root = PinRoot::new(name);
    let cg = TestCgroup::new(name);
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    if monitor.features().bpf_lsm {
        let watch = monitor.watch(cg.container(name), rules).unwrap();
        return Ok(Watched::from_parts(watch, monitor, rx, cg, root));
    }
    let err = match monitor.watch(cg.container(name), rules) {
        Ok(_) => panic!("{name}: file rules registered without bpf-lsm"),
        Err(e) => e,
    };
    assert!(matches!(err, MonitorError::NoBpfLsm { .. }), "{err}");
    assert!(err.to_string().contains("needs BPF-LSM"), "{err}");
    Err(Box::new(NoLsm {
        err,
        monitor,
        cg,
        _root: root,
    }))
}

/// A check: what, as which user, the act, the exit code it must end with, and the rule and
/// operation whose refusal must be reported.
pub struct Case<'a> {
    pub what: &'a str,
    pub uid: Option<u32>,
    pub act: Act,
    pub want: i32,
    pub refusal: Option<(&'a str, FileOp)>,
}

impl<'a> Case<'a> {
    /// `call` fails with EACCES, refused by rule `name` on `op`.
    pub fn refused(what: &'a str, call: fn() -> i32, name: &'a str, op: FileOp) -> Self {
        Case {
            refusal: Some((name, op)),
            want: libc::EACCES,
            ..Case::passes(what, call)
        }
    }

    /// `call` succeeds (exits 0), nothing refused.
    pub fn passes(what: &'a str, call: fn() -> i32) -> Self {
        Case {
            what,
            uid: None,
            act: Act::Call(call),
            want: 0,
            refusal: None,
        }
    }

    /// The same as user `uid`.
    pub fn by(self, uid: u32) -> Self {
        Case {
            uid: Some(uid),
            ..self
        }
    }
}

/// Runs each case in `w`'s container: it must end with its exit code and, when it names one,
/// its refusal be reported. The reports, with their cases' names.
pub fn check<'a>(w: &Watched, cases: &[Case<'a>]) -> Vec<(&'a str, MonitorEvent)> {
    let mut reports = Vec::new();
    for c in cases {
        let (pid, st) = run(Some(&w.cg), c.uid, &c.act);
        assert_eq!(exited(st), Some(c.want), "{}: status {st:#x}", c.what);
        if let Some((name, op)) = c.refusal {
            reports.push((c.what, refused(w, pid, name, op, c.what)));
        }
    }
    reports
}

/// The kernel counted `want` refusals by rule `name`.
pub fn assert_hits(w: &Watched, name: &str, want: u64) {
    let hits = w.watch.rule_hits();
    let n = hits.iter().find(|(n, _)| n == name).map(|(_, h)| *h);
    assert_eq!(n, Some(want), "{name}: {hits:?}");
}

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

/// The same rule, refusing writes only (readOnly).
pub fn read_only(r: FileRule) -> FileRule {
    FileRule {
        read_only: true,
        ..r
    }
}

/// The same rule, refusing only callers that do not own the file (ownerOnly).
pub fn owner_only(r: FileRule) -> FileRule {
    FileRule {
        owner_only: true,
        ..r
    }
}

/// The same rule, applying only to processes running `source` (fromSource).
pub fn from_source(source: PathBuf, r: FileRule) -> FileRule {
    FileRule {
        from_source: Some(source),
        ..r
    }
}

/// The constant C path `$root$rel` (both literals), checked at compile time.
#[macro_export]
macro_rules! c_path {
    ($root:literal, $rel:literal) => {
        const {
            match std::ffi::CStr::from_bytes_with_nul(concat!($root, $rel, "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => panic!("a path with a NUL"),
            }
        }
    };
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

/// 0 when `p` opens for reading, else the errno. Raw syscalls only.
pub fn read(p: &CStr) -> i32 {
    try_open(p, libc::O_RDONLY)
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
