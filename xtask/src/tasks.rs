//! The xtask commands: test, demo, bench; each sets up the private containerd and always tears it down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cargo::Workspace;
use crate::env::{self, Env};
use crate::procs::Children;
use crate::{apt, images, manifests};

/// Options shared by the commands.
#[derive(Debug, Default)]
pub struct Opts {
    pub suite_only: bool,
    pub no_shim: bool,
    pub handlers: Option<String>,
    pub filters: Vec<String>,
    pub runs: Option<u32>,
    /// bench: start, syscalls, monitor or all.
    pub suite: Option<String>,
    pub rounds: Option<u32>,
    pub scale: Option<f64>,
    pub pods: Option<u32>,
    /// Run against this containerd release (1.6 the system's; 1.7 and 2.1 fetched).
    pub containerd: Option<String>,
    /// `fuzz`: how long to run.
    pub seconds: Option<u32>,
    /// `fresh`: the checkout whose xtask is built (default: this workspace).
    pub source: Option<PathBuf>,
    /// `matrix`: the benchmark in the guests instead of the tests.
    pub bench: bool,
    /// `matrix`: the detection corpus in the guests instead of the tests.
    pub detections: bool,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--suite-only" => o.suite_only = true,
                "--no-shim" => o.no_shim = true,
                "--handlers" => o.handlers = Some(val()?),
                "--filter" => o.filters.push(val()?),
                "--runs" => o.runs = Some(val()?.parse().context("--runs")?),
                "--suite" => {
                    let v = val()?;
                    if v != "all" && !BENCH_SUITES.iter().any(|b| b.name == v) {
                        bail!("--suite {v}: not one of start, syscalls, monitor, all");
                    }
                    o.suite = Some(v);
                }
                "--rounds" => o.rounds = Some(val()?.parse().context("--rounds")?),
                "--scale" => o.scale = Some(val()?.parse().context("--scale")?),
                "--pods" => o.pods = Some(val()?.parse().context("--pods")?),
                "--containerd" => o.containerd = Some(val()?),
                "--seconds" => o.seconds = Some(val()?.parse().context("--seconds")?),
                "--source" => o.source = Some(PathBuf::from(val()?)),
                "--bench" => o.bench = true,
                "--detections" => o.detections = true,
                other => bail!("unknown option {other}"),
            }
        }
        Ok(o)
    }

    /// The security suite adds the strict handler to the default pair.
    fn security_handlers(&self) -> String {
        match (&self.handlers, self.no_shim) {
            (Some(h), _) => h.clone(),
            (None, true) => "runc".into(),
            (None, false) => "runc,palisade,palisade-strict,palisade-audit".into(),
        }
    }

    fn handlers(&self) -> String {
        self.handlers.clone().unwrap_or_else(|| {
            if self.no_shim {
                "runc".into()
            } else {
                "runc,palisade".into()
            }
        })
    }
}

/// Where the environment lives once set up, for the signal thread to tear it down.
pub(crate) type Slot = Arc<Mutex<Option<Arc<Env>>>>;

/// Handles SIGINT/SIGTERM in a thread: tear down, then exit. The signals are
/// caught, not blocked: a blocked mask would be inherited by every child (cargo
/// test included) and change what the tests see.
pub(crate) fn install_signal_teardown(children: Children) -> Result<Slot> {
    let slot: Slot = Arc::new(Mutex::new(None));
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("catch SIGINT/SIGTERM")?;
    let slot2 = Arc::clone(&slot);
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("\nxtask: signal {sig}: tearing down");
            let env = slot2.lock().ok().and_then(|s| s.clone());
            // The steps first, so that none starts a pod or a build into the teardown.
            children.stop_all(Duration::from_secs(5));
            if let Some(env) = env {
                env.teardown(true);
            }
            std::process::exit(130);
        }
    });
    Ok(slot)
}

/// Where run dirs go: beside the image cache unless the unix socket paths in a
/// run dir would pass the 108-byte `sun_path` limit (a deeply nested clone).
fn run_base(base: &Path) -> PathBuf {
    let longest = base.join(format!("run-{}/containerd.sock.ttrpc", u32::MAX));
    if longest.as_os_str().len() < 100 {
        base.to_path_buf()
    } else {
        std::env::temp_dir().join("palisade-run")
    }
}

