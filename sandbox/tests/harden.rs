//! `harden_spec` on specs shaped like the ones containerd's CRI plugin writes.

use std::collections::BTreeSet;

use palisade_sandbox::capabilities::{DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES};
use palisade_sandbox::paths::{MASKED_PATHS, READONLY_PATHS};
use palisade_sandbox::seccomp::{self, Arch, Profile};
use palisade_sandbox::{harden_spec, HardenError, HardeningConfig, HardeningReport};
use serde_json::{json, Value};

#[path = "support/cri.rs"]
mod cri;
use cri::{fixture, overridden, CONTAINER, ID};

const SANDBOX: &str = include_str!("fixtures/cri-sandbox.json");

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| match s.as_str() {
            Some(s) => s.to_owned(),
            None => panic!("not a string: {s}"),
        })
        .collect()
}

/// The CRI container fixture hardened under `cfg`, and the report.
fn hardened(cfg: &HardeningConfig) -> (Value, HardeningReport) {
    let mut spec = fixture(CONTAINER);
    let report = harden_spec(ID, &mut spec, cfg).unwrap_or_else(|e| panic!("harden: {e}"));
    (spec, report)
}

/// The default configuration with `change` made.
fn config(change: impl FnOnce(&mut HardeningConfig)) -> HardeningConfig {
    let mut cfg = HardeningConfig::default();
    change(&mut cfg);
    cfg
}

/// Asserts that the report's `applied` list has `line`.
fn assert_applied(report: &HardeningReport, line: &str) {
    assert!(
        report.applied.iter().any(|l| l == line),
        "no {line:?} in {:#?}",
        report.applied
    );
}

/// Whether a line of the report's `applied` list starts with `start`.
fn applied_starting(report: &HardeningReport, start: &str) -> bool {
    report.applied.iter().any(|l| l.starts_with(start))
}

/// The spec CRI writes for `privileged: true`: every capability, nothing masked.
fn privileged_spec() -> Value {
    let mut spec = fixture(CONTAINER);
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        spec["process"]["capabilities"][set] = json!(KNOWN_CAPABILITIES.as_slice());
    }
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    spec
}

#[test]
fn installs_the_default_profile_when_the_spec_has_none() {
    let mut spec = fixture(CONTAINER);
    assert!(spec["linux"].get("seccomp").is_none());
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();

    let installed: Profile = serde_json::from_value(spec["linux"]["seccomp"].clone()).unwrap();
    let bounding: BTreeSet<String> = strings(&spec["process"]["capabilities"]["bounding"])
        .into_iter()
        .collect();
    let Some(arch) = Arch::host() else {
        panic!("tests run on a supported architecture")
    };
    assert_eq!(installed, seccomp::default_profile(arch, &bounding, false));
    assert_eq!(installed.architectures, arch.scmp_native());

    // allow_32bit_syscalls keeps the same names and covers the 32-bit entries too.
    let mut compat_spec = fixture(CONTAINER);
    let compat_cfg = config(|c| c.allow_32bit_syscalls = true);
    harden_spec(ID, &mut compat_spec, &compat_cfg).unwrap();
    let compat: Profile = serde_json::from_value(compat_spec["linux"]["seccomp"].clone()).unwrap();
    assert_eq!(compat, seccomp::default_profile(arch, &bounding, true));
    assert_eq!(compat.architectures, arch.scmp_architectures());
    assert!(
        applied_starting(&report, "seccomp: installed palisade's default profile"),
        "{report:?}"
    );
    assert!(report.relaxed.is_empty(), "{report:?}");
    let fields: Vec<&str> = report.overridden.iter().map(|o| o.field).collect();
    assert_eq!(
        fields,
        [
            "securityContext.allowPrivilegeEscalation",
            "securityContext.seccompProfile"
        ]
    );
    assert!(
        report.overridden.iter().all(|o| !o.explicit),
        "CRI writes the same spec for a pod that asks nothing: {report:?}"
    );
}

