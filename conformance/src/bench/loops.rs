//! The syscalls and monitor bench suites: `palisade-probe loop` timed inside containers, every
//! configuration measured once per round in rotating order, medians and ratios to a baseline.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use k8s_cri::v1::PodSandboxConfig;

use super::{quantile, shims, sleeper_pod_config, start_sleeper_pod, Options};
use crate::cri::{self, Cri};
use crate::host;
use crate::suite::{stdout_of, Settings};

/// The loop program inside the busybox test image.
const PROBE: &str = "/usr/bin/palisade-probe";

/// The harness's palisade handler whose shim runs with `[monitor] enabled = false`.
pub const NOMON_HANDLER: &str = "palisade-nomon";

/// The harness's `palisade-strict` configuration with `[monitor] enabled = false`.
pub const STRICT_NOMON_HANDLER: &str = "palisade-strict-nomon";

/// The harness's palisade handler with the default configuration (monitor on).
const PALISADE_HANDLER: &str = "palisade";

/// Pods started for a configuration settle this long before the loops run, so that their
/// shims' start-up work (the monitor's program load among it) is not measured.
const SETTLE: Duration = Duration::from_secs(2);

/// Limit for one loop (the exec loop at the default count takes a few seconds).
const LOOP_TIMEOUT_S: u64 = 600;

/// One loop of the probe and the overhead the issue allows for it.
#[derive(Debug, Clone, PartialEq)]
struct Loop {
    op: &'static str,
    iterations: u64,
    /// Largest acceptable overhead over the baseline, in percent; None: not targeted.
    target_pct: Option<f64>,
    /// Run as a process of the node outside any container (the host probe), not in the pod.
    unwatched: bool,
    /// Not a loop: the measured pod's start (RunPodSandbox to its container running), wall
    /// clock, in both tables.
    start: bool,
}

impl Loop {
    fn new(op: &'static str, default_iterations: u64, target_pct: Option<f64>, scale: f64) -> Self {
        Loop {
            op,
            iterations: ((default_iterations as f64 * scale).round() as u64).max(1),
            target_pct,
            unwatched: false,
            start: false,
        }
    }

    /// The loop's name in the tables.
    fn label(&self) -> String {
        if self.start {
            "pod start (wall clock in both tables)".to_string()
        } else if self.unwatched {
            format!("{} (unwatched process)", self.op)
        } else {
            self.op.to_string()
        }
    }
}

/// What runs on the node while a configuration is measured.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    label: String,
    /// Handler of the measured pod.
    handler: String,
    /// Idle sleeper pods of the same handler started before the measured one.
    idle_pods: u32,
    /// Whether the measured pod's shim must hold BPF objects (its monitor is on); checked so
    /// that a configuration mistake cannot pass for a measurement. None: not checked.
    monitor: Option<bool>,
    /// The pods are annotated `palisade.dev/profile: learn` (their containers record a
    /// learned profile).
    learn: bool,
}

/// One suite: its configurations (the first is the baseline), loops and comparisons.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    configs: Vec<Config>,
    loops: Vec<Loop>,
    /// (measured, reference) pairs of indices into `configs`.
    comparisons: Vec<(usize, usize)>,
    rounds: u32,
    /// The probe binary the unwatched loops run outside any container.
    host_probe: Option<std::path::PathBuf>,
}

/// ns/op per configuration, per loop, per round (in round order).
type Samples = Vec<Vec<Vec<f64>>>;

/// Both measures of every loop: wall clock, and CPU time of the looping process and its
/// children (what the loop cost, without the time it waited for a core).
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    wall: Samples,
    cpu: Samples,
}

/// Issue targets of the sandbox work: at most 5% on open/close and exec, none on getpid.
fn syscalls_plan(handlers: &[String], opts: &Options) -> Plan {
    let configs: Vec<Config> = handlers
        .iter()
        .map(|h| Config {
            label: h.clone(),
            handler: h.clone(),
            idle_pods: 0,
            monitor: match h.as_str() {
                "runc" | NOMON_HANDLER | STRICT_NOMON_HANDLER => Some(false),
                "palisade" | "palisade-strict" => Some(true),
                _ => None,
            },
            learn: false,
        })
        .collect();
    Plan {
        comparisons: (1..configs.len()).map(|i| (i, 0)).collect(),
        configs,
        loops: vec![
            Loop::new("getpid", 1_000_000, None, opts.scale),
            Loop::new("open", 100_000, Some(5.0), opts.scale),
            Loop::new("exec", 1_000, Some(5.0), opts.scale),
        ],
        rounds: opts.rounds,
        host_probe: None,
    }
}

