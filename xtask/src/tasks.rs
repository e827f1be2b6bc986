//! The xtask commands: test, demo, bench; each sets up the private containerd and always tears it down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cargo::Workspace;
use crate::env::{self, Env};
use crate::{apt, images};

/// Options shared by the commands.
#[derive(Debug, Default)]
pub struct Opts {
    pub suite_only: bool,
    pub no_shim: bool,
    pub handlers: Option<String>,
    pub filters: Vec<String>,
    pub runs: Option<u32>,
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
type Slot = Arc<Mutex<Option<Arc<Env>>>>;

/// Handles SIGINT/SIGTERM in a thread: tear down, then exit. The signals are
/// caught, not blocked: a blocked mask would be inherited by every child (cargo
/// test included) and change what the tests see.
fn install_signal_teardown() -> Result<Slot> {
    let slot: Slot = Arc::new(Mutex::new(None));
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("catch SIGINT/SIGTERM")?;
    let slot2 = Arc::clone(&slot);
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("\nxtask: signal {sig}: tearing down");
            let env = slot2.lock().ok().and_then(|s| s.clone());
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
fn with_env<T>(
    ws: &Workspace,
    slot: &Slot,
    shim: Option<PathBuf>,
    body: impl FnOnce(&Arc<Env>) -> Result<T>,
) -> Result<T> {
    let conformance = ws.build_conformance()?;
    let base = ws.root.join(".palisade-run");
    let images = images::build(&ws.root, &base.join("images")).context("build test images")?;
    let env = Env::new(&run_base(&base), env::Options { shim, conformance })?;
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

fn suite_cmd(env: &Env, ws: &Workspace, sub: &str) -> Command {
    let mut cmd = Command::new(ws.conformance_binary());
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

/// `cargo xtask test`.
pub fn test(opts: &Opts) -> Result<()> {
    let slot = install_signal_teardown()?;
    apt::ensure_packages()?;
    let ws = Workspace::locate()?;
    let mut steps = Steps::default();
    if !opts.suite_only {
        steps.record("cargo fmt", ws.cargo(&["fmt", "--all", "--check"]));
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
        steps.record("cargo test", ws.cargo(&["test", "--workspace"]));
    }
    let shim = if opts.no_shim {
        None
    } else {
        steps.record("build shim", ws.build_shim())
    };
    let suite = with_env(&ws, &slot, shim, |env| {
        let mut cmd = suite_cmd(env, &ws, "run");
        cmd.arg("--handlers").arg(opts.handlers());
        for f in &opts.filters {
            cmd.arg("--filter").arg(f);
        }
        let conformance = env.run_child_output(&mut cmd)?;
        let mut cmd = suite_cmd(env, &ws, "security");
        cmd.arg("--handlers")
            .arg(opts.security_handlers())
            .arg("--events-dir")
            .arg(env.events_dir())
            .arg("--gate-state-dir")
            .arg(env.gate_state_dir())
            .arg("--metrics-dir")
            .arg(env.metrics_dir())
            .arg("--webhook-listen")
            .arg(env.webhook.to_string());
        for f in &opts.filters {
            cmd.arg("--filter").arg(f);
        }
        let security = env.run_child_output(&mut cmd)?;
        Ok([
            ("conformance suite", conformance),
            ("security suite", security),
        ])
    });
    // The suites' tables come last, then one closing line over the suites' checks
    // and the harness's own steps.
    let (mut passed, mut failed) = (0, 0);
    let mut report = String::new();
    if let Some(suites) = steps.record("conformance suite setup", suite) {
        for (name, (st, out)) in suites {
            match closing_counts(&out) {
                Some((p, f)) if st.success() == (f == 0) => {
                    passed += p;
                    failed += f;
                }
                counts => {
                    steps.record::<()>(
                        name,
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

/// The counts of the last `N passed, N failed` line of the suite's output.
fn closing_counts(out: &str) -> Option<(usize, usize)> {
    out.lines().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        let f = f.strip_suffix(" failed")?;
        Some((p.parse().ok()?, f.parse().ok()?))
    })
}

/// `cargo xtask demo`.
pub fn demo(opts: &Opts) -> Result<()> {
    let slot = install_signal_teardown()?;
    apt::ensure_packages()?;
    let ws = Workspace::locate()?;
    let shim = if opts.no_shim {
        None
    } else {
        Some(ws.build_shim()?)
    };
    let handler = opts.handlers.clone().unwrap_or_else(|| "palisade".into());
    with_env(&ws, &slot, shim, |env| {
        let mut cmd = suite_cmd(env, &ws, "demo");
        cmd.arg("--handlers").arg(&handler);
        let st = env.run_child(&mut cmd)?;
        if !st.success() {
            bail!("demo failed ({st})");
        }
        Ok(())
    })
}

/// `cargo xtask bench`: measures, then rewrites the marked section of docs/benchmarks.md.
pub fn bench(opts: &Opts) -> Result<()> {
    let slot = install_signal_teardown()?;
    apt::ensure_packages()?;
    let ws = Workspace::locate()?;
    let shim = if opts.no_shim {
        None
    } else {
        Some(ws.build_shim()?)
    };
    let runs = opts.runs.unwrap_or(30);
    let handlers = opts.handlers();
    // Other work on the machine moves the latencies: the section records the load.
    let load_before = loadavg();
    let table = with_env(&ws, &slot, shim, |env| {
        let mut cmd = suite_cmd(env, &ws, "bench");
        cmd.arg("--handlers")
            .arg(&handlers)
            .arg("--runs")
            .arg(runs.to_string());
        let (st, out) = env.run_child_output(&mut cmd)?;
        if !st.success() {
            bail!("bench failed ({st})");
        }
        Ok(out)
    })?;
    let mut command = String::from("cargo xtask bench");
    if runs != 30 {
        command += &format!(" --runs {runs}");
    }
    if opts.handlers.is_some() {
        command += &format!(" --handlers {handlers}");
    }
    let doc = ws.root.join("docs/benchmarks.md");
    let load = format!("load average {load_before} before, {} after", loadavg());
    write_bench_section(&doc, &command, &load, &table)?;
    println!("{table}");
    eprintln!("xtask: wrote {}", doc.display());
    Ok(())
}

const BEGIN: &str = "<!-- BEGIN xtask bench -->";
const END: &str = "<!-- END xtask bench -->";

/// The 1-minute load average from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn write_bench_section(doc: &Path, command: &str, load: &str, table: &str) -> Result<()> {
    let section = format!(
        "{BEGIN}\nMeasured by `{command}` on {} ({} cores, kernel {}; {load}).\n\n{}\n{END}",
        date_utc(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        table.trim()
    );
    let current = std::fs::read_to_string(doc).unwrap_or_default();
    let updated = replace_section(&current, &section);
    std::fs::write(doc, updated).with_context(|| format!("write {}", doc.display()))
}

/// Replaces the marked section, or appends it (creating a heading) when absent.
fn replace_section(current: &str, section: &str) -> String {
    match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &current[..b], &current[e + END.len()..])
        }
        _ if current.trim().is_empty() => format!("# Benchmarks\n\n{section}\n"),
        _ => format!("{}\n\n{section}\n", current.trim_end()),
    }
}

fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_in_place() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\ntail\n");
        let out = replace_section(&doc, &format!("{BEGIN}\nnew\n{END}"));
        assert_eq!(
            out,
            format!("# B\n\nintro\n\n{BEGIN}\nnew\n{END}\n\ntail\n")
        );
    }

    #[test]
    fn section_is_appended_when_missing() {
        let out = replace_section("# B\n", &format!("{BEGIN}\nx\n{END}"));
        assert!(out.starts_with("# B\n\n<!-- BEGIN"));
        let fresh = replace_section("", &format!("{BEGIN}\nx\n{END}"));
        assert!(fresh.starts_with("# Benchmarks\n"));
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
        assert_eq!(o.security_handlers(), "runc,palisade,palisade-strict");
        assert!(Opts::parse(&["--bogus".into()]).is_err());
    }
}