#[test]
fn keeps_a_profile_the_pod_asked_for() {
    let mut spec = fixture(SANDBOX);
    let before = spec["linux"]["seccomp"].clone();
    let report = harden_spec("8e1f0b4c5d3a", &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["linux"]["seccomp"], before);
    assert_applied(
        &report,
        "seccomp: kept the profile in the spec (defaultAction SCMP_ACT_ERRNO)",
    );
}

#[test]
fn reports_a_kept_profile_that_allows_by_default_as_asked_not_as_relaxed() {
    let mut spec = fixture(CONTAINER);
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []});
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert!(report.relaxed.is_empty(), "{report:?}");
    assert!(report
        .applied
        .iter()
        .any(|l| l.contains("lets through every syscall") && l.contains("SCMP_ACT_ALLOW")));
}

#[test]
fn logs_what_a_kept_profile_allows_that_ours_never_does() {
    let mut spec = fixture(CONTAINER);
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "io_uring_enter", "io_uring_setup"], "action": "SCMP_ACT_ALLOW"}]
    });
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    // containerd 1.6's RuntimeDefault lists io_uring: a pod asking for RuntimeDefault gets
    // it, which is the hardened default's choice, so nothing is raised for it.
    assert!(report.relaxed.is_empty(), "{report:?}");
    assert_applied(
        &report,
        "seccomp: the spec's profile allows what palisade's never does: io_uring_enter, \
         io_uring_setup",
    );
}

#[test]
fn allow_unconfined_seccomp_leaves_the_spec_without_a_filter_and_says_so() {
    let cfg = config(|c| c.allow_unconfined_seccomp = true);
    let (spec, report) = hardened(&cfg);
    assert!(spec["linux"].get("seccomp").is_none());
    assert_eq!(report.relaxed.len(), 1, "{report:?}");
    assert!(report.relaxed[0].starts_with("seccomp: no filter, as the spec asks"));
    assert!(overridden(&report, "securityContext.seccompProfile").is_none());
}

#[test]
fn cuts_net_raw_from_every_set_and_keeps_the_rest_of_the_default_set() {
    let (spec, report) = hardened(&HardeningConfig::default());
    let expected: Vec<&str> = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    .to_vec();
    for set in ["bounding", "effective", "inheritable", "permitted"] {
        assert_eq!(
            strings(&spec["process"]["capabilities"][set]),
            expected,
            "{set}"
        );
    }
    assert!(spec["process"]["capabilities"].get("ambient").is_none());
    assert_applied(&report, "capabilities: dropped CAP_NET_RAW");
}

#[test]
fn keeps_net_raw_when_configured_to() {
    let cfg = config(|c| c.drop_net_raw = false);
    let (spec, report) = hardened(&cfg);
    let bounding = strings(&spec["process"]["capabilities"]["bounding"]);
    assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
    assert!(bounding.contains(&"CAP_NET_RAW".to_owned()));
    assert!(!applied_starting(&report, "capabilities:"));
}

#[test]
fn refuses_an_added_capability_naming_it_and_leaves_the_spec_untouched() {
    let mut spec = fixture(CONTAINER);
    spec["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    let before = spec.clone();
    let err = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Capabilities { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: capability CAP_SYS_ADMIN is beyond the default set and not \
         allowed by this configuration (allowed_added_capabilities): \
         securityContext.capabilities.add asks for more than containerd's default set, which \
         widens what a compromised process can do to the kernel and the node; list it in \
         [hardening] allowed_added_capabilities (\"ALL\" for every one) or use the \
         RuntimeClass palisade-compat"
    );
    assert_eq!(spec, before);
}

#[test]
fn allows_an_added_capability_the_configuration_lists_and_its_syscalls() {
    let mut spec = fixture(CONTAINER);
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_PTRACE"));
    }
    let cfg = config(|c| c.allowed_added_capabilities = vec!["SYS_PTRACE".into()]);
    harden_spec(ID, &mut spec, &cfg).unwrap();
    assert!(strings(&spec["process"]["capabilities"]["effective"])
        .contains(&"CAP_SYS_PTRACE".to_owned()));
    let installed: Profile = serde_json::from_value(spec["linux"]["seccomp"].clone()).unwrap();
    assert!(installed.allowed_names().contains("ptrace"));
}

