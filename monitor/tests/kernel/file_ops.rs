//! File Block rules beyond the open, through BPF-LSM: removing, renaming, hard-linking,
//! truncating, chmod and chown of a covered file, and making a new name (file, directory,
//! symlink, link, rename target) in a covered directory fail with EACCES and are reported with
//! the operation and the enforcer, while the same operations on a neighbour work; where
//! BPF-LSM is not in force the rules are refused with the reason.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use palisade_monitor::{
    ContainerRules, Enforcer, FileOp, FileRule, FileTarget, MonitorError, NodeMonitor,
};

use crate::file_common::{rc, refused, rule, try_open, Tree};
use crate::harness::*;

/// Fixed, so that the forked children use constant paths (they make raw syscalls only).
const ROOT: &str = "/tmp/palisade-monitor-lsm-ops";

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// The tree the rules name, writable by everyone (so that the ownerOnly case is refused by
/// the rule, not by the permissions); removed when dropped.
fn tree() -> Tree {
    Tree::new(
        ROOT,
        &["dir", "tree/sub", "free"],
        &[
            "secret", "ro", "owned", "sourced", "dir/a", "free/a", "free/b", "free/c",
        ],
        &[
            ("", 0o777),
            ("dir", 0o777),
            ("tree", 0o777),
            ("tree/sub", 0o777),
            ("free", 0o777),
        ],
    )
}

fn rules() -> ContainerRules {
    let rm = std::fs::canonicalize("/bin/rm").unwrap();
    ContainerRules {
        deny_file: vec![
            rule("ops-path", FileTarget::Path(path("secret"))),
            FileRule {
                read_only: true,
                ..rule("ops-readonly", FileTarget::Path(path("ro")))
            },
            rule(
                "ops-dir",
                FileTarget::Directory {
                    path: path("dir"),
                    recursive: false,
                },
            ),
            rule(
                "ops-tree",
                FileTarget::Directory {
                    path: path("tree"),
                    recursive: true,
                },
            ),
            FileRule {
                owner_only: true,
                ..rule("ops-owner", FileTarget::Path(path("owned")))
            },
            FileRule {
                from_source: Some(rm),
                ..rule("ops-source", FileTarget::Path(path("sourced")))
            },
        ],
        ..ContainerRules::default()
    }
}

fn unlink(p: &CStr) -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::unlink(p.as_ptr()) })
}
fn rename(from: &CStr, to: &CStr) -> i32 {
    // SAFETY: NUL-terminated constant paths.
    rc(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) })
}
fn link(from: &CStr, to: &CStr) -> i32 {
    // SAFETY: NUL-terminated constant paths.
    rc(unsafe { libc::link(from.as_ptr(), to.as_ptr()) })
}
fn truncate(p: &CStr) -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::truncate(p.as_ptr(), 0) })
}
fn chmod(p: &CStr) -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::chmod(p.as_ptr(), 0o644) })
}
fn chown(p: &CStr) -> i32 {
    // SAFETY: a NUL-terminated constant path; root keeps the owner it has.
    rc(unsafe { libc::chown(p.as_ptr(), 0, 0) })
}
fn mkdir(p: &CStr) -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::mkdir(p.as_ptr(), 0o755) })
}
fn create(p: &CStr) -> i32 {
    try_open(p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)
}
fn symlink(target: &CStr, p: &CStr) -> i32 {
    // SAFETY: NUL-terminated constant paths.
    rc(unsafe { libc::symlink(target.as_ptr(), p.as_ptr()) })
}
fn read(p: &CStr) -> i32 {
    try_open(p, libc::O_RDONLY)
}

/// The constant C path of `$rel` in the tree.
macro_rules! at {
    ($rel:literal) => {
        const {
            match CStr::from_bytes_with_nul(
                concat!("/tmp/palisade-monitor-lsm-ops/", $rel, "\0").as_bytes(),
            ) {
                Ok(c) => c,
                Err(_) => panic!("a path with a NUL"),
            }
        }
    };
}

