//! The start suite: pod+container start latency and shim memory per pod, on a cold and a warm
//! node.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context as _, Result};

use super::{quantile, start_sleeper_pod};
use crate::cri::{self, Cri};
use crate::host;
use crate::suite::Settings;

/// Samples of one handler.
#[derive(Debug, Default)]
pub struct Samples {
    pub start_ms: Vec<f64>,
    pub rss_kib: Vec<u64>,
    pub pss_kib: Vec<u64>,
    pub shims_per_pod: usize,
}

fn status_kib(pid: i32, key: &str, file: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("read /proc/{pid}/{file}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/{file}"))
}

/// Whether another pod of the measured handler runs on the node during the start suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// The measured pod is the node's only pod (a palisade shim loads the monitor's programs).
    Cold,
    /// One idle pod of the same handler runs throughout (palisade's programs stay pinned).
    Warm,
}

impl Node {
    fn label(self) -> &'static str {
        match self {
            Node::Cold => "cold: no other pod",
            Node::Warm => "warm: 1 idle pod of the handler",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Node::Cold => "cold",
            Node::Warm => "warm",
        }
    }
}

/// One pod with one container: time to running, then the memory of its shim(s).
async fn sample(
    cri: &Cri,
    settings: &Settings,
    handler: &str,
    name: &str,
    s: &mut Samples,
) -> Result<()> {
    let uid = format!("{}-{name}", std::process::id());
    let log_dir = settings.work_dir.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let pod_cfg = cri::pod_config(name, &uid, &log_dir, &settings.cgroup_root);
    let cfg = cri::container_config("bench", 0, &settings.image, cri::SLEEPER);
    let t0 = Instant::now();
    let pod = cri.run_pod(&pod_cfg, handler).await?;
    let measured = async {
        let c = cri.run_container(&pod, &cfg, &pod_cfg).await?;
        s.start_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let mut shims = BTreeSet::new();
        shims.insert(host::shim_of(cri.container_pid(&c).await?)?.0);
        if let Ok(sandbox) = cri.sandbox_pid(&pod).await {
            if let Ok((p, _)) = host::shim_of(sandbox) {
                shims.insert(p);
            }
        }
        let (mut rss, mut pss) = (0, 0);
        for &p in &shims {
            rss += status_kib(p, "VmRSS:", "status")?;
            pss += status_kib(p, "Pss:", "smaps_rollup")?;
        }
        s.rss_kib.push(rss);
        s.pss_kib.push(pss);
        s.shims_per_pod = s.shims_per_pod.max(shims.len());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let removed = cri.remove_pod(&pod).await;
    measured?;
    removed
}

/// One handler on one kind of node: the idle pod (warm), an unmeasured warm-up pod, the runs.
async fn measure_handler(
    cri: &Cri,
    settings: &Settings,
    handler: &str,
    node: Node,
    runs: u32,
) -> Result<Samples> {
    let idle = match node {
        Node::Cold => None,
        Node::Warm => {
            let name = format!("bench-idle-{handler}");
            Some(
                start_sleeper_pod(cri, settings, &name, handler, false)
                    .await?
                    .0,
            )
        }
    };
    let mut s = Samples::default();
    let measured = async {
        // One unmeasured warm-up pod: first use pulls the image into the snapshotter cache.
        let name = format!("bench-{}-{handler}-warmup", node.tag());
        sample(cri, settings, handler, &name, &mut Samples::default())
            .await
            .context("warm-up")?;
        for i in 0..runs {
            let name = format!("bench-{}-{handler}-{i}", node.tag());
            sample(cri, settings, handler, &name, &mut s)
                .await
                .with_context(|| format!("run {i}"))?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let removed = match &idle {
        Some(pod) => cri.remove_pod(pod).await,
        None => Ok(()),
    };
    measured.with_context(|| format!("{handler}, {}", node.label()))?;
    removed?;
    Ok(s)
}

/// Measures every handler on a cold node, then on a warm one, and returns a markdown table.
pub(super) async fn start(settings: &Settings, runs: u32) -> Result<String> {
    let cri = Cri::connect(&settings.cri_socket).await?;
    let mut table = String::from(
        "| handler | node | runs | pod+container start median (ms) | p95 (ms) | shim VmRSS per pod median (KiB) | shim Pss per pod median (KiB) | shims per pod |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for node in [Node::Cold, Node::Warm] {
        for handler in &settings.handlers {
            let s = measure_handler(&cri, settings, handler, node, runs).await?;
            let med = |v: &[u64]| quantile(&v.iter().map(|&x| x as f64).collect::<Vec<_>>(), 0.5);
            eprintln!(
                "bench: {handler}, {}: {} samples",
                node.label(),
                s.start_ms.len()
            );
            table += &format!(
                "| {handler} | {} | {runs} | {:.1} | {:.1} | {:.0} | {:.0} | {} |\n",
                node.label(),
                quantile(&s.start_ms, 0.5),
                quantile(&s.start_ms, 0.95),
                med(&s.rss_kib),
                med(&s.pss_kib),
                s.shims_per_pod
            );
        }
    }
    Ok(table)
}
