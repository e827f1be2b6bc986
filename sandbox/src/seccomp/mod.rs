//! Palisade's default seccomp profile, in the OCI `linux.seccomp` form that runc installs.

mod lists;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use lists::NEVER_ALLOWED;

/// `EPERM`, what a refused syscall returns.
pub const EPERM: u32 = 1;
/// `ENOSYS`, what `clone3` returns so that libc falls back to `clone`, whose flags the
/// filter can inspect (`clone3` passes them in memory, out of the filter's reach).
pub const ENOSYS: u32 = 38;

/// The namespace flags of `clone`: a container must not create namespaces of its own.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0200_0000 // CLONE_NEWCGROUP
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000; // CLONE_NEWNET

/// The file-type bits of a mode (`S_IFMT`).
pub const S_IFMT: u64 = 0o170_000;
/// The file types `mknod`/`mknodat` may create: regular files (type 0 means regular too),
/// FIFOs and sockets; never character or block devices.
pub const MKNOD_ALLOWED_TYPES: [u64; 4] = [0, 0o100_000, 0o010_000, 0o140_000];

/// The `personality` values a container may set: Linux, Linux32, their `UNAME26`
/// variants, and the query value that changes nothing.
pub const PERSONALITY_ALLOWED: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// A seccomp action, as the OCI runtime spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Let the syscall through.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Fail the syscall with an errno (`errnoRet`, EPERM when absent).
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
}

/// How a syscall argument is compared, as the OCI runtime spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `arg == value`.
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    /// `arg & value == valueTwo`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// One condition on a syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgFilter {
    /// Which argument, from 0.
    pub index: u32,
    /// The value (or, for [`Op::MaskedEq`], the mask).
    pub value: u64,
    /// The value the masked argument must equal ([`Op::MaskedEq`] only).
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: Op,
}

/// A rule: these syscalls, when all `args` conditions hold, get `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// Syscall names; each is resolved per architecture by runc.
    pub names: Vec<String>,
    /// What happens when the rule matches.
    pub action: Action,
    /// The errno for [`Action::Errno`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions, all of which must hold; rules for the same syscall are alternatives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgFilter>,
}

/// A seccomp profile in the OCI `linux.seccomp` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What a syscall that no rule matches gets.
    pub default_action: Action,
    /// The errno for a [`Action::Errno`] default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*` names the filter covers.
    pub architectures: Vec<String>,
    /// The rules.
    pub syscalls: Vec<SyscallRule>,
}

impl Profile {
    /// Every name some rule lets through with [`Action::Allow`], with or without conditions.
    pub fn allowed_names(&self) -> BTreeSet<&str> {
        self.syscalls
            .iter()
            .filter(|r| r.action == Action::Allow)
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect()
    }

    /// The rules naming `name`.
    pub fn rules_for<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SyscallRule> {
        self.syscalls
            .iter()
            .filter(move |r| r.names.iter().any(|n| n == name))
    }
}

/// The machine architectures palisade builds profiles for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64, with the x86 and x32 personalities it can run.
    X86_64,
    /// aarch64, with the 32-bit arm personality it can run.
    Aarch64,
}

impl Arch {
    /// The architecture this binary was built for, if palisade supports it.
    pub fn host() -> Option<Self> {
        if cfg!(target_arch = "x86_64") {
            Some(Self::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Self::Aarch64)
        } else {
            None
        }
    }

    /// The `SCMP_ARCH_*` names of the native system call entry and of the 32-bit ones this
    /// machine also runs (x86 and x32 on x86_64, arm on aarch64).
    pub fn scmp_architectures(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            Self::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        }
    }

    /// The `SCMP_ARCH_*` name of the native system call entry alone. A filter naming only it
    /// kills the process at any 32-bit system call: libseccomp's filter checks the
    /// architecture first and gives every other one its bad-architecture action, which runc
    /// leaves at kill (the security suite's `attack_compat_syscall` checks it).
    pub fn scmp_native(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &["SCMP_ARCH_X86_64"],
            Self::Aarch64 => &["SCMP_ARCH_AARCH64"],
        }
    }

    fn only_here(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => lists::X86_64_ONLY,
            Self::Aarch64 => lists::AARCH64_ONLY,
        }
    }
}