#[test]
fn unknown_capability_in_the_configuration_is_an_error() {
    let mut spec = fixture(CONTAINER);
    let cfg = config(|c| c.allowed_added_capabilities = vec!["SYS_EVERYTHING".into()]);
    let err = harden_spec(ID, &mut spec, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: configuration: \"SYS_EVERYTHING\" is not a known capability"
    );
}

#[test]
fn refuses_a_privileged_container() {
    let mut spec = privileged_spec();
    let before = spec.clone();
    let err = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Privileged { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: privileged containers are refused by this configuration \
         (allow_privileged): securityContext.privileged gives the container every \
         capability, every host device and no seccomp filter, the node's root in all but \
         name; set [hardening] allow_privileged = true or use the \
         RuntimeClass palisade-compat"
    );
    assert_eq!(spec, before);
}

#[test]
fn a_privileged_container_on_a_kernel_without_the_newest_capabilities_is_still_refused() {
    let mut spec = privileged_spec();
    let older: Vec<&str> = KNOWN_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "CAP_PERFMON" | "CAP_BPF" | "CAP_CHECKPOINT_RESTORE"))
        .collect();
    spec["process"]["capabilities"]["bounding"] = json!(older);
    let err = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap_err();
    assert!(matches!(err, HardenError::Privileged { .. }), "{err:?}");
}

#[test]
fn runs_a_privileged_container_as_it_is_when_allowed_and_warns() {
    let mut spec = privileged_spec();
    let before = spec.clone();
    let cfg = config(|c| c.allow_privileged = true);
    let report = harden_spec(ID, &mut spec, &cfg).unwrap();
    assert_eq!(spec, before);
    assert!(report.applied.is_empty());
    assert_eq!(report.relaxed.len(), 1);
    assert!(report.relaxed[0].starts_with("privileged: every capability, every host device"));
}

#[test]
fn every_capability_with_masked_paths_is_not_privileged_but_refused_by_name() {
    let mut spec = fixture(CONTAINER);
    spec["process"]["capabilities"]["bounding"] = json!(KNOWN_CAPABILITIES.as_slice());
    let cfg = config(|c| c.allow_privileged = true);
    let err = harden_spec(ID, &mut spec, &cfg).unwrap_err();
    assert!(matches!(err, HardenError::Capabilities { .. }), "{err:?}");
    assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
}

#[test]
fn sets_no_new_privileges_even_over_an_explicit_false() {
    let mut spec = fixture(CONTAINER);
    assert!(spec["process"].get("noNewPrivileges").is_none());
    harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], true);

    let mut spec = fixture(CONTAINER);
    spec["process"]["noNewPrivileges"] = json!(false);
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert!(applied_starting(
        &report,
        "process: noNewPrivileges set (the spec left it off"
    ));
}

#[test]
fn merges_masked_and_readonly_paths_without_duplicates() {
    let mut spec = fixture(CONTAINER);
    spec["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/proc/kcore"));
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();

    let masked = strings(&spec["linux"]["maskedPaths"]);
    let readonly = strings(&spec["linux"]["readonlyPaths"]);
    for path in MASKED_PATHS {
        assert_eq!(masked.iter().filter(|p| *p == path).count(), 1, "{path}");
    }
    for path in READONLY_PATHS {
        assert_eq!(readonly.iter().filter(|p| *p == path).count(), 1, "{path}");
    }
    // containerd 1.6 lists /proc/asound as read-only; that entry stays, and it is masked too.
    assert!(readonly.contains(&"/proc/asound".to_owned()));
    assert_eq!(masked.len(), MASKED_PATHS.len());
    assert_applied(
        &report,
        "maskedPaths: added /proc/asound, /sys/devices/virtual/powercap",
    );
    assert!(!applied_starting(&report, "readonlyPaths:"));
}

