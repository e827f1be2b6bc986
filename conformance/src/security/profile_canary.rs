//! The safety nets of learned profiles through CRI, under the `palisade-rule` and
//! `palisade-drops` handlers (the suite's shim configuration with the promotion rule's
//! `[profile.rule]` figures made small: no minimum time in learn; `palisade-drops` also has a
//! one-page event ring). A workload whose recording dropped events, forced by a real open
//! loop faster than the shim's one-page event ring is read, refuses promotion: by the rule at its next
//! merge (a `profile-stage` event "promotion refused" naming the drops) and by the operator
//! through the real `palisade profile promote` and `pin` commands, which fail with the reason.
//!
//! [`profile_canary_rolls_back`]: a workload promoted to canary with the CLI; its canary pod
//! enforces (its seccomp filter narrowed: `fsync`, never learned, gets EPERM), then does
//! something new, and the rule returns the workload to audit with the departures as evidence;
//! the canary's container, which enforced, is stopped (a `profile-restart` event) and, created
//! again as the kubelet would, runs the profile in audit.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use palisade_profile::persist::{self, Loaded};
use palisade_profile::{Stage, WorkloadId};

use super::eventlog::{field, EventLog};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, poll, Ctx};

/// The runtime handler whose shim configuration has the small `[profile.rule]` (xtask env).
pub const RULE_HANDLER: &str = "palisade-rule";
/// The handler of the drops check: a one-page event ring, and `[profile.rule]`'s
/// `min_observations` at [`MIN_OBSERVATIONS`] (xtask env). With the default ring a quiet
/// machine's shim kept up with the loop, and the check had nothing to refuse.
const DROPS_HANDLER: &str = "palisade-drops";
const PROFILE: &str = "palisade.dev/profile";
/// A merge runs every 10 s: a bound for one on a loaded machine.
const MERGE_WAIT: Duration = Duration::from_secs(30);
/// Opens per burst: the learning benchmark's loop, which lost about half its events to the
/// full default ring on a loaded machine (docs/benchmarks.md, "Learning").
const OPENS: &str = "50000";
/// Bursts before the check gives up forcing drops.
const BURSTS: usize = 4;
/// The rule's `min_observations` in [`DROPS_HANDLER`]'s configuration.
const MIN_OBSERVATIONS: u64 = 100;

pub fn all() -> Vec<SecCheck> {
    vec![
        sec_check!(
            "profile_drops_refuse_promotion",
            240,
            Scope::Only(PALISADE),
            profile_drops_refuse_promotion
        ),
        sec_check!(
            "profile_canary_rolls_back",
            240,
            Scope::Only(PALISADE),
            profile_canary_rolls_back
        ),
    ]
}

/// Runs `palisade ARGS --state-dir STATE` and returns (success, stdout + stderr).
fn palisade(ctx: &Ctx, args: &[&str], state: &std::path::Path) -> Result<(bool, String)> {
    super::profile_exports::cli(ctx, args, Some(state))
}

