//! Exec deny rules: killed (or refused) by inode, on an overlay root filesystem, only under a
//! named parent, and only reported in audit mode.

use std::ffi::CString;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;

use palisade_events::Action as EventAction;
use palisade_monitor::{ConnectRule, ContainerRules, Enforcer, EventKind, ExecRule, MonitorConfig};

use crate::harness::*;

/// The rule denying /usr/bin/id, with `message`.
fn no_id(message: &str) -> ExecRule {
    ExecRule {
        name: "no-id".into(),
        path: "/usr/bin/id".into(),
        from_parent: None,
        severity: 9,
        message: message.into(),
    }
}

#[test]
fn exec_of_a_denied_binary_is_killed_by_inode_not_by_name() {
    let scratch = Scratch::new("kill");
    // A hard link shares the inode under another name (and comm); a copy of `true` named `id`
    // has the forbidden name but another inode. Hard links need the same filesystem.
    let link = PathBuf::from(format!(
        "/usr/bin/.palisade-test-{}-renamed",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link("/usr/bin/id", &link).unwrap();
    struct Unlink(PathBuf);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unlink = Unlink(link.clone());
    let fake_id = scratch.0.join("id");
    std::fs::copy("/bin/true", &fake_id).unwrap();

    let rules = ContainerRules {
        deny_exec: vec![no_id("id is not allowed")],
        ..Default::default()
    };
    let w = Watched::new("kill", rules);
    let enforcer = exec_enforcer(&w.monitor, &w.watch);

    let (pid, mut out) = spawn(Some(&w.cg), None, &exec("/usr/bin/id", &["id"]));
    let st = wait(pid);
    assert_exec_stopped(enforcer, st, "id");
    let mut printed = String::new();
    out.read_to_string(&mut printed).unwrap();
    assert_eq!(printed, "", "id ran before it was stopped");
    let (ev, _) = event_of(&w.rx, "denied exec", pid, "exec");
    let lsm = enforcer == Enforcer::BpfLsm;
    assert!(
        matches!(&ev.kind, EventKind::Exec { killed, refused, deny_rule, .. }
            if (*killed, *refused) == (!lsm, lsm) && deny_rule.as_deref() == Some("no-id")),
        "killed without bpf-lsm, refused with it, by no-id: {:?}",
        ev.kind
    );
    let f = &ev.findings[0];
    let action = if lsm {
        EventAction::Block
    } else {
        EventAction::Kill
    };
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-id", action, enforcer.as_str())
    );

    let link_name = link.file_name().unwrap().to_str().unwrap().to_string();
    let (_, st) = run(
        Some(&w.cg),
        None,
        &exec(link.to_str().unwrap(), &[&link_name]),
    );
    assert_exec_stopped(enforcer, st, "renamed hard link");

    let (_, st) = run(Some(&w.cg), None, &exec(fake_id.to_str().unwrap(), &["id"]));
    assert_eq!(
        exited(st),
        Some(0),
        "a copy of true named id is not the denied inode"
    );
    let (_, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));

    // The same binary outside the cgroup runs.
    let (_, st) = run(None, None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(st), Some(0));
    assert_eq!(w.watch.rule_hits(), vec![("no-id".to_string(), 2)]);
}

