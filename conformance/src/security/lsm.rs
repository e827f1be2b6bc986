//! The file Block rules only BPF-LSM carries (`matchPatterns`, `fromSource`, `ownerOnly`),
//! through CRI: where the kernel lists `bpf` among its LSMs the forbidden opens fail with
//! EACCES, their neighbours (another binary, the file's owner) open, the refusals are reported
//! naming `bpf-lsm`, and the container's enforcement record says so; elsewhere the container is
//! refused with the reason.

use std::time::Duration;

use anyhow::{bail, Result};
use k8s_cri::v1::Int64Value;

use super::attacks::{probe, PROBE};
use super::bad_input::refused;
use super::eventlog::{field, summary, EventLog};
use super::policies::{policy_pod, policy_sleeper};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::cri::SLEEPER;
use crate::sec_check;
use crate::suite::{ensure, Ctx};

/// A copy of the probe at another path (another inode): a binary fromSource does not name.
const OTHER: &str = "/usr/bin/apt";

/// A glob over `/etc/pass*` (`/etc/passwd` in the test image) and `/etc/group` refused to the
/// probe alone.
const FILE_KINDS: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-file-kinds
  namespace: shop
spec:
  severity: 5
  file:
    matchPatterns:
    - pattern: /etc/pass*
    matchPaths:
    - path: /etc/group
      fromSource:
      - path: /usr/bin/palisade-probe
  action: Block
";

/// `/etc/group` (root's, in the test image) refused to every other user.
const OWNER_ONLY: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-file-owner-only
  namespace: shop
spec:
  severity: 5
  file:
    matchPaths:
    - path: /etc/group
      ownerOnly: true
  action: Block
";

pub fn all() -> Vec<SecCheck> {
    vec![
        sec_check!(
            "policy_file_glob_and_source",
            60,
            Scope::Only(PALISADE),
            file_glob_and_source
        ),
        sec_check!(
            "policy_file_owner_only",
            60,
            Scope::Only(PALISADE),
            file_owner_only
        ),
    ]
}