/// Issue targets of the monitor work: 3% on open/close and connect, 5% on exec, and the same
/// with many pods as with one; with a host probe, also a `getppid` loop in a process outside
/// any container, which should pay nothing measurable (1% allowed for noise) for the monitor
/// of the pods beside it.
fn monitor_plan(opts: &Options) -> Plan {
    let pods = opts.pods.max(2);
    let mut loops = vec![
        Loop::new("exec", 1_000, Some(5.0), opts.scale),
        Loop::new("open", 100_000, Some(3.0), opts.scale),
        Loop::new("connect", 10_000, Some(3.0), opts.scale),
    ];
    if opts.host_probe.is_some() {
        loops.push(Loop {
            unwatched: true,
            ..Loop::new("getppid", 1_000_000, Some(1.0), opts.scale)
        });
    }
    Plan {
        configs: vec![
            Config {
                label: format!("monitor off ({NOMON_HANDLER})"),
                handler: NOMON_HANDLER.into(),
                idle_pods: 0,
                monitor: Some(false),
                learn: false,
            },
            Config {
                label: "monitor on, 1 pod".into(),
                handler: PALISADE_HANDLER.into(),
                idle_pods: 0,
                monitor: Some(true),
                learn: false,
            },
            Config {
                label: format!("monitor on, {pods} pods"),
                handler: PALISADE_HANDLER.into(),
                idle_pods: pods - 1,
                monitor: Some(true),
                learn: false,
            },
        ],
        loops,
        comparisons: vec![(1, 0), (2, 0), (2, 1)],
        rounds: opts.rounds,
        host_probe: opts.host_probe.clone(),
    }
}

/// The learning benchmark (issue 17): the monitor's loops in a palisade pod that records a
/// learned profile against one that does not, the pod's start, and with a host probe a
/// `getppid` loop outside any container (what a learning pod costs the rest of the node: the
/// learning program runs at every system call's entry while a container learns).
fn learn_plan(opts: &Options) -> Plan {
    let mut loops = vec![
        Loop::new("exec", 1_000, None, opts.scale),
        Loop::new("open", 100_000, None, opts.scale),
        Loop::new("connect", 10_000, None, opts.scale),
        Loop {
            start: true,
            ..Loop::new("start", 1, None, 1.0)
        },
    ];
    if opts.host_probe.is_some() {
        loops.push(Loop {
            unwatched: true,
            ..Loop::new("getppid", 1_000_000, None, opts.scale)
        });
    }
    let config = |label: &str, learn| Config {
        label: label.into(),
        handler: PALISADE_HANDLER.into(),
        idle_pods: 0,
        monitor: Some(true),
        learn,
    };
    Plan {
        configs: vec![config("not learning", false), config("learning", true)],
        loops,
        comparisons: vec![(1, 0)],
        rounds: opts.rounds,
        host_probe: opts.host_probe.clone(),
    }
}

/// `bench --suite learn`: a learning palisade pod against one that does not learn.
pub async fn learn(settings: &Settings, opts: &Options) -> Result<String> {
    let plan = learn_plan(opts);
    let (measured, loads) = measure(settings, &plan, "learn").await?;
    Ok(render(&plan, &measured, &loads))
}

/// `bench --suite syscalls`: the handlers' sandboxes (the first handler is the baseline).
pub async fn syscalls(settings: &Settings, opts: &Options) -> Result<String> {
    if settings.handlers.len() < 2 {
        bail!(
            "the syscalls suite compares handlers: give at least two (the first is the baseline)"
        );
    }
    let plan = syscalls_plan(&settings.handlers, opts);
    let (measured, loads) = measure(settings, &plan, "sys").await?;
    Ok(render(&plan, &measured, &loads))
}

/// `bench --suite monitor`: palisade with the monitor off, on for one pod, on among many.
pub async fn monitor(settings: &Settings, opts: &Options) -> Result<String> {
    let plan = monitor_plan(opts);
    let (measured, loads) = measure(settings, &plan, "mon").await?;
    Ok(render(&plan, &measured, &loads))
}

