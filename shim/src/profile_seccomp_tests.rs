use std::collections::BTreeSet;

use palisade_profile::{Observation, WorkloadId};
use palisade_sandbox::seccomp::{default_profile, Arch};

use super::*;

fn hardened() -> Value {
    let bounding: BTreeSet<String> = ["CAP_CHOWN".to_string()].into();
    let profile = default_profile(Arch::X86_64, &bounding, false);
    json!({"linux": {"seccomp": serde_json::to_value(profile).unwrap()}})
}

fn learned(calls: &[&str]) -> Recording {
    let mut r = Recording::new(WorkloadId::new("shop", "web").unwrap());
    for c in calls {
        r.observe(
            1,
            &Observation::Syscall {
                name: c.to_string(),
            },
        );
    }
    r
}

/// The names a filter lets through, with or without conditions.
fn passing(spec: &Value) -> BTreeSet<String> {
    spec["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| PASSING.contains(&r["action"].as_str().unwrap()))
        .flat_map(|r| r["names"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn narrows_to_the_learned_calls_the_floor_and_the_runtime() {
    let mut spec = hardened();
    let before = passing(&spec);
    assert!(before.contains("fsync") && before.contains("socket"));
    let n = narrow(&mut spec, &learned(&["accept4", "epoll_wait", "sendto"])).unwrap();
    let after = passing(&spec);
    for want in [
        "accept4",
        "epoll_wait",
        "sendto",
        "exit_group",
        "rt_sigreturn",
        "execve",
    ] {
        assert!(after.contains(want), "{want} refused: {after:?}");
    }
    assert!(
        !after.contains("fsync") && !after.contains("socket"),
        "{after:?}"
    );
    assert!(n.refused.contains(&"fsync".to_string()));
    assert!(!n.refused.contains(&"accept4".to_string()));
    assert!(
        after.is_subset(&before),
        "never more than the hardened filter"
    );
    assert_eq!(
        n.allowed.iter().cloned().collect::<BTreeSet<_>>(),
        after,
        "allowed is what passes"
    );
    // the hardened refusals and defaults stay
    let f = &spec["linux"]["seccomp"];
    assert_eq!(f["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(f["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["names"] == json!(["clone3"]) && r["action"] == "SCMP_ACT_ERRNO"));
}

#[test]
fn conditional_rules_of_kept_calls_stay_and_of_others_go() {
    let mut spec = hardened();
    narrow(&mut spec, &learned(&["personality"])).unwrap();
    let rules = spec["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    let with_args = |name: &str| {
        rules
            .iter()
            .filter(|r| r["names"] == json!([name]) && r.get("args").is_some())
            .count()
    };
    assert!(with_args("personality") > 0, "kept with its conditions");
    assert_eq!(with_args("mknod"), 0, "never learned: its rules go");
}

#[test]
fn an_allowing_default_becomes_eperm() {
    let mut spec = json!({"linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}]
    }}});
    narrow(&mut spec, &learned(&["read"])).unwrap();
    let f = &spec["linux"]["seccomp"];
    assert_eq!(f["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(f["defaultErrnoRet"], libc::EPERM);
    assert_eq!(f["syscalls"][0]["names"], json!(["ptrace"]));
}

#[test]
fn refuses_a_lossy_recording_and_a_spec_without_filter() {
    let mut lossy = learned(&["read"]);
    lossy.add_drops(3);
    let mut spec = hardened();
    let untouched = spec.clone();
    let e = narrow(&mut spec, &lossy).unwrap_err();
    assert!(matches!(e, NarrowError::NotPromotable { .. }), "{e}");
    assert!(e.to_string().contains("lossy"), "{e}");
    assert_eq!(spec, untouched, "left as it was");
    let mut bare = json!({"linux": {}});
    assert_eq!(
        narrow(&mut bare, &learned(&["read"])).unwrap_err(),
        NarrowError::NoFilter {
            workload: "shop/web".into()
        }
    );
}
