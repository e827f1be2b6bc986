//! File Block rules on globs (matchPatterns) through BPF-LSM: a glob the kernel can match is
//! matched on each name, so a file made after the watch started (by anyone) is refused like
//! one present before, and a new matching name cannot be made in the container; a glob the
//! kernel cannot match, with nothing matching at start, is recorded as refusing nothing.
//! Where BPF-LSM is not in force the rules are refused with the reason.

use std::path::{Path, PathBuf};

use palisade_monitor::{ContainerRules, Enforcer, FileOp, FileRule, FileTarget};

use crate::file_common::{assert_hits, check, rc, read, register, rule, try_open, Case, Tree};

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
        crate::c_path!("/tmp/palisade-monitor-lsm-globs/", $rel)
    };
}

fn open_long_key() -> i32 {
    read(at!(
        "keys/a-rather-long-name-for-a-key-file-of-some-service.key"
    ))
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

/// Where BPF-LSM is in force, files made after registration that a glob matches are refused
/// with EACCES and reported, the others open; elsewhere the rules are refused with the reason.
#[test]
fn globs_refuse_files_made_after_registration_under_bpf_lsm() {
    let _tree = tree();
    let Ok(w) = register("lsm-globs", rules()) else {
        return;
    };
    let record = w.watch.enforcement();
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
    const NEW: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    use FileOp::{Create, Open, Rename};
    #[rustfmt::skip]
    let cases = [
        Case::refused("a new key", || read(at!("keys/new.key")), "glob-key", Open),
        Case::passes("a new text file", || read(at!("keys/new.txt"))),
        Case::passes("a name ending past the glob", || read(at!("keys/x.keyx"))),
        Case::refused("a long key name", open_long_key, "glob-key", Open),
        Case::refused("id_rsa one down", || read(at!("deep/a/id_rsa")), "glob-deep", Open),
        Case::refused("id_dsa two down", || read(at!("deep/a/b/id_dsa")), "glob-deep", Open),
        // `**/`: the `/` after `**` is in the path (KubeArmor's globs), so not depth one
        Case::passes("id_rsa right in the directory", || read(at!("deep/id_rsa"))),
        Case::passes("id_rsa.pub", || read(at!("deep/a/id_rsa.pub"))),
        Case::refused("making a key", || try_open(at!("keys/made.key"), NEW), "glob-key", Create),
        Case::refused("renaming to a key", rename_to_key, "glob-key", Rename),
    ];
    check(&w, &cases);
    assert!(!path("keys/made.key").exists());
    assert!(path("keys/new.txt").exists());
    assert_hits(&w, "glob-key", 4);
}
