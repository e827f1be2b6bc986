//! Compromise restarts through CRI, with the harness playing the kubelet: an attack, the kill
//! with palisade's exit code and termination message, the recreate held back and then let
//! through, a second compromise, the quarantine, and the events in every sink. Also the
//! `palisade-audit` handler: the same attack is reported, nothing is killed or denied beyond
//! the default hardening.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::attacks::PROBE;
use super::eventlog::{field, of_pod_rule, summary, EventLog};
use super::sinks::{metrics_text, CtrEvents, Webhook};
use super::{Observed, Scope, SecCheck, AUDIT, PALISADE};
use crate::cri;
use crate::sec_check;
use crate::suite::poll;
use crate::suite::{ensure, Ctx};

/// The exit status palisade gives a container it killed as compromised.
const COMPROMISED_EXIT: i32 = 173;
const ANNOTATION: &str = "palisade.dev/compromise";
const POLICY: &str = "palisade.dev/policy";
/// Short enough for a test, long enough to see a restart held back inside it.
const BACKOFF_SECS: u64 = 4;

pub fn all() -> Vec<SecCheck> {
    let only = Scope::Only(PALISADE);
    vec![
        sec_check!(compromise_restart, 150, only),
        sec_check!(audit_mode, 90, Scope::Only(AUDIT)),
    ]
}

/// The container config the harness uses for each attempt, with a termination message file.
fn attempt(ctx: &Ctx, attempt: u32, termination: &std::path::Path) -> k8s_cri::v1::ContainerConfig {
    let mut cc = crate::cri::container_config("web", attempt, ctx.image(), crate::cri::SLEEPER);
    cc.mounts = vec![cri::bind_mount("/dev/termination-log", termination, false)];
    cc
}

/// An escape attempt: a new user namespace (denied by the default seccomp profile, reported
/// by the monitor as `namespace-change`, which the pods here make decisive).
async fn attack(ctx: &Ctx, c: &str) -> Result<String> {
    let (out, err, code) = ctx.cri.exec_sync(c, &[PROBE, "unshare"], 20).await?;
    Ok(format!("exit {code}: {}{}", out.trim(), err.trim()))
}

/// Attacks container `c`, the `which` compromised one, and checks that palisade kills it with
/// its exit code.
async fn attacked_and_killed(ctx: &Ctx, c: &str, which: &str) -> Result<()> {
    let probe = attack(ctx, c).await?;
    let st = ctx
        .cri
        .wait_exited(c, Duration::from_secs(15))
        .await
        .with_context(|| {
            format!("the {which} compromised container was not killed (probe {probe})")
        })?;
    ensure(st.exit_code == COMPROMISED_EXIT, || {
        format!(
            "the {which} compromised container's exit code {} (reason {:?}), expected \
             {COMPROMISED_EXIT}",
            st.exit_code, st.reason
        )
    })
}

fn of_pod<'a>(events: &'a [Value], pod: &str, rule: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| field(e, "/workload/pod") == pod && field(e, "/rule/name") == rule)
        .collect()
}

