//! A learned profile enforced through CRI: a workload learned from a shell that reads a file and
//! writes below its own directory is pinned at enforce through the real `palisade` CLI; a new
//! pod of the workload gets the profile at Create (a `profile-applied` event in enforce), the
//! same actions still pass, and a write below /etc is refused.
//!
//! Not in the suite yet (`profile::all`). Run through CRI on 2026-12-07 (`cargo xtask test
//! --suite-only --filter profile_enforce --handlers palisade`, with it registered) it now gets
//! past learning (the recording is promotable), the CLI's pin and Create (the
//! `profile-applied` event in enforce arrives), and stops at the first exec into the enforced
//! container: it is no longer running. Why it exits under its learned profile is not found yet.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use palisade_profile::persist::{self, Loaded};
use palisade_profile::WorkloadId;

use super::eventlog::{field, EventLog};
use super::Observed;
use crate::suite::{ensure, poll, Ctx};

const PROFILE: &str = "palisade.dev/profile";
/// How long the last merge may take after the pod is removed: a bound for a loaded machine.
const MERGE_WAIT: Duration = Duration::from_secs(30);
/// How long the profile-applied event may take to reach the log.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// The service's normal work: a read, and a write below its own directory. No network: a
/// socket of a process gone before it was named is counted unrecognized, which blocks
/// promotion (docs/profiles.md).
const SERVICE: &str = "cat /etc/hostname >/dev/null && mkdir -p /tmp/svc && echo x > /tmp/svc/out && cat /tmp/svc/out >/dev/null";
/// The attack step this check makes: a write below /etc.
const ATTACK: &str = "echo x > /etc/palisade-attack";

pub async fn profile_enforce_refuses_departures(ctx: &Ctx) -> Result<Observed> {
    let Some(state) = ctx.settings.profile_state_dir.clone() else {
        bail!("the suite was not given --profile-state-dir (the shims' [profile] state_dir)");
    };
    let mut cfg = ctx.pod_config();
    let meta = cfg.metadata.clone().unwrap_or_default();
    let workload = WorkloadId::from_pod(&meta.namespace, &meta.name)?;
    let governed = format!("learn,workload={}", workload.name);
    cfg.annotations.insert(PROFILE.into(), governed.clone());
    // A document of an earlier run of this check in the same state directory.
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));

    // Learn.
    let pod = ctx.run_pod(&cfg).await?;
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("svc", crate::cri::SLEEPER), &cfg)
        .await?;
    for _ in 0..2 {
        let (out, err, code) = ctx.cri.exec_sync(&c, &["sh", "-c", SERVICE], 20).await?;
        ensure(code == 0, || {
            format!("learning: service exited {code}: {out}{err}")
        })?;
    }
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    let doc = poll(MERGE_WAIT, || {
        Ok(match persist::load(&state, &workload) {
            Loaded::Present(doc)
                if doc
                    .recording
                    .files
                    .keys()
                    .any(|p| p.starts_with("/tmp/svc")) =>
            {
                Some(doc)
            }
            _ => None,
        })
    })
    .await?
    .with_context(|| format!("no learned profile of {workload} after {MERGE_WAIT:?}"))?;
    if let Err(reasons) = doc.recording.promotable() {
        bail!(
            "the learned profile cannot be promoted: {}",
            reasons.join("; ")
        );
    }

    // Enforce, by the operator's command through the real CLI.
    let cli = super::status::cli(ctx)?;
    let out = std::process::Command::new(&cli)
        .args([
            "profile",
            "pin",
            &workload.to_string(),
            "enforce",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .with_context(|| format!("run {}", cli.display()))?;
    ensure(out.status.success(), || {
        format!(
            "palisade profile pin enforce: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let by = "palisade profile pin";

    // A new pod of the workload.
    let log = EventLog::mark(ctx)?;
    let mut cfg2 = ctx.pod_config();
    cfg2.annotations.insert(PROFILE.into(), governed);
    let pod2_name = cfg2.metadata.clone().unwrap_or_default().name;
    let pod2 = ctx.run_pod(&cfg2).await?;
    let c2 = ctx
        .cri
        .run_container(&pod2, &ctx.container("svc", crate::cri::SLEEPER), &cfg2)
        .await
        .context("the enforced pod's container did not start")?;
    let applied = log
        .wait_for(EVENT_WAIT, |e| {
            field(e, "/workload/pod") == pod2_name && field(e, "/rule/name") == "profile-applied"
        })
        .await?
        .with_context(|| format!("no profile-applied event for {pod2_name}"))?;
    let message = field(&applied, "/rule/message").to_string();
    ensure(message.contains("applied in enforce"), || {
        format!("profile-applied says {message:?}")
    })?;
    let (out, err, code) = ctx.cri.exec_sync(&c2, &["sh", "-c", SERVICE], 20).await?;
    ensure(code == 0, || {
        format!("enforced: the learned service exited {code}: {out}{err}")
    })?;
    let (_, _, code) = ctx.cri.exec_sync(&c2, &["sh", "-c", ATTACK], 20).await?;
    ensure(code != 0, || {
        "enforced: a write below /etc succeeded".into()
    })?;
    let (_, _, present) = ctx
        .cri
        .exec_sync(&c2, &["test", "-e", "/etc/palisade-attack"], 20)
        .await?;
    ensure(present != 0, || {
        "enforced: /etc/palisade-attack was created".into()
    })?;
    ctx.cri.remove_pod(&pod2).await?;
    ctx.untrack(&pod2);
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));
    Ok(Observed::blocked(format!(
        "enforced by {by}: {message}; the service passed, a write below /etc was refused (exit {code})"
    )))
}