#[test]
fn preserves_every_field_it_does_not_harden() {
    let original = fixture(CONTAINER);
    let mut spec = original.clone();
    spec["x-vendor"] = json!({"nested": [1, 2.5, "three", null, {"deep": true}]});
    spec["linux"]["intelRdt"] = json!({"closID": "guaranteed"});
    let extra = spec.clone();
    harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();

    let mut hardened = spec.as_object().unwrap().clone();
    let mut expected = extra.as_object().unwrap().clone();
    // The hardened members are compared by the tests above; everything else must be equal.
    for member in [&mut hardened, &mut expected] {
        let process = member["process"].as_object_mut().unwrap();
        process.remove("capabilities");
        process.remove("noNewPrivileges");
        let linux = member["linux"].as_object_mut().unwrap();
        for key in ["maskedPaths", "readonlyPaths", "seccomp"] {
            linux.remove(key);
        }
    }
    assert_eq!(hardened, expected);
    assert_eq!(spec["mounts"], original["mounts"]);
    assert_eq!(spec["annotations"], original["annotations"]);
    assert_eq!(spec["linux"]["namespaces"], original["linux"]["namespaces"]);
    assert_eq!(
        spec["x-vendor"]["nested"][4]["deep"], true,
        "unknown members survive"
    );
}

#[test]
fn hardens_the_pause_container_without_touching_its_namespaces() {
    let original = fixture(SANDBOX);
    let mut spec = original.clone();
    let report = harden_spec("8e1f0b4c5d3a", &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec["linux"]["namespaces"], original["linux"]["namespaces"]);
    assert_eq!(spec["hostname"], original["hostname"]);
    assert_eq!(spec["mounts"], original["mounts"]);
    assert!(
        !strings(&spec["process"]["capabilities"]["bounding"]).contains(&"CAP_NET_RAW".to_owned())
    );
    // It already had noNewPrivileges and every path: only NET_RAW and the kept profile.
    assert_eq!(
        report.applied,
        [
            "capabilities: dropped CAP_NET_RAW",
            "seccomp: kept the profile in the spec (defaultAction SCMP_ACT_ERRNO)"
        ]
    );
}

#[test]
fn hardening_twice_changes_nothing_more() {
    let mut spec = fixture(CONTAINER);
    harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    let once = spec.clone();
    let report = harden_spec(ID, &mut spec, &HardeningConfig::default()).unwrap();
    assert_eq!(spec, once);
    assert_eq!(
        report.applied,
        ["seccomp: kept the profile in the spec (defaultAction SCMP_ACT_ERRNO)"]
    );
}

#[test]
fn a_spec_that_is_not_an_oci_spec_is_refused_with_the_path() {
    let cfg = HardeningConfig::default();
    let mut not_object = json!([1, 2]);
    let err = harden_spec(ID, &mut not_object, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: spec: not a JSON object"
    );

    let mut no_process = json!({"ociVersion": "1.0.2"});
    let err = harden_spec(ID, &mut no_process, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: spec: process: missing"
    );

    let mut spec = fixture(CONTAINER);
    spec["linux"]["readonlyPaths"] = json!({"oops": true});
    let err = harden_spec(ID, &mut spec, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container 3c1d2e4f5a6b: spec: linux.readonlyPaths: expected an array of strings"
    );
}

#[test]
fn round_trips_through_the_bundle_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("config.json");
    std::fs::write(&path, CONTAINER)?;
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    harden_spec(ID, &mut spec, &HardeningConfig::default())?;
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    let reread: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(reread, spec);
    assert_eq!(reread["process"]["oomScoreAdj"], 1000);
    assert_eq!(
        reread["linux"]["resources"]["unified"]["memory.oom.group"],
        "1"
    );
    Ok(())
}
