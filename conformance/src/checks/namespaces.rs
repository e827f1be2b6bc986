//! Host network, pid and ipc namespace options versus the pod's own namespaces.

use anyhow::Result;
use k8s_cri::v1::{NamespaceMode, NamespaceOption};

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
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.namespace_options = Some(node.clone());
    }
    let pod = ctx.run_pod(&cfg).await?;
    let mut cc = ctx.container("hostns", crate::cri::SLEEPER);
    cc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(node);
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
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