fn unlink_secret() -> i32 {
    unlink(at!("secret"))
}
fn rename_secret() -> i32 {
    rename(at!("secret"), at!("free/moved"))
}
fn rename_over_secret() -> i32 {
    rename(at!("free/a"), at!("secret"))
}
fn link_secret() -> i32 {
    link(at!("secret"), at!("free/linked"))
}
fn truncate_secret() -> i32 {
    truncate(at!("secret"))
}
fn chmod_secret() -> i32 {
    chmod(at!("secret"))
}
fn chown_secret() -> i32 {
    chown(at!("secret"))
}
fn read_ro() -> i32 {
    read(at!("ro"))
}
fn unlink_ro() -> i32 {
    unlink(at!("ro"))
}
fn truncate_ro() -> i32 {
    truncate(at!("ro"))
}
fn mkdir_in_dir() -> i32 {
    mkdir(at!("dir/new"))
}
fn create_in_dir() -> i32 {
    create(at!("dir/new"))
}
fn symlink_in_dir() -> i32 {
    symlink(at!("secret"), at!("dir/sym"))
}
fn move_out_of_dir() -> i32 {
    rename(at!("dir/a"), at!("free/out"))
}
fn link_out_of_dir() -> i32 {
    link(at!("dir/a"), at!("free/out"))
}
fn move_into_dir() -> i32 {
    rename(at!("free/b"), at!("dir/b"))
}
fn unlink_in_dir() -> i32 {
    unlink(at!("dir/a"))
}
fn rmdir_tree_sub() -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::rmdir(at!("tree/sub").as_ptr()) })
}
fn mkdir_deep_in_tree() -> i32 {
    mkdir(at!("tree/sub/new"))
}
fn neighbour_ops() -> i32 {
    let steps = [
        chmod(at!("free/c")),
        truncate(at!("free/c")),
        link(at!("free/c"), at!("free/c2")),
        rename(at!("free/c2"), at!("free/c3")),
        unlink(at!("free/c3")),
        mkdir(at!("free/d")),
        create(at!("free/d/f")),
        symlink(at!("free/c"), at!("free/s")),
    ];
    steps.into_iter().find(|&e| e != 0).unwrap_or(0)
}
fn unlink_owned() -> i32 {
    unlink(at!("owned"))
}
fn rename_owned() -> i32 {
    rename(at!("owned"), at!("owned2"))
}
fn unlink_sourced() -> i32 {
    unlink(at!("sourced"))
}

/// A check: what, as which user, the call, the errno it must end with, and the rule and
/// operation whose refusal must be reported.
type Case<'a> = (
    &'a str,
    Option<u32>,
    fn() -> i32,
    i32,
    Option<(&'a str, FileOp)>,
);