/// The 1-minute load average.
fn loadavg1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Every round measures every configuration, starting one further along each round, so that
/// drift in the machine's load falls on all configurations alike.
async fn measure(settings: &Settings, plan: &Plan, tag: &str) -> Result<(Measured, Vec<String>)> {
    let cri = Cri::connect(&settings.cri_socket).await?;
    let n = plan.configs.len();
    let empty: Samples = vec![vec![Vec::new(); plan.loops.len()]; n];
    let mut m = Measured {
        wall: empty.clone(),
        cpu: empty,
    };
    let mut loads = Vec::new();
    // BPF trampolines attached before any pod of the bench: each configuration waits for the
    // previous one's to be detached down to this.
    let direct_before = shims::direct_calls();
    if let Some(n) = direct_before {
        eprintln!(
            "bench: {n} kernel functions with a BPF trampoline before the first configuration"
        );
    }
    for round in 0..plan.rounds as usize {
        loads.push(loadavg1());
        for k in 0..n {
            let c = (round + k) % n;
            let name = format!("bench-{tag}-r{round}-c{c}");
            let ns = measure_config(&cri, settings, plan, &plan.configs[c], &name, direct_before)
                .await
                .with_context(|| format!("round {round}: {}", plan.configs[c].label))?;
            eprintln!(
                "bench: round {round}: {}: {}",
                plan.configs[c].label,
                plan.loops
                    .iter()
                    .zip(&ns)
                    .map(|(l, (wall, cpu))| format!("{} {wall:.1} ns/op ({cpu:.1} CPU)", l.op))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (l, (wall, cpu)) in ns.into_iter().enumerate() {
                m.wall[c][l].push(wall);
                m.cpu[c][l].push(cpu);
            }
        }
    }
    Ok((m, loads))
}

/// Starts the configuration's pods, runs every loop in the measured one, removes the pods and
/// waits until their shims have exited and the kernel has detached their BPF trampolines (no
/// more direct calls than `direct_before`), so that the next configuration does not pay for a
/// monitor still being taken down.
async fn measure_config(
    cri: &Cri,
    settings: &Settings,
    plan: &Plan,
    config: &Config,
    name: &str,
    direct_before: Option<usize>,
) -> Result<Vec<(f64, f64)>> {
    let mut pods = Vec::new();
    let mut shims = Vec::new();
    let measured = async {
        for i in 0..config.idle_pods {
            let idle = format!("{name}-idle{i}");
            let (pod, container) =
                start_sleeper_pod(cri, settings, &idle, &config.handler, config.learn).await?;
            pods.push(pod.clone());
            shims::add_pod_shims(&mut shims, cri, &pod, &container, &idle).await?;
        }
        let starting = std::time::Instant::now();
        let (pod, container) =
            start_sleeper_pod(cri, settings, name, &config.handler, config.learn).await?;
        let start_ns = starting.elapsed().as_nanos() as f64;
        pods.push(pod.clone());
        shims::add_pod_shims(&mut shims, cri, &pod, &container, name).await?;
        if let Some(want) = config.monitor {
            let (shim, _) = host::shim_of(cri.container_pid(&container).await?)?;
            let held = bpf_fds(shim)?;
            if (held > 0) != want {
                bail!(
                    "shim {shim} of {}: {held} BPF descriptors, but its monitor should be {}",
                    config.handler,
                    if want { "on" } else { "off" }
                );
            }
        }
        tokio::time::sleep(SETTLE).await;
        let pod_config = sleeper_pod_config(settings, name, config.learn);
        let target = Pod {
            id: &pod,
            config: &pod_config,
            image: &settings.image,
        };
        let mut ns = Vec::new();
        for l in &plan.loops {
            ns.push(match (&plan.host_probe, l.unwatched) {
                _ if l.start => (start_ns, start_ns),
                (Some(probe), true) => run_unwatched(probe, l).await?,
                _ => run_loop(cri, &target, l).await?,
            });
        }
        Ok::<_, anyhow::Error>(ns)
    }
    .await;
    let mut removed = Ok(());
    for pod in pods.iter().rev() {
        if let Err(e) = cri.remove_pod(pod).await {
            eprintln!("bench: {e:#}");
            removed = Err(e);
        }
    }
    // Only removed pods' shims exit; after a failed removal the run stops anyway.
    let waited = match &removed {
        Ok(()) => shims::wait_exited(&shims, shims::EXIT_TIMEOUT).await,
        Err(_) => Ok(Duration::ZERO),
    };
    let ns = measured?;
    removed?;
    let waited = waited.with_context(|| format!("configuration {}", config.label))?;
    let detached = shims::wait_detached(direct_before, shims::EXIT_TIMEOUT)
        .await
        .with_context(|| format!("configuration {}", config.label))?;
    eprintln!(
        "bench: {name}: {} shims exited {:.1} s after their pods were removed, trampolines \
         detached {:.1} s after",
        shims.len(),
        waited.as_secs_f64(),
        detached.as_secs_f64()
    );
    Ok(ns)
}

/// The BPF maps, programs and links a process holds open.
fn bpf_fds(pid: i32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let rd = std::fs::read_dir(&dir).with_context(|| format!("list {dir}"))?;
    Ok(rd
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:bpf"))
        })
        .count())
}

