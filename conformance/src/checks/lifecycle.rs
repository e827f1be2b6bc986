//! Pod sandbox and container lifecycle: run, status, list, stop, remove, exit codes, restarts.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListPodSandboxRequest, PodSandboxFilter,
    PodSandboxState, RemovePodSandboxRequest, StopPodSandboxRequest,
};

use crate::cri::{container_config, state_name};
use crate::suite::{ensure, Ctx};

pub async fn pod_sandbox_lifecycle(ctx: &Ctx) -> Result<()> {
    let cfg = ctx.pod_config();
    let id = ctx.run_pod(&cfg).await?;
    let mut rt = ctx.cri.rt.clone();
    let status = ctx
        .cri
        .pod_status(&id, false)
        .await?
        .status
        .context("pod sandbox status: empty")?;
    ensure(status.state == PodSandboxState::SandboxReady as i32, || {
        format!("pod state {} after run, want READY", status.state)
    })?;
    ensure(status.metadata == cfg.metadata, || {
        format!("pod metadata {:?} != {:?}", status.metadata, cfg.metadata)
    })?;
    let ip = status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    ensure(ip.starts_with("10."), || {
        format!("pod ip {ip:?} not from the test bridge")
    })?;
    let listed = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .context("list pod sandbox")?
        .into_inner()
        .items;
    ensure(listed.len() == 1 && listed[0].id == id, || {
        format!("list by id returned {} pods", listed.len())
    })?;
    ensure(listed[0].runtime_handler == ctx.handler, || {
        format!("listed runtime handler {:?}", listed[0].runtime_handler)
    })?;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .context("stop pod sandbox")?;
    let status = ctx
        .cri
        .pod_status(&id, false)
        .await
        .context("after stop")?
        .status
        .context("pod sandbox status: empty")?;
    ensure(
        status.state == PodSandboxState::SandboxNotready as i32,
        || format!("pod state {} after stop, want NOTREADY", status.state),
    )?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .context("remove pod sandbox")?;
    ctx.untrack(&id);
    let gone = ctx.cri.pod_status(&id, false).await;
    ensure(gone.is_err(), || {
        "pod status still answers after remove".into()
    })
}

