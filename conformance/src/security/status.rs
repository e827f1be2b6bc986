//! `palisade status` against a live containerd: a palisade pod with a policy of four rule kinds
//! runs, the real CLI is asked for the node's status as an operator would, and its view of the
//! container must be the bundle's `palisade-enforcement.json`, with each rule's enforcer the one
//! this kernel can give it (BPF-LSM only where it is in force and `bpf` is an active LSM).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::policies::policy_sleeper;
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, stdout_of, Ctx};

/// A process, a file, a network and a capabilities Block rule: none needs BPF-LSM (each has a
/// fallback: the kill at exec, the mask, seccomp, the bounding set), so the pod runs on every
/// kernel, and two of them move to BPF-LSM where it is in force.
const FOUR_KINDS: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-status-kinds
  namespace: shop
spec:
  severity: 5
  process:
    matchPaths:
    - path: /usr/bin/apt
  file:
    matchPaths:
    - path: /etc/group
  network:
    matchProtocols:
    - protocol: raw
  capabilities:
    matchCapabilities:
    - capability: net_raw
  action: Block
";

/// containerd's namespace for CRI containers (their bundles' directory).
const CRI_NAMESPACE: &str = "k8s.io";

pub fn all() -> Vec<SecCheck> {
    vec![sec_check!(
        "policy_status_per_container",
        60,
        Scope::Only(PALISADE),
        status_per_container
    )]
}

/// The `palisade` CLI: `--cli`, or the binary beside this one (the workspace's build).
pub(super) fn cli(ctx: &Ctx) -> Result<PathBuf> {
    if let Some(c) = &ctx.settings.cli {
        return Ok(c.clone());
    }
    let me = std::env::current_exe().context("find the suite's own binary")?;
    let beside = me.with_file_name("palisade");
    ensure(beside.is_file(), || {
        format!(
            "no --cli and no {}: build it (cargo build -p palisade-cli)",
            beside.display()
        )
    })?;
    Ok(beside)
}

/// The test's containerd configuration: `containerd.toml` in the run directory that holds the
/// shims' event log (`--events-dir`), as the harness lays it out.
fn containerd_config(ctx: &Ctx) -> Result<PathBuf> {
    let events = ctx
        .settings
        .events_dir
        .as_deref()
        .context("no --events-dir: the test's containerd run directory is unknown")?;
    let config = events
        .parent()
        .map(|run| run.join("containerd.toml"))
        .with_context(|| format!("events dir {} has no parent", events.display()))?;
    ensure(config.is_file(), || {
        format!("containerd config {}: no such file", config.display())
    })?;
    Ok(config)
}

/// containerd's `state` directory, read from its configuration's top-level `state = "..."`.
fn state_dir(config: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("read containerd config {}", config.display()))?;
    text.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "state").then(|| PathBuf::from(v.trim().trim_matches('"')))
        })
        .with_context(|| format!("containerd config {}: no state directory", config.display()))
}

/// The enforcer a rule of `kind` in [`FOUR_KINDS`] gets on a node where BPF-LSM is (or is not)
/// in force.
fn expected(kind: &str, bpf_lsm: bool) -> Option<&'static str> {
    Some(match (kind, bpf_lsm) {
        ("process", true) | ("file", true) => "bpf-lsm",
        ("process", false) => "bpf-exec-kill",
        ("file", false) => "bind-mount-mask",
        ("network", _) => "seccomp",
        ("capabilities", _) => "capabilities-bounding",
        _ => return None,
    })
}

