//! File Block rules on globs (matchPatterns) through BPF-LSM: a glob the kernel can match is
//! matched on each name, so a file made after the watch started (by anyone) is refused like
//! one present before, and a new matching name cannot be made in the container; a glob the
//! kernel cannot match, with nothing matching at start, is recorded as refusing nothing.
//! Where BPF-LSM is not in force the rules are refused with the reason.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use palisade_monitor::{
    ContainerRules, Enforcer, FileOp, FileRule, FileTarget, MonitorError, NodeMonitor,
};

use crate::file_common::{rc, refused, rule, try_open, Tree};
use crate::harness::*;

/// Fixed, so that the forked children use constant paths (they make raw syscalls only).
const ROOT: &str = "/tmp/palisade-monitor-lsm-globs";
/// A name longer than the kernel's 32-byte head and tail buffers.
const LONG: &str = "a-rather-long-name-for-a-key-file-of-some-service.key";

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn glob(name: &str, rel: &str) -> FileRule {
    rule(name, FileTarget::pattern(&format!("{ROOT}/{rel}")))
}

/// The directories the globs start from, empty at registration; removed when dropped.
fn tree() -> Tree {
    Tree::new(
        ROOT,
        &["keys", "deep/a/b"],
        &[],
        &[
            ("", 0o777),
            ("keys", 0o777),
            ("deep", 0o777),
            ("deep/a", 0o777),
            ("deep/a/b", 0o777),
        ],
    )
}

/// Files made after the watch started, outside the container.
fn add_files() {
    let long = format!("keys/{LONG}");
    for f in [
        "keys/new.key",
        "keys/new.txt",
        "keys/x.keyx",
        long.as_str(),
        "deep/id_rsa",
        "deep/a/id_rsa",
        "deep/a/id_rsa.pub",
        "deep/a/b/id_dsa",
    ] {
        std::fs::write(path(f), "x").unwrap();
    }
}

fn rules() -> ContainerRules {
    ContainerRules {
        deny_file: vec![
            glob("glob-key", "keys/*.key"),
            glob("glob-deep", "deep/**/id_?sa"),
            glob("glob-odd", "keys/*a*b"),
        ],
        ..ContainerRules::default()
    }
}

/// The constant C path of `$rel` in the tree.
macro_rules! at {
    ($rel:literal) => {
        const {
            match CStr::from_bytes_with_nul(
                concat!("/tmp/palisade-monitor-lsm-globs/", $rel, "\0").as_bytes(),
            ) {
                Ok(c) => c,
                Err(_) => panic!("a path with a NUL"),
            }
        }
    };
}

fn open_new_key() -> i32 {
    try_open(at!("keys/new.key"), libc::O_RDONLY)
}
fn open_new_txt() -> i32 {
    try_open(at!("keys/new.txt"), libc::O_RDONLY)
}
fn open_keyx() -> i32 {
    try_open(at!("keys/x.keyx"), libc::O_RDONLY)
}
fn open_long_key() -> i32 {
    try_open(
        at!("keys/a-rather-long-name-for-a-key-file-of-some-service.key"),
        libc::O_RDONLY,
    )
}
fn open_deep_rsa() -> i32 {
    try_open(at!("deep/a/id_rsa"), libc::O_RDONLY)
}
fn open_deeper_dsa() -> i32 {
    try_open(at!("deep/a/b/id_dsa"), libc::O_RDONLY)
}
fn open_shallow_rsa() -> i32 {
    try_open(at!("deep/id_rsa"), libc::O_RDONLY)
}
fn open_rsa_pub() -> i32 {
    try_open(at!("deep/a/id_rsa.pub"), libc::O_RDONLY)
}
fn create_key() -> i32 {
    try_open(
        at!("keys/made.key"),
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
    )
}
fn rename_to_key() -> i32 {
    // SAFETY: NUL-terminated constant paths.
    rc(unsafe {
        libc::rename(
            at!("keys/new.txt").as_ptr(),
            at!("keys/renamed.key").as_ptr(),
        )
    })
}

/// A check: what, the call, the errno it must end with, and the rule and operation whose
/// refusal must be reported.
type Case<'a> = (&'a str, fn() -> i32, i32, Option<(&'a str, FileOp)>);

/// Where BPF-LSM is in force, files made after registration that a glob matches are refused
/// with EACCES and reported, the others open; elsewhere the rules are refused with the reason.
#[test]
fn globs_refuse_files_made_after_registration_under_bpf_lsm() {
    let _tree = tree();
    let root = PinRoot::new("lsm-globs");
    let cg = TestCgroup::new("lsm-globs");
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let monitor = NodeMonitor::open(root.config(), tx).unwrap();
    if !monitor.features().bpf_lsm {
        let err = match monitor.watch(cg.container("lsm-globs"), rules()) {
            Ok(_) => panic!("glob rules registered without bpf-lsm"),
            Err(e) => e,
        };
        assert!(matches!(err, MonitorError::NoBpfLsm { .. }), "{err}");
        return;
    }
    let watch = monitor.watch(cg.container("lsm-globs"), rules()).unwrap();
    let record = watch.enforcement();
    let of = |name: &str| record.iter().find(|e| e.rule == name).unwrap().clone();
    assert_eq!(of("glob-key").enforcer, Enforcer::BpfLsm, "{record:?}");
    assert_eq!(of("glob-deep").enforcer, Enforcer::BpfLsm, "{record:?}");
    let odd = of("glob-odd");
    assert_eq!(odd.enforcer, Enforcer::AuditOnly, "{odd:?}");
    assert!(
        odd.note
            .as_deref()
            .unwrap_or("")
            .contains("nothing is refused"),
        "{odd:?}"
    );
    add_files();
    let w = Watched::from_parts(watch, monitor, rx, cg, root);
    let acces = libc::EACCES;
    let cases: [Case<'_>; 10] = [
        (
            "a new key",
            open_new_key,
            acces,
            Some(("glob-key", FileOp::Open)),
        ),
        ("a new text file", open_new_txt, 0, None),
        ("a name ending past the glob", open_keyx, 0, None),
        (
            "a long key name",
            open_long_key,
            acces,
            Some(("glob-key", FileOp::Open)),
        ),
        (
            "id_rsa one down",
            open_deep_rsa,
            acces,
            Some(("glob-deep", FileOp::Open)),
        ),
        (
            "id_dsa two down",
            open_deeper_dsa,
            acces,
            Some(("glob-deep", FileOp::Open)),
        ),
        // `**/`: the `/` after `**` is in the path (KubeArmor's globs), so not depth one
        ("id_rsa right in the directory", open_shallow_rsa, 0, None),
        ("id_rsa.pub", open_rsa_pub, 0, None),
        (
            "making a key",
            create_key,
            acces,
            Some(("glob-key", FileOp::Create)),
        ),
        (
            "renaming to a key",
            rename_to_key,
            acces,
            Some(("glob-key", FileOp::Rename)),
        ),
    ];
    for (what, call, want, rule) in cases {
        let (pid, st) = run(Some(&w.cg), None, &Act::Call(call));
        assert_eq!(exited(st), Some(want), "{what}: status {st:#x}");
        if let Some((name, op)) = rule {
            refused(&w, pid, name, op, what);
        }
    }
    assert!(!path("keys/made.key").exists());
    assert!(path("keys/new.txt").exists());
    let hits = w.watch.rule_hits();
    let key_hits = hits.iter().find(|(n, _)| n == "glob-key").map(|(_, h)| *h);
    assert_eq!(key_hits, Some(4), "{hits:?}");
}
