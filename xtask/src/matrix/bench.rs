//! `cargo xtask matrix --bench`: the monitor bench (exec, open/close and connect loops in a
//! container, monitor off against on) and a `getppid` loop in a process outside any container,
//! through containerd in the 6.1 and 6.12 guests in one run; the figures, labelled as taken
//! under emulation when they were, go to their own section of docs/benchmarks.md. Without
//! hardware virtualisation the guests count instructions (`Accel::Counted`), so that the
//! figures do not follow the host's load.

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::qemu::Accel;
use super::suite::{self, BenchArgs, Job};
use super::{cache_dir, guest, initramfs, rootfs, BOOTS};
use crate::bench::{self, BenchSuite};
use crate::cargo::Workspace;

/// The section of docs/benchmarks.md this command rewrites.
const SECTION: BenchSuite = BenchSuite {
    name: "matrix",
    begin: "<!-- BEGIN xtask matrix bench -->",
    end: "<!-- END xtask matrix bench -->",
};

/// Defaults sized for emulation: a round of three configurations takes a few minutes there.
const ROUNDS: u32 = 3;
const SCALE: f64 = 0.2;
const PODS: u32 = 2;

/// A guest's deadline in host time: the bench is longer than the tests, and counting
/// instructions slows the emulation further. The guest's own limits (a loop's 600 s, a pod's
/// 2 s to settle, containerd's start) count emulated time: a second is 10^9 instructions of
/// work, more than any of them needs, and a guest that sleeps or waits idles straight to its
/// next timer, so they cost no host time and still end.
fn bench_timeout(accel: Accel) -> Duration {
    Duration::from_secs(match accel {
        Accel::Counted => 3600,
        Accel::Kvm | Accel::Tcg => 1800,
    })
}

/// Runs the bench in each containerd boot (filtered by label), writes the section, fails when
/// a boot gave no figures.
pub fn run(
    ws: &Workspace,
    filters: &[String],
    rounds: Option<u32>,
    scale: Option<f64>,
    pods: Option<u32>,
) -> Result<()> {
    let started = Instant::now();
    let cache = cache_dir(ws);
    let last = cache.join("last-bench");
    let _ = fs::remove_dir_all(&last);
    fs::create_dir_all(&last).with_context(|| format!("create {}", last.display()))?;
    let accel = Accel::detect().counted();
    let payload = suite::prepare(ws).context("prepare the guests' containerd run")?;
    let probe = last.join("palisade-probe");
    crate::images::compile_static(
        &ws.root.join("conformance/src/bin/palisade-probe.rs"),
        &probe,
    )
    .context("compile the probe for the unwatched loop")?;
    let args = BenchArgs {
        rounds: rounds.unwrap_or(ROUNDS),
        scale: scale.unwrap_or(SCALE),
        pods: pods.unwrap_or(PODS),
        probe,
    };
    let busybox = initramfs::busybox_static(&cache).context("fetch busybox-static")?;
    let root = rootfs::image(&cache)?;
    let before = bench::loadavg();
    let mut body = String::new();
    let mut failed = Vec::new();
    for spec in BOOTS
        .iter()
        .filter(|b| b.containerd && super::picked(b.label, filters))
    {
        let t = Instant::now();
        let (dir, k) = suite::fetch_boot("matrix bench", spec, &cache, &last, &busybox, accel, "")?;
        let boot = spec.boot(&k, &root, &dir, &ws.target, bench_timeout(accel), accel);
        let o = guest::run_boot(&boot, &[], Some(&Job::Bench(&payload, &args)), &ws.children)?;
        let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let md = read("bench.md");
        let rc = read("bench.rc");
        let secs = t.elapsed().as_secs_f64();
        let _ = write!(
            body,
            "\n### {} guest (kernel {}; hooks: {}; {:.0} s)\n\n",
            spec.label, o.kernel, o.hooks, secs
        );
        if rc.trim() == "0" && md.contains("| loop |") {
            body += md.trim();
            body.push('\n');
            eprintln!("xtask: matrix bench: {} done in {secs:.0} s", spec.label);
        } else {
            let err = read("bench.err");
            let why = format!(
                "no figures (bench exit {}; {}): {}",
                if rc.trim().is_empty() {
                    "none"
                } else {
                    rc.trim()
                },
                o.problem.as_deref().unwrap_or("the guest script finished"),
                crate::procs::tail(&dir.join("bench.err"), 3).replace('\n', " / ")
            );
            let _ = writeln!(body, "Not measured: {why}");
            eprintln!("xtask: matrix bench: {}: {why}\n{err}", spec.label);
            failed.push(format!("{}: {why}", spec.label));
        }
    }
    if body.is_empty() {
        bail!("matrix bench: no boot matches the filter (6.1, 6.12)");
    }
    let after = bench::loadavg();
    let header = header(accel, &args, &before, &after, started.elapsed());
    let doc = ws.root.join("docs/benchmarks.md");
    bench::write_bench_section(&doc, &SECTION, &header, &body)?;
    println!("{header}\n{body}");
    eprintln!("xtask: wrote {} ({})", doc.display(), SECTION.begin);
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("matrix bench: {}", failed.join("; "))
    }
}