pub async fn compromise_restart(ctx: &Ctx) -> Result<Observed> {
    let hook = Webhook::listen(ctx).await?;
    let ctr = CtrEvents::start(ctx)?;
    let log = EventLog::mark(ctx)?;
    let mut cfg = ctx.pod_config();
    cfg.annotations.insert(
        ANNOTATION.into(),
        format!("rules=namespace-change,backoff={BACKOFF_SECS}s,max-restarts=1"),
    );
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let pod = ctx.run_pod(&cfg).await?;
    let termination = ctx.dir.join("termination-log");
    std::fs::write(&termination, "").context("create the termination message file")?;

    // Attempt 0: compromised, killed with palisade's exit code and message.
    let c0 = ctx
        .cri
        .run_container(&pod, &attempt(ctx, 0, &termination), &cfg)
        .await?;
    // ctr events subscribes after it starts: the attack comes once it surely has.
    tokio::time::sleep(Duration::from_millis(500)).await;
    attacked_and_killed(ctx, &c0, "first").await?;
    let message = std::fs::read_to_string(&termination).context("read termination message")?;
    ensure(
        message.contains("judged compromised") && message.contains("namespace-change"),
        || format!("termination message {message:?}"),
    )?;

    // The kubelet's part: it keeps the dead container (`kubectl logs --previous` reads its
    // log) and creates the next attempt at once in the same sandbox. The start waits out the
    // backoff inside palisade instead of failing: meanwhile and afterwards the killed
    // container is the newest one that terminated, which is what the kubelet shows under
    // Last State (a refused start would be: exit code 128, StartError).
    let c1 = ctx
        .cri
        .create_container(&pod, &attempt(ctx, 1, &termination), &cfg)
        .await?;
    let during = async {
        let held = log
            .wait_for(
                Duration::from_secs(10),
                of_pod_rule(&pod_name, "compromised-restart-held-back"),
            )
            .await?
            .context("no compromised-restart-held-back event while the start waited")?;
        let view = ctx.cri.kubelet_view(&pod, "web").await?;
        anyhow::Ok((held, view))
    };
    let (started, during) = tokio::join!(ctx.cri.start_container(&c1), during);
    let (held, (current, last)) = during?;
    started.context("the restart held back by the backoff was not started after it")?;
    ensure(field(&held, "/rule/message").contains("held back"), || {
        format!("held-back event: {held}")
    })?;
    // The kubelet would show c1 as the current container (running, once started) and the
    // killed c0 under Last State.
    type Status = k8s_cri::v1::ContainerStatus;
    let shows_c1_after_c0 =
        |when: &str, running: bool, (current, last): (Status, Option<Status>)| {
            let state = crate::cri::state_name(current.state);
            let last = last.map(|l| (l.id, l.exit_code, l.reason));
            ensure(
                current.id == c1
                    && (!running || state == "RUNNING")
                    && last
                        .as_ref()
                        .is_some_and(|(id, code, _)| *id == c0 && *code == COMPROMISED_EXIT),
                || {
                    format!(
                        "{when} the kubelet would show current {} ({state}), last state {last:?}",
                        current.id
                    )
                },
            )
        };
    shows_c1_after_c0("while the start waited", false, (current, last))?;
    let view = ctx.cri.kubelet_view(&pod, "web").await?;
    shows_c1_after_c0("after the start", true, view)?;
    let (_, _, code) = ctx.cri.exec_sync(&c1, &["true"], 10).await?;
    ensure(code == 0, || {
        format!("the restarted container does not run commands (exit {code})")
    })?;
    // The kubelet removes the older dead container once a newer one has run.
    ctx.cri.remove_container(&c0).await?;
    let c2 = c1;

    // Compromised again: killed, and with max-restarts=1 quarantined for good.
    attacked_and_killed(ctx, &c2, "second").await?;
    ctx.cri.remove_container(&c2).await?;
    tokio::time::sleep(Duration::from_secs(2 * BACKOFF_SECS) + Duration::from_millis(500)).await;
    let c3 = ctx
        .cri
        .create_container(&pod, &attempt(ctx, 2, &termination), &cfg)
        .await?;
    let quarantined = match ctx.cri.start_container(&c3).await {
        Ok(()) => bail!("a container compromised twice with max-restarts=1 was started again"),
        Err(e) => format!("{e:#}"),
    };
    ensure(quarantined.contains("quarantined"), || {
        format!("start refused for another reason: {quarantined}")
    })?;
    ctx.cri.remove_container(&c3).await?;

    // Every sink has the story.
    let wanted = [
        ("container-compromised", "kill", 2),
        ("compromised-restart-held-back", "block", 1),
        ("compromised-container-restarted", "restart", 1),
        ("container-quarantined", "block", 1),
    ];
    let events = log.events()?;
    for (rule, action, n) in wanted {
        let got = of_pod(&events, &pod_name, rule);
        ensure(
            got.len() >= n && got.iter().all(|e| field(e, "/action") == action),
            || {
                format!(
                    "log: {rule}: {} events, want {n} with action {action}: {}",
                    got.len(),
                    summary(&events)
                )
            },
        )?;
    }
    let kill = of_pod(&events, &pod_name, "container-compromised")[0];
    let evidence = kill
        .pointer("/evidence/evidence")
        .and_then(Value::as_array)
        .context("kill event without evidence")?;
    ensure(
        evidence
            .iter()
            .any(|e| field(e, "/rule") == "namespace-change"),
        || format!("kill evidence {evidence:?}"),
    )?;
    let restarted = of_pod(&events, &pod_name, "compromised-container-restarted")[0];
    ensure(
        field(restarted, "/evidence/reason").contains("namespace-change"),
        || format!("restart event without the evidence: {restarted}"),
    )?;
    let falco = poll(Duration::from_secs(10), || {
        let b = hook.bodies();
        let n = b
            .iter()
            .filter(|v| {
                field(v, "/rule") == "container-compromised"
                    && field(v, "/output_fields/k8s.pod.name") == pod_name
            })
            .count();
        Ok((n >= 2).then_some(n))
    })
    .await?
    .context("the webhook did not receive both container-compromised events")?;
    let topic = poll(Duration::from_secs(10), || {
        let l = ctr.matching("/palisade/violation");
        let n = l
            .iter()
            .filter(|l| l.contains("container-quarantined") && l.contains(&pod_name))
            .count();
        Ok((n >= 1).then_some(l.len()))
    })
    .await?
    .context("ctr events did not show the quarantine on /palisade/violation")?;
    let metrics = metrics_text(ctx)?;
    ensure(
        metrics.lines().any(|l| {
            l.starts_with("palisade_compromise_total{event=\"container-compromised\"")
                && l.ends_with(" 2")
        }),
        || format!("metrics: no palisade_compromise_total of 2 kills in {metrics:?}"),
    )?;
    Ok(Observed::blocked(format!(
        "killed twice with exit {COMPROMISED_EXIT}, the next attempt's start held back (exit {COMPROMISED_EXIT} stayed Last State) then run, quarantined; webhook {falco} kills, ctr events {topic} lines, metrics counted"
    )))
}

