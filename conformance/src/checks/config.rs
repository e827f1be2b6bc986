//! What a container is configured with: env, args, cwd, user, hostname, rootfs, mounts, caps, sysctls.

use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_cri::v1::{Capability, Int64Value, KeyValue};

use super::logs::output_of;
use crate::cri::{self, security};
use crate::suite::{ensure, Ctx};

pub async fn env_args_workdir(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("env", &["sh", "-c"]);
    cc.args = vec![
        r#"echo "$FOO|$BAR|$0|$1|$(pwd)""#.into(),
        "arg-zero".into(),
        "arg one".into(),
    ];
    cc.envs = vec![
        KeyValue {
            key: "FOO".into(),
            value: "foo-value".into(),
        },
        KeyValue {
            key: "BAR".into(),
            value: "with space".into(),
        },
    ];
    cc.working_dir = "/var/tmp".into();
    let (out, code) = output_of(ctx, &pod, &cfg, &cc).await?;
    ensure(code == 0, || format!("exit {code}"))?;
    let want = "foo-value|with space|arg-zero|arg one|/var/tmp\n";
    ensure(out == want, || format!("output {out:?}, want {want:?}"))
}

pub async fn user_group(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("user", &["sh", "-c", "id; sleep 3600"]);
    let sc = security(&mut cc);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.run_as_group = Some(Int64Value { value: 1000 });
    sc.supplemental_groups = vec![2000];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let id = ctx.cri.sh(&c, "id").await?;
    ensure(id.starts_with("uid=1000(tester) gid=1000(tester)"), || {
        format!("id: {id:?}")
    })?;
    ensure(id.contains("2000"), || {
        format!("supplemental group 2000 missing: {id:?}")
    })?;
    let status = ctx
        .cri
        .sh(&c, "grep -E '^(Uid|Gid):' /proc/1/status")
        .await?;
    ensure(
        status
            .lines()
            .all(|l| l.split_whitespace().skip(1).all(|v| v == "1000")),
        || format!("pid 1 ids: {status:?}"),
    )?;
    // A file created by the user is owned by it.
    let owner = ctx
        .cri
        .sh(&c, "touch /tmp/mine && stat -c %u:%g /tmp/mine")
        .await?;
    ensure(owner.trim() == "1000:1000", || format!("owner {owner:?}"))
}

pub async fn hostname(ctx: &Ctx) -> Result<()> {
    let (_pod, c, cfg) = ctx.pod_with_sleeper().await?;
    let h = ctx.cri.sh(&c, "hostname").await?;
    ensure(h.trim() == cfg.hostname, || {
        format!("hostname {h:?}, want {:?}", cfg.hostname)
    })?;
    let etc = ctx.cri.sh(&c, "cat /etc/hostname").await?;
    ensure(etc.trim() == cfg.hostname, || {
        format!("/etc/hostname {etc:?}")
    })
}

pub async fn readonly_rootfs(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let mut cc = ctx.container("ro", crate::cri::SLEEPER);
    security(&mut cc).readonly_rootfs = true;
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    ctx.cri
        .refused(&c, &["touch", "/newfile"], "Read-only file system")
        .await
        .context("a write to the read-only rootfs")?;
    // The runtime's own mounts stay usable.
    let out = ctx
        .cri
        .sh(&c, "echo ok > /dev/null && cat /etc/hostname")
        .await?;
    ensure(out.trim() == cfg.hostname, || {
        format!("/etc/hostname {out:?}")
    })
}

pub async fn bind_mounts(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let src = ctx.dir.join("mount-src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("from-host"), "host-data\n")?;
    let mut cc = ctx.container("mounts", crate::cri::SLEEPER);
    cc.mounts = vec![
        cri::bind_mount("/mnt/rw", &src, false),
        cri::bind_mount("/mnt/ro", &src, true),
    ];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let out = ctx
        .cri
        .sh(&c, "cat /mnt/ro/from-host /mnt/rw/from-host")
        .await?;
    ensure(out == "host-data\nhost-data\n", || {
        format!("read through mounts: {out:?}")
    })?;
    ctx.cri
        .sh(&c, "echo from-container > /mnt/rw/written")
        .await?;
    let written = std::fs::read_to_string(src.join("written")).context("read written file")?;
    ensure(written == "from-container\n", || {
        format!("host sees {written:?}")
    })?;
    ctx.cri
        .refused(&c, &["touch", "/mnt/ro/nope"], "Read-only")
        .await
        .context("a write to the ro mount")?;
    ensure(!Path::new(&src.join("nope")).exists(), || {
        "ro mount was written".into()
    })
}

/// CapEff of the container's process as a bit set.
async fn cap_eff(ctx: &Ctx, c: &str) -> Result<u64> {
    let out = ctx.cri.sh(c, "grep CapEff /proc/self/status").await?;
    let hex = out.split_whitespace().nth(1).context("CapEff line")?;
    Ok(u64::from_str_radix(hex, 16)?)
}

const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

pub async fn capabilities(ctx: &Ctx) -> Result<()> {
    let (pod, cfg) = ctx.pod().await?;
    let default = ctx
        .cri
        .run_container(&pod, &ctx.container("default", crate::cri::SLEEPER), &cfg)
        .await?;
    let caps = cap_eff(ctx, &default).await?;
    ensure(caps & CAP_CHOWN != 0, || {
        format!("default CapEff {caps:x} lacks CHOWN")
    })?;
    ensure(caps & (CAP_NET_ADMIN | CAP_SYS_ADMIN) == 0, || {
        format!("default CapEff {caps:x} has NET_ADMIN or SYS_ADMIN")
    })?;

    let mut cc = ctx.container("changed", crate::cri::SLEEPER);
    security(&mut cc).capabilities = Some(Capability {
        add_capabilities: vec!["NET_ADMIN".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    let changed = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let caps = cap_eff(ctx, &changed).await?;
    ensure(caps & CAP_NET_ADMIN != 0, || {
        format!("CapEff {caps:x} lacks added NET_ADMIN")
    })?;
    ensure(caps & CAP_CHOWN == 0, || {
        format!("CapEff {caps:x} kept dropped CHOWN")
    })?;
    let (_, _, code) = ctx
        .cri
        .exec_sync(&changed, &["chown", "1000", "/tmp"], 10)
        .await?;
    ensure(code != 0, || "chown succeeded without CAP_CHOWN".into())?;

    let mut cc = ctx.container("none", crate::cri::SLEEPER);
    security(&mut cc).capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    let none = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let caps = cap_eff(ctx, &none).await?;
    ensure(caps == 0, || format!("CapEff {caps:x} after dropping ALL"))
}

pub async fn sysctls(ctx: &Ctx) -> Result<()> {
    let want = [
        ("net.ipv4.ip_unprivileged_port_start", "80"),
        ("kernel.shm_rmid_forced", "1"),
    ];
    let mut cfg = ctx.pod_config();
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux.sysctls = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (_, c) = ctx.run_sleeper_pod(&cfg, "sysctl").await?;
    for (key, value) in want {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let got = ctx.cri.sh(&c, &format!("cat {file}")).await?;
        ensure(got.trim() == value, || {
            format!("{key} {got:?}, want {value}")
        })?;
    }
    // The host keeps its own values: the sysctls are per pod namespace.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")?;
    ensure(host.trim() != "80", || {
        "host ip_unprivileged_port_start is 80 as well: the pod's sysctl reached the host".into()
    })
}