pub async fn container_lifecycle(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let ccfg = ctx.container("main", crate::cri::SLEEPER);
    let id = ctx.cri.create_container(&pod, &ccfg, &cfg).await?;
    let st = ctx.cri.container_status(&id).await?;
    ensure(st.state == ContainerState::ContainerCreated as i32, || {
        format!("state {} after create, want CREATED", state_name(st.state))
    })?;
    ctx.cri.start_container(&id).await?;
    let st = ctx.cri.container_status(&id).await?;
    ensure(st.state == ContainerState::ContainerRunning as i32, || {
        format!("state {} after start, want RUNNING", state_name(st.state))
    })?;
    ensure(st.started_at > 0, || "started_at not set".into())?;
    // The handler really picked its own shim: containerd-shim-<handler>-v2.
    let pid = ctx.cri.container_pid(&id).await?;
    crate::host::expect_shim(pid, &ctx.handler)?;
    let listed = ctx
        .cri
        .list_containers(ContainerFilter {
            pod_sandbox_id: pod.clone(),
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
        .await?;
    ensure(listed.iter().any(|c| c.id == id), || {
        format!("running container {id} not listed in its pod")
    })?;
    // The sleeper traps SIGTERM, so it ends well before the grace period.
    ctx.cri.stop_container(&id, 10).await?;
    let st = ctx.cri.container_status(&id).await?;
    ensure(st.state == ContainerState::ContainerExited as i32, || {
        format!("state {} after stop, want EXITED", state_name(st.state))
    })?;
    ensure(st.finished_at >= st.started_at, || {
        "finished_at before started_at".into()
    })?;
    ctx.cri.remove_container(&id).await?;
    ensure(ctx.cri.container_status(&id).await.is_err(), || {
        "container status still answers after remove".into()
    })
}

pub async fn exit_codes(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    for (i, code) in [0, 3, 42].into_iter().enumerate() {
        let name = format!("exit{i}");
        let script = format!("exit {code}");
        let id = ctx
            .cri
            .run_container(&pod, &ctx.container(&name, &["sh", "-c", &script]), &cfg)
            .await?;
        let st = ctx.cri.wait_exited(&id, Duration::from_secs(20)).await?;
        ensure(st.exit_code == code, || {
            format!("container exiting {code} reported {}", st.exit_code)
        })?;
        let want_reason = if code == 0 { "Completed" } else { "Error" };
        ensure(st.reason == want_reason, || {
            format!("exit {code}: reason {:?}, want {want_reason:?}", st.reason)
        })?;
    }
    // Killed by a signal: 128 + 9. As pid 1 of its namespace, a plain sleep has no
    // SIGTERM handler, so the kernel drops SIGTERM and stop escalates to SIGKILL.
    let id = ctx
        .cri
        .run_container(&pod, &ctx.container("killed", &["sleep", "3600"]), &cfg)
        .await?;
    // Until runc's init has exec'd sleep, the init is runc (Go), whose runtime handles
    // SIGTERM and exits 2: stop only once sleep runs, under either runtime.
    let pid = ctx.cri.container_pid(&id).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "sleep")
        .unwrap_or(false)
    {
        ensure(tokio::time::Instant::now() < deadline, || {
            format!("container {id}: pid {pid} never became sleep")
        })?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.cri.stop_container(&id, 1).await?;
    let st = ctx.cri.wait_exited(&id, Duration::from_secs(20)).await?;
    ensure(st.exit_code == 137, || {
        format!("container killed by SIGKILL reported {}", st.exit_code)
    })
}

/// A container exits and a new attempt of it runs in the same pod (what the kubelet does).
pub async fn container_restart_in_pod(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let first = container_config("app", 0, ctx.image(), &["sh", "-c", "echo first; exit 1"]);
    let id0 = ctx.cri.run_container(&pod, &first, &cfg).await?;
    let st0 = ctx.cri.wait_exited(&id0, Duration::from_secs(20)).await?;
    ensure(st0.exit_code == 1, || {
        format!("first attempt exit {}", st0.exit_code)
    })?;
    let second = container_config("app", 1, ctx.image(), crate::cri::SLEEPER);
    let id1 = ctx.cri.run_container(&pod, &second, &cfg).await?;
    let st1 = ctx.cri.container_status(&id1).await?;
    ensure(st1.state == ContainerState::ContainerRunning as i32, || {
        format!("second attempt state {}", state_name(st1.state))
    })?;
    ensure(st1.metadata.as_ref().map(|m| m.attempt) == Some(1), || {
        format!("second attempt metadata {:?}", st1.metadata)
    })?;
    let out = ctx.cri.sh(&id1, "echo alive").await?;
    ensure(out.trim() == "alive", || {
        format!("exec in restarted container: {out:?}")
    })?;
    ctx.cri.remove_container(&id0).await?;
    ctx.cri.stop_container(&id1, 5).await?;
    ctx.cri.remove_container(&id1).await
}

pub async fn many_containers(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = ctx.container(&format!("c{i}"), crate::cri::SLEEPER);
        ids.push(ctx.cri.run_container(&pod, &c, &cfg).await?);
    }
    for (i, id) in ids.iter().enumerate() {
        let out = ctx.cri.sh(id, &format!("echo c{i}")).await?;
        ensure(out.trim() == format!("c{i}"), || {
            format!("container c{i} said {out:?}")
        })?;
    }
    // The containers share the pod's network namespace and not their pid namespaces.
    let net0 = ctx.cri.sh(&ids[0], "readlink /proc/self/ns/net").await?;
    let net4 = ctx.cri.sh(&ids[4], "readlink /proc/self/ns/net").await?;
    ensure(net0 == net4, || {
        format!("net ns differ: {net0:?} vs {net4:?}")
    })?;
    let listed = ctx
        .cri
        .list_containers(ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await?;
    ensure(listed.len() == 5, || {
        format!("pod lists {} containers, want 5", listed.len())
    })?;
    for id in &ids {
        ctx.cri.stop_container(id, 5).await?;
    }
    Ok(())
}