/// Runs `palisade-probe loop OP N` as a container of the measured pod and returns its ns/op.
/// The loop is the container's own process rather than an exec: it is what the container's
/// workload would be, and the exec path (runc's exec init) stays out of the measurement.
async fn run_loop(cri: &Cri, pod: &Pod<'_>, l: &Loop) -> Result<(f64, f64)> {
    let n = l.iterations.to_string();
    let cmd = [PROBE, "loop", l.op, n.as_str()];
    let name = format!("loop-{}", l.op);
    let cfg = cri::container_config(&name, 0, pod.image, &cmd);
    let id = cri.run_container(pod.id, &cfg, pod.config).await?;
    let result = async {
        let st = cri
            .wait_exited(&id, Duration::from_secs(LOOP_TIMEOUT_S))
            .await?;
        let out = read_log_until(&st.log_path, "loop op=").await;
        if st.exit_code != 0 {
            bail!("{cmd:?} exited {}: log {out:?}", st.exit_code);
        }
        parse_loop_line(&out, l.op, l.iterations).with_context(|| format!("{cmd:?}: log {out:?}"))
    }
    .await;
    let removed = cri.remove_container(&id).await;
    let ns = result?;
    removed?;
    Ok(ns)
}

/// Runs `PROBE loop OP N` as a process of the node, outside any container and pod cgroup (the
/// monitor must leave it alone), and returns its ns/op.
async fn run_unwatched(probe: &std::path::Path, l: &Loop) -> Result<(f64, f64)> {
    let probe = probe.to_path_buf();
    let (op, n) = (l.op, l.iterations);
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&probe);
        cmd.args(["loop", op, &n.to_string()])
            .stdin(std::process::Stdio::null());
        stdout_of(&mut cmd, &format!("unwatched loop {op}"))
    })
    .await
    .context("join the unwatched loop")??;
    let text = String::from_utf8_lossy(&out);
    parse_loop_line(&text, op, n).with_context(|| format!("unwatched loop {op}: {text:?}"))
}

/// The container log's text once it holds `needle` (the runtime may write it just after the
/// exit), or whatever it holds after a few seconds.
async fn read_log_until(path: &str, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text
}

/// The measured pod, for the loop containers.
struct Pod<'a> {
    id: &'a str,
    config: &'a PodSandboxConfig,
    image: &'a str,
}

/// The (wall, CPU) ns/op of the probe's `loop op=OP iterations=N ns_per_op=F cpu_ns_per_op=F
/// total_ns=T` line (plain, or in a CRI log line after its time, stream and tag).
fn parse_loop_line(out: &str, op: &str, iterations: u64) -> Result<(f64, f64)> {
    let line = out
        .lines()
        .find_map(|l| l.find("loop op=").map(|i| &l[i..]))
        .context("no loop line")?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key} in {line:?}"))
    };
    if field("op")? != op || field("iterations")? != iterations.to_string() {
        bail!("loop line {line:?} is not for {op} x {iterations}");
    }
    let ns = |key: &str| -> Result<f64> {
        let v: f64 = field(key)?
            .parse()
            .with_context(|| format!("{key} in {line:?}"))?;
        if !(v.is_finite() && v > 0.0) {
            bail!("{key} {v} in {line:?}");
        }
        Ok(v)
    };
    Ok((ns("ns_per_op")?, ns("cpu_ns_per_op")?))
}