/// Runs `body` against a freshly started environment and always tears it down.
pub(crate) fn with_env<T>(
    ws: &Workspace,
    slot: &Slot,
    shim: Option<PathBuf>,
    containerd: Option<&str>,
    conformance: Option<&Path>,
    body: impl FnOnce(&Arc<Env>) -> Result<T>,
) -> Result<T> {
    let conformance = match conformance {
        Some(c) => c.to_path_buf(),
        None => ws.build_conformance()?,
    };
    let base = ws.root.join(".palisade-run");
    let images = images::build(&ws.root, &base.join("images")).context("build test images")?;
    let containerd_bin = match containerd {
        Some(v) => crate::containerd::bin_dir(v, &base).context("containerd release")?,
        None => None,
    };
    let env = Env::new(
        &run_base(&base),
        env::Options {
            shim,
            conformance,
            containerd_bin,
        },
    )?;
    if let Ok(mut s) = slot.lock() {
        *s = Some(Arc::clone(&env));
    }
    let result = env
        .start(&images)
        .and_then(|()| env.serve_control())
        .and_then(|()| body(&env));
    env.teardown(result.is_err());
    if let Ok(mut s) = slot.lock() {
        *s = None;
    }
    result
}

pub(crate) fn suite_cmd(env: &Env, ws: &Workspace, sub: &str) -> Command {
    suite_cmd_of(env, &ws.conformance_binary(), sub)
}

pub(crate) fn suite_cmd_of(env: &Env, suite: &Path, sub: &str) -> Command {
    let mut cmd = Command::new(suite);
    cmd.arg(sub)
        .arg("--cri-socket")
        .arg(&env.socket)
        .arg("--image")
        .arg(images::BUSYBOX_REF)
        .arg("--work-dir")
        .arg(env.work_dir())
        .arg("--cgroup-root")
        .arg(&env.cgroup_root)
        .arg("--control-socket")
        .arg(&env.control)
        .arg("--containerd-address")
        .arg(&env.socket);
    cmd
}

/// The harness's own steps (fmt, clippy, cargo test, shim build, the suite run itself).
#[derive(Default)]
struct Steps {
    passed: usize,
    failed: Vec<String>,
}

impl Steps {
    fn record<T>(&mut self, name: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.passed += 1;
                Some(v)
            }
            Err(e) => {
                eprintln!("xtask: {name} failed: {e:#}");
                self.failed.push(name.to_string());
                None
            }
        }
    }
}

/// How long the full test run fuzzes the policy parser.
const FUZZ_SECONDS: u32 = 60;

/// The other containerd releases the full test run also runs conformance checks under: the
/// release, the handlers, and the checks (all when empty).
const OTHER_CONTAINERDS: [(&str, &str, &[&str]); 2] = [
    // Production nodes run 2.x: the whole suite for palisade (the stock runc shim fails one
    // reliability check there, so it is not the baseline: see docs/install.md).
    ("2.1", "palisade", &[]),
    // The one release here whose CRI runs user-namespaced pods with Debian 12's runc.
    ("1.7", "runc,palisade", &["user_namespace"]),
];

