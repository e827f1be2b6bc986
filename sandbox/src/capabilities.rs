//! Capability sets: cut every set of `process.capabilities` down to the default set plus the
//! capabilities the configuration allows, and refuse a container that asks for more.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::spec::{self, SpecError};

/// The capabilities containerd gives a container that asks for nothing (its default set).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Every capability Linux defines, in bit order (0 to 40): palisade-init's table, which
/// turns the names into bits inside the container.
pub const KNOWN_CAPABILITIES: [&str; 41] = palisade_init::caps::NAMES;

/// The capabilities every kernel palisade supports has (all but the three added in 5.8 and
/// 5.9): a privileged container on any such kernel holds at least these.
pub const PRIVILEGED_MINIMUM: &[&str] = KNOWN_CAPABILITIES.split_at(38).0;

/// The five capability sets of `process.capabilities`.
pub const CAPABILITY_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "permitted",
    "inheritable",
    "ambient",
];

/// A capability set cannot be made to fit the configuration.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The configuration names something that is not a Linux capability.
    #[error("configuration: {0:?} is not a known capability")]
    UnknownName(String),
    /// The container holds capabilities beyond the default set that the configuration does
    /// not allow; it is refused rather than silently weakened, so the pod owner learns why.
    #[error(
        "{} beyond the default set and not allowed by this configuration \
         (allowed_added_capabilities): securityContext.capabilities.add asks for more than \
         containerd's default set, which widens what a compromised process can do to the \
         kernel and the node; list it in [hardening] allowed_added_capabilities (\"ALL\" for \
         every one) or use the RuntimeClass {compat}",
        list_refused(.0),
        compat = crate::contract::COMPAT_RUNTIME_CLASS
    )]
    NotAllowed(Vec<String>),
    /// `process.capabilities` has the wrong shape.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

fn list_refused(caps: &[String]) -> String {
    match caps {
        [one] => format!("capability {one} is"),
        many => format!("capabilities {} are", many.join(", ")),
    }
}

/// Normalizes a capability name as operators write it (`net_admin`, `NET_ADMIN`,
/// `CAP_NET_ADMIN`) to the OCI form (`CAP_NET_ADMIN`).
pub fn normalize(name: &str) -> Result<String, CapabilityError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if KNOWN_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(CapabilityError::UnknownName(name.to_owned()))
    }
}

/// What operators write in `allowed_added_capabilities` to allow every capability.
pub const ALL: &str = "ALL";

/// The capabilities a container may keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityPolicy {
    allowed: BTreeSet<String>,
    /// `ALL` was listed: every capability, known to palisade or not, may be kept.
    all: bool,
    drop_net_raw: bool,
}

impl CapabilityPolicy {
    /// The default set, less `CAP_NET_RAW` when `drop_net_raw`, plus `added` (names in any
    /// form [`normalize`] accepts, or [`ALL`] for every capability). Listing `CAP_NET_RAW`
    /// (or `ALL`) in `added` keeps it.
    pub fn new(drop_net_raw: bool, added: &[String]) -> Result<Self, CapabilityError> {
        let mut allowed: BTreeSet<String> = DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !(drop_net_raw && **c == "CAP_NET_RAW"))
            .map(|c| (*c).to_owned())
            .collect();
        let mut explicit_net_raw = false;
        let mut all = false;
        for name in added {
            if is_all(name) {
                all = true;
                explicit_net_raw = true;
                continue;
            }
            let cap = normalize(name)?;
            explicit_net_raw |= cap == "CAP_NET_RAW";
            allowed.insert(cap);
        }
        Ok(Self {
            allowed,
            all,
            drop_net_raw: drop_net_raw && !explicit_net_raw,
        })
    }

    /// Whether the container may keep `cap`.
    pub fn allows(&self, cap: &str) -> bool {
        self.all || self.allowed.contains(cap)
    }
}

/// `ALL` or `CAP_ALL`, in any case.
fn is_all(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    upper == ALL || upper == "CAP_ALL"
}

/// The capabilities of `held` beyond what the hardened default lets a container keep
/// (containerd's default set without `CAP_NET_RAW`): what a configuration granted.
pub fn beyond_hardened_default<'a>(held: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    held.into_iter()
        .filter(|c| *c == "CAP_NET_RAW" || !DEFAULT_CAPABILITIES.contains(&c.as_str()))
        .cloned()
        .collect()
}

