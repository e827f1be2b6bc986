//! `cargo xtask matrix --detections`: the detection corpus (`cargo xtask detections`'s
//! workloads and post-exploitation chain, graded by the same expectations) through a real
//! containerd inside a matrix guest, the 6.1 boot unless `--filter` names other containerd
//! boots; the corpus image is built on the host and imported in the guest. Its report goes to
//! its own section of docs/monitor.md, labelled with how the guest ran.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::qemu::Accel;
use super::suite::{
    fetch_boot, require_files, value, with_guest_node, GuestJob, GuestNode, Job, Payload,
};
use super::{cache_dir, guest, initramfs, rootfs, BOOTS};
use crate::cargo::Workspace;
use crate::{bench, corpus};

/// What a guest runs when `--filter` names no workload: the busybox pod as uid 1000 with
/// group 0, one server, and the post-exploitation chain with its twins.
pub const WORKLOADS: &[&str] = &["busybox", "nginx", "chain"];
/// Seconds of traffic per workload in a guest unless `--seconds` says otherwise: under
/// emulation a minute of traffic is already a few thousand requests' worth of monitored
/// system calls.
pub const SECONDS: u64 = 60;
/// The boot run when `--filter` names none.
const DEFAULT_BOOT: &str = "6.1";
/// A guest's deadline: start-up, the hook probe, the image import, the workloads and the chain
/// under emulation.
const TIMEOUT: Duration = Duration::from_secs(2700);

/// The marked section of docs/monitor.md this command rewrites.
const MARKS: (&str, &str) = (
    "<!-- BEGIN xtask matrix detections -->",
    "<!-- END xtask matrix detections -->",
);

/// The corpus run in a guest.
#[derive(Debug, Clone)]
pub struct Args {
    /// The corpus image archive on the host (staged into the run share).
    pub corpus: PathBuf,
    pub seconds: u64,
    /// The corpus's `--filter`s: workload names and `chain`.
    pub workloads: Vec<String>,
}

/// Splits `--filter` values into the containerd boots they name (by whole label; the default
/// boot when none) and the corpus's workload filters (the rest; [`WORKLOADS`] when none).
fn split_filters(filters: &[String]) -> (Vec<&'static str>, Vec<String>) {
    let mut boots = Vec::new();
    let mut workloads = Vec::new();
    for f in filters {
        match BOOTS.iter().find(|b| b.containerd && b.label == f.as_str()) {
            Some(b) => boots.push(b.label),
            None => workloads.push(f.clone()),
        }
    }
    if boots.is_empty() {
        boots.push(DEFAULT_BOOT);
    }
    if workloads.is_empty() {
        workloads = WORKLOADS.iter().map(|w| w.to_string()).collect();
    }
    (boots, workloads)
}

/// Copies the corpus image into the boot's run share.
pub fn stage(a: &Args, run_dir: &Path) -> Result<()> {
    let dir = run_dir.join("images");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    fs::copy(&a.corpus, dir.join("corpus.tar")).context("stage the corpus image")?;
    Ok(())
}

/// The lines of the guest script that run the corpus: its report in `detections.md`, the
/// harness's and containerd's lines in `detections.err`, the shims' event log in `events/`,
/// `detections.rc`, `detections.seconds`.
pub fn script(p: &Payload, a: &Args, run: &str) -> String {
    let filters: String = a
        .workloads
        .iter()
        .map(|f| format!(" --filter {f}"))
        .collect();
    GuestJob {
        title: "The detection corpus through containerd.",
        command: "matrix-guest-detections",
        args: format!(
            "--corpus {run}/images/corpus.tar --seconds {}{filters} \\\n    \
             --keep-events {run}/events",
            a.seconds
        ),
        stdout: "detections.md",
        name: "detections",
    }
    .script(p, run)
}

