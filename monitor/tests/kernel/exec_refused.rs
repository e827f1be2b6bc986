//! Refused execs: an execve of a file without an execute bit, and an execveat a landlock
//! ruleset refuses, are reported with the path asked for, the error and the enforcer (landlock
//! only where the container says its ruleset handles execute); an exec that fails for another
//! reason (ENOENT) is not, and a successful one is still an `exec` event. With each syscall hook.

use std::os::unix::fs::PermissionsExt;

use palisade_events::Action as EventAction;
use palisade_monitor::{ContainerRules, EventKind, MonitorEvent, SyscallHook};

use crate::harness::*;

/// The exec-refused finding of `ev`, with its enforcer.
fn refused_by(ev: &MonitorEvent) -> &str {
    let f = ev
        .findings
        .iter()
        .find(|f| f.rule == "exec-refused")
        .expect("an exec-refused finding");
    assert_eq!(f.action, EventAction::Block);
    f.enforcer
}

#[test]
fn an_exec_refused_for_its_mode_is_reported_and_other_failures_are_not() {
    with_each_hook(refused_for_its_mode);
}

fn refused_for_its_mode(hook: SyscallHook) {
    let scratch = Scratch::new(&format!("exec-mode-{}", hook_tag(hook)));
    let plain = scratch.0.join("not-executable");
    std::fs::copy("/bin/true", &plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plain = plain.to_str().unwrap().to_string();
    let w = Watched::on_hook("exec-mode", hook, ContainerRules::default());

    // ENOENT (a PATH search's usual miss) first: never reported
    let missing = scratch.0.join("missing");
    let (gone, st) = run(
        Some(&w.cg),
        None,
        &exec(missing.to_str().unwrap(), &["missing"]),
    );
    assert_eq!(exited(st), Some(libc::ENOENT));
    let (refused, st) = run(Some(&w.cg), None, &exec(&plain, &["not-executable"]));
    assert_eq!(exited(st), Some(libc::EACCES), "the mode refuses the exec");
    let (ev, before) = event_of(&w.rx, "refused exec", refused, "exec-refused");
    assert_eq!(
        ev.kind,
        EventKind::ExecRefused {
            path: plain.clone(),
            dirfd: None,
            result: -i64::from(libc::EACCES),
        }
    );
    assert_eq!(
        refused_by(&ev),
        "unknown",
        "no landlock execute allow-list: the monitor does not guess"
    );
    assert!(
        !before
            .iter()
            .any(|e| e.process.pid == gone as u32 && e.kind.name() == "exec-refused"),
        "an ENOENT exec is not reported: {before:#?}"
    );
    let schema = ev.to_events("node");
    assert_eq!(schema.len(), 1);
    assert_eq!(schema[0].evidence["path"], plain.as_str());
    assert_eq!(schema[0].evidence["result"], -13);

    // a successful exec is still an exec event, and no refusal
    let (ran, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    let (ev, before) = event_of(&w.rx, "exec", ran, "exec");
    assert!(
        matches!(&ev.kind, EventKind::Exec { filename, refused: false, .. } if filename == "/bin/true")
    );
    assert!(
        !before
            .iter()
            .any(|e| e.process.pid == ran as u32 && e.kind.name() == "exec-refused"),
        "{before:#?}"
    );
}

/// `struct landlock_ruleset_attr` of landlock ABI 1.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

const LANDLOCK_ACCESS_FS_EXECUTE: u64 = 1;

/// In a forked child: a landlock ruleset that handles execute and allows it nowhere, then an
/// execveat of /bin/true relative to the working directory's descriptor. 0 or the errno
/// (100 when landlock could not be set up). Raw syscalls only.
fn execveat_under_landlock() -> i32 {
    let attr = RulesetAttr {
        handled_access_fs: LANDLOCK_ACCESS_FS_EXECUTE,
    };
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: raw syscalls on valid, live memory; the caller is a forked child about to exit.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if fd < 0
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0
        {
            return 100;
        }
        libc::syscall(
            libc::SYS_execveat,
            libc::AT_FDCWD,
            path.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            0,
        );
        *libc::__errno_location()
    }
}

/// The kernel's landlock ABI, or the errno that says it has none (Debian 11's 5.10 has no
/// landlock: ENOSYS without the code, EOPNOTSUPP when it is built but not enabled).
fn landlock_abi() -> Result<i64, i32> {
    // SAFETY: the version query takes no attribute (null, size 0) and only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if abi >= 1 {
        Ok(abi)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn an_execveat_landlock_refuses_is_reported_as_landlocks() {
    match landlock_abi() {
        Ok(_) => with_each_hook(refused_by_landlock),
        Err(errno) => {
            assert!(
                errno == libc::ENOSYS || errno == libc::EOPNOTSUPP,
                "landlock's version query failed with errno {errno}, not for want of landlock"
            );
            eprintln!("this kernel has no landlock (errno {errno}): nothing for it to refuse");
        }
    }
}

fn refused_by_landlock(hook: SyscallHook) {
    let rules = ContainerRules {
        landlock_exec: true,
        ..Default::default()
    };
    let w = Watched::on_hook("exec-landlock", hook, rules);
    let pid = call_in(
        &w,
        execveat_under_landlock,
        libc::EACCES,
        "landlock refuses the exec",
    );
    let (ev, _) = event_of(&w.rx, "refused execveat", pid, "exec-refused");
    assert_eq!(
        ev.kind,
        EventKind::ExecRefused {
            path: "/bin/true".into(),
            dirfd: Some(libc::AT_FDCWD),
            result: -i64::from(libc::EACCES),
        }
    );
    assert_eq!(refused_by(&ev), "landlock");
    assert_eq!(
        ev.findings[0].message,
        "exec of /bin/true refused by landlock (EACCES)"
    );
}