/// Palisade's default profile for `arch`, for a container whose bounding set is `bounding`.
///
/// An allow-list: anything unnamed fails with EPERM. Capability-gated syscalls (ptrace with
/// `CAP_SYS_PTRACE`, ...) are added only when the capability is in `bounding`; the names in
/// [`NEVER_ALLOWED`] are never added. Without `compat` the filter covers the native entry
/// only, so a 32-bit system call kills the process ([`Arch::scmp_native`]); with it the same
/// names are allowed through the 32-bit entries too.
pub fn default_profile(arch: Arch, bounding: &BTreeSet<String>, compat: bool) -> Profile {
    let mut allowed: BTreeSet<&str> = [
        lists::FILES,
        lists::EVENTS,
        lists::MEMORY,
        lists::PROCESSES,
        lists::SIGNALS,
        lists::TIME,
        lists::NETWORK,
        lists::IPC,
        arch.only_here(),
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    for (cap, names) in lists::CAP_GATED {
        if bounding.contains(*cap) {
            allowed.extend(names.iter().copied());
        }
    }
    allowed.retain(|name| !NEVER_ALLOWED.contains(name));

    let mut syscalls = vec![SyscallRule {
        names: allowed.into_iter().map(str::to_owned).collect(),
        action: Action::Allow,
        errno_ret: None,
        args: Vec::new(),
    }];
    syscalls.push(conditional(
        "clone",
        ArgFilter {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: 0,
            op: Op::MaskedEq,
        },
    ));
    syscalls.push(SyscallRule {
        names: vec!["clone3".to_owned()],
        action: Action::Errno,
        errno_ret: Some(ENOSYS),
        args: Vec::new(),
    });
    for (name, mode_arg) in [("mknod", 1), ("mknodat", 2)] {
        for file_type in MKNOD_ALLOWED_TYPES {
            syscalls.push(conditional(
                name,
                ArgFilter {
                    index: mode_arg,
                    value: S_IFMT,
                    value_two: file_type,
                    op: Op::MaskedEq,
                },
            ));
        }
    }
    for persona in PERSONALITY_ALLOWED {
        syscalls.push(conditional(
            "personality",
            ArgFilter {
                index: 0,
                value: persona,
                value_two: 0,
                op: Op::Eq,
            },
        ));
    }

    Profile {
        default_action: Action::Errno,
        default_errno_ret: Some(EPERM),
        architectures: if compat {
            arch.scmp_architectures()
        } else {
            arch.scmp_native()
        }
        .iter()
        .map(|a| (*a).to_owned())
        .collect(),
        syscalls,
    }
}

/// The names in [`NEVER_ALLOWED`] that a profile from elsewhere (a spec's `linux.seccomp`)
/// lets through, with or without conditions, sorted. Read from the raw JSON, so that a
/// profile using actions palisade does not model is still inspected; malformed rules are
/// skipped (runc refuses them anyway).
pub fn never_allowed_in(profile: &Map<String, Value>) -> Vec<String> {
    let rules = profile.get("syscalls").and_then(Value::as_array);
    let mut found: BTreeSet<&str> = BTreeSet::new();
    for rule in rules.into_iter().flatten() {
        let action = rule.get("action").and_then(Value::as_str);
        if !matches!(action, Some("SCMP_ACT_ALLOW" | "SCMP_ACT_LOG")) {
            continue;
        }
        let names = rule.get("names").and_then(Value::as_array);
        found.extend(
            names
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|n| NEVER_ALLOWED.contains(n)),
        );
    }
    found.into_iter().map(str::to_owned).collect()
}

