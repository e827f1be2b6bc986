//! File reads and writes the detections judge: reads on a secret mount however the path is
//! spelled, and writes below system directories judged on the file, not the path.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_monitor::{ContainerRules, EventKind, MonitorEvent, SyscallHook};

use crate::harness::*;

/// A tmpfs mounted for one test, unmounted when dropped.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated strings; a fresh tmpfs on a directory of our own.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs on {}", path.display());
        TmpfsMount(path)
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let c = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the tmpfs this value mounted.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// With either syscall hook.
#[test]
fn reads_on_a_secret_mount_are_reported_however_the_path_is_spelled() {
    with_each_hook(check_secret_reads);
}

fn check_secret_reads(hook: SyscallHook) {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = TmpfsMount::new(tmp.path().join("secrets"));
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(secrets.0.join("token"), "t").unwrap();
    std::fs::write(plain.join("token"), "p").unwrap();
    let rules = ContainerRules {
        secret_mounts: vec![secrets.0.clone()],
        ..ContainerRules::default()
    };
    let w = Watched::on_hook("secret", hook, rules);
    // relative to the mount, a lookalike off it, then a spelling no prefix test expects
    let script = format!(
        "cd {s} && cat token >/dev/null && cat ../plain/token >/dev/null && cat {t}/./secrets//token >/dev/null",
        s = secrets.0.display(),
        t = tmp.path().display()
    );
    let (_, st) = run(Some(&w.cg), None, &exec("/bin/sh", &["sh", "-c", &script]));
    assert_eq!(exited(st), Some(0));
    let is_open = |e: &MonitorEvent, want: &str| matches!(&e.kind, EventKind::Open { path, .. } if path == want);
    let (first, _) = until(&w.rx, "relative secret read", |e| is_open(e, "token"));
    let spelled = format!("{}/./secrets//token", tmp.path().display());
    let (last, between) = until(&w.rx, "oddly spelled secret read", |e| is_open(e, &spelled));
    for ev in [&first, &last] {
        assert!(
            matches!(ev.kind, EventKind::Open { secret: true, .. }),
            "{:?}",
            ev.kind
        );
        let rules: Vec<&str> = ev.findings.iter().map(|f| f.rule.as_str()).collect();
        assert!(rules.contains(&"service-account-token-read"), "{rules:?}");
    }
    assert!(
        !between.iter().any(|e| is_open(e, "../plain/token")),
        "a read off the secret mount was reported: {between:#?}"
    );
}

const SYSDIR_ROOT: &str = "/tmp/palisade-monitor-sysdir";
const SYSDIR_ROOT_RAW: &str = "/tmp/palisade-monitor-sysdir-raw";

/// In a chroot at `root`: a write by a path relative to /etc, a write to a lookalike /etcx,
/// and a read below /etc. Raw calls only (it runs in a forked child).
fn sysdir_writes(root: &std::ffi::CStr) -> i32 {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    // SAFETY: raw system calls on NUL-terminated constants, no allocation.
    unsafe {
        if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/etc".as_ptr()) != 0 {
            return 1;
        }
        for (path, fl) in [
            (c"written", flags),
            (c"/etcx/written", flags),
            (c"hostname", libc::O_RDONLY),
        ] {
            let fd = libc::open(path.as_ptr(), fl, 0o644);
            if fd < 0 {
                return 2;
            }
            libc::close(fd);
        }
    }
    0
}

fn sysdir_writes_plain() -> i32 {
    sysdir_writes(c"/tmp/palisade-monitor-sysdir")
}

fn sysdir_writes_raw() -> i32 {
    sysdir_writes(c"/tmp/palisade-monitor-sysdir-raw")
}

/// With either syscall hook.
#[test]
fn writes_below_system_dirs_are_judged_on_the_file_not_the_path() {
    with_each_hook(check_sysdir_writes);
}

fn check_sysdir_writes(hook: SyscallHook) {
    let (dir, call): (_, fn() -> i32) = if hook == SyscallHook::RawSysExit {
        (SYSDIR_ROOT_RAW, sysdir_writes_raw)
    } else {
        (SYSDIR_ROOT, sysdir_writes_plain)
    };
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["etc", "etcx"] {
        std::fs::create_dir_all(Path::new(dir).join(sub)).unwrap();
    }
    std::fs::write(Path::new(dir).join("etc/hostname"), "h").unwrap();
    let w = Watched::on_hook("sysdir", hook, ContainerRules::default());
    let (pid, st) = run(Some(&w.cg), None, &Act::Call(call));
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(exited(st), Some(0));
    let system_dir = |e: &MonitorEvent, want: &str| match &e.kind {
        EventKind::Open {
            path, system_dir, ..
        } if path == want && e.process.pid == pid as u32 => Some(*system_dir),
        _ => None,
    };
    let (relative, _) = until(&w.rx, "relative write", |e| {
        system_dir(e, "written").is_some()
    });
    let (lookalike, between) = until(&w.rx, "lookalike write", |e| {
        system_dir(e, "/etcx/written").is_some()
    });
    assert_eq!(system_dir(&relative, "written"), Some(true));
    assert_eq!(system_dir(&lookalike, "/etcx/written"), Some(false));
    assert!(between.is_empty(), "unexpected events: {between:#?}");
    // the read below /etc is not a write: the kernel does not even send it
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<MonitorEvent> = w.rx.try_iter().collect();
    assert!(
        !late.iter().any(|e| system_dir(e, "hostname").is_some()),
        "{late:#?}"
    );
}

/// With either syscall hook.
#[test]
fn credential_file_reads_are_reported_by_inode_and_other_reads_are_not() {
    with_each_hook(check_credential_reads);
}

fn check_credential_reads(hook: SyscallHook) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for dir in ["etc", "root/.aws"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("root/.aws/credentials"), "[default]\n").unwrap();
    // a hard link elsewhere is the same file
    std::fs::hard_link(root.join("etc/shadow"), root.join("shadow-link")).unwrap();
    let rules = ContainerRules {
        process_root: Some(root.to_path_buf()),
        ..ContainerRules::default()
    };
    let w = Watched::on_hook("creds", hook, rules);
    let script = format!(
        "cd {r}/etc && cat passwd >/dev/null && cat shadow >/dev/null && cat ../root/.aws/credentials >/dev/null && cat {r}//shadow-link >/dev/null",
        r = root.display()
    );
    let (_, st) = run(Some(&w.cg), None, &exec("/bin/sh", &["sh", "-c", &script]));
    assert_eq!(exited(st), Some(0));
    let is_open = |e: &MonitorEvent, want: &str| matches!(&e.kind, EventKind::Open { path, .. } if path == want);
    let (shadow, before) = until(&w.rx, "relative read of shadow", |e| is_open(e, "shadow"));
    let (aws, _) = until(&w.rx, "read of the aws credentials", |e| {
        is_open(e, "../root/.aws/credentials")
    });
    let link = format!("{}//shadow-link", root.display());
    let (linked, _) = until(&w.rx, "read through a hard link", |e| is_open(e, &link));
    for ev in [&shadow, &aws, &linked] {
        assert!(
            matches!(
                ev.kind,
                EventKind::Open {
                    credential: true,
                    ..
                }
            ),
            "{:?}",
            ev.kind
        );
        let rules: Vec<&str> = ev.findings.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["credential-file-read"], "{ev:?}");
    }
    assert!(
        !before.iter().any(|e| is_open(e, "passwd")),
        "a read of an ordinary file was reported: {before:#?}"
    );
}
