//! `palisade-conformance bench`: the suites behind `cargo xtask bench`, their options, and the
//! start suite (pod+container start latency and shim memory per pod, on a cold and a warm node).

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::PodSandboxConfig;

use crate::cri::{self, Cri};
use crate::host;
use crate::suite::Settings;

/// Which measurement one `bench` invocation makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Pod+container start latency and shim memory, cold and warm node.
    Start,
    /// System call loops under each handler (sandbox overhead).
    Syscalls,
    /// System call loops with the monitor off, on for one pod, on among many pods.
    Monitor,
}

impl std::str::FromStr for Suite {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "start" => Suite::Start,
            "syscalls" => Suite::Syscalls,
            "monitor" => Suite::Monitor,
            other => bail!("unknown bench suite {other} (start, syscalls, monitor)"),
        })
    }
}

/// The options of `palisade-conformance bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub suite: Suite,
    /// Start suite: measured pods per handler and node state.
    pub runs: u32,
    /// Loop suites: rounds, each measuring every configuration once.
    pub rounds: u32,
    /// Loop suites: factor on the default iteration counts (small for a quick check).
    pub scale: f64,
    /// Monitor suite: monitored pods on the node in the crowded configuration.
    pub pods: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            suite: Suite::Start,
            runs: 30,
            rounds: 5,
            scale: 1.0,
            pods: 20,
        }
    }
}

impl Options {
    /// Takes one `--flag value` pair of the bench options.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<()> {
        let ctx = || format!("{flag} {value}");
        match flag {
            "--suite" => self.suite = value.parse()?,
            "--runs" => self.runs = value.parse().with_context(ctx)?,
            "--rounds" => self.rounds = value.parse().with_context(ctx)?,
            "--scale" => self.scale = value.parse().with_context(ctx)?,
            "--pods" => self.pods = value.parse().with_context(ctx)?,
            other => bail!("{other}: not a bench option"),
        }
        if self.rounds == 0 || self.runs == 0 || self.pods == 0 {
            bail!("{flag} {value}: must be at least 1");
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            bail!("{flag} {value}: must be a positive number");
        }
        Ok(())
    }
}

/// Runs the chosen suite and returns its markdown.
pub async fn run(settings: &Settings, opts: &Options) -> Result<String> {
    std::fs::create_dir_all(&settings.work_dir)
        .with_context(|| format!("create {}", settings.work_dir.display()))?;
    match opts.suite {
        Suite::Start => start(settings, opts.runs).await,
        Suite::Syscalls => crate::bench_loops::syscalls(settings, opts).await,
        Suite::Monitor => crate::bench_loops::monitor(settings, opts).await,
    }
}

/// Samples of one handler.
#[derive(Debug, Default)]
pub struct Samples {
    pub start_ms: Vec<f64>,
    pub rss_kib: Vec<u64>,
    pub pss_kib: Vec<u64>,
    pub shims_per_pod: usize,
}

/// The value at quantile `q` (nearest rank) of unsorted samples.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
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

/// The configuration of the bench pod `name` (logs under the work dir).
pub fn sleeper_pod_config(settings: &Settings, name: &str) -> PodSandboxConfig {
    let uid = format!("{}-{name}", std::process::id());
    cri::pod_config(
        name,
        &uid,
        &settings.work_dir.join(name),
        &settings.cgroup_root,
    )
}

/// Starts a pod with one sleeper container; returns (pod id, container id). A pod whose
/// container does not start is removed again.
pub async fn start_sleeper_pod(
    cri: &Cri,
    settings: &Settings,
    name: &str,
    handler: &str,
) -> Result<(String, String)> {
    let uid = format!("{}-{name}", std::process::id());
    let log_dir = settings.work_dir.join(name);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let pod_cfg = cri::pod_config(name, &uid, &log_dir, &settings.cgroup_root);
    let cfg = cri::container_config("sleeper", 0, &settings.image, cri::SLEEPER);
    let pod = cri.run_pod(&pod_cfg, handler).await?;
    match cri.run_container(&pod, &cfg, &pod_cfg).await {
        Ok(c) => Ok((pod, c)),
        Err(e) => {
            if let Err(re) = cri.remove_pod(&pod).await {
                eprintln!("bench: pod {name}: {re:#}");
            }
            Err(e.context(format!("pod {name}")))
        }
    }
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
            Some(start_sleeper_pod(cri, settings, &name, handler).await?.0)
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
async fn start(settings: &Settings, runs: u32) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 10.0);
        assert_eq!(quantile(&v, 0.95), 19.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn options_take_bench_flags_only() {
        let mut o = Options::default();
        o.set("--suite", "monitor").unwrap();
        o.set("--rounds", "3").unwrap();
        o.set("--scale", "0.01").unwrap();
        o.set("--pods", "4").unwrap();
        assert!(o.set("--image", "x").is_err());
        assert_eq!(o.suite, Suite::Monitor);
        assert_eq!((o.rounds, o.scale, o.pods), (3, 0.01, 4));
        assert!(o.set("--suite", "all").is_err());
        assert!(o.set("--rounds", "0").is_err());
        assert!(o.set("--scale", "-1").is_err());
        assert!(o.set("--runs", "x").is_err());
    }
}
