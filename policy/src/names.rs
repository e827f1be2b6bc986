//! The closed vocabularies of a policy: Linux capabilities, network protocols and system calls.

use serde::{Deserialize, Serialize};

/// Capability names in bit order (`CAP_CHOWN` is 0), as in `linux/capability.h`.
const CAPABILITIES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// A Linux capability, kept with its bit number so the sandbox can build a bounding set directly.
/// Serialized as its name (`"net_raw"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability {
    /// Lowercase name without the `cap_` prefix, as KubeArmor writes it (`net_raw`).
    pub name: &'static str,
    /// Bit number (`CAP_NET_RAW` is 13).
    pub number: u8,
}

impl Capability {
    /// Accepts KubeArmor's `net_raw` and also `CAP_NET_RAW`, since both appear in the wild.
    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
        CAPABILITIES
            .iter()
            .zip(0u8..)
            .find(|(name, _)| **name == bare)
            .map(|(name, number)| Capability { name, number })
    }

    pub fn all() -> impl Iterator<Item = Capability> {
        CAPABILITIES
            .iter()
            .zip(0u8..)
            .map(|(name, number)| Capability { name, number })
    }
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown capability {name}")))
    }
}

/// The protocols `network.matchProtocols` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Raw,
}

impl Protocol {
    /// KubeArmor accepts `TCP` and `tcp`; any letter case is taken here.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            "icmp" => Some(Self::Icmp),
            "raw" => Some(Self::Raw),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Raw => "raw",
        }
    }
}

/// Known system call names: the union of the x86_64 and arm64 tables, so a policy written on one
/// architecture loads on the other (the sandbox resolves numbers per node).
const SYSCALL_TABLE: &str = include_str!("data/syscalls.txt");

/// Returns the canonical (`'static`) name if `name` is a known system call.
pub fn syscall(name: &str) -> Option<&'static str> {
    SYSCALL_TABLE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| *l == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_parse_in_kubearmor_and_kernel_spelling() {
        let c = Capability::parse("net_raw").unwrap();
        assert_eq!((c.name, c.number), ("net_raw", 13));
        assert_eq!(Capability::parse("CAP_NET_RAW"), Some(c));
        assert_eq!(Capability::parse("sys_admin").unwrap().number, 21);
        assert_eq!(Capability::parse("checkpoint_restore").unwrap().number, 40);
        assert_eq!(Capability::parse("net_rawx"), None);
        assert_eq!(Capability::parse(""), None);
        assert_eq!(Capability::all().count(), 41);
    }

    #[test]
    fn protocols_parse_any_case() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("Icmp"), Some(Protocol::Icmp));
        assert_eq!(Protocol::parse("raw"), Some(Protocol::Raw));
        assert_eq!(Protocol::parse("sctp"), None);
        assert_eq!(Protocol::Raw.as_str(), "raw");
    }

    #[test]
    fn syscalls_cover_both_architectures() {
        assert_eq!(syscall("openat"), Some("openat"));
        // x86_64 only
        assert_eq!(syscall("open"), Some("open"));
        // arm64 (asm-generic) only
        assert_eq!(syscall("renameat2"), Some("renameat2"));
        assert_eq!(syscall("unlink"), Some("unlink"));
        assert_eq!(syscall("not_a_syscall"), None);
        assert_eq!(syscall("# Linux system call names"), None);
        assert_eq!(syscall(""), None);
    }
}