#[test]
fn audit_mode_reports_deny_rules_without_killing_or_refusing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = listener.local_addr().unwrap();
    let rules = ContainerRules {
        deny_exec: vec![no_id("")],
        deny_connect: vec![ConnectRule {
            name: "no-dest".into(),
            addr: dest.ip(),
            prefix_len: 32,
            port: None,
            only_from: None,
            severity: 5,
            message: String::new(),
        }],
        ..Default::default()
    };
    let w = Watched::with(
        "audit",
        |c| MonitorConfig {
            enforce: false,
            ..c
        },
        rules,
    );
    assert!(w
        .watch
        .enforcement()
        .iter()
        .all(|e| e.enforcer == Enforcer::AuditOnly));
    let (pid, mut out) = spawn(Some(&w.cg), None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(wait(pid)), Some(0), "audit mode does not kill");
    let mut printed = String::new();
    out.read_to_string(&mut printed).unwrap();
    assert!(printed.starts_with("uid=0"), "{printed:?}");
    let (ev, _) = event_of(&w.rx, "audited exec", pid, "exec");
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-id", EventAction::Audit, "audit-only")
    );
    let (pid, st) = run(Some(&w.cg), None, &connect(dest));
    assert_eq!(exited(st), Some(0), "audit mode does not refuse");
    let (ev, _) = event_of(&w.rx, "audited connect", pid, "connect");
    assert_eq!(ev.findings[0].rule, "no-dest");
    assert_eq!(ev.findings[0].action, EventAction::Audit);
    assert_eq!(
        w.watch.rule_hits(),
        vec![("no-id".to_string(), 1), ("no-dest".to_string(), 1)],
        "the kernel still matched both"
    );
}

/// An overlay mount like a container's root filesystem; unmounted and removed when dropped.
struct Overlay {
    base: PathBuf,
    merged: PathBuf,
}

impl Overlay {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let base = std::env::temp_dir().join(format!("palisade-ovl-{}-{name}", std::process::id()));
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        for (from, to) in files {
            std::fs::copy(from, base.join("lower").join(to)).unwrap();
        }
        let merged = base.join("merged");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let target = CString::new(merged.to_str().unwrap()).unwrap();
        let data = CString::new(opts).unwrap();
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount overlay: {}", std::io::Error::last_os_error());
        Overlay { base, merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let target = CString::new(self.merged.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the overlay mounted in new().
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn exec_rules_match_binaries_on_an_overlay_root_filesystem() {
    let ovl = Overlay::new("exec", &[("/usr/bin/id", "id"), ("/bin/true", "true")]);
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id".into(),
            path: ovl.merged.join("id"),
            from_parent: None,
            severity: 8,
            message: String::new(),
        }],
        ..Default::default()
    };
    let w = Watched::new("ovl", rules);
    let enforcer = exec_enforcer(&w.monitor, &w.watch);
    let id = ovl.merged.join("id");
    let (_, st) = run(Some(&w.cg), None, &exec(id.to_str().unwrap(), &["id"]));
    assert_exec_stopped(enforcer, st, "id on the overlay");
    let t = ovl.merged.join("true");
    let (_, st) = run(Some(&w.cg), None, &exec(t.to_str().unwrap(), &["true"]));
    assert_eq!(exited(st), Some(0));
}

#[test]
fn exec_rules_with_a_source_apply_only_under_that_parent() {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let rules = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "no-id-from-sh".into(),
            path: "/usr/bin/id".into(),
            from_parent: Some(sh),
            severity: 7,
            message: String::new(),
        }],
        ..Default::default()
    };
    let w = Watched::new("parent", rules);
    let enforcer = exec_enforcer(&w.monitor, &w.watch);

    // Started by this test binary: the rule does not apply.
    let (_, st) = run(Some(&w.cg), None, &exec("/usr/bin/id", &["id"]));
    assert_eq!(exited(st), Some(0));
    // Started by sh (not its last command, so sh forks for it): stopped; sh goes on.
    let (shell, st) = run(
        Some(&w.cg),
        None,
        &exec("/bin/sh", &["sh", "-c", "/usr/bin/id; exit 7"]),
    );
    assert_eq!(exited(st), Some(7), "sh itself runs on");
    let (ev, _) = until(&w.rx, "id under sh", |e| {
        e.process.ppid == shell as u32
            && matches!(&e.kind, EventKind::Exec { filename, .. } if filename == "/usr/bin/id")
    });
    let EventKind::Exec {
        killed, refused, ..
    } = ev.kind
    else {
        unreachable!()
    };
    let lsm = enforcer == Enforcer::BpfLsm;
    assert_eq!((killed, refused), (!lsm, lsm));
    assert_eq!(w.watch.rule_hits(), vec![("no-id-from-sh".to_string(), 1)]);
}