fn fmt_ns(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

/// Whether `ratio` is within the target, and by how much it misses it.
fn verdict(ratio: f64, target_pct: Option<f64>) -> String {
    let Some(t) = target_pct else {
        return "(no target)".into();
    };
    let over = (ratio - 1.0) * 100.0;
    if over <= t {
        format!("≤ {t}%: **met**")
    } else {
        format!("≤ {t}%: **missed** by {:.1} points", over - t)
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// One table of ns/op: a row per loop, a column per configuration.
fn ns_table(plan: &Plan, samples: &Samples) -> String {
    let mut md = String::from("| loop |");
    for c in &plan.configs {
        md += &format!(" {} |", c.label);
    }
    md += "\n|---|";
    md += &"---|".repeat(plan.configs.len());
    md += "\n";
    for (li, l) in plan.loops.iter().enumerate() {
        md += &format!("| {} |", l.label());
        for per_config in samples {
            let v = &per_config[li];
            let (lo, hi) = range(v);
            md += &format!(
                " {} ({}–{}) |",
                fmt_ns(quantile(v, 0.5)),
                fmt_ns(lo),
                fmt_ns(hi)
            );
        }
        md += "\n";
    }
    md
}

/// Ratio of the medians of `a` to `b`, and the range of the per-round ratios.
fn compare(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let rounds: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    let (lo, hi) = range(&rounds);
    (quantile(a, 0.5) / quantile(b, 0.5), lo, hi)
}

/// The suite's markdown: how it ran, CPU and wall ns/op per configuration, the comparisons.
fn render(plan: &Plan, m: &Measured, loads: &[String]) -> String {
    let loops = plan
        .loops
        .iter()
        .map(|l| format!("{} ×{}", l.label(), l.iterations))
        .collect::<Vec<_>>()
        .join(", ");
    let mut md = format!(
        "{} rounds of {} configurations (rotating order, fresh pods for each); loops: {loops}. \
         Load average (1 min) at the start of each round: {}.\n\n",
        plan.rounds,
        plan.configs.len(),
        loads.join(", ")
    );
    md += "CPU time per operation (user + system of the loop and its children; median over the \
           rounds, min–max in brackets, ns):\n\n";
    md += &ns_table(plan, &m.cpu);
    md += "\nWall-clock time per operation (ns, same layout):\n\n";
    md += &ns_table(plan, &m.wall);
    md += "\nOverhead = ratio of the medians − 1, with the range of the per-round ratios \
           (how far the noise reaches), judged against the issue's target for each measure:\n\n\
           | loop | comparison | CPU: ratio (overhead) | CPU: per round | CPU: target | wall: ratio (overhead) | wall: per round | wall: target |\n\
           |---|---|---|---|---|---|---|---|\n";
    for (li, l) in plan.loops.iter().enumerate() {
        for &(a, b) in &plan.comparisons {
            md += &format!(
                "| {} | {} vs {} |",
                l.label(),
                plan.configs[a].label,
                plan.configs[b].label
            );
            for samples in [&m.cpu, &m.wall] {
                let (ratio, lo, hi) = compare(&samples[a][li], &samples[b][li]);
                md += &format!(
                    " {ratio:.3} ({}) | {} to {} | {} |",
                    fmt_pct(ratio),
                    fmt_pct(lo),
                    fmt_pct(hi),
                    verdict(ratio, l.target_pct)
                );
            }
            md += "\n";
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_line_is_parsed_and_checked() {
        let out =
            "loop op=open iterations=100 ns_per_op=2345.6 cpu_ns_per_op=2000.5 total_ns=234560\n";
        assert_eq!(parse_loop_line(out, "open", 100).unwrap(), (2345.6, 2000.5));
        let log = "2026-11-23T01:02:03.1Z stdout F loop op=exec iterations=10 \
                   ns_per_op=900000.0 cpu_ns_per_op=500000.0 total_ns=9000000\n";
        assert_eq!(
            parse_loop_line(log, "exec", 10).unwrap(),
            (900000.0, 500000.0)
        );
        assert!(parse_loop_line(
            "loop op=open iterations=100 ns_per_op=2345.6 total_ns=234560",
            "open",
            100
        )
        .is_err());
        assert!(parse_loop_line(out, "exec", 100).is_err());
        assert!(parse_loop_line(out, "open", 10).is_err());
        assert!(parse_loop_line("denied errno=1 EPERM\n", "open", 100).is_err());
        assert!(parse_loop_line(
            "loop op=open iterations=100 ns_per_op=nan cpu_ns_per_op=1.0 total_ns=0",
            "open",
            100
        )
        .is_err());
    }

    #[test]
    fn plans_scale_iterations_and_compare_to_the_baseline() {
        let opts = Options {
            scale: 0.01,
            pods: 5,
            ..Options::default()
        };
        let handlers: Vec<String> = ["runc", STRICT_NOMON_HANDLER, "palisade-strict"]
            .map(String::from)
            .into();
        let sys = syscalls_plan(&handlers, &opts);
        assert_eq!(sys.comparisons, vec![(1, 0), (2, 0)]);
        let monitors: Vec<_> = sys.configs.iter().map(|c| c.monitor).collect();
        assert_eq!(monitors, [Some(false), Some(false), Some(true)]);
        assert_eq!(sys.loops[0].iterations, 10_000);
        assert_eq!(sys.loops[2].iterations, 10);
        let mon = monitor_plan(&opts);
        assert_eq!(mon.configs[0].handler, NOMON_HANDLER);
        assert_eq!(mon.configs[2].idle_pods, 4);
        assert_eq!(mon.configs[2].label, "monitor on, 5 pods");
        assert_eq!(mon.comparisons, vec![(1, 0), (2, 0), (2, 1)]);
        assert!(mon.loops.iter().all(|l| !l.unwatched));
        let with_probe = monitor_plan(&Options {
            host_probe: Some("/p".into()),
            ..opts
        });
        let last = with_probe.loops.last().unwrap();
        assert_eq!((last.op, last.unwatched), ("getppid", true));
        assert_eq!(last.label(), "getppid (unwatched process)");
        assert_eq!(last.iterations, 10_000);
    }

    /// The learning suite: the same palisade handler with and without the learn annotation,
    /// one comparison, the pod start among the rows (measured once, not scaled), the unwatched
    /// loop only with a probe.
    #[test]
    fn learn_plan_compares_a_learning_pod_with_one_that_does_not_learn() {
        let opts = Options {
            scale: 0.01,
            ..Options::default()
        };
        let plan = learn_plan(&opts);
        let learn: Vec<_> = plan.configs.iter().map(|c| (c.learn, c.monitor)).collect();
        assert_eq!(learn, [(false, Some(true)), (true, Some(true))]);
        assert!(plan.configs.iter().all(|c| c.handler == PALISADE_HANDLER));
        assert_eq!(plan.comparisons, vec![(1, 0)]);
        let start = plan.loops.iter().find(|l| l.start).unwrap();
        assert_eq!(start.iterations, 1);
        assert!(start.label().starts_with("pod start"));
        assert!(plan.loops.iter().all(|l| !l.unwatched));
        let with_probe = learn_plan(&Options {
            host_probe: Some("/p".into()),
            ..opts
        });
        assert!(with_probe.loops.last().unwrap().unwatched);
    }

    #[test]
    fn verdict_says_by_how_much_a_target_is_missed() {
        assert_eq!(verdict(1.02, Some(3.0)), "≤ 3%: **met**");
        assert_eq!(verdict(1.075, Some(5.0)), "≤ 5%: **missed** by 2.5 points");
        assert_eq!(verdict(0.9, Some(5.0)), "≤ 5%: **met**");
        assert_eq!(verdict(1.5, None), "(no target)");
    }

    #[test]
    fn render_reports_medians_and_per_round_ratios() {
        let plan = Plan {
            configs: ["a", "b"]
                .iter()
                .map(|l| Config {
                    label: l.to_string(),
                    handler: l.to_string(),
                    idle_pods: 0,
                    monitor: None,
                    learn: false,
                })
                .collect(),
            loops: vec![Loop::new("open", 100, Some(5.0), 1.0)],
            comparisons: vec![(1, 0)],
            rounds: 3,
            host_probe: None,
        };
        let m = Measured {
            cpu: vec![
                vec![vec![100.0, 200.0, 150.0]],
                vec![vec![110.0, 200.0, 180.0]],
            ],
            wall: vec![
                vec![vec![1000.0, 1000.0, 1000.0]],
                vec![vec![1010.0, 990.0, 1020.0]],
            ],
        };
        let md = render(&plan, &m, &["1.0".into(), "2.0".into(), "3.0".into()]);
        assert!(
            md.contains("| open | 150.0 (100.0–200.0) | 180.0 (110.0–200.0) |"),
            "{md}"
        );
        assert!(
            md.contains("| open | 1000 (1000–1000) | 1010 (990.0–1020) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| open | b vs a | 1.200 (+20.0%) | +0.0% to +20.0% | ≤ 5%: **missed** by 15.0 points \
                 | 1.010 (+1.0%) | -1.0% to +2.0% | ≤ 5%: **met** |"
            ),
            "{md}"
        );
        assert!(md.contains("round: 1.0, 2.0, 3.0."), "{md}");
    }
}
