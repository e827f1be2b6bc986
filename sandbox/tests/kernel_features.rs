//! The kernel probe against what the running kernel actually does.

use anyhow::Result;
use palisade_sandbox::KernelFeatures;

const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
const LANDLOCK_ACCESS_FS_EXECUTE: u64 = 1;

/// The `SECCOMP_RET_*` value of an action as named in `actions_avail`.
fn seccomp_ret(action: &str) -> Option<u32> {
    Some(match action {
        "kill_process" => 0x8000_0000,
        "kill_thread" => 0,
        "trap" => 0x0003_0000,
        "errno" => 0x0005_0000,
        "user_notif" => 0x7fc0_0000,
        "trace" => 0x7ff0_0000,
        "log" => 0x7ffc_0000,
        "allow" => 0x7fff_0000,
        _ => return None,
    })
}

#[test]
fn every_listed_seccomp_action_is_confirmed_by_the_kernel() -> Result<()> {
    let features = KernelFeatures::probe()?;
    assert!(
        features.seccomp_action("errno") && features.seccomp_action("allow"),
        "a kernel with seccomp filters has errno and allow: {features:?}"
    );
    for action in &features.seccomp_actions {
        let Some(ret) = seccomp_ret(action) else {
            panic!("unknown action {action:?} in actions_avail")
        };
        // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 it is given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_GET_ACTION_AVAIL,
                0,
                &ret as *const u32,
            )
        };
        assert_eq!(rc, 0, "{action}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn landlock_abi_matches_whether_a_ruleset_can_be_created() -> Result<()> {
    let features = KernelFeatures::probe()?;
    let attr: [u64; 1] = [LANDLOCK_ACCESS_FS_EXECUTE];
    // SAFETY: `attr` is a landlock_ruleset_attr of the size passed; a returned descriptor is
    // closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
            0,
        )
    };
    match features.landlock_abi {
        Some(abi) => {
            assert!(abi >= 1, "ABI versions start at 1");
            assert!(
                fd >= 0,
                "ABI {abi} but no ruleset: {}",
                std::io::Error::last_os_error()
            );
        }
        None => assert!(fd < 0, "no ABI reported but a ruleset was created"),
    }
    if fd >= 0 {
        // SAFETY: closes the descriptor created above.
        unsafe { libc::close(fd as libc::c_int) };
    }
    Ok(())
}

#[test]
fn a_user_namespace_can_be_created_only_where_reported_available() -> Result<()> {
    let features = KernelFeatures::probe()?;
    // SAFETY: the child only calls unshare and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: unshare in the forked child only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
        // SAFETY: leaves the child.
        unsafe { libc::_exit(if rc == 0 { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: reaps the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let created = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Reported available yet refused can happen (an outer seccomp filter, an LSM); created
    // while reported unavailable cannot.
    assert!(
        !created || features.user_namespaces,
        "a user namespace was created: {features:?}"
    );
    Ok(())
}