/// Where BPF-LSM is in force, every change a file Block rule covers fails with EACCES and is
/// reported, the neighbours' work; elsewhere the rules are refused with the reason.
#[test]
fn file_rules_refuse_removal_rename_link_and_attribute_changes_under_bpf_lsm() {
    let _tree = tree();
    let root = PinRoot::new("lsm-ops");
    let cg = TestCgroup::new("lsm-ops");
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    if !monitor.features().bpf_lsm {
        let err = match monitor.watch(cg.container("lsm-ops"), rules()) {
            Ok(_) => panic!("file rules registered without bpf-lsm"),
            Err(e) => e,
        };
        assert!(matches!(err, MonitorError::NoBpfLsm { .. }), "{err}");
        assert!(err.to_string().contains("needs BPF-LSM"), "{err}");
        return;
    }
    let watch = monitor.watch(cg.container("lsm-ops"), rules()).unwrap();
    for e in watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfLsm, "{e:?}");
    }
    let w = Watched::from_parts(watch, monitor, rx, cg, root);
    let acces = libc::EACCES;
    let nobody = Some(65534);
    let path_rule = |op| Some(("ops-path", op));
    let cases: [Case<'_>; 22] = [
        ("rm", None, unlink_secret, acces, path_rule(FileOp::Unlink)),
        (
            "mv away",
            None,
            rename_secret,
            acces,
            path_rule(FileOp::Rename),
        ),
        (
            "mv over",
            None,
            rename_over_secret,
            acces,
            path_rule(FileOp::Rename),
        ),
        ("ln", None, link_secret, acces, path_rule(FileOp::Link)),
        (
            "truncate",
            None,
            truncate_secret,
            acces,
            path_rule(FileOp::Setattr),
        ),
        (
            "chmod",
            None,
            chmod_secret,
            acces,
            path_rule(FileOp::Setattr),
        ),
        (
            "chown",
            None,
            chown_secret,
            acces,
            path_rule(FileOp::Setattr),
        ),
        ("readOnly: a read", None, read_ro, 0, None),
        (
            "readOnly: rm",
            None,
            unlink_ro,
            acces,
            Some(("ops-readonly", FileOp::Unlink)),
        ),
        (
            "readOnly: truncate",
            None,
            truncate_ro,
            acces,
            Some(("ops-readonly", FileOp::Setattr)),
        ),
        (
            "dir: mkdir",
            None,
            mkdir_in_dir,
            acces,
            Some(("ops-dir", FileOp::Mkdir)),
        ),
        (
            "dir: create",
            None,
            create_in_dir,
            acces,
            Some(("ops-dir", FileOp::Create)),
        ),
        (
            "dir: ln -s",
            None,
            symlink_in_dir,
            acces,
            Some(("ops-dir", FileOp::Symlink)),
        ),
        (
            "dir: mv out",
            None,
            move_out_of_dir,
            acces,
            Some(("ops-dir", FileOp::Rename)),
        ),
        (
            "dir: ln out",
            None,
            link_out_of_dir,
            acces,
            Some(("ops-dir", FileOp::Link)),
        ),
        (
            "dir: mv in",
            None,
            move_into_dir,
            acces,
            Some(("ops-dir", FileOp::Rename)),
        ),
        (
            "dir: rm",
            None,
            unlink_in_dir,
            acces,
            Some(("ops-dir", FileOp::Unlink)),
        ),
        (
            "tree: rmdir below",
            None,
            rmdir_tree_sub,
            acces,
            Some(("ops-tree", FileOp::Rmdir)),
        ),
        (
            "tree: mkdir two down",
            None,
            mkdir_deep_in_tree,
            acces,
            Some(("ops-tree", FileOp::Mkdir)),
        ),
        ("the neighbours", None, neighbour_ops, 0, None),
        (
            "ownerOnly: another user's rm",
            nobody,
            unlink_owned,
            acces,
            Some(("ops-owner", FileOp::Unlink)),
        ),
        ("ownerOnly: the owner's mv", None, rename_owned, 0, None),
    ];
    for (what, uid, call, want, rule) in cases {
        let (pid, st) = run(Some(&w.cg), uid, &Act::Call(call));
        assert_eq!(exited(st), Some(want), "{what}: status {st:#x}");
        if let Some((name, op)) = rule {
            refused(&w, pid, name, op, what);
        }
    }
    // fromSource: rm is refused, another binary removes the file
    let rm = std::fs::canonicalize("/bin/rm").unwrap();
    let sourced = path("sourced");
    let act = exec(
        rm.to_str().unwrap(),
        &["rm", "-f", sourced.to_str().unwrap()],
    );
    let (pid, st) = run(Some(&w.cg), None, &act);
    assert_eq!(
        exited(st),
        Some(1),
        "fromSource: the source: status {st:#x}"
    );
    refused(
        &w,
        pid,
        "ops-source",
        FileOp::Unlink,
        "fromSource: the source",
    );
    assert!(sourced.exists(), "rm removed the file");
    let (_, st) = run(Some(&w.cg), None, &Act::Call(unlink_sourced));
    assert_eq!(exited(st), Some(0), "fromSource: another binary: {st:#x}");
    for p in ["secret", "ro", "dir/a", "tree/sub"] {
        assert!(path(p).exists(), "{p} is gone");
    }
    for p in [
        "free/moved",
        "free/linked",
        "free/out",
        "dir/new",
        "dir/sym",
        "dir/b",
    ] {
        assert!(!path(p).exists(), "{p} was made");
    }
    assert_eq!(std::fs::read(path("secret")).unwrap(), b"xyz", "truncated");
    let hits = w.watch.rule_hits();
    let dir_hits = hits.iter().find(|(n, _)| n == "ops-dir").map(|(_, h)| *h);
    assert_eq!(dir_hits, Some(7), "{hits:?}");
}
