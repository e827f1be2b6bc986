//! Where the hardened default departs from what a pod asked CRI for: the overrides it makes,
//! with the field, the reason and what allows it, and the grants a relaxed configuration makes
//! beyond it (`docs/cri-contract.md`).

/// The RuntimeClass whose configuration honours every security context as runc does.
pub const COMPAT_RUNTIME_CLASS: &str = "palisade-compat";

/// A request in the spec that the hardened default replaced with something stricter, instead
/// of refusing the container (refusals are [`HardenError`](crate::HardenError)s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The pod's field, as its author writes it (`securityContext.seccompProfile`).
    pub field: &'static str,
    /// What was asked, what the container got instead and why, and the configuration key
    /// and RuntimeClass that allow it.
    pub message: String,
    /// Whether the spec shows that the pod asked for it. CRI writes the same spec for some
    /// requests as for a pod that says nothing (no `linux.seccomp` for `Unconfined` and for
    /// an unset profile, `noNewPrivileges` off unless `allowPrivilegeEscalation: false`);
    /// overriding such a default happens to nearly every container, so it is logged and
    /// not raised as an event.
    pub explicit: bool,
}

impl Override {
    pub(crate) fn seccomp_unconfined(explicit: bool) -> Self {
        let asked = if explicit {
            "Unconfined (the node turns an unset profile into RuntimeDefault)"
        } else {
            "Unconfined, or nothing on a node whose default is unconfined"
        };
        Self {
            field: "securityContext.seccompProfile",
            message: format!(
                "securityContext.seccompProfile: the spec has no seccomp profile ({asked}); \
                 palisade's default profile was installed instead, because a container \
                 without a filter can reach every system call of the node's kernel; set \
                 [hardening] allow_unconfined_seccomp = true or use the RuntimeClass \
                 {COMPAT_RUNTIME_CLASS} to run it unconfined"
            ),
            explicit,
        }
    }

    pub(crate) fn no_new_privileges() -> Self {
        Self {
            field: "securityContext.allowPrivilegeEscalation",
            message: format!(
                "securityContext.allowPrivilegeEscalation: the spec leaves no_new_privs off \
                 (allowPrivilegeEscalation true, or unset); it was set, because setuid \
                 binaries and file capabilities would otherwise raise a process's privilege; \
                 set [hardening] allow_privilege_escalation = true or use the RuntimeClass \
                 {COMPAT_RUNTIME_CLASS} to leave it off"
            ),
            explicit: false,
        }
    }

    pub(crate) fn unmasked_proc() -> Self {
        Self {
            field: "securityContext.procMount",
            message: format!(
                "securityContext.procMount: the spec masks nothing in /proc and /sys \
                 (procMount: Unmasked); palisade's masked and read-only paths were merged \
                 in, because they hide kernel memory, keyrings and host-wide tunables; set \
                 [hardening] allow_unmasked_proc = true or use the RuntimeClass \
                 {COMPAT_RUNTIME_CLASS} to leave them unmasked"
            ),
            explicit: true,
        }
    }
}

/// The mounts of `spec` whose propagation reaches back from the container to the host
/// (`rshared` or `shared`), as `rshared DESTINATION`.
pub(crate) fn shared_mounts(spec: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let Some(serde_json::Value::Array(mounts)) = spec.get("mounts") else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter_map(|m| {
            let options = m.get("options")?.as_array()?;
            let shared = options
                .iter()
                .filter_map(serde_json::Value::as_str)
                .find(|o| matches!(*o, "rshared" | "shared"))?;
            let destination = m.get("destination")?.as_str()?;
            Some(format!("{shared} {destination}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_override_names_its_field_the_key_and_the_runtime_class() {
        for (o, key) in [
            (
                Override::seccomp_unconfined(false),
                "allow_unconfined_seccomp",
            ),
            (
                Override::seccomp_unconfined(true),
                "allow_unconfined_seccomp",
            ),
            (Override::no_new_privileges(), "allow_privilege_escalation"),
            (Override::unmasked_proc(), "allow_unmasked_proc"),
        ] {
            assert!(o.message.starts_with(o.field), "{}", o.message);
            assert!(o.message.contains(key), "{}", o.message);
            assert!(o.message.contains(COMPAT_RUNTIME_CLASS), "{}", o.message);
        }
    }

    #[test]
    fn shared_mounts_lists_the_mounts_that_propagate_to_the_host() {
        let spec = serde_json::json!({"mounts": [
            {"destination": "/a", "options": ["rbind", "rprivate"]},
            {"destination": "/b", "options": ["rbind", "rslave"]},
            {"destination": "/c", "options": ["rbind", "rshared", "rw"]},
            {"destination": "/proc", "type": "proc"}
        ]});
        let spec = spec.as_object().unwrap();
        assert_eq!(shared_mounts(spec), ["rshared /c"]);
    }
}
