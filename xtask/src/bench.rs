//! `cargo xtask bench`: the benchmark suites against the private containerd, each rewriting its marked section of docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::apt;
use crate::cargo::Workspace;
use crate::tasks::{install_signal_teardown, suite_cmd, with_env, Opts};

/// One bench suite and the marked section of docs/benchmarks.md it rewrites.
pub(crate) struct BenchSuite {
    pub(crate) name: &'static str,
    pub(crate) begin: &'static str,
    pub(crate) end: &'static str,
}

pub(crate) const BENCH_SUITES: [BenchSuite; 4] = [
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
    BenchSuite {
        name: "learn",
        begin: "<!-- BEGIN xtask bench learn -->",
        end: "<!-- END xtask bench learn -->",
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
    let (slot, _stop) = install_signal_teardown(ws.children.clone())?;
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
            // The learning suite's getppid loop outside any container (what a learning pod
            // costs the rest of the node): the probe built beside the suite binary.
            let probe = ws.conformance_binary().with_file_name("palisade-probe");
            if suite.name == "learn" && probe.exists() {
                cmd.arg("--host-probe").arg(&probe);
            }
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
        let [start, sys, _, _] = &BENCH_SUITES;
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
        assert_eq!(o.bench_suites().len(), 4);
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
}