/// What [`restrict`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityChange {
    /// Capabilities removed from at least one set.
    pub dropped: BTreeSet<String>,
    /// The bounding set after the change: what the container can ever hold.
    pub bounding: BTreeSet<String>,
}

/// Cuts every set of `process.capabilities` to what `policy` allows.
///
/// `CAP_NET_RAW` is dropped quietly when the policy drops it (it is in containerd's default
/// set, so its presence says nothing about what the pod asked for); any other capability
/// beyond the policy refuses the container, naming every such capability.
pub fn restrict(
    process: &mut Map<String, Value>,
    policy: &CapabilityPolicy,
) -> Result<CapabilityChange, CapabilityError> {
    let Some(caps_value) = process.get_mut("capabilities") else {
        return Ok(CapabilityChange::default());
    };
    if caps_value.is_null() {
        return Ok(CapabilityChange::default());
    }
    let caps = caps_value
        .as_object_mut()
        .ok_or_else(|| SpecError::WrongType {
            path: "process.capabilities".to_owned(),
            expected: "an object",
        })?;

    let mut sets = Vec::with_capacity(CAPABILITY_SETS.len());
    let mut refused = BTreeSet::new();
    for set in CAPABILITY_SETS {
        let path = format!("process.capabilities.{set}");
        let present = caps.get(set).is_some_and(|v| !v.is_null());
        let held = spec::string_list(caps, set, &path)?;
        for cap in &held {
            let quietly_dropped = policy.drop_net_raw && cap == "CAP_NET_RAW";
            if !policy.allows(cap) && !quietly_dropped {
                refused.insert(cap.clone());
            }
        }
        sets.push((set, present, held));
    }
    if !refused.is_empty() {
        return Err(CapabilityError::NotAllowed(refused.into_iter().collect()));
    }

    let mut change = CapabilityChange::default();
    for (set, present, held) in sets {
        if !present {
            continue;
        }
        let mut seen = BTreeSet::new();
        let kept: Vec<String> = held
            .iter()
            .filter(|cap| {
                let keep = policy.allows(cap);
                if !keep {
                    change.dropped.insert((*cap).clone());
                }
                keep && seen.insert((*cap).clone())
            })
            .cloned()
            .collect();
        if set == "bounding" {
            change.bounding = kept.iter().cloned().collect();
        }
        spec::set_string_list(caps, set, &kept);
    }
    Ok(change)
}

