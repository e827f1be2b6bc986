//! File deny rules (file Block rules) through BPF-LSM: where it is in force, the forbidden
//! open fails with EACCES, the permitted neighbour opens, and the event names the rule and the
//! enforcer; where it is not, registering the rules fails with the reason (fail closed).

use std::path::{Path, PathBuf};

use palisade_monitor::{ContainerRules, Enforcer, FileOp::Open, FileTarget};

use crate::file_common::{
    assert_hits, check, from_source, owner_only, read, read_only, register, rule, try_open, Case,
    Tree,
};
use crate::harness::exec;

/// Fixed, so that the forked children open constant paths (they make raw syscalls only).
const ROOT: &str = "/tmp/palisade-monitor-lsm-files";

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// The tree the rules name, readable by everyone; removed when dropped.
fn tree() -> Tree {
    let t = Tree::new(
        ROOT,
        &["dir/sub", "tree/sub"],
        &[
            "secret",
            "neighbour",
            "dir/a",
            "dir/sub/b",
            "tree/sub/b",
            "ro",
            "owned",
            "sourced",
        ],
        &[
            ("", 0o755),
            ("dir", 0o755),
            ("dir/sub", 0o755),
            ("tree", 0o755),
            ("tree/sub", 0o755),
        ],
    );
    std::os::unix::fs::symlink(path("secret"), path("link")).unwrap();
    t
}

fn rules() -> ContainerRules {
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    ContainerRules {
        deny_file: vec![
            rule("file-path", FileTarget::Path(path("secret"))),
            rule(
                "file-dir",
                FileTarget::Directory {
                    path: path("dir"),
                    recursive: false,
                },
            ),
            rule(
                "file-tree",
                FileTarget::Directory {
                    path: path("tree"),
                    recursive: true,
                },
            ),
            read_only(rule("file-readonly", FileTarget::Path(path("ro")))),
            owner_only(rule("file-owner", FileTarget::Path(path("owned")))),
            from_source(cat, rule("file-source", FileTarget::Path(path("sourced")))),
        ],
        ..ContainerRules::default()
    }
}

/// The constant C path of `$rel` in the tree.
macro_rules! at {
    ($rel:literal) => {
        crate::c_path!("/tmp/palisade-monitor-lsm-files/", $rel)
    };
}

fn read_secret_relative() -> i32 {
    // SAFETY: a NUL-terminated constant path.
    if unsafe { libc::chdir(at!("dir").as_ptr()) } != 0 {
        return 200;
    }
    read(c"./..//secret")
}

/// Whether `bpf` is among the running kernel's active LSMs.
fn bpf_listed() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .unwrap_or_default()
        .trim()
        .split(',')
        .any(|l| l == "bpf")
}

/// Where BPF-LSM is in force, every file rule kind refuses what it names with EACCES and lets
/// its neighbour through; elsewhere the same rules are refused with the reason.
#[test]
fn file_rules_refuse_with_eacces_under_bpf_lsm_and_are_refused_without_it() {
    let _tree = tree();
    let w = match register("lsm-files", rules()) {
        Ok(w) => w,
        Err(no) => {
            assert!(no.err.to_string().contains("file-path"), "{}", no.err);
            // With nothing else asked, the container is still watched.
            drop(
                no.monitor
                    .watch(no.cg.container("lsm-files"), ContainerRules::default()),
            );
            return;
        }
    };
    assert!(bpf_listed(), "bpf-lsm claimed without bpf among the LSMs");
    for e in w.watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfLsm, "{e:?}");
    }
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    let cat = cat.to_str().unwrap();
    let sourced = path("sourced");
    let by_cat = Case {
        what: "fromSource: the source",
        uid: None,
        act: exec(cat, &["cat", sourced.to_str().unwrap()]),
        want: 1,
        refusal: Some(("file-source", Open)),
    };
    #[rustfmt::skip]
    let cases = [
        Case::refused("the file", || read(at!("secret")), "file-path", Open),
        Case::refused("through a symlink", || read(at!("link")), "file-path", Open),
        Case::refused("by a relative path", read_secret_relative, "file-path", Open),
        Case::passes("the neighbour", || read(at!("neighbour"))),
        Case::refused("a file in the directory", || read(at!("dir/a")), "file-dir", Open),
        Case::passes("a file below the non-recursive directory", || read(at!("dir/sub/b"))),
        Case::refused("a file below the recursive directory", || read(at!("tree/sub/b")),
            "file-tree", Open),
        Case::passes("readOnly: a read", || read(at!("ro"))),
        Case::refused("readOnly: a write", || try_open(at!("ro"), libc::O_WRONLY),
            "file-readonly", Open),
        Case::passes("ownerOnly: the owner", || read(at!("owned"))),
        Case::refused("ownerOnly: another user", || read(at!("owned")), "file-owner", Open)
            .by(65534),
        Case::passes("fromSource: another binary", || read(at!("sourced"))),
        by_cat,
        Case::passes("the neighbour by another user", || read(at!("neighbour"))).by(65534),
    ];
    for (what, ev) in check(&w, &cases) {
        if what == "a file below the recursive directory" {
            let e = ev.to_events("node");
            assert_eq!(e[0].evidence["path"], format!("{ROOT}/tree/.../b"), "{e:?}");
        }
    }
    assert_hits(&w, "file-path", 3);
}
