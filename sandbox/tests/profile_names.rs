//! Every syscall name in the default profile is a real syscall: runc skips names libseccomp
//! does not know, so a misspelt name would silently refuse the syscall it meant to allow.

use std::collections::BTreeSet;
use std::str::FromStr;

use palisade_sandbox::capabilities::KNOWN_CAPABILITIES;
use palisade_sandbox::seccomp::{default_profile, Arch, NEVER_ALLOWED};

/// Known to the syscall table of x86_64, x86, aarch64 or arm. Names are checked against all
/// four rather than per profile because libseccomp also resolves a few names an
/// architecture lacks (`send` and `recv` on x86 become `socketcall` sub-calls).
fn known(name: &str) -> bool {
    ARM_PRIVATE.contains(&name)
        || syscalls::x86_64::Sysno::from_str(name).is_ok()
        || syscalls::x86::Sysno::from_str(name).is_ok()
        || syscalls::aarch64::Sysno::from_str(name).is_ok()
        || syscalls::arm::Sysno::from_str(name).is_ok()
}

/// 32-bit arm's private syscalls (numbered from `__ARM_NR_BASE`) and its name for
/// `arm_sync_file_range` that libseccomp resolves: the `syscalls` crate's arm table does
/// not list them.
const ARM_PRIVATE: &[&str] = &["breakpoint", "cacheflush", "set_tls", "sync_file_range2"];

#[test]
fn every_name_in_the_profile_is_a_real_syscall() {
    let everything: BTreeSet<String> = KNOWN_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let profile = default_profile(arch, &everything, true);
        let unknown: Vec<&str> = profile
            .syscalls
            .iter()
            .flat_map(|r| r.names.iter().map(String::as_str))
            .filter(|n| !known(n))
            .collect();
        assert!(unknown.is_empty(), "{arch:?}: unknown names {unknown:?}");
    }
}

#[test]
fn every_never_allowed_name_is_a_real_syscall() {
    let unknown: Vec<&&str> = NEVER_ALLOWED.iter().filter(|n| !known(n)).collect();
    assert!(unknown.is_empty(), "unknown names {unknown:?}");
}

#[test]
fn the_known_check_catches_a_misspelling() {
    assert!(known("openat") && known("socketcall") && known("arm_fadvise64_64"));
    assert!(!known("open_at"));
}
