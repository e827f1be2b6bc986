//! `palisade-conformance bench`: pod+container start latency and shim memory per pod, per handler.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context as _, Result};

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

/// One pod with one container: time to running, then the memory of its shim(s).
async fn sample(
    cri: &Cri,
    settings: &Settings,
    handler: &str,
    i: u32,
    s: &mut Samples,
) -> Result<()> {
    let name = format!("bench-{handler}-{i}");
    let uid = format!("{}-{name}", std::process::id());
    let log_dir = settings.work_dir.join(&name);
    std::fs::create_dir_all(&log_dir)?;
    let pod_cfg = cri::pod_config(&name, &uid, &log_dir, &settings.cgroup_root);
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

/// Measures every handler and returns a markdown table.
pub async fn run(settings: &Settings, runs: u32) -> Result<String> {
    let cri = Cri::connect(&settings.cri_socket).await?;
    let mut table = String::from(
        "| handler | runs | pod+container start median (ms) | p95 (ms) | shim VmRSS per pod median (KiB) | shim Pss per pod median (KiB) | shims per pod |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for handler in &settings.handlers {
        let mut s = Samples::default();
        // One unmeasured warm-up pod: first use pulls the image into the snapshotter cache.
        sample(&cri, settings, handler, runs, &mut Samples::default())
            .await
            .with_context(|| format!("{handler}: warm-up"))?;
        for i in 0..runs {
            sample(&cri, settings, handler, i, &mut s)
                .await
                .with_context(|| format!("{handler}: run {i}"))?;
        }
        let med = |v: &[u64]| quantile(&v.iter().map(|&x| x as f64).collect::<Vec<_>>(), 0.5);
        eprintln!("bench: {handler}: {} samples", s.start_ms.len());
        table += &format!(
            "| {handler} | {runs} | {:.1} | {:.1} | {:.0} | {:.0} | {} |\n",
            quantile(&s.start_ms, 0.5),
            quantile(&s.start_ms, 0.95),
            med(&s.rss_kib),
            med(&s.pss_kib),
            s.shims_per_pod
        );
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
}