/// The capabilities in `process.capabilities.bounding` (empty when absent).
pub fn bounding(process: &Map<String, Value>) -> Result<BTreeSet<String>, SpecError> {
    match process.get("capabilities") {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::Object(caps)) => {
            Ok(
                spec::string_list(caps, "bounding", "process.capabilities.bounding")?
                    .into_iter()
                    .collect(),
            )
        }
        Some(_) => Err(SpecError::WrongType {
            path: "process.capabilities".to_owned(),
            expected: "an object",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn process(caps: &[&str]) -> Map<String, Value> {
        let v = json!({"capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps
        }});
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn set(process: &Map<String, Value>, name: &str) -> Vec<String> {
        spec::string_list(process["capabilities"].as_object().unwrap(), name, name).unwrap()
    }

    #[test]
    fn normalize_accepts_operator_spellings_and_refuses_unknown_names() {
        assert_eq!(normalize("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(normalize(" CAP_sys_ptrace ").unwrap(), "CAP_SYS_PTRACE");
        let err = normalize("CAP_TELEPORT").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: \"CAP_TELEPORT\" is not a known capability"
        );
    }

    #[test]
    fn privileged_minimum_stops_before_the_5_8_capabilities() {
        assert_eq!(PRIVILEGED_MINIMUM.len(), 38);
        assert_eq!(PRIVILEGED_MINIMUM.last(), Some(&"CAP_AUDIT_READ"));
    }

    #[test]
    fn default_set_passes_untouched_when_net_raw_is_kept() {
        let policy = CapabilityPolicy::new(false, &[]).unwrap();
        let mut p = process(&DEFAULT_CAPABILITIES);
        let change = restrict(&mut p, &policy).unwrap();
        assert!(change.dropped.is_empty());
        assert_eq!(set(&p, "effective"), DEFAULT_CAPABILITIES);
        assert_eq!(change.bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(!p["capabilities"]
            .as_object()
            .unwrap()
            .contains_key("ambient"));
    }

    #[test]
    fn net_raw_is_dropped_from_every_present_set() {
        let policy = CapabilityPolicy::new(true, &[]).unwrap();
        let mut p = process(&DEFAULT_CAPABILITIES);
        let change = restrict(&mut p, &policy).unwrap();
        assert_eq!(change.dropped, BTreeSet::from(["CAP_NET_RAW".to_owned()]));
        for s in ["bounding", "effective", "permitted"] {
            let held = set(&p, s);
            assert_eq!(held.len(), 13, "{s}");
            assert!(!held.contains(&"CAP_NET_RAW".to_owned()), "{s}");
        }
    }

    #[test]
    fn listing_net_raw_as_allowed_keeps_it_despite_drop_net_raw() {
        let policy = CapabilityPolicy::new(true, &["NET_RAW".to_owned()]).unwrap();
        let mut p = process(&["CAP_NET_RAW"]);
        let change = restrict(&mut p, &policy).unwrap();
        assert!(change.dropped.is_empty());
        assert_eq!(set(&p, "bounding"), ["CAP_NET_RAW"]);
    }

    #[test]
    fn capabilities_beyond_the_default_set_are_refused_by_name() {
        let policy = CapabilityPolicy::new(true, &[]).unwrap();
        let mut p = process(&["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
        let before = p.clone();
        let err = restrict(&mut p, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capabilities CAP_NET_ADMIN, CAP_SYS_ADMIN are beyond the default set and not \
             allowed by this configuration (allowed_added_capabilities): \
             securityContext.capabilities.add asks for more than containerd's default set, \
             which widens what a compromised process can do to the kernel and the node; list \
             it in [hardening] allowed_added_capabilities (\"ALL\" for every one) or use the \
             RuntimeClass palisade-compat"
        );
        assert_eq!(p, before, "a refused spec is left as it was");
    }

    #[test]
    fn allowed_added_capability_is_kept() {
        let policy = CapabilityPolicy::new(true, &["sys_ptrace".to_owned()]).unwrap();
        let mut p = process(&["CAP_CHOWN", "CAP_SYS_PTRACE"]);
        let change = restrict(&mut p, &policy).unwrap();
        assert_eq!(set(&p, "permitted"), ["CAP_CHOWN", "CAP_SYS_PTRACE"]);
        assert!(change.bounding.contains("CAP_SYS_PTRACE"));
    }

    #[test]
    fn all_allows_every_capability_and_keeps_net_raw() {
        let policy = CapabilityPolicy::new(true, &["all".to_owned()]).unwrap();
        let mut p = process(&KNOWN_CAPABILITIES);
        let change = restrict(&mut p, &policy).unwrap();
        assert!(change.dropped.is_empty());
        assert_eq!(change.bounding.len(), KNOWN_CAPABILITIES.len());
        let granted = beyond_hardened_default(&change.bounding);
        assert!(granted.contains(&"CAP_NET_RAW".to_owned()));
        assert!(granted.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!granted.contains(&"CAP_CHOWN".to_owned()));
        assert_eq!(granted.len(), KNOWN_CAPABILITIES.len() - 13);
    }

    #[test]
    fn ambient_and_inheritable_are_checked_too() {
        let policy = CapabilityPolicy::new(true, &[]).unwrap();
        let mut p = process(&["CAP_CHOWN"]);
        p["capabilities"]
            .as_object_mut()
            .unwrap()
            .insert("ambient".into(), json!(["CAP_BPF"]));
        let err = restrict(&mut p, &policy).unwrap_err();
        assert!(matches!(err, CapabilityError::NotAllowed(ref c) if c == &["CAP_BPF"]));
    }

    #[test]
    fn missing_capabilities_object_is_left_alone() {
        let policy = CapabilityPolicy::new(true, &[]).unwrap();
        let mut p = Map::new();
        let change = restrict(&mut p, &policy).unwrap();
        assert_eq!(change, CapabilityChange::default());
        assert!(p.is_empty());
    }
}
