//! The eBPF monitor through CRI: what a container does arrives in the violation log with its
//! pod and container, built-in detections fire on their trigger and not on its benign twin,
//! and a pod's process Block rule kills its target while the neighbour runs.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::eventlog::{field, summary, EventLog};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::cri;
use crate::sec_check;
use crate::suite::{ensure, Ctx};

const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A stratum port: a connect to it is the miner detection's trigger.
const MINER_PORT: u16 = 3333;
const POLICY: &str = "palisade.dev/policy";

pub fn all() -> Vec<SecCheck> {
    let only = Scope::Only(PALISADE);
    vec![
        sec_check!(monitor_attribution, 90, Scope::CompareWith(PALISADE)),
        sec_check!(monitor_shell_and_package_manager, 60, only),
        sec_check!(monitor_block_rule_per_pod, 90, only),
    ]
}

fn of_container(e: &Value, pod: &str, container_id: &str) -> bool {
    field(e, "/source") == "monitor"
        && field(e, "/workload/pod") == pod
        && field(e, "/workload/container_id") == container_id
}

/// Runs `cmd` in the container; the exit code and output (stdout then stderr).
async fn exec(ctx: &Ctx, c: &str, cmd: &[&str]) -> Result<(i32, String)> {
    let (out, err, code) = ctx.cri.exec_sync(c, cmd, 20).await?;
    Ok((code, format!("{out}{err}")))
}

/// In one container: a shell exec, a write below /etc, a service account token read, a
/// connect to a mining pool port (to a listener in the pod) and an unshare. Under palisade
/// each detection arrives once with the CRI names of the pod and container; under runc (no
/// monitor) none does.
pub async fn monitor_attribution(ctx: &Ctx) -> Result<Observed> {
    let token_dir = ctx.dir.join("sa");
    std::fs::create_dir_all(&token_dir)
        .with_context(|| format!("create {}", token_dir.display()))?;
    std::fs::write(token_dir.join("token"), "conformance-token\n").context("write token")?;
    let (pod, cfg) = ctx.pod().await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let mut cc = ctx.container("watched", crate::cri::SLEEPER);
    cc.mounts = vec![cri::bind_mount(TOKEN_DIR, &token_dir, true)];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let log = EventLog::mark(ctx)?;
    let (code, out) = exec(
        ctx,
        &c,
        &[
            "sh",
            "-c",
            &format!(
                "(cd /etc && echo probe > palisade-monitor-probe) && (cd {TOKEN_DIR} && cat token >/dev/null) && \
                 (nc -l -p {MINER_PORT} </dev/null >/dev/null 2>&1 &) && sleep 0.3 && echo hi | nc -w 2 127.0.0.1 {MINER_PORT}"
            ),
        ],
    )
    .await?;
    ensure(code == 0, || format!("actions exited {code}: {out:?}"))?;
    let (unshare_code, unshare_out) = exec(ctx, &c, &["unshare", "-n", "true"]).await?;
    ensure(unshare_code != 0 || ctx.handler != PALISADE, || {
        format!(
            "unshare -n succeeded under {}: {unshare_out:?}",
            ctx.handler
        )
    })?;
    let expected = [
        ("shell-in-container", ""),
        // both by a relative path: judged in the kernel on the file, not on the spelling
        ("write-below-system-dir", "palisade-monitor-probe"),
        ("service-account-token-read", "token"),
        ("crypto-miner-pool-port", ""),
    ];
    if ctx.handler != PALISADE {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = log.matching(|e| field(e, "/workload/pod") == pod_name)?;
        ensure(seen.is_empty(), || {
            format!(
                "{} events for a {} pod: {}",
                seen.len(),
                ctx.handler,
                summary(&seen)
            )
        })?;
        return Ok(Observed::allowed(format!(
            "no events (unshare exit {unshare_code})"
        )));
    }
    let mut found = Vec::new();
    for (rule, path) in expected {
        let ev = log
            .expect(
                Duration::from_secs(5),
                &pod_name,
                |e| {
                    of_container(e, &pod_name, &c)
                        && field(e, "/rule/name") == rule
                        && (path.is_empty() || field(e, "/evidence/path").ends_with(path))
                },
                || format!("no {rule} event for the container"),
            )
            .await?;
        let names = (
            field(&ev, "/workload/namespace"),
            field(&ev, "/workload/container"),
        );
        ensure(names == ("palisade-conformance", "watched"), || {
            format!("{rule}: workload {:?}", ev.get("workload"))
        })?;
        found.push(rule);
    }
    // The unshare is refused by the hardened seccomp filter before the syscall's entry
    // tracepoint runs; the monitor reports the refusal from the exit tracepoint.
    let ns = log
        .wait_for(Duration::from_secs(5), |e| {
            of_container(e, &pod_name, &c)
                && matches!(
                    field(e, "/rule/name"),
                    "namespace-change" | "file-access-denied"
                )
        })
        .await?;
    let others = log.matching(|e| {
        field(e, "/source") == "monitor"
            && field(e, "/workload/container") == "watched"
            && field(e, "/workload/pod") != pod_name
    })?;
    ensure(others.is_empty(), || {
        format!(
            "events of other pods named as this one: {}",
            summary(&others)
        )
    })?;
    ns.with_context(|| format!("the refused unshare (exit {unshare_code}) was not reported"))?;
    Ok(Observed::blocked(format!(
        "{}/{} detections with ns/pod/container; refused unshare (exit {unshare_code}) reported",
        found.len(),
        expected.len(),
    )))
}