/// `cargo xtask test`.
pub fn test(opts: &Opts) -> Result<()> {
    let ws = Workspace::locate()?;
    let slot = install_signal_teardown(ws.children.clone())?;
    apt::ensure_packages()?;
    let mut steps = Steps::default();
    if !opts.suite_only {
        steps.record("cargo fmt", ws.cargo(&["fmt", "--all", "--check"]));
        steps.record(
            "fresh-machine build of xtask",
            fresh_check(&ws, &ws.root).map(|line| eprintln!("xtask: {line}")),
        );
        steps.record(
            "cargo clippy",
            ws.cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        );
        steps.record(
            "cargo doc",
            ws.cargo(&[
                "doc",
                "--workspace",
                "--no-deps",
                "--config",
                "build.rustdocflags=[\"-D\",\"warnings\"]",
            ]),
        );
        steps.record("cargo test", ws.cargo(&["test", "--workspace"]));
        steps.record("kernel matrix", crate::matrix::run(&ws, &[]));
        steps.record(
            "fuzz the policy parser",
            crate::fuzz::run(&ws.root, &ws.target, FUZZ_SECONDS, &ws.children)
                .map(|done| eprintln!("xtask: policy fuzz: {done}")),
        );
        steps.record("kubernetes manifests", validate_manifests(&ws).map(|_| ()));
    }
    let shim = if opts.no_shim {
        None
    } else {
        steps.record("build shim", ws.build_shim())
    };
    let suite = with_env(&ws, &slot, shim, opts.containerd.as_deref(), None, |env| {
        let mut cmd = suite_cmd(env, &ws, "run");
        // The contract_* checks read the shims' runtime events.
        cmd.arg("--handlers")
            .arg(opts.handlers())
            .arg("--events-dir")
            .arg(env.events_dir());
        for f in &opts.filters {
            cmd.arg("--filter").arg(f);
        }
        let conformance = env.run_child_output(&mut cmd)?;
        let mut cmd = env.security_cmd(
            &ws.conformance_binary(),
            &opts.security_handlers(),
            &opts.filters,
        );
        let security = env.run_child_output(&mut cmd)?;
        let mut suites = vec![
            ("conformance suite", conformance),
            ("security suite", security),
        ];
        // The detection corpus, short form (docs/monitor.md, "Detection corpus").
        suites.extend(crate::detections::test_step(env, &ws, opts));
        // The CRI contract under the configuration that honours it (docs/cri-contract.md):
        // the contract_* checks again under palisade-compat, graded as runc.
        if opts.handlers.is_none() && opts.filters.is_empty() && !opts.no_shim {
            let mut cmd = suite_cmd(env, &ws, "run");
            cmd.args(["--handlers", "palisade-compat", "--filter", "contract_"])
                .arg("--events-dir")
                .arg(env.events_dir());
            suites.push((
                "contract checks, palisade-compat",
                env.run_child_output(&mut cmd)?,
            ));
        }
        Ok(suites)
    });
    let mut others = Vec::new();
    if !(opts.suite_only || opts.no_shim || opts.containerd.is_some()) {
        for (release, handlers, filters) in OTHER_CONTAINERDS {
            let shim = ws.build_shim().ok();
            let run = with_env(&ws, &slot, shim, Some(release), None, |env| {
                let mut cmd = suite_cmd(env, &ws, "run");
                // The contract_* checks read the shims' runtime events here too.
                cmd.arg("--handlers")
                    .arg(handlers)
                    .arg("--events-dir")
                    .arg(env.events_dir());
                for f in filters {
                    cmd.arg("--filter").arg(f);
                }
                env.run_child_output(&mut cmd)
            });
            let name = if filters.is_empty() {
                format!("conformance suite, containerd {release}")
            } else {
                format!("conformance {}, containerd {release}", filters.join(", "))
            };
            if let Some(r) = steps.record(&format!("containerd {release} setup"), run) {
                others.push((name, r));
            }
        }
    }
    // The suites' tables come last, then one closing line over the suites' checks
    // and the harness's own steps.
    let (mut passed, mut failed) = (0, 0);
    let mut report = String::new();
    let suites = steps.record("conformance suite setup", suite).map(|s| {
        s.into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect::<Vec<_>>()
    });
    if let Some(suites) = suites.map(|mut s| {
        s.extend(others);
        s
    }) {
        for (name, (st, out)) in suites {
            match closing_counts(&out) {
                Some((p, f)) if st.success() == (f == 0) => {
                    passed += p;
                    failed += f;
                }
                counts => {
                    steps.record::<()>(
                        &name,
                        Err(anyhow::anyhow!("exited {st} with counts {counts:?}")),
                    );
                }
            }
            if !report.is_empty() {
                report.push('\n');
            }
            report += &out;
        }
    }
    if steps.failed.is_empty() {
        eprintln!("xtask: harness steps passed ({})", steps.passed);
    } else {
        eprintln!("xtask: failed steps: {}", steps.failed.join(", "));
    }
    passed += steps.passed;
    failed += steps.failed.len();
    print!("{report}");
    println!("\nall: {passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        bail!("{failed} failed")
    }
}

fn validate_manifests(ws: &Workspace) -> Result<usize> {
    manifests::validate(&ws.root, &ws.root.join(".palisade-run").join("tools"))
}

/// `cargo xtask fuzz`: only the policy fuzz run of `cargo xtask test`.
pub fn fuzz(opts: &Opts) -> Result<()> {
    let ws = Workspace::locate()?;
    let done = crate::fuzz::run(
        &ws.root,
        &ws.target,
        opts.seconds.unwrap_or(FUZZ_SECONDS),
        &ws.children,
    )?;
    println!("fuzz: {done}");
    Ok(())
}

fn fresh_check(ws: &Workspace, source: &Path) -> Result<String> {
    crate::fresh::check(source, &ws.target.join("fresh-check"), &ws.children)
}