async fn file_glob_and_source(ctx: &Ctx) -> Result<Observed> {
    if !palisade_host::bpf_lsm_listed() {
        let err = refused(ctx, FILE_KINDS).await?;
        let want = "matchPatterns: landlock and mounts cannot express globs, and BPF-LSM is not \
                    in force here";
        ensure(err.contains(want), || {
            format!("error lacks {want:?}: {err}")
        })?;
        return Ok(Observed::blocked(
            "(no BPF-LSM: the container is refused with the reason)".to_string(),
        ));
    }
    let log = EventLog::mark(ctx)?;
    let (c, pod_name) = policy_sleeper(ctx, FILE_KINDS).await?;
    let glob = probe(ctx, &c, PROBE, &["read", "/etc/passwd"]).await?;
    ensure(glob.blocked && glob.detail.contains("EACCES"), || {
        format!("read /etc/passwd (glob): {}, want EACCES", glob.detail)
    })?;
    let sourced = probe(ctx, &c, PROBE, &["read", "/etc/group"]).await?;
    ensure(sourced.blocked && sourced.detail.contains("EACCES"), || {
        format!(
            "probe read /etc/group (fromSource): {}, want EACCES",
            sourced.detail
        )
    })?;
    let other = probe(ctx, &c, OTHER, &["read", "/etc/group"]).await?;
    ensure(!other.blocked, || {
        format!("{OTHER} read /etc/group: {}, want allowed", other.detail)
    })?;
    let neighbour = probe(ctx, &c, PROBE, &["read", "/etc/hostname"]).await?;
    ensure(!neighbour.blocked, || {
        format!("read /etc/hostname: {}, want allowed", neighbour.detail)
    })?;
    for origin in ["spec.file.matchPatterns[0]", "spec.file.matchPaths[0]"] {
        let refusal = |e: &serde_json::Value| {
            field(e, "/workload/pod") == pod_name
                && field(e, "/action") == "block"
                && field(e, "/enforcer") == "bpf-lsm"
                && field(e, "/rule/name").contains(origin)
        };
        if log
            .wait_for(Duration::from_secs(10), refusal)
            .await?
            .is_none()
        {
            let seen = log.matching(|e| field(e, "/workload/pod") == pod_name)?;
            bail!(
                "no bpf-lsm block event for {origin} in pod {pod_name}; saw {}",
                summary(&seen)
            );
        }
    }
    let record = log
        .matching(|e| {
            field(e, "/workload/pod") == pod_name && field(e, "/rule/name") == "enforcement-record"
        })?
        .into_iter()
        .next();
    let Some(record) = record else {
        bail!("no enforcement-record event for pod {pod_name}");
    };
    let enforcers: Vec<&str> = record
        .pointer("/evidence/rules")
        .and_then(serde_json::Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["enforcer"].as_str().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    ensure(enforcers == ["bpf-lsm", "bpf-lsm"], || {
        format!("enforcement-record enforcers {enforcers:?}, want bpf-lsm for both rules")
    })?;
    Ok(Observed::blocked(
        "(glob and fromSource refused with EACCES by bpf-lsm; neighbours open; recorded)"
            .to_string(),
    ))
}

/// ownerOnly: in one pod, a container running as root (the owner of `/etc/group`) reads it, one
/// running as uid 1000 is refused with EACCES by bpf-lsm, reported and recorded so.
async fn file_owner_only(ctx: &Ctx) -> Result<Observed> {
    if !palisade_host::bpf_lsm_listed() {
        let err = refused(ctx, OWNER_ONLY).await?;
        let want = "ownerOnly: landlock and mounts cannot compare the caller with the file \
                    owner, and BPF-LSM is not in force here";
        ensure(err.contains(want), || {
            format!("error lacks {want:?}: {err}")
        })?;
        return Ok(Observed::blocked(
            "(no BPF-LSM: the container is refused with the reason)".to_string(),
        ));
    }
    let log = EventLog::mark(ctx)?;
    let (pod, cfg) = policy_pod(ctx, OWNER_ONLY).await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let owner = ctx
        .cri
        .run_container(&pod, &ctx.container("owner", SLEEPER), &cfg)
        .await?;
    let mut cc = ctx.container("other", SLEEPER);
    cc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .run_as_user = Some(Int64Value { value: 1000 });
    let other = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let read = probe(ctx, &owner, PROBE, &["read", "/etc/group"]).await?;
    ensure(!read.blocked, || {
        format!(
            "the owner (root) read /etc/group: {}, want allowed",
            read.detail
        )
    })?;
    let refused_read = probe(ctx, &other, PROBE, &["read", "/etc/group"]).await?;
    ensure(
        refused_read.blocked && refused_read.detail.contains("EACCES"),
        || {
            format!(
                "uid 1000 read /etc/group: {}, want EACCES",
                refused_read.detail
            )
        },
    )?;
    let neighbour = probe(ctx, &other, PROBE, &["read", "/etc/passwd"]).await?;
    ensure(!neighbour.blocked, || {
        format!(
            "uid 1000 read /etc/passwd: {}, want allowed",
            neighbour.detail
        )
    })?;
    let refusal = |e: &serde_json::Value| {
        field(e, "/workload/pod") == pod_name
            && field(e, "/action") == "block"
            && field(e, "/enforcer") == "bpf-lsm"
            && field(e, "/rule/name").contains("spec.file.matchPaths[0]")
    };
    if log
        .wait_for(Duration::from_secs(10), refusal)
        .await?
        .is_none()
    {
        let seen = log.matching(|e| field(e, "/workload/pod") == pod_name)?;
        bail!(
            "no bpf-lsm block event for the ownerOnly rule in pod {pod_name}; saw {}",
            summary(&seen)
        );
    }
    let records = log.matching(|e| {
        field(e, "/workload/pod") == pod_name && field(e, "/rule/name") == "enforcement-record"
    })?;
    // one record per container with the rule (the pod's sandbox has none)
    let enforcers: Vec<Vec<&str>> = records
        .iter()
        .filter_map(|record| {
            let rules = record
                .pointer("/evidence/rules")
                .and_then(serde_json::Value::as_array)?;
            (!rules.is_empty()).then(|| {
                rules
                    .iter()
                    .map(|r| r["enforcer"].as_str().unwrap_or(""))
                    .collect()
            })
        })
        .collect();
    ensure(
        enforcers.len() == 2 && enforcers.iter().all(|e| e == &["bpf-lsm"]),
        || {
            format!(
                "enforcement-record enforcers {enforcers:?} for pod {pod_name}, want bpf-lsm \
                 in both containers"
            )
        },
    )?;
    Ok(Observed::blocked(
        "(ownerOnly: uid 1000 refused with EACCES by bpf-lsm; the owner reads; recorded)"
            .to_string(),
    ))
}
