//! The seccomp export: a profile in the JSON format containerd loads (`seccomp_profile` /
//! `localhost/` profiles) and the Security Profiles Operator's `SeccompProfile` spec carries:
//! `defaultAction: SCMP_ACT_ERRNO`, the node's native architecture, and one rule allowing the
//! learned system calls plus the floor and what runc's init does after loading the filter
//! (`floor::RUNTIME_AFTER_FILTER`): a recording that began after `runc create` misses those.
//!
//! Only the native architecture is listed: the 32-bit compatibility ABIs (x86, x32, arm) get
//! the default action, since a recording of 64-bit processes says nothing about them.

use serde::{Deserialize, Serialize};

use super::{Export, ExportError};
use crate::floor::{RUNTIME_AFTER_FILTER, SYSCALL_FLOOR};
use crate::record::Recording;

/// The architecture a profile is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// libseccomp's name for it.
    pub fn scmp_name(self) -> &'static str {
        match self {
            Self::X86_64 => "SCMP_ARCH_X86_64",
            Self::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    /// The architecture this program was built for, if it is one of the supported ones.
    pub fn native() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Aarch64),
            _ => None,
        }
    }
}

/// The profile document (also used to read one back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfile {
    pub default_action: String,
    pub architectures: Vec<String>,
    pub syscalls: Vec<SyscallGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallGroup {
    pub names: Vec<String>,
    pub action: String,
}

/// Exports the learned system calls of `rec`, with the floor and the runtime's calls after its
/// filter is loaded ([`RUNTIME_AFTER_FILTER`]), as a seccomp profile for `arch`.
pub fn seccomp(rec: &Recording, arch: Arch) -> Result<Export, ExportError> {
    let mut names: Vec<String> = rec.syscalls.iter().cloned().collect();
    names.extend(SYSCALL_FLOOR.iter().map(|s| s.to_string()));
    names.extend(RUNTIME_AFTER_FILTER.iter().map(|s| s.to_string()));
    names.sort();
    names.dedup();
    let profile = SeccompProfile {
        default_action: "SCMP_ACT_ERRNO".to_string(),
        architectures: vec![arch.scmp_name().to_string()],
        syscalls: vec![SyscallGroup {
            names,
            action: "SCMP_ACT_ALLOW".to_string(),
        }],
    };
    let text = serde_json::to_string_pretty(&profile).map_err(|e| ExportError::Serialize {
        workload: rec.workload.to_string(),
        reason: e.to_string(),
    })?;
    let notes = rec.promotable().err().unwrap_or_default();
    Ok(Export { text, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::kubearmor::tests::service;

    #[test]
    fn profile_shape_and_floor() {
        let e = seccomp(&service(), Arch::X86_64).unwrap();
        let p: SeccompProfile = serde_json::from_str(&e.text).unwrap();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(p.architectures, vec!["SCMP_ARCH_X86_64"]);
        assert_eq!(p.syscalls.len(), 1);
        assert_eq!(p.syscalls[0].action, "SCMP_ACT_ALLOW");
        let names = &p.syscalls[0].names;
        for floor in SYSCALL_FLOOR.iter().chain(RUNTIME_AFTER_FILTER) {
            assert!(names.iter().any(|n| n == floor), "{floor}");
        }
        for exit in ["exit", "exit_group", "rt_sigreturn", "chdir"] {
            assert!(names.iter().any(|n| n == exit), "{exit}");
        }
        assert!(names.iter().any(|n| n == "accept4") && names.iter().any(|n| n == "sendto"));
        assert!(!names.iter().any(|n| n == "unshare"), "never learned");
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(&sorted, names, "sorted and unique");
        // The exact keys containerd and the operator read.
        let v: serde_json::Value = serde_json::from_str(&e.text).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["architectures", "defaultAction", "syscalls"]);
    }

    #[test]
    fn arm64_and_lossy_notes() {
        let mut r = service();
        r.add_drops(2);
        let e = seccomp(&r, Arch::Aarch64).unwrap();
        assert!(e.text.contains("SCMP_ARCH_AARCH64"));
        assert!(e.notes[0].contains("lossy"), "{:?}", e.notes);
        assert!(Arch::native().is_some(), "built on x86_64 or aarch64");
    }
}
