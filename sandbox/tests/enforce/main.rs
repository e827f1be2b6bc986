//! `enforce` on CRI-shaped specs (hardened first, as the shim does) with KubeArmor policies
//! written as users write them: what each rule kind and action becomes, strict mode, and the
//! refused and degraded cases. This file holds the fixtures and the cases that span rule
//! kinds; the policies are files under `tests/policies/`, read with `policy_file!` and shared
//! with `enforce_runc.rs`; each rule kind has a module of its own.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
#[path = "../support/policy.rs"]
mod fixtures;
mod capabilities;
mod file;
mod network;
mod process;
mod strict;
mod syscalls;

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use palisade_init::plan::{FsAccess, Plan};
use palisade_policy::{CompileOptions, CompiledPolicy};
use palisade_sandbox::{
    enforce, harden_spec, EnforceError, Enforcement, Enforcer, HardeningConfig, KernelFeatures,
    RuleEnforcement, StrictConfig,
};
use serde_json::{json, Value};

const ID: &str = "abc123";

fn kernel(landlock_abi: Option<u32>, log: bool) -> KernelFeatures {
    let mut actions: BTreeSet<String> = ["kill_process", "errno", "allow", "trap", "user_notif"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if log {
        actions.insert("log".to_owned());
    }
    KernelFeatures {
        landlock_abi,
        seccomp_actions: actions,
        user_namespaces: true,
        unprivileged_user_namespaces: None,
        bpf_lsm: false,
    }
}

fn node() -> KernelFeatures {
    kernel(Some(7), true)
}

/// The CRI container fixture after the default hardening.
fn hardened(config: &HardeningConfig) -> Result<Value> {
    let text = include_str!("../fixtures/cri-container.json");
    let mut spec: Value = serde_json::from_str(text)?;
    harden_spec(ID, &mut spec, config)?;
    Ok(spec)
}

fn spec() -> Result<Value> {
    hardened(&HardeningConfig::default())
}

fn policy(yaml: &str) -> Result<CompiledPolicy> {
    policy_with(yaml, &CompileOptions::default())
}

/// The policy compiled for the fixture's container (demo/web-0, `app: web`).
fn policy_with(yaml: &str, options: &CompileOptions) -> Result<CompiledPolicy> {
    fixtures::policy_for(yaml, "nginx:1.25", options)
}

/// The rights the plan's landlock ruleset handles (none when it names none).
fn handled(ll: &palisade_init::plan::LandlockPlan) -> BTreeSet<FsAccess> {
    ll.handled_fs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn degraded() -> StrictConfig {
    StrictConfig {
        allow_degraded: true,
        ..StrictConfig::default()
    }
}

fn landlock(e: &Enforcement) -> &palisade_init::plan::LandlockPlan {
    let plan = e.plan.as_ref().expect("a plan");
    assert!(plan.problems().is_empty(), "{:?}", plan.problems());
    let text = serde_json::to_vec(plan).expect("serialize");
    let again = Plan::parse(&text, "plan.json".as_ref()).expect("palisade-init reads the plan");
    assert_eq!(&again, plan);
    plan.landlock.as_ref().expect("landlock")
}

/// The rights granted beneath exactly `path`.
fn grant(e: &Enforcement, path: &str) -> BTreeSet<FsAccess> {
    landlock(e)
        .fs
        .iter()
        .filter(|r| r.path.to_str() == Some(path))
        .flat_map(|r| r.access.iter().copied())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What the spec's seccomp profile does with a call, read the way libseccomp does: rules
/// naming the syscall whose conditions all hold; these must agree (palisade's rules are
/// disjoint), otherwise the default.
fn seccomp_action(spec: &Value, name: &str, args: [u64; 3]) -> String {
    let profile = &spec["linux"]["seccomp"];
    let mut found: BTreeSet<String> = BTreeSet::new();
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        if !strings(&rule["names"]).iter().any(|n| n == name) {
            continue;
        }
        let holds = rule["args"].as_array().into_iter().flatten().all(|c| {
            let arg = args[c["index"].as_u64().unwrap_or(9) as usize];
            let value = c["value"].as_u64().unwrap_or(0);
            let two = c["valueTwo"].as_u64().unwrap_or(0);
            match c["op"].as_str() {
                Some("SCMP_CMP_EQ") => arg == value,
                Some("SCMP_CMP_NE") => arg != value,
                Some("SCMP_CMP_LT") => arg < value,
                Some("SCMP_CMP_GT") => arg > value,
                Some("SCMP_CMP_MASKED_EQ") => arg & value == two,
                other => panic!("unexpected op {other:?}"),
            }
        });
        if holds {
            found.insert(action_of(rule, "action", "errnoRet"));
        }
    }
    assert!(
        found.len() <= 1,
        "{name}{args:?}: overlapping rules {found:?}"
    );
    found
        .pop_first()
        .unwrap_or_else(|| action_of(profile, "defaultAction", "defaultErrnoRet"))
}

fn action_of(v: &Value, key: &str, errno: &str) -> String {
    let action = v[key].as_str().unwrap_or("?").to_owned();
    if action == "SCMP_ACT_ERRNO" {
        format!("{action}({})", v[errno].as_u64().unwrap_or(1))
    } else {
        action
    }
}

const EPERM: &str = "SCMP_ACT_ERRNO(1)";
const ALLOW: &str = "SCMP_ACT_ALLOW";
const LOG: &str = "SCMP_ACT_LOG";
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_PACKET: u64 = 17;
const AF_NETLINK: u64 = 16;
const STREAM: u64 = 1;
const DGRAM: u64 = 2;
const RAW: u64 = 3;
const NONBLOCK_CLOEXEC: u64 = 0o4000 | 0o2_000_000;

/// Asserts which enforcer each rule got: `(where the rule stands in the policy, enforcer)`.
fn assert_enforcers(e: &Enforcement, want: &[(&str, Enforcer)]) {
    for (origin, enforcer) in want {
        assert_eq!(&enforcer_of(e, origin), enforcer, "{origin}");
    }
}

/// The fixture spec after the default hardening and `yaml`'s policy, with no strict mode, on a
/// node with landlock abi 7; the enforcement report with it.
fn enforced(yaml: &str) -> Result<(Value, Enforcement)> {
    let mut s = spec()?;
    let e = enforce_policy(&mut s, yaml)?;
    Ok((s, e))
}

/// `yaml`'s policies enforced on `s` on the node (no strict mode).
fn enforce_policy(s: &mut Value, yaml: &str) -> Result<Enforcement> {
    Ok(enforce(ID, s, Some(&policy(yaml)?), None, &node())?)
}

/// The report's rule on `target` (the first when several are).
fn rule_on<'a>(e: &'a Enforcement, target: &str) -> &'a RuleEnforcement {
    e.rules
        .iter()
        .find(|r| r.target == target)
        .unwrap_or_else(|| panic!("no rule on {target} in {:#?}", e.rules))
}

