//! Resources: memory limit and OOM kill, UpdateContainerResources, ContainerStats.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_cri::v1::{
    ContainerStatsRequest, LinuxContainerResources, UpdateContainerResourcesRequest,
};

use crate::host;
use crate::suite::{ensure, Ctx};

const MIB: i64 = 1024 * 1024;

fn resources(cc: &mut k8s_cri::v1::ContainerConfig) -> &mut LinuxContainerResources {
    cc.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

pub async fn oom_killed(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    // The string doubles until the 32 MiB limit is hit and the kernel OOM-kills the shell.
    let mut cc = ctx.container(
        "hog",
        &["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"],
    );
    resources(&mut cc).memory_limit_in_bytes = 32 * MIB;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let st = ctx.cri.wait_exited(&c, Duration::from_secs(60)).await?;
    ensure(st.reason == "OOMKilled", || {
        format!(
            "reason {:?} (exit {}), want OOMKilled",
            st.reason, st.exit_code
        )
    })?;
    ensure(st.exit_code == 137, || {
        format!("exit code {}, want 137", st.exit_code)
    })
}

/// Checks the cgroup limits of process `pid` (`when`: initial, updated): its cpu quota
/// `(quota, period)` and its memory limit.
fn limits_are(pid: i32, when: &str, cpu: (i64, i64), memory: i64) -> Result<()> {
    let (quota, mem) = (host::cpu_quota(pid)?, host::memory_limit(pid)?);
    ensure(quota == Some(cpu), || format!("{when} cpu quota {quota:?}"))?;
    ensure(mem == Some(memory), || {
        format!("{when} memory limit {mem:?}")
    })
}

pub async fn update_resources(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("limited", crate::cri::SLEEPER);
    {
        let r = resources(&mut cc);
        r.cpu_period = 100_000;
        r.cpu_quota = 50_000;
        r.memory_limit_in_bytes = 64 * MIB;
    }
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let pid = ctx.cri.container_pid(&c).await?;
    limits_are(pid, "initial", (50_000, 100_000), 64 * MIB)?;
    ctx.cri
        .rt
        .clone()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                memory_limit_in_bytes: 128 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("update container resources")?;
    limits_are(pid, "updated", (20_000, 100_000), 128 * MIB)?;
    let st = ctx.cri.container_status(&c).await?;
    let reported = st
        .resources
        .and_then(|r| r.linux)
        .map(|l| (l.cpu_quota, l.memory_limit_in_bytes));
    ensure(reported == Some((20_000, 128 * MIB)), || {
        format!("status reports resources {reported:?}")
    })
}

pub async fn container_stats(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let script = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 3600";
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("busy", &["sh", "-c", script]), &cfg)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = ctx
            .cri
            .rt
            .clone()
            .container_stats(ContainerStatsRequest {
                container_id: c.clone(),
            })
            .await
            .context("container stats")?
            .into_inner()
            .stats
            .context("empty stats")?;
        let cpu = stats
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map_or(0, |v| v.value);
        let mem = stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let id_ok = stats.attributes.as_ref().is_some_and(|a| a.id == c);
        if cpu > 0 && mem > 0 && id_ok {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("stats stay empty: cpu {cpu} ns, working set {mem} bytes, id ok {id_ok}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
