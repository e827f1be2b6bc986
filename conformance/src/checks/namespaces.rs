//! Host network, pid and ipc namespace options versus the pod's own namespaces.

use anyhow::Result;
use k8s_cri::v1::{IdMapping, NamespaceMode, NamespaceOption, PodSandboxConfig, UserNamespace};

use crate::host::ns_link;
use crate::suite::{ensure, Ctx};

const NAMESPACES: [&str; 3] = ["net", "pid", "ipc"];

async fn container_ns(ctx: &Ctx, c: &str) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for ns in NAMESPACES {
        v.push(
            ctx.cri
                .sh(c, &format!("readlink /proc/self/ns/{ns}"))
                .await?
                .trim()
                .to_string(),
        );
    }
    Ok(v)
}

/// A pod from `cfg` and its sleeper container `name`, both with the namespace options `opts`;
/// returns the container's id.
async fn sleeper_with_namespaces(
    ctx: &Ctx,
    name: &str,
    mut cfg: PodSandboxConfig,
    opts: NamespaceOption,
) -> Result<String> {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(opts.clone());
    let pod = ctx.run_pod(&cfg).await?;
    let mut cc = ctx.container(name, crate::cri::SLEEPER);
    crate::cri::security(&mut cc).namespace_options = Some(opts);
    ctx.cri.run_container(&pod, &cc, &cfg).await
}

pub async fn host_namespaces(ctx: &Ctx) -> Result<()> {
    let host: Vec<String> = NAMESPACES
        .iter()
        .map(|ns| ns_link("self", ns))
        .collect::<Result<_>>()?;

    let node = NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        ..Default::default()
    };
    let mut cfg = ctx.pod_config();
    cfg.hostname = String::new();
    let c = sleeper_with_namespaces(ctx, "hostns", cfg, node).await?;
    let inside = container_ns(ctx, &c).await?;
    for ((ns, h), i) in NAMESPACES.iter().zip(&host).zip(&inside) {
        ensure(h == i, || {
            format!("host {ns} namespace requested: host {h}, container {i}")
        })?;
    }

    // A default pod has its own namespaces.
    let (_pod, c2, _) = ctx.pod_with_sleeper().await?;
    let own = container_ns(ctx, &c2).await?;
    for ((ns, h), i) in NAMESPACES.iter().zip(&host).zip(&own) {
        ensure(h != i, || {
            format!("default pod shares the host {ns} namespace {h}")
        })?;
    }
    Ok(())
}

/// containerd 1.6's CRI has no user namespaces (it ignores the request). containerd 2.x
/// idmaps the pod's mounts: its runc shim needs runc 1.2 for that (Debian 12 has 1.1), and for
/// any other runtime it reads the runtime's options as runc's and refuses the container
/// before the shim is asked (docs/hardening.md, "Pods with a user namespace").
pub fn user_namespace_unsupported(release: (u32, u32)) -> Option<&'static str> {
    match release {
        (1, 7) => None,
        (1, _) => Some("its CRI has no user namespaces before 1.7"),
        _ => Some(
            "containerd 2.x idmaps the pod's mounts, which needs runc 1.2 or later in its runc \
             shim, and refuses other runtimes' options for it",
        ),
    }
}

/// First id of the host range a user-namespaced pod is mapped to (kubelet hands out ranges of
/// 65536 that start at a multiple of 65536).
const USERNS_HOST_BASE: u32 = 65536 * 5;

/// A pod whose CRI request carries a user namespace gets one: root in the container is
/// `USERNS_HOST_BASE` on the host, the mapping is the one requested, and root inside still
/// works on its own files.
pub async fn user_namespace(ctx: &Ctx) -> Result<()> {
    let range = |base: u32| {
        vec![IdMapping {
            host_id: base,
            container_id: 0,
            length: 65536,
        }]
    };
    let userns = NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: range(USERNS_HOST_BASE),
            gids: range(USERNS_HOST_BASE),
        }),
        ..Default::default()
    };
    let c = sleeper_with_namespaces(ctx, "userns", ctx.pod_config(), userns).await?;

    let map = ctx.cri.sh(&c, "cat /proc/self/uid_map").await?;
    let fields: Vec<&str> = map.split_whitespace().collect();
    let want = [
        "0".to_string(),
        USERNS_HOST_BASE.to_string(),
        "65536".to_string(),
    ];
    ensure(fields == want, || {
        format!(
            "uid_map inside the container is {map:?}, want {}",
            want.join(" ")
        )
    })?;
    let host_userns = ns_link("self", "user")?;
    let pid = ctx.cri.container_pid(&c).await?;
    let inside = ns_link(&pid.to_string(), "user")?;
    ensure(inside != host_userns, || {
        format!("container shares the host user namespace {inside}")
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let host_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    ensure(host_uid == USERNS_HOST_BASE.to_string(), || {
        format!("container root runs as host uid {host_uid}, want {USERNS_HOST_BASE}")
    })?;
    let out = ctx
        .cri
        .sh(
            &c,
            "id -u && echo ok > /tmp/userns-probe && cat /tmp/userns-probe",
        )
        .await?;
    ensure(
        out.split_whitespace().collect::<Vec<_>>() == ["0", "ok"],
        || format!("root in the user namespace: id -u and a write in /tmp printed {out:?}"),
    )?;
    Ok(())
}