pub async fn profile_drops_refuse_promotion(ctx: &Ctx) -> Result<Observed> {
    let Some(state) = ctx.settings.profile_state_dir.clone() else {
        bail!("the suite was not given --profile-state-dir (the shims' [profile] state_dir)");
    };
    let mut cfg = ctx.pod_config();
    let meta = cfg.metadata.clone().unwrap_or_default();
    let workload = WorkloadId::from_pod(&meta.namespace, &meta.name)?;
    cfg.annotations
        .insert(PROFILE.into(), format!("learn,workload={}", workload.name));
    // A document of an earlier run of this check in the same state directory.
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));
    let log = EventLog::mark(ctx)?;
    let pod = run_pod(ctx, &cfg, DROPS_HANDLER).await?;
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("loop", crate::cri::SLEEPER), &cfg)
        .await?;

    // Opens faster than the shim reads its ring, until a merge has counted drops and the
    // rule's observation count is reached (so that the rule's check runs).
    let mut seen = None;
    for burst in 1..=BURSTS {
        let (out, err, code) = ctx
            .cri
            .exec_sync(&c, &[super::attacks::PROBE, "loop", "open", OPENS], 60)
            .await?;
        ensure(code == 0, || {
            format!("open loop {burst} exited {code}: {out}{err}")
        })?;
        seen = poll(MERGE_WAIT, || {
            Ok(match persist::load(&state, &workload) {
                Loaded::Present(d)
                    if d.recording.drops > 0 && d.recording.observations >= MIN_OBSERVATIONS =>
                {
                    Some(d)
                }
                _ => None,
            })
        })
        .await?;
        if seen.is_some() {
            break;
        }
    }
    let doc = seen.with_context(|| {
        format!(
            "{BURSTS} loops of {OPENS} opens: no merge of {workload} counted dropped events with \
             {MIN_OBSERVATIONS} observations (the shim kept up with the loop: nothing to refuse)"
        )
    })?;
    let drops = doc.recording.drops;
    ensure(doc.stage.stage == Stage::Learn, || {
        format!(
            "a recording with {drops} dropped events left learn: stage {:?}",
            doc.stage.stage
        )
    })?;

    // The rule: its check at the merge refused the promotion, and said why.
    let refused = log
        .wait_for(MERGE_WAIT, |e| {
            field(e, "/rule/name") == "profile-stage"
                && field(e, "/workload/pod") == meta.name
                && field(e, "/evidence/transition/kind") == "promotion_refused"
        })
        .await?
        .with_context(|| format!("no profile-stage event refusing promotion of {workload}"))?;
    let message = field(&refused, "/rule/message").to_string();
    ensure(
        message.contains("promotion refused by the rule") && message.contains("dropped"),
        || format!("the rule's refusal says {message:?}"),
    )?;

    // The operator: promote and pin fail with the reason, show says so.
    let name = workload.to_string();
    for args in [
        vec!["profile", "promote", name.as_str()],
        vec!["profile", "pin", name.as_str(), "enforce"],
    ] {
        let (ok, out) = palisade(ctx, &args, &state)?;
        ensure(!ok, || {
            format!(
                "palisade {} succeeded on a lossy recording: {out}",
                args.join(" ")
            )
        })?;
        ensure(out.contains("dropped"), || {
            format!(
                "palisade {} refused without naming the drops: {out}",
                args.join(" ")
            )
        })?;
    }
    let (ok, shown) = palisade(ctx, &["profile", "show", &name], &state)?;
    ensure(ok && shown.contains("promotable: no"), || {
        format!("palisade profile show: {shown}")
    })?;
    let stage = match persist::load(&state, &workload) {
        Loaded::Present(d) => d.stage.stage,
        other => bail!("the document of {workload} after the refusals: {other:?}"),
    };
    ensure(stage == Stage::Learn, || {
        format!("after the refusals the workload is at {stage:?}")
    })?;
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));
    Ok(Observed::blocked(format!(
        "{drops} events dropped; {message}; palisade profile promote and pin refused, naming the drops"
    )))
}

/// The service's normal work while learning and under its profile: reads, a write to
/// `/dev/null`, `sync` (the `sync` call, never `fsync`) and the probe's `noop` (so that both
/// are learned executables: what the canary pod runs later is refused for its system calls,
/// not for its executable). No file it creates: landlock grants only paths present when the
/// container starts (docs/profiles.md).
const SERVICE: &str = "cat /etc/hostname >/dev/null && sync && /usr/bin/palisade-probe noop";
/// The one command the workload runs by CRI exec, while learning and after: a shell reading
/// its job from a host directory mounted at `/job` (read-only), where the check writes what
/// the service does next. The learned profile allows CRI execs of this command alone (a
/// `sh -c` of anything else is refused at the shim's Exec), so the job file is the way in,
/// as a hole in a service would be.
const JOB: &[&str] = &["sh", "/job/run"];
/// What the canary pod starts doing: writes below /etc, one departure each; with the
/// `unshare` before them, over the handler's rule of 3 departures within 120 s.
const NEW_WORK: &[&str] = &[
    "echo x > /etc/palisade-canary-1",
    "echo x > /etc/palisade-canary-2",
    "echo x > /etc/palisade-canary-3",
];