/// A rule's `(rule, kind, enforcer)`, the fields compared.
fn rule_triples(rules: &Value) -> Vec<(String, String, String)> {
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    let mut v: Vec<_> = rules
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| (s(r, "rule"), s(r, "kind"), s(r, "enforcer")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn status_per_container(ctx: &Ctx) -> Result<Observed> {
    let cli = cli(ctx)?;
    let config = containerd_config(ctx)?;
    let (c, pod_name) = policy_sleeper(ctx, FOUR_KINDS).await?;
    let bundle_record = state_dir(&config)?
        .join("io.containerd.runtime.v2.task")
        .join(CRI_NAMESPACE)
        .join(&c)
        .join("palisade-enforcement.json");
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(&bundle_record)
            .with_context(|| format!("read {}", bundle_record.display()))?,
    )
    .with_context(|| format!("parse {}", bundle_record.display()))?;

    let mut cmd = std::process::Command::new(&cli);
    cmd.args(["status", "--json", "--containerd-config"])
        .arg(&config);
    if let Some(p) = &ctx.settings.profile_state_dir {
        cmd.arg("--profile-state-dir").arg(p);
    }
    let out = stdout_of(&mut cmd, &format!("{} status", cli.display()))?;
    let status: Value = serde_json::from_slice(&out).context("parse `palisade status --json`")?;

    let Some(listed) = status["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["id"] == c.as_str()))
    else {
        bail!(
            "`palisade status` does not list container {c} (pod {pod_name}); it lists {} \
             container(s), record problems: {}",
            status["containers"].as_array().map_or(0, Vec::len),
            status["record_problems"]
        );
    };
    ensure(listed["pod"] == pod_name.as_str(), || {
        format!(
            "status names pod {} for {c}, want {pod_name}",
            listed["pod"]
        )
    })?;
    let shown = rule_triples(&listed["rules"]);
    let in_bundle = rule_triples(&recorded["rules"]);
    ensure(shown == in_bundle, || {
        format!("status shows rules {shown:?}, the bundle's record {in_bundle:?}")
    })?;

    let bpf_lsm = status["kernel"]["bpf_lsm"].as_bool().unwrap_or(false);
    let listed_lsm = palisade_host::bpf_lsm_listed();
    ensure(!bpf_lsm || listed_lsm, || {
        "status claims BPF-LSM in force, yet bpf is not among /sys/kernel/security/lsm".to_string()
    })?;
    let mut kinds = Vec::new();
    for (rule, kind, enforcer) in &shown {
        let want = expected(kind, bpf_lsm)
            .with_context(|| format!("rule {rule}: unexpected kind {kind}"))?;
        ensure(enforcer == want, || {
            format!(
                "rule {rule} ({kind}): enforcer {enforcer}, want {want} (BPF-LSM in force: \
                 {bpf_lsm}, bpf listed: {listed_lsm})"
            )
        })?;
        kinds.push(format!("{kind}={enforcer}"));
    }
    kinds.sort();
    let want_kinds = ["capabilities", "file", "network", "process"];
    let mut got_kinds: Vec<&str> = shown.iter().map(|(_, k, _)| k.as_str()).collect();
    got_kinds.sort();
    ensure(got_kinds == want_kinds, || {
        format!("rule kinds {got_kinds:?}, want one of each of {want_kinds:?}")
    })?;
    Ok(Observed::blocked(format!(
        "(listed by `palisade status` as in its bundle: {})",
        kinds.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_is_read_from_the_top_of_the_config() {
        let dir = std::env::temp_dir().join(format!("palisade-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\nroot = \"/r/root\"\nstate = \"/r/state\"\n\n[plugins]\n  state = \"x\"\n",
        )
        .unwrap();
        assert_eq!(state_dir(&config).unwrap(), PathBuf::from("/r/state"));
        std::fs::write(&config, "version = 2\n[plugins]\nstate = \"/x\"\n").unwrap();
        assert!(state_dir(&config).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bpf_lsm_moves_only_the_process_and_file_rules() {
        assert_eq!(expected("process", true), Some("bpf-lsm"));
        assert_eq!(expected("process", false), Some("bpf-exec-kill"));
        assert_eq!(expected("file", false), Some("bind-mount-mask"));
        assert_eq!(expected("network", true), Some("seccomp"));
        assert_eq!(
            expected("capabilities", true),
            Some("capabilities-bounding")
        );
        assert_eq!(expected("syscalls", true), None);
    }
}