/// What the figures are: under emulation or not, how the guests ran, the host's load.
fn header(accel: Accel, a: &BenchArgs, before: &str, after: &str, total: Duration) -> String {
    let mut h = format!(
        "Measured by `cargo xtask matrix --bench --rounds {} --scale {} --pods {}` on {} UTC in \
         qemu guests under **{}** ({} vCPU, 2 GiB, cgroup v2 only), on a host of {} cores \
         (load average {before} before, {after} after); {:.0} s in all. In each guest: a private \
         containerd 1.6 (bookworm's) with runc and the release shim, the monitor bench \
         (`palisade-conformance bench --suite monitor`: a container's exec, open/close and \
         connect loops under `palisade-nomon` against `palisade`, and with one more monitored \
         pod) and a `getppid` loop in a process outside any container and pod cgroup, measured \
         while the configuration's pods run.",
        a.rounds,
        a.scale,
        a.pods,
        bench::date_utc(),
        accel.name(),
        accel.cpus(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        total.as_secs_f64()
    );
    match accel {
        Accel::Kvm => {}
        Accel::Tcg => {
            h += " **Figures under TCG emulation**: every instruction is translated, so \
                  absolute times are many times those of hardware and the ratios weigh kernel \
                  paths differently; they say what the monitor adds on these kernels relative \
                  to itself, not what a node pays. The host's own figures are in the sections \
                  above.";
        }
        Accel::Counted => {
            h += " **Figures under emulation, in emulated instructions, not hardware times**: \
                  qemu runs with `-icount shift=0,align=off,sleep=off`, so the guest's clock \
                  advances one nanosecond per emulated instruction and a CPU time in the guest \
                  is a count of emulated instructions (1 ns each); the wall-clock times are the \
                  instructions plus the guest's idle time, which skips straight to its next \
                  timer. The figures therefore **do not depend on the host's load** (the load \
                  averages above only say how long the run took). Instructions are not cycles: \
                  a BPF program's, a trampoline's or a cache miss's share of hardware time \
                  differs, so they say what the monitor adds on these kernels relative to \
                  itself, not what a node pays. The host's own figures are in the sections \
                  above.";
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_when_the_figures_come_from_emulation() {
        let a = BenchArgs {
            rounds: 3,
            scale: 0.2,
            pods: 2,
            probe: "/p".into(),
        };
        let h = header(
            Accel::Tcg,
            &a,
            "1.0 1.0 1.0",
            "2.0 2.0 2.0",
            Duration::from_secs(60),
        );
        assert!(h.contains("--rounds 3 --scale 0.2 --pods 2"), "{h}");
        assert!(h.contains("**Figures under TCG emulation**"), "{h}");
        let kvm = header(Accel::Kvm, &a, "1", "1", Duration::from_secs(1));
        assert!(!kvm.contains("emulation**"), "{kvm}");
    }

    #[test]
    fn the_header_says_counted_figures_are_instructions_independent_of_the_load() {
        let a = BenchArgs {
            rounds: 2,
            scale: 0.2,
            pods: 2,
            probe: "/p".into(),
        };
        let h = header(Accel::Counted, &a, "9.0", "9.0", Duration::from_secs(60));
        assert!(h.contains("--rounds 2 --scale 0.2 --pods 2"), "{h}");
        assert!(
            h.contains("under **TCG emulation, instruction counting** (1 vCPU"),
            "{h}"
        );
        assert!(
            h.contains("emulated instructions, not hardware times"),
            "{h}"
        );
        assert!(h.contains("(1 ns each)"), "{h}");
        assert!(h.contains("**do not depend on the host's load**"), "{h}");
        assert!(!h.contains("**Figures under TCG emulation**"), "{h}");
        assert_eq!(bench_timeout(Accel::Counted), Duration::from_secs(3600));
    }
}