/// A workload learned through CRI, promoted to canary with the real CLI; its canary pod
/// enforces the profile (its seccomp filter narrowed: a call never seen gets EPERM, an
/// `unshare` is refused and reported), runs the learned service, then starts doing something
/// new, and the workload returns to audit by itself, with a `profile-stage` event carrying the
/// departures and `palisade profile show` listing them.
pub async fn profile_canary_rolls_back(ctx: &Ctx) -> Result<Observed> {
    let Some(state) = ctx.settings.profile_state_dir.clone() else {
        bail!("the suite was not given --profile-state-dir (the shims' [profile] state_dir)");
    };
    let mut cfg = ctx.pod_config();
    let meta = cfg.metadata.clone().unwrap_or_default();
    let workload = WorkloadId::from_pod(&meta.namespace, &meta.name)?;
    let governed = format!("learn,workload={}", workload.name);
    cfg.annotations.insert(PROFILE.into(), governed.clone());
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));

    // Learn.
    let job = Job::new(ctx)?;
    job.set(SERVICE)?;
    let pod = run_pod(ctx, &cfg, RULE_HANDLER).await?;
    let c = ctx
        .cri
        .run_container(&pod, &job.container(ctx), &cfg)
        .await?;
    for _ in 0..2 {
        let (out, err, code) = job.run(ctx, &c).await?;
        ensure(code == 0, || {
            format!("learning: service exited {code}: {out}{err}")
        })?;
    }
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    let doc = poll(MERGE_WAIT, || {
        Ok(match persist::load(&state, &workload) {
            Loaded::Present(d) if d.recording.files.contains_key("/etc/hostname") => Some(d),
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

    // learn -> audit -> canary by the operator (not pinned: the rule may roll it back).
    let name = workload.to_string();
    for to in ["audit", "canary"] {
        let (ok, out) = palisade(ctx, &["profile", "promote", &name], &state)?;
        ensure(ok && out.contains(&format!("now {to}")), || {
            format!("palisade profile promote (to {to}): {out}")
        })?;
    }

    // The canary pod: the first of the workload to ask, so it enforces.
    let log = EventLog::mark(ctx)?;
    let mut cfg2 = ctx.pod_config();
    cfg2.annotations.insert(PROFILE.into(), governed);
    // Judged, not killed as compromised: the departures must go on to the rule.
    cfg2.annotations
        .insert("palisade.dev/compromise".into(), "off".into());
    let pod2_name = cfg2.metadata.clone().unwrap_or_default().name;
    let pod2 = run_pod(ctx, &cfg2, RULE_HANDLER).await?;
    let c2 = ctx
        .cri
        .run_container(&pod2, &job.container(ctx), &cfg2)
        .await
        .context("the canary pod's container did not start")?;
    let applied = log
        .wait_for(MERGE_WAIT, |e| {
            field(e, "/workload/pod") == pod2_name && field(e, "/rule/name") == "profile-applied"
        })
        .await?
        .with_context(|| format!("no profile-applied event for {pod2_name}"))?;
    let message = field(&applied, "/rule/message").to_string();
    ensure(
        message.contains("applied in enforce (stage canary)")
            && message.contains("seccomp narrowed"),
        || format!("profile-applied says {message:?}"),
    )?;
    let narrowed: Vec<&str> = applied
        .pointer("/evidence/seccomp_refused")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    ensure(narrowed.contains(&"fsync"), || {
        format!("fsync is not among the calls the narrowed filter refuses: {narrowed:?}")
    })?;

    // The learned service still runs.
    let (out, err, code) = job.run(ctx, &c2).await?;
    ensure(code == 0, || {
        format!("canary: the learned service exited {code}: {out}{err}")
    })?;
    // Any other command by CRI exec is refused at the shim's Exec, before it runs.
    let other = ctx
        .cri
        .exec_sync(&c2, &["sh", "-c", SERVICE], 20)
        .await
        .map(|(_, _, code)| code);
    ensure(!matches!(other, Ok(0)), || {
        format!("canary: a CRI exec of a command never learned ran: {other:?}")
    })?;
    // A system call never seen while learning (fsync, allowed by the hardened filter): EPERM.
    // Through the learned job (a CRI exec of `sync` itself would be refused at Exec, before
    // its system call: docs/profiles.md, "CRI execs").
    job.set("sync /etc/hostname")?;
    let (out, err, code) = job.run(ctx, &c2).await?;
    ensure(code != 0 && err.contains("Operation not permitted"), || {
        format!("canary: sync (fsync) exited {code}: {out}{err}")
    })?;
    // A namespace escape never seen while learning: refused and reported.
    job.set("/usr/bin/palisade-probe unshare")?;
    let (out, err, _) = job.run(ctx, &c2).await?;
    ensure(out.contains("denied errno=1 EPERM"), || {
        format!("canary: unshare: {out}{err}")
    })?;
    let reported = log
        .wait_for(Duration::from_secs(10), |e| {
            field(e, "/workload/pod") == pod2_name
                && field(e, "/rule/name") == "namespace-change"
                && field(e, "/enforcer") == "seccomp"
        })
        .await?
        .with_context(|| format!("no namespace-change event refused by seccomp for {pod2_name}"))?;

    // Something new, refused, until the rule rolls the workload back.
    // The rule may roll back (and stop the canary's container) before the last of them: a
    // merge can come between two steps on a slow machine (it did in the 6.1 and 6.12 guests
    // on 2026-12-08). An exec into the stopped container then fails and the steps end; the
    // rollback is asserted below either way.
    let mut stopped_at = None;
    for cmd in NEW_WORK {
        job.set(cmd)?;
        match job.run(ctx, &c2).await {
            Ok((_, _, code)) => ensure(code != 0, || format!("canary: {cmd:?} succeeded"))?,
            Err(e) => {
                stopped_at = Some(format!("{cmd:?}: {e:#}"));
                break;
            }
        }
    }
    let rolled = log
        .wait_for(MERGE_WAIT, |e| {
            field(e, "/rule/name") == "profile-stage"
                && field(e, "/workload/pod") == pod2_name
                && field(e, "/evidence/transition/kind") == "rolled_back"
        })
        .await?
        .with_context(|| {
            format!(
                "no profile-stage event rolling {workload} back (the new work's execs: {})",
                stopped_at.as_deref().unwrap_or("all ran")
            )
        })?;
    let rolled_message = field(&rolled, "/rule/message").to_string();
    let evidence = rolled
        .pointer("/evidence/transition/evidence")
        .and_then(|v| v.as_array())
        .map_or(0, Vec::len);
    ensure(
        rolled_message.contains("canary -> audit") && evidence > 0,
        || {
            format!(
                "the rollback event says {rolled_message:?} with {evidence} departures as evidence"
            )
        },
    )?;
    // The canary pod enforced what its workload no longer does: its container is stopped,
    // with the reason, and created again (as the kubelet would) it runs the profile in audit.
    let restart = pod_event(&log, &pod2_name, "profile-restart", |_| true).await?;
    let restart_message = field(&restart, "/rule/message").to_string();
    let stopped = ctx
        .cri
        .wait_exited(&c2, MERGE_WAIT)
        .await
        .with_context(|| {
            format!("the canary container was not stopped after the rollback ({restart_message})")
        })?;
    let again = crate::cri::container_config("svc", 1, ctx.image(), crate::cri::SLEEPER);
    ctx.cri
        .run_container(&pod2, &again, &cfg2)
        .await
        .context("the canary pod's container, created again, did not start")?;
    let audit = pod_event(&log, &pod2_name, "profile-applied", |m| {
        m.contains("applied in audit")
    })
    .await?;
    let (ok, shown) = palisade(ctx, &["profile", "show", &name], &state)?;
    ensure(
        ok && shown.contains("stage: audit")
            && shown.contains("refused")
            && shown.contains("palisade-canary-1"),
        || format!("palisade profile show after the rollback: {shown}"),
    )?;
    ctx.cri.remove_pod(&pod2).await?;
    ctx.untrack(&pod2);
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));
    Ok(Observed::blocked(format!(
        "{message}; fsync refused (EPERM); {}; then {rolled_message} ({evidence} departures as evidence{}); {restart_message} (exit {}); created again: {}",
        field(&reported, "/rule/message"),
        stopped_at
            .map(|s| format!("; the container was stopped before the new work's {s}"))
            .unwrap_or_default(),
        stopped.exit_code,
        field(&audit, "/rule/message")
    )))
}

/// The job directory mounted at `/job` in the canary check's containers.
struct Job {
    dir: std::path::PathBuf,
}

impl Job {
    fn new(ctx: &Ctx) -> Result<Self> {
        let dir = ctx.dir.join("canary-job");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Job { dir })
    }

    /// What the next run of [`JOB`] does.
    fn set(&self, script: &str) -> Result<()> {
        let file = self.dir.join("run");
        std::fs::write(&file, format!("{script}\n"))
            .with_context(|| format!("write {}", file.display()))
    }

    /// The service's container: a sleeper with the job directory.
    fn container(&self, ctx: &Ctx) -> k8s_cri::v1::ContainerConfig {
        let mut cc = ctx.container("svc", crate::cri::SLEEPER);
        cc.mounts = vec![k8s_cri::v1::Mount {
            container_path: "/job".into(),
            host_path: self.dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        cc
    }

    /// A CRI exec of [`JOB`] in container `c`: (stdout, stderr, exit code).
    async fn run(&self, ctx: &Ctx, c: &str) -> Result<(String, String, i32)> {
        ctx.cri.exec_sync(c, JOB, 20).await
    }
}

/// The first event since `log`'s mark of rule `rule` for pod `pod` whose message satisfies
/// `message`, within [`MERGE_WAIT`]; without one, an error with the pod's events seen.
pub(super) async fn pod_event(
    log: &EventLog,
    pod: &str,
    rule: &str,
    message: impl Fn(&str) -> bool,
) -> Result<serde_json::Value> {
    log.expect(
        MERGE_WAIT,
        pod,
        |e| {
            field(e, "/workload/pod") == pod
                && field(e, "/rule/name") == rule
                && message(field(e, "/rule/message"))
        },
        || format!("no {rule} event for pod {pod}"),
    )
    .await
}

/// Runs a pod under `handler` and records it for cleanup.
async fn run_pod(ctx: &Ctx, cfg: &k8s_cri::v1::PodSandboxConfig, handler: &str) -> Result<String> {
    std::fs::create_dir_all(&cfg.log_directory)
        .with_context(|| format!("create log dir {}", cfg.log_directory))?;
    let id = ctx.cri.run_pod(cfg, handler).await?;
    ctx.track(&id);
    Ok(id)
}