const DENY_CAT: &str = r#"apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: no-hostname-read
spec:
  selector:
    matchLabels: {}
  file:
    matchPaths:
    - path: /etc/hostname
  process:
    matchPaths:
    - path: /usr/bin/apt
  action: Block
"#;

/// Under `palisade-audit`: a Block rule reports and permits, a decisive compromise is reported
/// and the container keeps running, and the default hardening still denies the attack.
pub async fn audit_mode(ctx: &Ctx) -> Result<Observed> {
    let log = EventLog::mark(ctx)?;
    let mut cfg = ctx.pod_config();
    cfg.annotations.insert(POLICY.into(), DENY_CAT.into());
    cfg.annotations
        .insert(ANNOTATION.into(), "rules=namespace-change".into());
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let (_, c) = ctx.run_sleeper_pod(&cfg, "web").await?;
    let out = ctx
        .cri
        .exec_ok(&c, &["cat", "/etc/hostname"])
        .await
        .context("the audited read was denied")?;
    ensure(!out.trim().is_empty(), || {
        "the audited read of /etc/hostname was empty".into()
    })?;
    ctx.cri
        .exec_ok(&c, &["/usr/bin/apt", "tcpsock"])
        .await
        .context("the audited exec of /usr/bin/apt was stopped")?;
    for (what, path) in [("open", "/etc/hostname"), ("exec", "/usr/bin/apt")] {
        let ev = log
            .wait_for(Duration::from_secs(10), |e| {
                field(e, "/workload/pod") == pod_name
                    && field(e, "/rule/name").contains("no-hostname-read")
                    && field(e, "/evidence/path") == path
            })
            .await?
            .with_context(|| format!("no audit event for the {what} of {path}: {}", log.seen()))?;
        ensure(
            field(&ev, "/action") == "audit" && field(&ev, "/enforcer") == "audit-only",
            || format!("{what} of {path}: {ev}"),
        )?;
    }
    let probe = attack(ctx, &c).await?;
    ensure(probe.contains("denied"), || {
        format!("unshare not denied by the default hardening: {probe}")
    })?;
    let judged = log
        .wait_for(
            Duration::from_secs(10),
            of_pod_rule(&pod_name, "container-compromised"),
        )
        .await?
        .with_context(|| format!("no container-compromised event: {}", log.seen()))?;
    ensure(field(&judged, "/action") == "audit", || {
        format!(
            "compromise action {:?}, want audit",
            field(&judged, "/action")
        )
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = ctx.cri.container_status(&c).await?;
    ensure(
        st.state == k8s_cri::v1::ContainerState::ContainerRunning as i32,
        || {
            format!(
                "the container was stopped in audit mode (state {}, exit {})",
                crate::cri::state_name(st.state),
                st.exit_code
            )
        },
    )?;
    Ok(Observed::blocked(format!(
        "Block rules audited (read and exec allowed, both reported), unshare still denied ({probe}), compromise reported not killed"
    )))
}
