//! `palisade-conformance bench`: the suites behind `cargo xtask bench`, their options, and what
//! they share (sleeper pods, quantiles). The start suite is `pod`, the loop suites `loops`,
//! the wait for the shims of removed pods `shims`.

mod loops;
mod pod;
mod shims;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::PodSandboxConfig;

use crate::cri::{self, Cri};
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
    /// The monitor's loops and the pod start in a learning pod against a pod not learning.
    Learn,
}

impl std::str::FromStr for Suite {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "start" => Suite::Start,
            "syscalls" => Suite::Syscalls,
            "monitor" => Suite::Monitor,
            "learn" => Suite::Learn,
            other => bail!("unknown bench suite {other} (start, syscalls, monitor, learn)"),
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
    /// Monitor suite: the probe binary for a `getppid` loop run outside any container (the
    /// kernel matrix's bench); None: no such loop.
    pub host_probe: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            suite: Suite::Start,
            runs: 30,
            rounds: 5,
            scale: 1.0,
            pods: 20,
            host_probe: None,
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
            "--host-probe" => self.host_probe = Some(value.into()),
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
        Suite::Start => pod::start(settings, opts.runs).await,
        Suite::Syscalls => loops::syscalls(settings, opts).await,
        Suite::Monitor => loops::monitor(settings, opts).await,
        Suite::Learn => loops::learn(settings, opts).await,
    }
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

/// The pod annotation that makes a palisade pod record a learned profile.
const LEARN_ANNOTATION: (&str, &str) = ("palisade.dev/profile", "learn");

/// The configuration of the bench pod `name` (logs under the work dir), annotated to record a
/// learned profile when `learn`.
pub fn sleeper_pod_config(settings: &Settings, name: &str, learn: bool) -> PodSandboxConfig {
    let uid = format!("{}-{name}", std::process::id());
    let mut cfg = cri::pod_config(
        name,
        &uid,
        &settings.work_dir.join(name),
        &settings.cgroup_root,
    );
    if learn {
        cfg.annotations
            .insert(LEARN_ANNOTATION.0.into(), LEARN_ANNOTATION.1.into());
    }
    cfg
}

/// Starts a pod with one sleeper container; returns (pod id, container id). A pod whose
/// container does not start is removed again.
pub async fn start_sleeper_pod(
    cri: &Cri,
    settings: &Settings,
    name: &str,
    handler: &str,
    learn: bool,
) -> Result<(String, String)> {
    let log_dir = settings.work_dir.join(name);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let pod_cfg = sleeper_pod_config(settings, name, learn);
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