/// `cargo xtask fresh`: only the fresh-machine check of `cargo xtask test`.
pub fn fresh(opts: &Opts) -> Result<()> {
    let ws = Workspace::locate()?;
    let source = opts.source.clone().unwrap_or_else(|| ws.root.clone());
    println!("fresh: {}", fresh_check(&ws, &source)?);
    Ok(())
}

/// `cargo xtask manifests`: only the manifest validation of `cargo xtask test`.
pub fn manifests() -> Result<()> {
    let ws = Workspace::locate()?;
    let n = validate_manifests(&ws)?;
    println!("manifests: {n} passed, 0 failed");
    Ok(())
}

/// The counts of the last `N passed, N failed` line of the suite's output.
fn closing_counts(out: &str) -> Option<(usize, usize)> {
    out.lines().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        let f = f.strip_suffix(" failed")?;
        Some((p.parse().ok()?, f.parse().ok()?))
    })
}

/// `cargo xtask demo`: the shim, the CLI and the suite in one static build, then the demo
/// against the private containerd.
pub fn demo(opts: &Opts) -> Result<()> {
    let ws = Workspace::locate()?;
    let slot = install_signal_teardown(ws.children.clone())?;
    apt::ensure_packages()?;
    let started = std::time::Instant::now();
    let (shim, cli, suite) = ws.build_demo()?;
    eprintln!(
        "xtask: demo build took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    with_env(
        &ws,
        &slot,
        Some(shim),
        opts.containerd.as_deref(),
        Some(&suite),
        |env| {
            let mut cmd = suite_cmd_of(env, &suite, "demo");
            cmd.arg("--events-dir")
                .arg(env.events_dir())
                .arg("--gate-state-dir")
                .arg(env.gate_state_dir())
                .arg("--cli")
                .arg(&cli);
            let st = env.run_child(&mut cmd)?;
            if !st.success() {
                bail!("demo failed ({st})");
            }
            Ok(())
        },
    )
}

/// One bench suite and the marked section of docs/benchmarks.md it rewrites.
pub(crate) struct BenchSuite {
    pub(crate) name: &'static str,
    pub(crate) begin: &'static str,
    pub(crate) end: &'static str,
}

const BENCH_SUITES: [BenchSuite; 3] = [
    BenchSuite {
        name: "start",
        begin: "<!-- BEGIN xtask bench -->",
        end: "<!-- END xtask bench -->",
    },
    BenchSuite {
        name: "syscalls",
        begin: "<!-- BEGIN xtask bench syscalls -->",
        end: "<!-- END xtask bench syscalls -->",
    },
    BenchSuite {
        name: "monitor",
        begin: "<!-- BEGIN xtask bench monitor -->",
        end: "<!-- END xtask bench monitor -->",
    },
];

/// The handlers of the syscalls suite: the baseline first, then the default sandbox and the
/// strict one without the monitor (the sandbox's own cost), then both as configured (monitor on).
const SYSCALLS_HANDLERS: &str =
    "runc,palisade-nomon,palisade-strict-nomon,palisade,palisade-strict";

impl Opts {
    fn bench_suites(&self) -> Vec<&'static BenchSuite> {
        let want = self.suite.as_deref().unwrap_or("all");
        BENCH_SUITES
            .iter()
            .filter(|b| want == "all" || b.name == want)
            .collect()
    }

    /// The command line that reproduces this bench run, for the doc.
    fn bench_command(&self) -> String {
        let mut c = String::from("cargo xtask bench");
        if let Some(v) = &self.containerd {
            c += &format!(" --containerd {v}");
        }
        if let Some(s) = &self.suite {
            c += &format!(" --suite {s}");
        }
        if let Some(h) = &self.handlers {
            c += &format!(" --handlers {h}");
        }
        if let Some(r) = self.runs {
            c += &format!(" --runs {r}");
        }
        if let Some(r) = self.rounds {
            c += &format!(" --rounds {r}");
        }
        if let Some(s) = self.scale {
            c += &format!(" --scale {s}");
        }
        if let Some(p) = self.pods {
            c += &format!(" --pods {p}");
        }
        c
    }
}

/// Operations of the pipeline flood the monitor suite ends with (one event each).
const FLOOD_OPS: [&str; 2] = ["100000", "1000000"];

