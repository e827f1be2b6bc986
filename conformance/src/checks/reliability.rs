//! Reliability: containerd restarted under running pods, a shim killed, and many pods leaving nothing behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::{ContainerState, PodSandboxState};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::cri::{state_name, Cri};
use crate::host;
use crate::suite::{ensure, Ctx};

/// Sends one request to the harness's control socket and returns the text after `ok`.
async fn control(ctx: &Ctx, request: &str) -> Result<String> {
    let path = ctx
        .settings
        .control_socket
        .as_ref()
        .context("no --control-socket: the harness must own containerd for this check")?;
    let stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("connect {}", path.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(r).read_line(&mut line),
    )
    .await
    .with_context(|| format!("control {request}: no answer"))??;
    match line.trim().split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        _ => bail!("control {request}: {}", line.trim()),
    }
}

async fn containerd_pid(ctx: &Ctx) -> Result<i32> {
    Ok(control(ctx, "pid").await?.trim().parse()?)
}

/// Waits until the CRI service answers again and returns a fresh client.
async fn reconnect(ctx: &Ctx) -> Result<Cri> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(cri) = Cri::connect(&ctx.settings.cri_socket).await {
            if cri
                .rt
                .clone()
                .version(k8s_cri::v1::VersionRequest::default())
                .await
                .is_ok()
            {
                return Ok(cri);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("cri not answering 30s after containerd restart");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn containerd_restart(ctx: &Ctx) -> Result<()> {
    let (pod_a, c_a, _) = ctx.pod_with_sleeper().await?;
    let (pod_b, c_b, _) = ctx.pod_with_sleeper().await?;
    let before = containerd_pid(ctx).await?;
    let pid_a = ctx.cri.container_pid(&c_a).await?;
    let after: i32 = control(ctx, "restart").await?.trim().parse()?;
    ensure(after != before, || {
        "containerd pid unchanged by restart".into()
    })?;
    let cri = reconnect(ctx).await?;
    for (pod, c) in [(&pod_a, &c_a), (&pod_b, &c_b)] {
        let st = cri.container_status(c).await?;
        ensure(st.state == ContainerState::ContainerRunning as i32, || {
            format!("container {c} {} after restart", state_name(st.state))
        })?;
        let out = cri.sh(c, "echo still-here").await?;
        ensure(out == "still-here\n", || {
            format!("exec after restart: {out:?}")
        })?;
        let ready = cri.pod_status(pod, false).await?.status.map(|s| s.state);
        ensure(ready == Some(PodSandboxState::SandboxReady as i32), || {
            format!("pod {pod} state {ready:?} after restart")
        })?;
    }
    ensure(host::alive(pid_a), || {
        "container process died across the restart".into()
    })?;
    cri.stop_container(&c_a, 5).await?;
    let st = cri.container_status(&c_a).await?;
    ensure(st.state == ContainerState::ContainerExited as i32, || {
        format!("stopped container {}", state_name(st.state))
    })?;
    ensure(!host::alive(pid_a), || {
        "stopped container's process still alive".into()
    })?;
    cri.remove_pod(&pod_a).await?;
    ctx.untrack(&pod_a);
    // The suite's first client reconnects by itself (its cleanup relies on that).
    ctx.cri.remove_pod(&pod_b).await?;
    ctx.untrack(&pod_b);
    Ok(())
}

pub async fn shim_killed(ctx: &Ctx) -> Result<()> {
    let (pod, c, _) = ctx.pod_with_sleeper().await?;
    let pid = ctx.cri.container_pid(&c).await?;
    let (shim, cmd) = host::shim_of(pid)?;
    let sandbox_pid = ctx.cri.sandbox_pid(&pod).await?;
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(shim, libc::SIGKILL) };
    ensure(rc == 0, || {
        format!(
            "kill shim {shim} ({cmd}): {}",
            std::io::Error::last_os_error()
        )
    })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = ctx.cri.container_status(&c).await?;
        let gone = st.state == ContainerState::ContainerExited as i32
            || st.state == ContainerState::ContainerUnknown as i32;
        let orphans: Vec<i32> = [pid, sandbox_pid]
            .into_iter()
            .filter(|&p| host::alive(p))
            .collect();
        if gone && orphans.is_empty() && !host::alive(shim) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "30s after SIGKILL of shim {shim}: container {}, processes still alive {orphans:?}",
                state_name(st.state)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The pod can still be cleaned up through CRI.
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    Ok(())
}

/// What a leak would show up in.
#[derive(Debug, PartialEq)]
struct Footprint {
    shims: usize,
    mounts: usize,
    netns: usize,
    cgroups: usize,
}

fn run_dir(ctx: &Ctx) -> PathBuf {
    ctx.settings
        .cri_socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn footprint(ctx: &Ctx) -> Footprint {
    let address = ctx
        .settings
        .containerd_address
        .clone()
        .unwrap_or_else(|| ctx.settings.cri_socket.display().to_string());
    let rd = run_dir(ctx);
    let mounts = host::mounts_under(&rd);
    Footprint {
        shims: host::shim_pids(&address).len(),
        mounts: mounts.len(),
        netns: host::dir_entries(Path::new("/run/netns"))
            + mounts
                .iter()
                .filter(|m| m.display().to_string().contains("netns"))
                .count(),
        cgroups: host::cgroup_dirs(&ctx.settings.cgroup_root),
    }
}

pub const CHURN_PODS: usize = 50;

pub async fn pod_churn(ctx: &Ctx) -> Result<()> {
    let cd = containerd_pid(ctx).await?;
    let me = i32::try_from(std::process::id())?;
    let before = footprint(ctx);
    let (cd_fds, my_fds) = (host::fd_count(cd)?, host::fd_count(me)?);
    for i in 0..CHURN_PODS {
        let (pod, cfg) = ctx.pod().await?;
        let c = ctx
            .cri
            .run_container(&pod, &ctx.container("churn", crate::cri::SLEEPER), &cfg)
            .await
            .with_context(|| format!("pod {i}"))?;
        ctx.cri.stop_container(&c, 0).await?;
        ctx.cri
            .remove_pod(&pod)
            .await
            .with_context(|| format!("pod {i}"))?;
        ctx.untrack(&pod);
    }
    // Shims exit and the kernel drops cgroups a moment after removal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut after = footprint(ctx);
    while after != before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = footprint(ctx);
    }
    ensure(after == before, || {
        format!("after {CHURN_PODS} pods: {after:?}, before: {before:?}")
    })?;
    // containerd's fd count moves a little with its own housekeeping (log files,
    // watchers, grpc streams); one leaked fd per pod would show as +50.
    let (cd_after, my_after) = (host::fd_count(cd)?, host::fd_count(me)?);
    ensure(cd_after <= cd_fds + 5, || {
        format!("containerd fds {cd_fds} -> {cd_after} after {CHURN_PODS} pods")
    })?;
    ensure(my_after <= my_fds + 2, || {
        format!("suite fds {my_fds} -> {my_after}")
    })
}
