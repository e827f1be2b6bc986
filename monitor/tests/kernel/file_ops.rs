//! File Block rules beyond the open, through BPF-LSM: removing, renaming, hard-linking,
//! truncating, chmod and chown of a covered file, and making a new name (file, directory,
//! symlink, link, rename target) in a covered directory fail with EACCES and are reported with
//! the operation and the enforcer, while the same operations on a neighbour work; where
//! BPF-LSM is not in force the rules are refused with the reason.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use palisade_monitor::{ContainerRules, Enforcer, FileOp, FileTarget};

use crate::file_common::{
    assert_hits, check, from_source, owner_only, rc, read, read_only, refused, register, rule,
    try_open, Case, Tree,
};
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
            read_only(rule("ops-readonly", FileTarget::Path(path("ro")))),
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
            owner_only(rule("ops-owner", FileTarget::Path(path("owned")))),
            from_source(rm, rule("ops-source", FileTarget::Path(path("sourced")))),
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

/// The constant C path of `$rel` in the tree.
macro_rules! at {
    ($rel:literal) => {
        crate::c_path!("/tmp/palisade-monitor-lsm-ops/", $rel)
    };
}

fn rmdir_tree_sub() -> i32 {
    // SAFETY: a NUL-terminated constant path.
    rc(unsafe { libc::rmdir(at!("tree/sub").as_ptr()) })
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

/// Where BPF-LSM is in force, every change a file Block rule covers fails with EACCES and is
/// reported, the neighbours' work; elsewhere the rules are refused with the reason.
#[test]
fn file_rules_refuse_removal_rename_link_and_attribute_changes_under_bpf_lsm() {
    let _tree = tree();
    let Ok(w) = register("lsm-ops", rules()) else {
        return;
    };
    for e in w.watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfLsm, "{e:?}");
    }
    use FileOp::{Create, Link, Mkdir, Rename, Rmdir, Setattr, Symlink, Unlink};
    #[rustfmt::skip]
    let cases = [
        Case::refused("rm", || unlink(at!("secret")), "ops-path", Unlink),
        Case::refused("mv away", || rename(at!("secret"), at!("free/moved")), "ops-path", Rename),
        Case::refused("mv over", || rename(at!("free/a"), at!("secret")), "ops-path", Rename),
        Case::refused("ln", || link(at!("secret"), at!("free/linked")), "ops-path", Link),
        Case::refused("truncate", || truncate(at!("secret")), "ops-path", Setattr),
        Case::refused("chmod", || chmod(at!("secret")), "ops-path", Setattr),
        Case::refused("chown", || chown(at!("secret")), "ops-path", Setattr),
        Case::passes("readOnly: a read", || read(at!("ro"))),
        Case::refused("readOnly: rm", || unlink(at!("ro")), "ops-readonly", Unlink),
        Case::refused("readOnly: truncate", || truncate(at!("ro")), "ops-readonly", Setattr),
        Case::refused("dir: mkdir", || mkdir(at!("dir/new")), "ops-dir", Mkdir),
        Case::refused("dir: create", || create(at!("dir/new")), "ops-dir", Create),
        Case::refused("dir: ln -s", || symlink(at!("secret"), at!("dir/sym")), "ops-dir", Symlink),
        Case::refused("dir: mv out", || rename(at!("dir/a"), at!("free/out")), "ops-dir", Rename),
        Case::refused("dir: ln out", || link(at!("dir/a"), at!("free/out")), "ops-dir", Link),
        Case::refused("dir: mv in", || rename(at!("free/b"), at!("dir/b")), "ops-dir", Rename),
        Case::refused("dir: rm", || unlink(at!("dir/a")), "ops-dir", Unlink),
        Case::refused("tree: rmdir below", rmdir_tree_sub, "ops-tree", Rmdir),
        Case::refused("tree: mkdir two down", || mkdir(at!("tree/sub/new")), "ops-tree", Mkdir),
        Case::passes("the neighbours", neighbour_ops),
        Case::refused("ownerOnly: another user's rm", || unlink(at!("owned")), "ops-owner", Unlink)
            .by(65534),
        Case::passes("ownerOnly: the owner's mv", || rename(at!("owned"), at!("owned2"))),
    ];
    check(&w, &cases);
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
    let (_, st) = run(Some(&w.cg), None, &Act::Call(|| unlink(at!("sourced"))));
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
    assert_hits(&w, "ops-dir", 7);
}