/// The entrypoint shell is not a spawned shell, a later `sh -c` is; a package manager (a real
/// file at /usr/bin/apt) is reported, the same binary under a neutral name is not.
pub async fn monitor_shell_and_package_manager(ctx: &Ctx) -> Result<Observed> {
    let log = EventLog::mark(ctx)?;
    let (pod, c, cfg) = ctx.pod_with_sleeper().await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    // The entrypoint (`sh -c ...`) has run by now; it must not count.
    let (code, _) = exec(ctx, &c, &["true"]).await?;
    ensure(code == 0, || format!("true exited {code}"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shell = |e: &Value| {
        of_container(e, &pod_name, &c) && field(e, "/rule/name") == "shell-in-container"
    };
    let early = log.matching(shell)?;
    ensure(early.is_empty(), || {
        format!("the entrypoint shell was reported: {}", summary(&early))
    })?;
    let (code, out) = exec(ctx, &c, &["sh", "-c", "echo interactive"]).await?;
    ensure(code == 0 && out.contains("interactive"), || {
        format!("sh -c exited {code}: {out:?}")
    })?;
    log.wait_for(Duration::from_secs(5), shell)
        .await?
        .context("an exec'd sh -c was not reported as shell-in-container")?;

    let (neutral, _) = exec(ctx, &c, &["/usr/bin/palisade-probe", "tcpsock"]).await?;
    let (apt, apt_out) = exec(ctx, &c, &["/usr/bin/apt", "tcpsock"]).await?;
    ensure(neutral == 0 && apt == 0, || {
        format!("probe exited {neutral}, apt exited {apt}: {apt_out:?}")
    })?;
    let pm = |e: &Value| {
        of_container(e, &pod_name, &c) && field(e, "/rule/name") == "package-manager-in-container"
    };
    let ev = log
        .wait_for(Duration::from_secs(5), pm)
        .await?
        .context("/usr/bin/apt ran but no package-manager-in-container event")?;
    let path = field(&ev, "/evidence/path").to_string();
    ensure(path == "/usr/bin/apt", || {
        format!("package manager event for {path:?}")
    })?;
    let all_pm = log.matching(pm)?;
    ensure(all_pm.len() == 1, || {
        format!("package manager events: {}", summary(&all_pm))
    })?;
    let _ = pod;
    Ok(Observed::blocked(
        "exec'd sh reported, entrypoint sh not; /usr/bin/apt reported, same file as palisade-probe not",
    ))
}

fn block_policy(name: &str, path: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: {name}\n  \
         namespace: palisade-conformance\nspec:\n  selector:\n    matchLabels: {{}}\n  process:\n    \
         matchPaths:\n    - path: {path}\n  action: Block\n"
    )
}

/// Two pods on the node, each with its own process Block rule on a real file: each pod's
/// target is stopped at exec (refused with EPERM where BPF-LSM runs, else killed, 137) while
/// the other pod's target, its neighbour, runs.
pub async fn monitor_block_rule_per_pod(ctx: &Ctx) -> Result<Observed> {
    let log = EventLog::mark(ctx)?;
    let mut pods = Vec::new();
    for (policy, blocked, allowed) in [
        ("block-apt", "/usr/bin/apt", "/usr/bin/apt-get"),
        ("block-apt-get", "/usr/bin/apt-get", "/usr/bin/apt"),
    ] {
        let mut cfg = ctx.pod_config();
        cfg.annotations
            .insert(POLICY.into(), block_policy(policy, blocked));
        let (_, c) = ctx.run_sleeper_pod(&cfg, "guarded").await?;
        pods.push((
            crate::cri::pod_name(&cfg).to_string(),
            c,
            policy,
            blocked,
            allowed,
        ));
    }
    let mut seen = Vec::new();
    for (pod_name, c, policy, blocked, allowed) in &pods {
        let (code, out) = exec(ctx, c, &[blocked, "tcpsock"]).await?;
        let (n_code, n_out) = exec(ctx, c, &[allowed, "tcpsock"]).await?;
        ensure(n_code == 0 && n_out.contains("allowed"), || {
            format!("{policy}: neighbour {allowed} exited {n_code} ({n_out:?}), want 0")
        })?;
        let ev = log
            .expect(
                Duration::from_secs(5),
                pod_name,
                |e| {
                    of_container(e, pod_name, c)
                        && matches!(field(e, "/action"), "kill" | "block")
                        && field(e, "/rule/name").contains(policy)
                },
                || {
                    format!(
                        "{policy}: {blocked} exited {code} ({out:?}) and no kill or block event"
                    )
                },
            )
            .await?;
        let path = field(&ev, "/evidence/path");
        ensure(path == *blocked, || {
            format!("{policy}: event for {path:?}, want {blocked}")
        })?;
        // The monitor refuses the exec through BPF-LSM where the kernel runs it, else kills
        // the process at exec; the event names which, and the exit must match it.
        let (action, enforcer) = (field(&ev, "/action"), field(&ev, "/enforcer"));
        let held = !out.contains("allowed")
            && match (action, enforcer) {
                ("kill", "bpf-exec-kill") => code == 137,
                ("block", "bpf-lsm") => code != 0 && code != 137,
                _ => false,
            };
        ensure(held, || {
            format!(
                "{policy}: {blocked} exited {code} ({out:?}) with event action={action} \
                 enforcer={enforcer}; want 137 with kill/bpf-exec-kill, or a failed exec with \
                 block/bpf-lsm"
            )
        })?;
        seen.push(format!(
            "{policy}: {code} ({action}, {enforcer}), neighbour 0"
        ));
    }
    Ok(Observed::blocked(seen.join("; ")))
}