/// The rate of events the monitor's pipeline delivers without loss: `palisade-monitor
/// bench-flood` after the monitor suite's pods are gone (its own pins, its own cgroup), as a
/// paragraph for the suite's section.
fn event_pipeline_rate(ws: &Workspace) -> Result<String> {
    ws.cargo(&[
        "build",
        "--release",
        "-p",
        "palisade-monitor",
        "--bin",
        "palisade-monitor",
    ])?;
    let bin = ws.target.join("release/palisade-monitor");
    let out = Command::new(&bin)
        .arg("bench-flood")
        .args(FLOOD_OPS)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "palisade-monitor bench-flood failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!(
        "\nEvent pipeline, in the same run (`palisade-monitor bench-flood {}`: an open loop in a \
         cgroup watched with `report_all_opens`, one event per open, delivered to a channel; \
         dropped = lost in the kernel because the ring was full):\n\n```\n{}```\n",
        FLOOD_OPS.join(" "),
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// `cargo xtask bench`: runs the chosen suites against one private containerd and rewrites
/// each suite's marked section of docs/benchmarks.md as soon as it has finished.
pub fn bench(opts: &Opts) -> Result<()> {
    let suites = opts.bench_suites();
    if opts.no_shim && suites.iter().any(|b| b.name != "start") {
        bail!("--no-shim: only --suite start runs without the palisade shim");
    }
    let ws = Workspace::locate()?;
    let slot = install_signal_teardown(ws.children.clone())?;
    apt::ensure_packages()?;
    let shim = if opts.no_shim {
        None
    } else {
        Some(ws.build_shim()?)
    };
    let command = opts.bench_command();
    let doc = ws.root.join("docs/benchmarks.md");
    with_env(&ws, &slot, shim, opts.containerd.as_deref(), None, |env| {
        for suite in &suites {
            let mut cmd = suite_cmd(env, &ws, "bench");
            cmd.arg("--suite").arg(suite.name);
            let handlers = match suite.name {
                "syscalls" => opts
                    .handlers
                    .clone()
                    .unwrap_or_else(|| SYSCALLS_HANDLERS.into()),
                _ => opts.handlers(),
            };
            cmd.arg("--handlers").arg(handlers);
            for (flag, v) in [
                ("--runs", opts.runs.map(|v| v.to_string())),
                ("--rounds", opts.rounds.map(|v| v.to_string())),
                ("--scale", opts.scale.map(|v| v.to_string())),
                ("--pods", opts.pods.map(|v| v.to_string())),
            ] {
                if let Some(v) = v {
                    cmd.arg(flag).arg(v);
                }
            }
            // Other work on the machine moves every figure: the section records the load.
            let before = loadavg();
            eprintln!("xtask: bench suite {} (load average {before})", suite.name);
            let (st, mut out) = env.run_child_output(&mut cmd)?;
            if !st.success() {
                bail!("bench suite {} failed ({st})", suite.name);
            }
            if suite.name == "monitor" {
                out += &event_pipeline_rate(&ws)?;
            }
            let after = loadavg();
            let header = section_header(&command, &before, &after);
            write_bench_section(&doc, suite, &header, &out)?;
            println!("{header}\n\n{out}");
            eprintln!("xtask: wrote {} ({})", doc.display(), suite.begin);
        }
        // The shims' timing lines (Create, the monitor's join and load) are in it: see
        // docs/benchmarks.md, "Where palisade's start latency and memory go".
        let kept = env.keep_log("last-bench")?;
        eprintln!("xtask: containerd log kept at {}", kept.display());
        Ok(())
    })
}

/// The three load averages from /proc/loadavg.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// Date, machine and load of a section; says so when the load passed the core count.
pub(crate) fn section_header(command: &str, before: &str, after: &str) -> String {
    let cores = cores();
    let mut h = format!(
        "Measured by `{command}` on {} UTC ({cores} cores, kernel {}; load average (1, 5, 15 min) \
         {before} before, {after} after).",
        date_utc(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    );
    if loaded(before, cores) || loaded(after, cores) {
        h += " **The machine was loaded** (1-minute load above its core count): other work \
              competed with the measurement.";
    }
    h
}

/// True when the 1-minute figure of a load average triple exceeds `cores`.
fn loaded(load: &str, cores: usize) -> bool {
    load.split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > cores as f64)
}

pub(crate) fn write_bench_section(doc: &Path, b: &BenchSuite, head: &str, md: &str) -> Result<()> {
    let section = format!("{}\n{head}\n\n{}\n{}", b.begin, md.trim(), b.end);
    let current = std::fs::read_to_string(doc).unwrap_or_default();
    let updated = replace_section(&current, b, &section);
    std::fs::write(doc, updated).with_context(|| format!("write {}", doc.display()))
}

/// Replaces the suite's marked section, or appends it (creating a heading) when absent.
fn replace_section(current: &str, suite: &BenchSuite, section: &str) -> String {
    let (begin, end) = (suite.begin, suite.end);
    match (current.find(begin), current.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &current[..b], &current[e + end.len()..])
        }
        _ if current.trim().is_empty() => format!("# Benchmarks\n\n{section}\n"),
        _ => format!("{}\n\n{section}\n", current.trim_end()),
    }
}

