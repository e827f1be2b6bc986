//! Syscall rules: blocks, audits and allow-lists in the seccomp profile.

use super::*;

/// Calls an audit policy leaves as they were or logs, and why.
const AUDITED: &[(&str, &str, &str)] = &[
    ("fchownat", LOG, "audited"),
    ("ptrace", EPERM, "audit never opens a refused call"),
];

/// Calls an allow-list leaves allowed or refuses, and why.
const NARROWED: &[(&str, &str, &str)] = &[
    ("nanosleep", ALLOW, "listed"),
    ("execve", ALLOW, "palisade-init and runc need it"),
    ("unlink", EPERM, "not listed"),
    ("mount", EPERM, "never more than the profile"),
];

/// Enforces `yaml` and checks that its profile gives each call (with zero arguments) its
/// action; the enforcement report.
fn assert_calls(yaml: &str, want: &[(&str, &str, &str)]) -> Result<Enforcement> {
    let (s, e) = enforced(yaml)?;
    for (call, action, why) in want {
        assert_eq!(seccomp_action(&s, call, [0; 3]), *action, "{call}: {why}");
    }
    Ok(e)
}

#[test]
fn syscall_block_refuses_the_calls_with_eperm() -> Result<()> {
    let mut s = spec()?;
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), ALLOW);
    let e = enforce_policy(&mut s, policy_file!("block-syscalls"))?;
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
    let e = enforce_policy(&mut s, policy_file!("block-syscalls"))?;
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
    let e = assert_calls(policy_file!("audit-calls"), AUDITED)?;
    assert_eq!(enforcer_of(&e, "matchSyscalls[0]"), Enforcer::Seccomp);
    assert_eq!(enforcer_of(&e, "matchSyscalls[1]"), Enforcer::MonitorAudit);
    Ok(())
}

#[test]
fn syscall_allow_list_narrows_the_profile() -> Result<()> {
    assert_calls(policy_file!("few-calls"), NARROWED)?;
    Ok(())
}
