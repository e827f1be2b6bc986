//! The CRI contract on CRI-shaped specs: what the hardened default overrides, what the
//! `palisade-compat` configuration leaves as CRI wrote it, and what each reports.

use palisade_sandbox::capabilities::KNOWN_CAPABILITIES;
use palisade_sandbox::{harden_spec, HardenError, HardeningConfig, COMPAT_RUNTIME_CLASS};
use serde_json::{json, Value};

#[path = "support/cri.rs"]
mod cri;
use cri::{fixture, overridden, CONTAINER, ID};

fn with_caps(caps: &[&str]) -> Value {
    let mut spec = fixture(CONTAINER);
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(caps);
    }
    spec
}

#[test]
fn compat_leaves_an_ordinary_container_as_cri_wrote_it_and_lists_every_grant() {
    let mut spec = fixture(CONTAINER);
    spec["process"]["noNewPrivileges"] = json!(false);
    let before = spec.clone();
    let report = harden_spec(ID, &mut spec, &HardeningConfig::compat()).unwrap();
    assert_eq!(
        spec["process"], before["process"],
        "capabilities and no_new_privs kept"
    );
    assert!(
        spec["linux"].get("seccomp").is_none(),
        "no filter, as under runc"
    );
    assert!(report.overridden.is_empty(), "{report:?}");
    assert_eq!(report.relaxed.len(), 3, "{report:?}");
    assert!(report.relaxed[0].starts_with("capabilities: CAP_NET_RAW beyond"));
    assert!(report.relaxed[1].starts_with("no_new_privs: left off"));
    assert!(report.relaxed[2].starts_with("seccomp: no filter"));
}

#[test]
fn compat_keeps_added_capabilities_and_all_and_names_them() {
    let mut spec = with_caps(&["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
    let report = harden_spec(ID, &mut spec, &HardeningConfig::compat()).unwrap();
    assert_eq!(
        spec["process"]["capabilities"]["effective"],
        json!(["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"])
    );
    assert!(report.relaxed.contains(
        &"capabilities: CAP_NET_ADMIN, CAP_SYS_ADMIN beyond palisade's default set \
          (allowed_added_capabilities)"
            .to_owned()
    ));

    // `add: [ALL]` with /proc masked is not privileged: every capability, kept.
    let mut spec = with_caps(&KNOWN_CAPABILITIES);
    harden_spec(ID, &mut spec, &HardeningConfig::compat()).unwrap();
    assert_eq!(
        spec["process"]["capabilities"]["bounding"],
        json!(KNOWN_CAPABILITIES.as_slice())
    );
}

#[test]
fn compat_runs_privileged_as_it_is_and_names_the_shared_mounts() {
    let mut spec = with_caps(&KNOWN_CAPABILITIES);
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    spec["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/mnt/b", "type": "bind", "source": "/srv/b",
                     "options": ["rbind", "rshared", "rw"]}),
    );
    let before = spec.clone();
    let report = harden_spec(ID, &mut spec, &HardeningConfig::compat()).unwrap();
    assert_eq!(spec, before);
    assert_eq!(report.relaxed.len(), 1, "{report:?}");
    assert!(
        report.relaxed[0].ends_with("mount propagation to the host: rshared /mnt/b"),
        "{report:?}"
    );
}

#[test]
fn compat_keeps_an_unmasked_proc_and_the_hardened_default_masks_it_and_says_so() {
    let mut spec = fixture(CONTAINER);
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    let mut compat = spec.clone();
    let report = harden_spec(ID, &mut compat, &HardeningConfig::compat()).unwrap();
    assert_eq!(compat["linux"]["maskedPaths"], json!([]));
    assert!(report.relaxed.iter().any(|l| l.starts_with("procMount:")));

    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert!(!spec["linux"]["maskedPaths"].as_array().unwrap().is_empty());
    let o =
        overridden(&report, "securityContext.procMount").unwrap_or_else(|| panic!("{report:?}"));
    assert!(
        o.explicit,
        "CRI masks by default: empty lists were asked for"
    );
}

#[test]
fn hardened_default_sets_no_new_privs_and_reports_the_override_as_not_explicit() {
    let mut spec = fixture(CONTAINER);
    spec["process"]["noNewPrivileges"] = json!(false);
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    let o = overridden(&report, "securityContext.allowPrivilegeEscalation")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(!o.explicit);
    assert!(o.message.contains("allow_privilege_escalation"), "{o:?}");
    assert!(o.message.contains(COMPAT_RUNTIME_CLASS), "{o:?}");

    // A spec that already has it: nothing overridden.
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert!(overridden(&report, "securityContext.allowPrivilegeEscalation").is_none());
}

#[test]
fn a_missing_profile_is_an_explicit_unconfined_only_where_the_node_says_so() {
    let cfg = HardeningConfig {
        unset_seccomp_is_runtime_default: true,
        ..HardeningConfig::default()
    };
    let mut spec = fixture(CONTAINER);
    let report = harden_spec(ID, &mut spec, &cfg).unwrap();
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let o = overridden(&report, "securityContext.seccompProfile")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(o.explicit);
    assert!(o.message.contains("allow_unconfined_seccomp"), "{o:?}");
}

/// The spec containerd 1.6 writes for `privileged: true` under a containerd whose own bounding
/// set lacks a capability (as in a container): every device allowed, its default masked paths
/// kept, `CAP_LEASE` missing.
fn privileged_on_containerd_1_6_reduced() -> Value {
    let caps: Vec<&str> = KNOWN_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| *c != "CAP_LEASE")
        .collect();
    let mut spec = with_caps(&caps);
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    spec
}

#[test]
fn a_privileged_spec_is_told_by_its_devices_when_the_paths_stay_masked() {
    let mut spec = privileged_on_containerd_1_6_reduced();
    assert!(!spec["linux"]["maskedPaths"].as_array().unwrap().is_empty());
    let err = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Privileged { .. }), "{err:?}");

    let before = spec.clone();
    let report = harden_spec(ID, &mut spec, &HardeningConfig::compat()).unwrap();
    assert_eq!(spec, before, "palisade-compat runs it as CRI wrote it");
    assert!(report.relaxed[0].starts_with("privileged:"), "{report:?}");

    // Every capability without the devices is `add: [ALL]`: the capability rule.
    let mut all = with_caps(&KNOWN_CAPABILITIES);
    let err = harden_spec(ID, &mut all, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Capabilities { .. }), "{err:?}");
}

#[test]
fn refusals_name_the_field_the_key_and_the_runtime_class() {
    let mut spec = with_caps(&KNOWN_CAPABILITIES);
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    let err = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Privileged { .. }), "{err:?}");
    let text = err.to_string();
    for part in [
        "securityContext.privileged",
        "allow_privileged",
        COMPAT_RUNTIME_CLASS,
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }

    let mut spec = with_caps(&KNOWN_CAPABILITIES);
    let text = harden_spec(ID, &mut spec, &HardeningConfig::default())
        .unwrap_err()
        .to_string();
    for part in [
        "CAP_SYS_ADMIN",
        "securityContext.capabilities.add",
        "allowed_added_capabilities",
        COMPAT_RUNTIME_CLASS,
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn the_hardened_default_raises_nothing_for_a_container_that_asks_nothing_more() {
    let mut spec = fixture(CONTAINER);
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert!(report.relaxed.is_empty(), "{report:?}");
    assert!(report.overridden.iter().all(|o| !o.explicit), "{report:?}");
}