pub(crate) fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_in_place() {
        let [start, sys, _] = &BENCH_SUITES;
        let (b, e) = (start.begin, start.end);
        let (sb, se) = (sys.begin, sys.end);
        let doc = format!("# B\n\n{b}\nold\n{e}\n\nmid\n\n{sb}\nold sys\n{se}\n\ntail\n");
        let out = replace_section(&doc, start, &format!("{b}\nnew\n{e}"));
        assert_eq!(
            out,
            format!("# B\n\n{b}\nnew\n{e}\n\nmid\n\n{sb}\nold sys\n{se}\n\ntail\n")
        );
        let out = replace_section(&out, sys, &format!("{sb}\nnew sys\n{se}"));
        assert_eq!(
            out,
            format!("# B\n\n{b}\nnew\n{e}\n\nmid\n\n{sb}\nnew sys\n{se}\n\ntail\n")
        );
    }

    #[test]
    fn section_is_appended_when_missing() {
        let mon = &BENCH_SUITES[2];
        let (b, e) = (mon.begin, mon.end);
        let out = replace_section("# B\n", mon, &format!("{b}\nx\n{e}"));
        assert!(out.starts_with("# B\n\n<!-- BEGIN xtask bench monitor"));
        let fresh = replace_section("", mon, &format!("{b}\nx\n{e}"));
        assert!(fresh.starts_with("# Benchmarks\n"));
    }

    #[test]
    fn bench_options_select_suites_and_name_the_command() {
        let o = Opts::parse(&[]).unwrap();
        assert_eq!(o.bench_suites().len(), 3);
        assert_eq!(o.bench_command(), "cargo xtask bench");
        let args: Vec<String> = ["--suite", "monitor", "--rounds", "3", "--scale", "0.01"]
            .map(String::from)
            .into();
        let o = Opts::parse(&args).unwrap();
        let names: Vec<_> = o.bench_suites().iter().map(|b| b.name).collect();
        assert_eq!(names, ["monitor"]);
        assert_eq!(
            o.bench_command(),
            "cargo xtask bench --suite monitor --rounds 3 --scale 0.01"
        );
        assert!(Opts::parse(&["--suite".into(), "fast".into()]).is_err());
        let o = Opts::parse(&["--containerd".into(), "2.1".into()]).unwrap();
        assert_eq!(o.bench_command(), "cargo xtask bench --containerd 2.1");
    }

    #[test]
    fn load_above_the_cores_is_flagged() {
        assert!(loaded("2.50 1.00 0.50", 2));
        assert!(!loaded("1.99 9.00 9.00", 2));
        assert!(!loaded("", 2));
    }

    #[test]
    fn closing_counts_takes_the_last_line() {
        let out = "check  runc\nx  PASS\n\n1 passed, 0 failed\n";
        assert_eq!(closing_counts(out), Some((1, 0)));
        assert_eq!(
            closing_counts("a\n3 passed, 2 failed\nfailures\n"),
            Some((3, 2))
        );
        assert_eq!(closing_counts("nothing here\n"), None);
    }

    #[test]
    fn run_base_keeps_socket_paths_short() {
        assert_eq!(
            run_base(Path::new("/w/.palisade-run")),
            Path::new("/w/.palisade-run")
        );
        let deep = PathBuf::from(format!("/{}/.palisade-run", "d".repeat(90)));
        assert!(run_base(&deep).starts_with(std::env::temp_dir()));
    }

    #[test]
    fn opts_parse() {
        let o = Opts::parse(&["--suite-only".into(), "--filter".into(), "exec".into()]).unwrap();
        assert!(o.suite_only);
        assert_eq!(o.filters, vec!["exec".to_string()]);
        assert_eq!(o.handlers(), "runc,palisade");
        assert_eq!(
            o.security_handlers(),
            "runc,palisade,palisade-strict,palisade-audit"
        );
        assert!(Opts::parse(&["--bogus".into()]).is_err());
    }
}
