//! The switches of the default hardening; the defaults are the hardened choice.

use serde::{Deserialize, Serialize};

/// What [`harden_spec`](crate::harden_spec) may relax. Every field defaults to the hardened
/// choice, so `HardeningConfig::default()` is the full default hardening; new switches are
/// added as fields with a hardened default, so configurations written today keep meaning
/// the same.
///
/// It deserializes from the shim's configuration (unknown keys are refused so a misspelt
/// switch does not silently leave the default):
///
/// ```toml
/// allow_privileged = false
/// allow_unconfined_seccomp = false
/// allow_32bit_syscalls = false
/// drop_net_raw = true
/// allowed_added_capabilities = ["NET_ADMIN"]
/// allow_privilege_escalation = false
/// allow_unmasked_proc = false
/// unset_seccomp_is_runtime_default = false
/// ```
///
/// The `palisade-compat` RuntimeClass (`runtimeclass/palisade-compat.toml`) turns every
/// relaxation on, so that a container gets what it asks CRI for, exactly as under runc;
/// [`HardeningConfig::compat`] is that configuration. `docs/cri-contract.md` lists what
/// the hardened default refuses or overrides, and which switch allows each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardeningConfig {
    /// Run privileged containers (every capability, nothing masked) as they are, with a
    /// warning, instead of refusing them. Their spec is then left untouched.
    pub allow_privileged: bool,
    /// Leave a container whose spec has no `linux.seccomp` without a filter (with a warning)
    /// instead of installing palisade's default profile.
    pub allow_unconfined_seccomp: bool,
    /// Let palisade's default seccomp profile cover the 32-bit system call entries (x86 and
    /// x32 on x86_64, arm on aarch64) with the same allow-list. Off, any 32-bit system call
    /// kills the process: the compat entries are kernel code that 64-bit containers never
    /// need, and each extra architecture made runc's `create` about 6 ms slower here. Only
    /// the profile palisade installs is concerned; a spec's own profile is kept as it is.
    pub allow_32bit_syscalls: bool,
    /// Remove `CAP_NET_RAW` (raw and packet sockets: ARP and DNS spoofing inside the node
    /// network) from the default capability set.
    pub drop_net_raw: bool,
    /// Capabilities beyond the default set that a container may hold (as a pod adds them
    /// with `securityContext.capabilities.add`), written `NET_ADMIN` or `CAP_NET_ADMIN`.
    /// Any other capability beyond the default set refuses the container. `ALL` allows
    /// every capability (what `securityContext.capabilities.add: [ALL]` asks for).
    pub allowed_added_capabilities: Vec<String>,
    /// Leave `process.noNewPrivileges` as the spec has it. CRI leaves it off for every
    /// container whose pod does not say `allowPrivilegeEscalation: false`; off, setuid
    /// binaries and file capabilities can raise a process's privilege.
    pub allow_privilege_escalation: bool,
    /// Leave a spec whose masked and read-only path lists are both empty (what CRI writes
    /// for `procMount: Unmasked`) unmasked, instead of merging palisade's lists in.
    pub allow_unmasked_proc: bool,
    /// The node turns an unspecified seccomp profile into `RuntimeDefault` before the
    /// runtime sees it (the kubelet's `--seccomp-default`, or containerd's CRI option
    /// `unset_seccomp_profile = "runtime/default"`). A spec without `linux.seccomp` is then
    /// an explicit `Unconfined` (or a privileged container), and the hardened default
    /// reports overriding it as an event; otherwise it cannot be told from a pod that said
    /// nothing, and is only logged. It changes nothing in the spec.
    pub unset_seccomp_is_runtime_default: bool,
}

impl Default for HardeningConfig {
    fn default() -> Self {
        Self {
            allow_privileged: false,
            allow_unconfined_seccomp: false,
            allow_32bit_syscalls: false,
            drop_net_raw: true,
            allowed_added_capabilities: Vec::new(),
            allow_privilege_escalation: false,
            allow_unmasked_proc: false,
            unset_seccomp_is_runtime_default: false,
        }
    }
}

impl HardeningConfig {
    /// Every relaxation on: what CRI asks for is what the container gets, as under runc
    /// (the `palisade-compat` RuntimeClass). Each grant beyond the hardened default is still
    /// reported in [`HardeningReport::relaxed`](crate::HardeningReport::relaxed).
    pub fn compat() -> Self {
        Self {
            allow_privileged: true,
            allow_unconfined_seccomp: true,
            allow_32bit_syscalls: false,
            drop_net_raw: false,
            allowed_added_capabilities: vec!["ALL".to_owned()],
            allow_privilege_escalation: true,
            allow_unmasked_proc: true,
            unset_seccomp_is_runtime_default: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_hardened_default() {
        let cfg: HardeningConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, HardeningConfig::default());
        assert!(cfg.drop_net_raw);
        assert!(!cfg.allow_privileged && !cfg.allow_unconfined_seccomp);
        assert!(!cfg.allow_privilege_escalation && !cfg.allow_unmasked_proc);
    }

    #[test]
    fn compat_is_the_shipped_compat_configuration() {
        let text = include_str!("../../runtimeclass/palisade-compat.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        let hardening = table["hardening"].clone();
        let cfg: HardeningConfig = hardening.try_into().unwrap();
        assert_eq!(cfg, HardeningConfig::compat());
    }

    #[test]
    fn misspelt_switch_is_refused() {
        let err =
            serde_json::from_str::<HardeningConfig>(r#"{"allow_priviledged": true}"#).unwrap_err();
        assert!(err.to_string().contains("allow_priviledged"), "{err}");
    }
}
