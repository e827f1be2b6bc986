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
use super::eventlog::{field, EventLog};
use super::policies::{policy_pod, policy_sleeper};
use super::{security, Observed, Scope, SecCheck, PALISADE};
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
        sec_check!("policy_" + file_glob_and_source, 60, Scope::Only(PALISADE)),
        sec_check!("policy_" + file_owner_only, 60, Scope::Only(PALISADE)),
    ]
}

/// Where BPF-LSM is not in force, a container under `policy` is refused with `want` in the error.
async fn refused_without_bpf_lsm(ctx: &Ctx, policy: &str, want: &str) -> Result<Observed> {
    let err = refused(ctx, policy).await?;
    ensure(err.contains(want), || {
        format!("error lacks {want:?}: {err}")
    })?;
    Ok(Observed::blocked(
        "(no BPF-LSM: the container is refused with the reason)".to_string(),
    ))
}

/// What a read must come to.
#[derive(Clone, Copy)]
enum Read {
    Allowed,
    /// Refused with EACCES.
    Refused,
}

/// `bin` in container `c` reads `path`, which must come to `want`; `what` names the read in
/// the failure.
async fn read(ctx: &Ctx, c: &str, bin: &str, path: &str, want: Read, what: &str) -> Result<()> {
    let got = probe(ctx, c, bin, &["read", path]).await?;
    let (ok, wanted) = match want {
        Read::Allowed => (!got.blocked, "allowed"),
        Read::Refused => (got.blocked && got.detail.contains("EACCES"), "EACCES"),
    };
    ensure(ok, || format!("{what}: {}, want {wanted}", got.detail))
}

async fn file_glob_and_source(ctx: &Ctx) -> Result<Observed> {
    if !palisade_host::bpf_lsm_listed() {
        return refused_without_bpf_lsm(
            ctx,
            FILE_KINDS,
            "matchPatterns: landlock and mounts cannot express globs, and BPF-LSM is not in \
             force here",
        )
        .await;
    }
    let log = EventLog::mark(ctx)?;
    let (c, pod_name) = policy_sleeper(ctx, FILE_KINDS).await?;
    let glob = "read /etc/passwd (glob)";
    read(ctx, &c, PROBE, "/etc/passwd", Read::Refused, glob).await?;
    let sourced = "probe read /etc/group (fromSource)";
    read(ctx, &c, PROBE, "/etc/group", Read::Refused, sourced).await?;
    let other = format!("{OTHER} read /etc/group");
    read(ctx, &c, OTHER, "/etc/group", Read::Allowed, &other).await?;
    let neighbour = "read /etc/hostname";
    read(ctx, &c, PROBE, "/etc/hostname", Read::Allowed, neighbour).await?;
    for origin in ["spec.file.matchPatterns[0]", "spec.file.matchPaths[0]"] {
        let refusal = |e: &serde_json::Value| {
            field(e, "/workload/pod") == pod_name
                && field(e, "/action") == "block"
                && field(e, "/enforcer") == "bpf-lsm"
                && field(e, "/rule/name").contains(origin)
        };
        log.expect(Duration::from_secs(10), &pod_name, refusal, || {
            format!("no bpf-lsm block event for {origin} in pod {pod_name}")
        })
        .await?;
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
        return refused_without_bpf_lsm(
            ctx,
            OWNER_ONLY,
            "ownerOnly: landlock and mounts cannot compare the caller with the file owner, and \
             BPF-LSM is not in force here",
        )
        .await;
    }
    let log = EventLog::mark(ctx)?;
    let (pod, cfg) = policy_pod(ctx, OWNER_ONLY).await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let owner = ctx
        .cri
        .run_container(&pod, &ctx.container("owner", SLEEPER), &cfg)
        .await?;
    let mut cc = ctx.container("other", SLEEPER);
    security(&mut cc).run_as_user = Some(Int64Value { value: 1000 });
    let other = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let owner_reads = "the owner (root) read /etc/group";
    read(ctx, &owner, PROBE, "/etc/group", Read::Allowed, owner_reads).await?;
    let other_reads = "uid 1000 read /etc/group";
    read(ctx, &other, PROBE, "/etc/group", Read::Refused, other_reads).await?;
    let neighbour = "uid 1000 read /etc/passwd";
    read(ctx, &other, PROBE, "/etc/passwd", Read::Allowed, neighbour).await?;
    let refusal = |e: &serde_json::Value| {
        field(e, "/workload/pod") == pod_name
            && field(e, "/action") == "block"
            && field(e, "/enforcer") == "bpf-lsm"
            && field(e, "/rule/name").contains("spec.file.matchPaths[0]")
    };
    log.expect(Duration::from_secs(10), &pod_name, refusal, || {
        format!("no bpf-lsm block event for the ownerOnly rule in pod {pod_name}")
    })
    .await?;
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
