//! File deny rules (file Block rules) through BPF-LSM: where it is in force, the forbidden
//! open fails with EACCES, the permitted neighbour opens, and the event names the rule and the
//! enforcer; where it is not, registering the rules fails with the reason (fail closed).

use std::path::{Path, PathBuf};

use palisade_monitor::{
    ContainerRules, Enforcer, FileOp, FileRule, FileTarget, MonitorError, NodeMonitor,
};

use crate::file_common::{refused, rule, try_open, Tree};
use crate::harness::*;

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
            FileRule {
                read_only: true,
                ..rule("file-readonly", FileTarget::Path(path("ro")))
            },
            FileRule {
                owner_only: true,
                ..rule("file-owner", FileTarget::Path(path("owned")))
            },
            FileRule {
                from_source: Some(cat),
                ..rule("file-source", FileTarget::Path(path("sourced")))
            },
        ],
        ..ContainerRules::default()
    }
}

fn read_secret() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/secret", libc::O_RDONLY)
}
fn read_secret_through_link() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/link", libc::O_RDONLY)
}
fn read_secret_relative() -> i32 {
    // SAFETY: a NUL-terminated constant path.
    if unsafe { libc::chdir(c"/tmp/palisade-monitor-lsm-files/dir".as_ptr()) } != 0 {
        return 200;
    }
    try_open(c"./..//secret", libc::O_RDONLY)
}
fn read_neighbour() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/neighbour", libc::O_RDONLY)
}
fn read_dir_file() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/dir/a", libc::O_RDONLY)
}
fn read_dir_subdir_file() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/dir/sub/b", libc::O_RDONLY)
}
fn read_tree_file() -> i32 {
    try_open(
        c"/tmp/palisade-monitor-lsm-files/tree/sub/b",
        libc::O_RDONLY,
    )
}
fn read_ro() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/ro", libc::O_RDONLY)
}
fn write_ro() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/ro", libc::O_WRONLY)
}
fn read_owned() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/owned", libc::O_RDONLY)
}
fn read_sourced() -> i32 {
    try_open(c"/tmp/palisade-monitor-lsm-files/sourced", libc::O_RDONLY)
}

/// A check: what, as which user, the act, the exit code it must end with, and the rule whose
/// refusal must be reported.
type Case<'a> = (&'a str, Option<u32>, &'a Act, i32, Option<&'a str>);

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
    let root = PinRoot::new("lsm-files");
    let cg = TestCgroup::new("lsm-files");
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    if !monitor.features().bpf_lsm {
        let err = match monitor.watch(cg.container("lsm-files"), rules()) {
            Ok(_) => panic!("file rules registered without bpf-lsm"),
            Err(e) => e,
        };
        assert!(matches!(err, MonitorError::NoBpfLsm { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("needs BPF-LSM"), "{text}");
        assert!(text.contains("file-path"), "{text}");
        // With nothing else asked, the container is still watched.
        drop(monitor.watch(cg.container("lsm-files"), ContainerRules::default()));
        return;
    }
    assert!(bpf_listed(), "bpf-lsm claimed without bpf among the LSMs");
    let watch = monitor.watch(cg.container("lsm-files"), rules()).unwrap();
    for e in watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfLsm, "{e:?}");
    }
    let w = Watched::from_parts(watch, monitor, rx, cg, root);
    let nobody = Some(65534);
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    let cat = cat.to_str().unwrap();
    let sourced = path("sourced");
    let cases: [Case<'_>; 14] = [
        (
            "the file",
            None,
            &Act::Call(read_secret),
            libc::EACCES,
            Some("file-path"),
        ),
        (
            "through a symlink",
            None,
            &Act::Call(read_secret_through_link),
            libc::EACCES,
            Some("file-path"),
        ),
        (
            "by a relative path",
            None,
            &Act::Call(read_secret_relative),
            libc::EACCES,
            Some("file-path"),
        ),
        ("the neighbour", None, &Act::Call(read_neighbour), 0, None),
        (
            "a file in the directory",
            None,
            &Act::Call(read_dir_file),
            libc::EACCES,
            Some("file-dir"),
        ),
        (
            "a file below the non-recursive directory",
            None,
            &Act::Call(read_dir_subdir_file),
            0,
            None,
        ),
        (
            "a file below the recursive directory",
            None,
            &Act::Call(read_tree_file),
            libc::EACCES,
            Some("file-tree"),
        ),
        ("readOnly: a read", None, &Act::Call(read_ro), 0, None),
        (
            "readOnly: a write",
            None,
            &Act::Call(write_ro),
            libc::EACCES,
            Some("file-readonly"),
        ),
        (
            "ownerOnly: the owner",
            None,
            &Act::Call(read_owned),
            0,
            None,
        ),
        (
            "ownerOnly: another user",
            nobody,
            &Act::Call(read_owned),
            libc::EACCES,
            Some("file-owner"),
        ),
        (
            "fromSource: another binary",
            None,
            &Act::Call(read_sourced),
            0,
            None,
        ),
        (
            "fromSource: the source",
            None,
            &exec(cat, &["cat", sourced.to_str().unwrap()]),
            1,
            Some("file-source"),
        ),
        (
            "the neighbour by another user",
            nobody,
            &Act::Call(read_neighbour),
            0,
            None,
        ),
    ];
    for (what, uid, act, want, rule) in cases {
        let (pid, st) = run(Some(&w.cg), uid, act);
        assert_eq!(exited(st), Some(want), "{what}: status {st:#x}");
        if let Some(name) = rule {
            let ev = refused(&w, pid, name, FileOp::Open, what);
            if name == "file-tree" {
                let e = ev.to_events("node");
                assert_eq!(e[0].evidence["path"], format!("{ROOT}/tree/.../b"), "{e:?}");
            }
        }
    }
    let hits = w.watch.rule_hits();
    let path_hits = hits.iter().find(|(n, _)| n == "file-path").map(|(_, h)| *h);
    assert_eq!(path_hits, Some(3), "{hits:?}");
}
