//! Input palisade must refuse, with a message that says why.

use anyhow::{bail, Result};
use k8s_cri::v1::LinuxSandboxSecurityContext;

use super::policies::policy_sleeper;
use super::{security, Observed, Scope, SecCheck, PALISADE};
use crate::cri::SLEEPER;
use crate::sec_check;
use crate::suite::{ensure, Ctx};

const RELATIVE_PATH: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: relative-path
  namespace: any
spec:
  file:
    matchPaths:
    - path: etc/shadow
  action: Block
";

const NOT_YAML: &str =
    "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nspec: [unclosed\n";

pub fn all() -> Vec<SecCheck> {
    let only = Scope::Only(PALISADE);
    vec![
        sec_check!("bad_policy_relative_path", 60, only, relative_path),
        sec_check!("bad_policy_not_yaml", 60, only, not_yaml),
        sec_check!("bad_privileged", 60, Scope::Attack, privileged),
    ]
}

/// Runs the container of a pod carrying `policy`; returns the refusal. containerd's CRI
/// creates the task (the shim's Create, where policies are read) in StartContainer, so that is
/// the call that fails; CreateContainer only records the container.
pub async fn refused(ctx: &Ctx, policy: &str) -> Result<String> {
    match policy_sleeper(ctx, policy).await {
        Ok((id, _)) => bail!("container {id} started"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

async fn relative_path(ctx: &Ctx) -> Result<Observed> {
    let err = refused(ctx, RELATIVE_PATH).await?;
    let want = "spec.file.matchPaths[0].path: must be absolute";
    ensure(err.contains(want), || {
        format!("error lacks {want:?}: {err}")
    })?;
    ensure(err.contains("palisade.dev/policy"), || {
        format!("error does not name the annotation: {err}")
    })?;
    Ok(Observed::blocked(format!("({want})")))
}

async fn not_yaml(ctx: &Ctx) -> Result<Observed> {
    let err = refused(ctx, NOT_YAML).await?;
    ensure(
        err.contains("palisade.dev/policy") && err.contains("policy input rejected"),
        || format!("error does not say the annotation was rejected: {err}"),
    )?;
    Ok(Observed::blocked("(annotation rejected)"))
}

/// A privileged container (in a privileged pod, as CRI requires) is refused with the reason.
async fn privileged(ctx: &Ctx) -> Result<Observed> {
    let mut cfg = ctx.pod_config();
    if let Some(linux) = cfg.linux.as_mut() {
        let sc = linux
            .security_context
            .get_or_insert_with(LinuxSandboxSecurityContext::default);
        sc.privileged = true;
    }
    let pod = match ctx.run_pod(&cfg).await {
        Ok(pod) => pod,
        Err(e) => {
            let err = format!("{e:#}");
            ensure(err.contains("privileged"), || {
                format!("pod refused without naming privileged: {err}")
            })?;
            return Ok(Observed::blocked("(RunPodSandbox refused: privileged)"));
        }
    };
    let mut cc = ctx.container("app", SLEEPER);
    security(&mut cc).privileged = true;
    match ctx.cri.run_container(&pod, &cc, &cfg).await {
        Ok(c) => {
            let caps = ctx.cri.sh(&c, "grep CapEff /proc/self/status").await?;
            Ok(Observed::allowed(format!("({})", caps.trim())))
        }
        Err(e) => {
            // A spec counts as privileged only with empty masked and read-only path lists
            // (docs/hardening.md); containerd may still fill them, and then the capability
            // rule refuses it, naming every capability beyond the default set.
            let err = format!("{e:#}");
            let how = if err.contains("privileged") {
                "privileged"
            } else if err.contains("CAP_SYS_ADMIN") && err.contains("not allowed") {
                "CAP_SYS_ADMIN and the rest beyond the default set"
            } else {
                bail!("refused without naming privileged or its capabilities: {err}")
            };
            Ok(Observed::blocked(format!(
                "(StartContainer refused: {how})"
            )))
        }
    }
}