fn enforcer_of(e: &Enforcement, origin: &str) -> Enforcer {
    e.rules
        .iter()
        .find(|r| r.rule.ends_with(origin))
        .unwrap_or_else(|| panic!("no rule {origin} in {:#?}", e.rules))
        .enforcer
        .clone()
}

#[test]
fn no_policy_and_no_strict_changes_nothing() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let e = enforce(ID, &mut s, None, None, &node())?;
    assert_eq!(s, before);
    assert!(e.plan.is_none() && e.rules.is_empty() && e.monitor.is_empty());
    Ok(())
}

#[test]
fn apparmor_parts_are_reported_as_not_enforced() -> Result<()> {
    let yaml = include_str!("../policies/with-apparmor.yaml");
    let e = enforce(ID, &mut spec()?, Some(&policy(yaml)?), None, &node())?;
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].starts_with("policy demo/with-apparmor: "),
        "{}",
        e.warnings[0]
    );
    assert!(
        e.warnings[0].ends_with(": not enforced by palisade"),
        "{}",
        e.warnings[0]
    );
    Ok(())
}

/// KubeArmor's "limit TCP/UDP/raw sockets to named binaries" fixture, as users write it.
const NETWORK_SPECIFIC_PROCESSES: &str =
    include_str!("../../../policy/tests/fixtures/network-specific-processes.yaml");

#[test]
fn every_rule_is_reported_once_in_policy_order() -> Result<()> {
    let yaml = [
        policy_file!("block-token"),
        policy_file!("block-apt"),
        policy_file!("block-raw"),
        policy_file!("caps"),
    ]
    .join("\n---\n");
    let p = policy(&yaml)?;
    let e = enforce(ID, &mut spec()?, Some(&p), None, &node())?;
    assert_eq!(e.rules.len(), p.rule_count());
    let kinds: Vec<String> = e.rules.iter().map(|r| r.kind.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "file",
            "process",
            "process",
            "capabilities",
            "capabilities",
            "network"
        ]
    );
    let json = serde_json::to_value(&e)?;
    assert_eq!(json["rules"][0]["enforcer"], "bind-mount-mask");
    if json["plan"] != Value::Null {
        bail!("no plan expected: {}", json["plan"]);
    }
    assert_eq!(
        json["monitor"]["deny_exec"][0]["target"],
        json!({"path": "/usr/bin/apt"})
    );
    Ok(())
}