fn conditional(name: &str, filter: ArgFilter) -> SyscallRule {
    SyscallRule {
        names: vec![name.to_owned()],
        action: Action::Allow,
        errno_ret: None,
        args: vec![filter],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES};
    use crate::owned as caps;

    #[test]
    fn no_never_allowed_name_is_allowed_even_with_every_capability() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let profile = default_profile(arch, &caps(&KNOWN_CAPABILITIES), false);
            let allowed = profile.allowed_names();
            for name in NEVER_ALLOWED {
                assert!(!allowed.contains(name), "{arch:?}: {name} is allowed");
            }
        }
    }

    #[test]
    fn capability_gated_syscalls_follow_the_bounding_set() {
        let default = default_profile(Arch::X86_64, &caps(&DEFAULT_CAPABILITIES), false);
        let allowed = default.allowed_names();
        assert!(
            allowed.contains("chroot"),
            "CAP_SYS_CHROOT is in the default set"
        );
        assert!(!allowed.contains("ptrace"));
        assert!(!allowed.contains("settimeofday"));

        let ptrace = default_profile(Arch::X86_64, &caps(&["CAP_SYS_PTRACE"]), false);
        let allowed = ptrace.allowed_names();
        assert!(allowed.contains("ptrace"));
        assert!(allowed.contains("process_vm_readv"));
        assert!(!allowed.contains("chroot"));
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags_and_clone3_gets_enosys() {
        let profile = default_profile(Arch::X86_64, &BTreeSet::new(), false);
        let clone: Vec<_> = profile.rules_for("clone").collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0].args,
            [ArgFilter {
                index: 0,
                value: 0x7E02_0000,
                value_two: 0,
                op: Op::MaskedEq
            }]
        );
        let clone3: Vec<_> = profile.rules_for("clone3").collect();
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action, Action::Errno);
        assert_eq!(clone3[0].errno_ret, Some(ENOSYS));
    }

    #[test]
    fn every_mknod_rule_excludes_device_types() {
        let profile = default_profile(Arch::Aarch64, &BTreeSet::new(), false);
        for name in ["mknod", "mknodat"] {
            let rules: Vec<_> = profile.rules_for(name).collect();
            assert_eq!(rules.len(), MKNOD_ALLOWED_TYPES.len(), "{name}");
            for rule in rules {
                let [filter] = rule.args.as_slice() else {
                    panic!("{name}: expected one condition, got {:?}", rule.args)
                };
                assert_eq!(filter.op, Op::MaskedEq);
                assert_eq!(filter.value, S_IFMT);
                for device in [0o020_000, 0o060_000] {
                    assert_ne!(filter.value_two, device, "{name} allows a device type");
                }
            }
        }
    }

    #[test]
    fn architecture_specific_names_stay_on_their_architecture() {
        let x86 = default_profile(Arch::X86_64, &BTreeSet::new(), true);
        let arm = default_profile(Arch::Aarch64, &BTreeSet::new(), true);
        assert!(x86.allowed_names().contains("arch_prctl"));
        assert!(!arm.allowed_names().contains("arch_prctl"));
        assert!(arm.allowed_names().contains("set_tls"));
    }

    #[test]
    fn never_allowed_in_finds_allowed_and_logged_names_only() {
        let profile = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "io_uring_setup", "ptrace"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["bpf"], "action": "SCMP_ACT_LOG"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": "keyctl", "action": "SCMP_ACT_ALLOW"}
            ]
        });
        let Value::Object(profile) = profile else {
            unreachable!()
        };
        assert_eq!(
            never_allowed_in(&profile),
            ["bpf", "io_uring_setup", "mount"]
        );
    }

    #[test]
    fn never_allowed_in_our_own_profile_is_empty() {
        let caps = caps(&KNOWN_CAPABILITIES);
        let json = serde_json::to_value(default_profile(Arch::X86_64, &caps, false)).unwrap();
        let Value::Object(profile) = json else {
            unreachable!()
        };
        assert!(never_allowed_in(&profile).is_empty());
    }

    #[test]
    fn only_the_native_entry_is_covered_unless_compat_is_asked_for() {
        for (arch, native, all) in [
            (
                Arch::X86_64,
                vec!["SCMP_ARCH_X86_64"],
                vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            ),
            (
                Arch::Aarch64,
                vec!["SCMP_ARCH_AARCH64"],
                vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            ),
        ] {
            let strict = default_profile(arch, &BTreeSet::new(), false);
            let compat = default_profile(arch, &BTreeSet::new(), true);
            assert_eq!(strict.architectures, native, "{arch:?}");
            assert_eq!(compat.architectures, all, "{arch:?}");
            assert_eq!(
                strict.syscalls, compat.syscalls,
                "{arch:?}: same names either way"
            );
        }
    }

    #[test]
    fn serializes_in_the_oci_form() {
        let profile = default_profile(Arch::X86_64, &BTreeSet::new(), false);
        let json = serde_json::to_value(&profile).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        // The rule that names only `name`.
        let rule_for = |name: &str| {
            json["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["names"] == serde_json::json!([name]))
                .unwrap()
                .clone()
        };
        let clone3 = rule_for("clone3");
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
        let clone = rule_for("clone");
        assert_eq!(
            clone["args"],
            serde_json::json!([{"index": 0, "value": 0x7E02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let back: Profile = serde_json::from_value(json).unwrap();
        assert_eq!(back, profile);
    }
}
