//! The xtask commands test, demo, fuzz, fresh and manifests; each that needs containerd sets up the private one and always tears it down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};

use crate::cargo::Workspace;
use crate::env::{self, Env};
use crate::procs::{Children, StopGuard};
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

/// The value that follows `flag` on the command line.
fn value_of(flag: &str, it: &mut std::slice::Iter<'_, String>) -> Result<String> {
    it.next()
        .cloned()
        .with_context(|| format!("{flag} needs a value"))
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || value_of(a, &mut it);
            match a.as_str() {
                "--suite-only" => o.suite_only = true,
                "--no-shim" => o.no_shim = true,
                "--handlers" => o.handlers = Some(val()?),
                "--filter" => o.filters.push(val()?),
                "--runs" => o.runs = Some(val()?.parse().context("--runs")?),
                "--suite" => {
                    let v = val()?;
                    if v != "all" && !crate::bench::BENCH_SUITES.iter().any(|b| b.name == v) {
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

    pub(crate) fn handlers(&self) -> String {
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

/// Handles SIGINT/SIGTERM in a thread ([`crate::procs::stop_on_signal`]): the steps first,
/// so that none starts a pod or a build into the teardown, then the environment's teardown,
/// then whatever is still running below xtask; then exit.
pub(crate) fn install_signal_teardown(children: Children) -> Result<(Slot, StopGuard)> {
    let slot: Slot = Arc::new(Mutex::new(None));
    let slot2 = Arc::clone(&slot);
    let guard = crate::procs::stop_on_signal(children, move || {
        let env = slot2.lock().ok().and_then(|s| s.clone());
        if let Some(env) = env {
            env.teardown(true);
        }
    })?;
    Ok((slot, guard))
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
struct Steps {
    passed: usize,
    failed: Vec<String>,
    /// When the step being recorded began (the steps run one after another).
    since: std::time::Instant,
}

impl Default for Steps {
    fn default() -> Self {
        Self {
            passed: 0,
            failed: Vec::new(),
            since: std::time::Instant::now(),
        }
    }
}

impl Steps {
    /// Counts step `name`'s result and prints how long it took (since the step before).
    fn record<T>(&mut self, name: &str, r: Result<T>) -> Option<T> {
        let secs = self.since.elapsed().as_secs();
        self.since = std::time::Instant::now();
        eprintln!(
            "xtask: step {name}: {} in {secs} s",
            if r.is_ok() { "done" } else { "failed" }
        );
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
    let (slot, _stop) = install_signal_teardown(ws.children.clone())?;
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
        // The fuzz run (its build and its fixed time) takes the CPU of the first lane of
        // the matrix to run out of boots, while the other lanes' guests end.
        let (matrix, fuzz) = crate::matrix::run_beside(&ws, &[], || {
            eprintln!("xtask: a matrix lane is free: the policy fuzz runs beside it");
            crate::fuzz::run(&ws.root, &ws.target, FUZZ_SECONDS, &ws.children)
        });
        steps.record("kernel matrix (the policy fuzz beside it)", matrix);
        steps.record(
            "fuzz the policy parser",
            fuzz.map(|done| eprintln!("xtask: policy fuzz: {done}")),
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
    let suites = steps.record("conformance suite setup", suite).map(|s| {
        s.into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect::<Vec<_>>()
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
    let _stop = crate::procs::stop_on_signal(ws.children.clone(), || {})?;
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
    let _stop = crate::procs::stop_on_signal(ws.children.clone(), || {})?;
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
    let (slot, _stop) = install_signal_teardown(ws.children.clone())?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
