//! palisade-strict: a read-only root, writes only in the rw mounts and `writable_paths`
//! (`/tmp` in the harness), and signals scoped to the sender's landlock domain.

use anyhow::{Context as _, Result};
use k8s_cri::v1::Mount;

use super::attacks::{shell, sleeper};
use super::{Observed, Scope, SecCheck, STRICT};
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub fn all() -> Vec<SecCheck> {
    vec![
        sec_check!(
            "strict_root_readonly",
            60,
            Scope::CompareWith(STRICT),
            root_readonly
        ),
        sec_check!(
            "strict_write_home",
            60,
            Scope::CompareWith(STRICT),
            write_home
        ),
        sec_check!(
            "strict_write_proc_self",
            60,
            Scope::CompareWith(STRICT),
            write_proc_self
        ),
        sec_check!(
            "strict_writable_paths",
            60,
            Scope::Only(STRICT),
            writable_paths
        ),
        sec_check!(
            "strict_signal_pid1",
            60,
            Scope::CompareWith(STRICT),
            signal_pid1
        ),
    ]
}

async fn root_readonly(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    shell(ctx, &c, "echo x > /etc/palisade-strict").await
}

async fn write_home(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    shell(
        ctx,
        &c,
        "mkdir -p /home/tester/new && echo x > /home/tester/new/f",
    )
    .await
}

/// /proc is a read-write mount, but a kernel interface strict mode grants no writes in.
async fn write_proc_self(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    shell(ctx, &c, "echo renamed > /proc/self/comm").await
}

/// What strict mode keeps writable: `/tmp` (writable_paths) and a read-write volume.
async fn writable_paths(ctx: &Ctx) -> Result<Observed> {
    let src = ctx.dir.join("volume");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let c = sleeper(ctx, |cc| {
        cc.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path: src.display().to_string(),
            readonly: false,
            ..Default::default()
        }];
    })
    .await?;
    let out = ctx
        .cri
        .sh(
            &c,
            "echo t > /tmp/f && cat /tmp/f && echo v > /data/f && cat /data/f",
        )
        .await?;
    ensure(out == "t\nv\n", || {
        format!("writes in /tmp and /data: {out:?}")
    })?;
    let host = std::fs::read_to_string(src.join("f")).context("read the volume's file")?;
    ensure(host == "v\n", || {
        format!("volume file on the host: {host:?}")
    })?;
    let root = shell(ctx, &c, "echo x > /palisade-strict").await?;
    ensure(root.blocked, || format!("write in / {}", root.detail))?;
    Ok(Observed::blocked(format!(
        "(/tmp and the volume writable; / {})",
        root.detail
    )))
}

/// An exec'd shell signalling the container's init, which is outside its landlock domain.
async fn signal_pid1(ctx: &Ctx) -> Result<Observed> {
    let c = sleeper(ctx, |_| {}).await?;
    let o = shell(ctx, &c, "kill -0 1").await?;
    // The shell may still signal itself and its own children.
    ctx.cri
        .sh(&c, "kill -0 $$ && sleep 30 & kill $! && wait $!; true")
        .await?;
    Ok(o)
}
