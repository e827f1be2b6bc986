//! Syscall rules: blocks, audits and allow-lists in the seccomp profile.

use super::*;

#[test]
fn syscall_block_refuses_the_calls_with_eperm() -> Result<()> {
    let mut s = spec()?;
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), ALLOW);
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_SYSCALLS)?), None, &node())?;
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "chmod", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "unlinkat", [0; 3]), ALLOW);
    assert_eq!(seccomp_action(&s, "fchmod", [0; 3]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);

    // Without a profile (allow_unconfined_seccomp) one is created that allows the rest.
    let mut s = hardened(&HardeningConfig {
        allow_unconfined_seccomp: true,
        ..HardeningConfig::default()
    })?;
    assert!(s["linux"]["seccomp"].is_null());
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_SYSCALLS)?), None, &node())?;
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], ALLOW);
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "unlinkat", [0; 3]), ALLOW);
    assert!(e
        .applied
        .iter()
        .any(|a| a.contains("the spec had no profile")));
    Ok(())
}

#[test]
fn syscall_audit_logs_what_the_profile_lets_through() -> Result<()> {
    let (s, e) = enforced(include_str!("../policies/audit-calls.yaml"))?;
    assert_eq!(seccomp_action(&s, "fchownat", [0; 3]), LOG);
    assert_eq!(
        seccomp_action(&s, "ptrace", [0; 3]),
        EPERM,
        "audit never opens a refused call"
    );
    assert_eq!(enforcer_of(&e, "matchSyscalls[0]"), Enforcer::Seccomp);
    assert_eq!(enforcer_of(&e, "matchSyscalls[1]"), Enforcer::MonitorAudit);
    Ok(())
}

#[test]
fn syscall_allow_list_narrows_the_profile() -> Result<()> {
    let (s, _) = enforced(include_str!("../policies/few-calls.yaml"))?;
    assert_eq!(seccomp_action(&s, "nanosleep", [0; 3]), ALLOW);
    assert_eq!(
        seccomp_action(&s, "execve", [0; 3]),
        ALLOW,
        "palisade-init and runc need it"
    );
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(
        seccomp_action(&s, "mount", [0; 3]),
        EPERM,
        "never more than the profile"
    );
    Ok(())
}