/// The guest side's options.
#[derive(Debug)]
struct GuestArgs {
    node: GuestNode,
    corpus: PathBuf,
    seconds: u64,
    filters: Vec<String>,
    /// Where the shims' event log is copied after the run (the run share), if anywhere.
    keep_events: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<GuestArgs> {
    const COMMAND: &str = "matrix-guest-detections";
    let mut corpus = PathBuf::new();
    let mut seconds = SECONDS;
    let mut filters = Vec::new();
    let mut keep_events = None;
    let node = GuestNode::parse(COMMAND, args, |a, it| {
        match a {
            "--corpus" => corpus = value(a, it)?.into(),
            "--seconds" => {
                let v = value(a, it)?;
                seconds = v.parse().with_context(|| format!("--seconds {v}"))?;
            }
            "--filter" => filters.push(value(a, it)?),
            "--keep-events" => keep_events = Some(value(a, it)?.into()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    require_files(COMMAND, &[("--corpus", &corpus)])?;
    Ok(GuestArgs {
        node,
        corpus,
        seconds,
        filters,
        keep_events,
    })
}

/// `xtask matrix-guest-detections`, run inside a guest: the private containerd, the corpus
/// image imported, the corpus (its report on stdout), teardown; fails when the corpus did.
pub fn guest_main(args: &[String]) -> Result<()> {
    let g = parse(args)?;
    let result = with_guest_node(
        &g.node,
        |env| {
            crate::detections::import(env, &g.corpus)?;
            let mut cmd =
                crate::detections::corpus_cmd(env, &g.node.conformance, g.seconds, &g.filters);
            cmd.stdin(Stdio::null());
            env.run_child(&mut cmd)
        },
        |env| {
            if let Some(dir) = &g.keep_events {
                if let Err(e) = copy_files(&env.events_dir(), dir) {
                    eprintln!("xtask: keep the event log: {e:#}");
                }
            }
        },
    );
    match result {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => bail!("the detection corpus exited {st}"),
        Err(e) => Err(e),
    }
}

/// Copies the files of `from` (not its subdirectories) into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let path = entry?.path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            fs::copy(&path, to.join(name)).with_context(|| format!("copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// What one boot's corpus run gave.
struct BootRun {
    label: &'static str,
    heading: String,
    /// The corpus's report, when it gave one (its closing `N passed, N failed` line).
    report: Option<String>,
    /// Why the run failed, if it did.
    problem: Option<String>,
}

/// `cargo xtask matrix --detections [--seconds N] [--filter BOOT|WORKLOAD]`: the corpus in
/// each picked boot; writes the section of docs/monitor.md when every picked boot gave a
/// report; fails when a boot gave none or the corpus failed its expectations.
pub fn run(ws: &Workspace, filters: &[String], seconds: Option<u32>) -> Result<()> {
    let started = Instant::now();
    let (boots, workloads) = split_filters(filters);
    let cache = cache_dir(ws);
    let last = cache.join("last-detections");
    let _ = fs::remove_dir_all(&last);
    fs::create_dir_all(&last).with_context(|| format!("create {}", last.display()))?;
    let accel = Accel::detect();
    let payload = super::suite::prepare(ws).context("prepare the guests' containerd run")?;
    // The guest script's hook probe (`palisade-monitor hold`) gives the heading's hooks.
    ws.cargo(&[
        "build",
        "-p",
        "palisade-monitor",
        "--bin",
        "palisade-monitor",
    ])?;
    let corpus = corpus::image(&ws.root.join(".palisade-run").join("images"))
        .context("build the corpus image")?;
    let args = Args {
        corpus,
        seconds: seconds.map_or(SECONDS, u64::from),
        workloads,
    };
    let busybox = initramfs::busybox_static(&cache).context("fetch busybox-static")?;
    let root = rootfs::image(&cache)?;
    let before = bench::loadavg();
    let mut runs = Vec::new();
    for spec in BOOTS.iter().filter(|b| boots.contains(&b.label)) {
        let t = Instant::now();
        let what = format!(
            ": {} for {} s each",
            args.workloads.join(", "),
            args.seconds
        );
        let (dir, k) = fetch_boot(
            "matrix detections",
            spec,
            &cache,
            &last,
            &busybox,
            accel,
            &what,
        )?;
        let boot = spec.boot(&k, &root, &dir, &ws.target, TIMEOUT, accel);
        let job = Job::Detections(&payload, &args);
        let o = guest::run_boot(&boot, &[], Some(&job), &ws.children)?;
        let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let (report, rc) = (read("detections.md"), read("detections.rc"));
        let run = boot_run(spec.label, &o, &report, rc.trim(), t.elapsed());
        match &run.problem {
            None => eprintln!("xtask: matrix detections: {}: passed", spec.label),
            Some(p) => eprintln!(
                "xtask: matrix detections: {}: {p}\n{}",
                spec.label,
                crate::procs::tail(&dir.join("detections.err"), 20)
            ),
        }
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("matrix detections: no containerd boot matches the filter (6.1, 6.12)");
    }
    let after = bench::loadavg();
    let body = render(&runs);
    println!("{body}");
    if runs.iter().all(|r| r.report.is_some()) {
        let header = header(accel, &args, filters, &before, &after, started.elapsed());
        let doc = ws.root.join("docs/monitor.md");
        crate::detections::write_section(&doc, MARKS, &header, &body)?;
        eprintln!("xtask: wrote {} ({})", doc.display(), MARKS.0);
    }
    let bad: Vec<String> = runs
        .iter()
        .filter_map(|r| r.problem.as_ref().map(|p| format!("{}: {p}", r.label)))
        .collect();
    super::fail_on_bad("matrix detections", &bad, &last)
}

/// Reads one boot's results: the report when it closed with its counts, and what went wrong.
fn boot_run(
    label: &'static str,
    o: &guest::Outcome,
    report: &str,
    rc: &str,
    took: Duration,
) -> BootRun {
    let heading = format!(
        "{label} guest (kernel {}; LSMs {}; hooks: {}; {:.0} s)",
        o.kernel,
        o.lsm,
        o.hooks,
        took.as_secs_f64()
    );
    let complete = report.lines().any(|l| {
        l.split_once(" passed, ")
            .is_some_and(|(p, f)| p.parse::<u32>().is_ok() && f.ends_with(" failed"))
    });
    let mut problems = Vec::new();
    if let Some(p) = &o.problem {
        problems.push(p.clone());
    }
    if !complete {
        problems.push(format!(
            "the corpus gave no report (exit {})",
            if rc.is_empty() { "none" } else { rc }
        ));
    } else if rc != "0" {
        problems.push(format!("the corpus failed its expectations (exit {rc})"));
    }
    BootRun {
        label,
        heading,
        report: complete.then(|| report.trim().to_string()),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// The section's body: per boot, its heading and the corpus's report.
fn render(runs: &[BootRun]) -> String {
    let mut s = String::new();
    for r in runs {
        let _ = write!(s, "\n#### {}\n\n", r.heading);
        match (&r.report, &r.problem) {
            (Some(rep), _) => {
                s += rep;
                s.push('\n');
            }
            (None, p) => {
                let _ = writeln!(
                    s,
                    "Not run to its end: {}",
                    p.as_deref().unwrap_or("no report")
                );
            }
        }
    }
    s
}

/// What the section's figures are: the command, how the guests ran, the host's load.
fn header(
    accel: Accel,
    a: &Args,
    filters: &[String],
    before: &str,
    after: &str,
    total: Duration,
) -> String {
    let mut command = String::from("cargo xtask matrix --detections");
    if a.seconds != SECONDS {
        let _ = write!(command, " --seconds {}", a.seconds);
    }
    for f in filters {
        let _ = write!(command, " --filter {f}");
    }
    let mut h = format!(
        "Measured by `{command}` on {} UTC in qemu guests under **{}** ({} vCPU, 2 GiB, \
         cgroup v2 only), on a host of {} cores (load average {before} before, {after} after); \
         {:.0} s in all. In each guest: a private containerd 1.6 (bookworm's) with runc and the \
         release shim, the corpus image built on the host and imported there, and \
         `palisade-conformance detections` for {} ({} s of traffic per workload), graded by the \
         same expectations as on the host (`conformance/src/detections/expect.rs`).",
        bench::date_utc(),
        accel.name(),
        accel.cpus(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        total.as_secs_f64(),
        a.workloads.join(", "),
        a.seconds
    );
    if accel == Accel::Tcg {
        h += " **Run under TCG emulation**: the guest runs many times slower than hardware \
              while the corpus's windows (the chain pod's 15 s learning window, 5 s for a \
              step's report, 1.5 s of silence for a twin) are wall-clock time, and the traffic \
              generator reaches far fewer requests; the events per minute are not a node's.";
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Images;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters_pick_boots_by_label_and_the_rest_are_workloads() {
        let (b, w) = split_filters(&[]);
        assert_eq!(b, ["6.1"]);
        assert_eq!(w, strings(WORKLOADS));
        let (b, w) = split_filters(&strings(&["6.12", "chain", "6.1"]));
        assert_eq!(b, ["6.12", "6.1"]);
        assert_eq!(w, ["chain"]);
        // A boot that runs no containerd is not a boot here.
        let (b, w) = split_filters(&strings(&["sid"]));
        assert_eq!((b, w), (vec!["6.1"], strings(&["sid"])));
    }

    #[test]
    fn the_guest_script_stages_the_corpus_and_passes_the_filters() {
        let p = Payload {
            xtask: PathBuf::from("/w/target/debug/xtask"),
            shim: PathBuf::from("/w/target/palisade-bin/containerd-shim-palisade-v2"),
            conformance: PathBuf::from("/w/target/debug/palisade-conformance"),
            images: Images {
                busybox: PathBuf::from("/c/busybox.tar"),
                pause: PathBuf::from("/c/pause.tar"),
            },
        };
        let a = Args {
            corpus: PathBuf::from("/c/corpus.tar"),
            seconds: 30,
            workloads: strings(&["busybox", "chain"]),
        };
        let s = script(&p, &a, "/mnt/run");
        assert!(s.contains("/w/target/debug/xtask matrix-guest-detections --shim /w/target/"));
        assert!(s.contains(
            "--corpus /mnt/run/images/corpus.tar --seconds 30 --filter busybox --filter chain"
        ));
        assert!(s.contains(
            "--keep-events /mnt/run/events > /mnt/run/detections.md 2> /mnt/run/detections.err"
        ));
        assert!(s.contains("echo $? > /mnt/run/detections.rc"));
    }

    #[test]
    fn the_guest_refuses_missing_files_and_unknown_options() {
        let e = parse(&strings(&["--shim", "/nonexistent/shim"])).unwrap_err();
        assert!(format!("{e}").contains("--shim /nonexistent/shim: no such file"));
        let e = parse(&strings(&["--bogus", "1"])).unwrap_err();
        assert!(format!("{e}").contains("unknown option --bogus"));
    }

    #[test]
    fn the_event_log_s_files_are_copied_without_subdirectories() {
        let base = std::env::temp_dir().join(format!("xtask-copy-files-{}", std::process::id()));
        let (from, to) = (base.join("events"), base.join("kept"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("violations.jsonl"), "{}\n").unwrap();
        let copied = copy_files(&from, &to);
        let kept = fs::read_to_string(to.join("violations.jsonl"));
        let sub = to.join("sub").exists();
        let missing = copy_files(&base.join("none"), &to);
        let _ = fs::remove_dir_all(&base);
        copied.unwrap();
        assert_eq!(kept.unwrap(), "{}\n");
        assert!(!sub);
        assert!(format!("{:#}", missing.unwrap_err()).contains("read "));
    }

    #[test]
    fn a_boot_without_the_closing_counts_has_no_report() {
        let o = guest::Outcome {
            kernel: "6.1.0-50-amd64".into(),
            ..guest::Outcome::default()
        };
        let r = boot_run("6.1", &o, "| rule |\n", "1", Duration::from_secs(9));
        assert!(r.report.is_none());
        assert_eq!(
            r.problem.as_deref(),
            Some("the corpus gave no report (exit 1)")
        );
        let r = boot_run(
            "6.1",
            &o,
            "table\n\n2 known misses\n40 passed, 1 failed\n",
            "1",
            Duration::from_secs(9),
        );
        assert!(r.report.is_some());
        assert_eq!(
            r.problem.as_deref(),
            Some("the corpus failed its expectations (exit 1)")
        );
        let good = boot_run("6.1", &o, "40 passed, 0 failed\n", "0", Duration::ZERO);
        assert!(good.problem.is_none() && good.report.is_some());
        assert!(render(&[good]).contains("#### 6.1 guest (kernel 6.1.0-50-amd64;"));
    }

    #[test]
    fn the_header_labels_emulated_runs() {
        let a = Args {
            corpus: PathBuf::from("/c"),
            seconds: SECONDS,
            workloads: strings(WORKLOADS),
        };
        let h = header(Accel::Tcg, &a, &[], "1", "2", Duration::from_secs(5));
        assert!(h.contains("`cargo xtask matrix --detections`"), "{h}");
        assert!(h.contains("**Run under TCG emulation**"), "{h}");
        let b = Args { seconds: 30, ..a };
        let h = header(
            Accel::Kvm,
            &b,
            &strings(&["chain"]),
            "1",
            "2",
            Duration::ZERO,
        );
        assert!(
            h.contains("--detections --seconds 30 --filter chain"),
            "{h}"
        );
        assert!(!h.contains("emulation**"), "{h}");
    }
}
