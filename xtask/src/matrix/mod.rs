//! The kernel matrix: Debian's 5.10 (default LSMs, then with `bpf` added), 6.1, 6.12 and sid
//! kernels booted under qemu on a cgroup-v2-only guest, each running the monitor's tests and
//! the sandbox's kernel tests built on this host, and the 6.1 and 6.12 guests also the
//! security suite's policy and monitor checks through containerd, runc and the palisade shim;
//! one results row per boot.

mod apt;
mod bench;
pub mod detections;
mod guest;
mod initramfs;
mod kernels;
mod qemu;
mod rootfs;
pub mod suite;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cargo::Workspace;
use guest::Outcome;
use qemu::{Accel, Boot};

/// One boot of the matrix.
struct BootSpec {
    label: &'static str,
    suite: &'static str,
    cmdline: &'static str,
    /// Whether the guest is a full node for the bench and the detection corpus (`--bench`,
    /// `--detections`): the kernels with BPF-LSM on by default.
    containerd: bool,
    /// The security suite's checks the guest runs through containerd after the kernel tests
    /// (none: no containerd run).
    cri: &'static [&'static str],
    /// The syscall hook the monitor must choose there (`palisade-monitor hold`'s line): fexit
    /// wherever BPF trampolines work, which is every kernel of the matrix.
    hook: &'static str,
}

/// The boots, oldest kernel first. Debian 11's 5.10 leaves `bpf` out of its LSM list, so it
/// runs twice: as shipped, and with `bpf` added on the command line.
impl BootSpec {
    /// The qemu boot of this spec with its kernel `k` on `root`, its run directory `dir`.
    fn boot<'a>(
        &'a self,
        k: &'a kernels::Kernel,
        root: &'a Path,
        dir: &'a Path,
        target: &'a Path,
        timeout: Duration,
        accel: Accel,
    ) -> Boot<'a> {
        Boot {
            vmlinux: &k.vmlinux,
            initramfs: &k.initramfs,
            root,
            cmdline: self.cmdline,
            run_dir: dir,
            target,
            console: dir.join("console.log"),
            timeout,
            accel,
        }
    }
}

const BOOTS: &[BootSpec] = &[
    BootSpec {
        label: "5.10",
        suite: "bullseye-security",
        cmdline: "",
        containerd: false,
        cri: suite::FILTERS_5_10,
        hook: "fexit",
    },
    BootSpec {
        label: "5.10 lsm+bpf",
        suite: "bullseye-security",
        cmdline: "lsm=lockdown,capability,yama,apparmor,bpf",
        containerd: false,
        cri: suite::FILTERS_5_10,
        hook: "fexit",
    },
    BootSpec {
        label: "6.1",
        suite: "bookworm",
        cmdline: "",
        containerd: true,
        cri: suite::FILTERS,
        hook: "fexit",
    },
    BootSpec {
        label: "6.12",
        suite: "trixie-security",
        cmdline: "",
        containerd: true,
        cri: suite::FILTERS,
        hook: "fexit",
    },
    BootSpec {
        label: "sid",
        suite: "sid",
        cmdline: "",
        containerd: false,
        cri: &[],
        hook: "fexit",
    },
];

/// How long one guest may run (boot, probe, tests, the suite) before it is stopped: about twice
/// the slowest boot seen under emulation on a loaded 2-core host (6.1 with its CRI checks, the
/// learned profile's among them); 600 s was passed by a 6.1 boot on a loaded host, which then
/// counted as hung, and 900 s was too near a 6.1 boot's time once the profile checks ran there.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The matrix's cache: kernels, apt state, the root image, the last run's logs.
fn cache_dir(ws: &Workspace) -> PathBuf {
    ws.root.join(".palisade-run").join("matrix")
}

/// One row of the results table.
struct Row {
    label: &'static str,
    version: String,
    outcome: Result<Outcome>,
    seconds: f64,
}

/// True when a boot labelled `label` is picked by `filters`: all when there is none; a filter
/// that is a boot's whole label picks that boot alone (`6.1` is not `6.12`); any other filter
/// picks the labels that contain it.
pub fn picked(label: &str, filters: &[String]) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            if BOOTS.iter().any(|b| b.label == f) {
                label == f
            } else {
                label.contains(f.as_str())
            }
        })
}

/// Runs the matrix's boots picked by `filters` (`picked`; all when empty), prints the
/// results table and keeps it with each boot's logs under `.palisade-run/matrix/last/`; fails
/// when a boot could not run or a test failed, naming them.
pub fn run(ws: &Workspace, filters: &[String]) -> Result<()> {
    run_beside(ws, filters, || Ok(())).0
}

/// As [`run`], and runs `beside` in the first lane that has no boot left to start, on the
/// CPU that lane's guest leaves idle while the other lanes' guests end (the lanes rarely end
/// together); when no lane ran it (the matrix failed before its boots), it runs after.
/// Returns the matrix's result and `beside`'s.
pub fn run_beside<T: Send>(
    ws: &Workspace,
    filters: &[String],
    beside: impl FnOnce() -> Result<T> + Send,
) -> (Result<()>, Result<T>) {
    let beside = Mutex::new(Some(beside));
    let out = Mutex::new(None);
    let idle = || {
        let f = beside.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(f) = f {
            *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(f());
        }
    };
    let r = run_lanes(ws, filters, &idle);
    idle();
    let t = out
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_else(|| Err(anyhow::anyhow!("the step beside the matrix did not finish")));
    (r, t)
}

fn run_lanes(ws: &Workspace, filters: &[String], idle: &(dyn Fn() + Sync)) -> Result<()> {
    let started = Instant::now();
    let cache = cache_dir(ws);
    fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    let last = cache.join("last");
    let _ = fs::remove_dir_all(&last);
    fs::create_dir_all(&last).with_context(|| format!("create {}", last.display()))?;
    let accel = Accel::detect();
    let boots: Vec<&BootSpec> = BOOTS.iter().filter(|b| picked(b.label, filters)).collect();
    // The downloads (busybox, the root image, the kernels) run beside the builds (the test
    // binaries, the guests' containerd payload): on a fresh machine each takes minutes.
    let (fetched, built) = std::thread::scope(|s| {
        let fetch = s.spawn(|| fetch_all(&cache, &boots));
        let built = guest::build_tests(ws, &last).and_then(|binaries| {
            let payload = if boots.iter().any(|b| !b.cri.is_empty()) {
                Some(suite::prepare(ws).context("prepare the guests' containerd run")?)
            } else {
                None
            };
            Ok((binaries, payload))
        });
        let fetched = fetch
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the matrix's download thread panicked")));
        (fetched, built)
    });
    let (root, kernels) = fetched?;
    let (binaries, payload) = built?;
    let lanes = lanes(accel, boots.len());
    eprintln!(
        "xtask: matrix: {} boots in {lanes} lane(s) of one guest each",
        boots.len()
    );
    // The boots with the most to do start first, so that the lanes end close together.
    let mut order: Vec<usize> = (0..boots.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(boots[i].cri.len()));
    let shared = Shared {
        ws,
        root: &root,
        binaries: &binaries,
        last: &last,
        accel,
    };
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Row>>> = Mutex::new((0..boots.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..lanes {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let spec = boots[i];
                    let job = payload
                        .as_ref()
                        .filter(|_| !spec.cri.is_empty())
                        .map(|p| suite::Job::Suite(p, spec.cri));
                    let row = boot_row(spec, &kernels[i], job.as_ref(), &shared);
                    eprintln!("xtask: matrix: {}", summary(&row));
                    done.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(row);
                }
                idle();
            });
        }
    });
    let rows: Vec<Row> = done
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect();
    let table = table(&rows, accel, lanes, started.elapsed());
    fs::write(last.join("results.md"), &table).context("write the matrix results")?;
    println!("{table}");
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.outcome.as_ref().is_ok_and(Outcome::passed))
        .map(summary)
        .collect();
    fail_on_bad("kernel matrix", &bad, &last)
}

/// Fails with the runs in `bad` (`what: a; b (logs in LAST)`) when there are any.
fn fail_on_bad(what: &str, bad: &[String], last: &Path) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    bail!("{what}: {} (logs in {})", bad.join("; "), last.display())
}

/// The busybox binary, the guests' root image and each boot's kernel (one download at a time:
/// the two 5.10 boots share one); a kernel that cannot be fetched fails its boot alone.
fn fetch_all(cache: &Path, boots: &[&BootSpec]) -> Result<(PathBuf, Vec<Result<kernels::Kernel>>)> {
    let busybox = initramfs::busybox_static(cache).context("fetch busybox-static")?;
    let root = rootfs::image(cache)?;
    let kernels = boots
        .iter()
        .map(|spec| {
            kernels::fetch(cache, spec.suite, &busybox)
                .with_context(|| format!("fetch the {} kernel", spec.suite))
        })
        .collect();
    Ok((root, kernels))
}

/// How many guests run at once: one per host CPU their vCPUs can have to themselves (two on
/// the 2-core CI machine under emulation, where a guest has one vCPU), at least one.
fn lanes(accel: Accel, boots: usize) -> usize {
    let host = std::thread::available_parallelism().map_or(1, usize::from);
    let per_guest = accel.cpus().parse::<usize>().unwrap_or(1).max(1);
    (host / per_guest).clamp(1, boots.max(1))
}

/// What every boot of a run shares.
struct Shared<'a> {
    ws: &'a Workspace,
    root: &'a Path,
    binaries: &'a [guest::TestBinary],
    /// The run's logs: a directory per boot below it.
    last: &'a Path,
    accel: Accel,
}

/// Boots `spec` on its fetched kernel and judges the outcome: its row of the table.
fn boot_row(
    spec: &BootSpec,
    kernel: &Result<kernels::Kernel>,
    job: Option<&suite::Job<'_>>,
    sh: &Shared<'_>,
) -> Row {
    let t = Instant::now();
    let (ws, accel) = (sh.ws, sh.accel);
    let dir = sh.last.join(spec.label.replace([' ', '+'], "-"));
    let (version, outcome) = match kernel {
        Err(e) => (String::new(), Err(anyhow::anyhow!("{e:#}"))),
        Ok(k) => {
            eprintln!(
                "xtask: matrix: booting {} ({}, {})",
                spec.label,
                k.release,
                accel.name()
            );
            let boot = spec.boot(k, sh.root, &dir, &ws.target, BOOT_TIMEOUT, accel);
            (
                k.version.clone(),
                boot_once_more_if_hung(&boot, sh.binaries, job, ws),
            )
        }
    };
    Row {
        label: spec.label,
        version,
        outcome: outcome.map(|o| expect_records(expect_hook(o, spec.hook))),
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// Fails a boot's outcome whose monitor did not choose the syscall hook `want` (a matrix
/// kernel that fell back to a syscall tracepoint would tax every syscall of its node).
fn expect_hook(mut o: Outcome, want: &str) -> Outcome {
    let chosen = format!("syscall hook={want}");
    if !o.hooks.split(", ").any(|h| h == chosen) {
        let problem = format!("the monitor chose {:?}, not {chosen}", o.hooks);
        o.problem = Some(match o.problem.take() {
            Some(p) => format!("{p}; {problem}"),
            None => problem,
        });
    }
    o
}

/// Fails a boot's outcome whose containers' enforcement records disagree with its kernel: a
/// rule recorded as enforced by BPF-LSM where `bpf` is not among the LSMs or the monitor's
/// probe found BPF-LSM not in force, a container refused for want of BPF-LSM where it is in
/// force, or a suite that recorded no container at all.
fn expect_records(mut o: Outcome) -> Outcome {
    let Some(r) = &o.records else {
        return o;
    };
    let listed = o.lsm.split(',').any(|l| l.trim() == "bpf");
    let works = o.hooks.split(", ").any(|h| h == "bpf-lsm=true");
    let mut problems = Vec::new();
    let claimed = r.bpf_lsm_kinds();
    let in_force = listed && works;
    if !claimed.is_empty() && !in_force {
        problems.push(format!(
            "the record claims bpf-lsm for {} rules, yet {}",
            claimed.join(", "),
            if listed {
                "the monitor's probe found BPF-LSM not in force"
            } else {
                "bpf is not among the LSMs"
            }
        ));
    }
    if r.refusals > 0 && works {
        problems.push(format!(
            "{} container(s) refused for want of BPF-LSM where it is in force",
            r.refusals
        ));
    }
    if r.containers == 0 {
        problems.push("no container's enforcement record was kept".to_string());
    }
    if !problems.is_empty() {
        let problem = problems.join("; ");
        o.problem = Some(match o.problem.take() {
            Some(p) => format!("{p}; {problem}"),
            None => problem,
        });
    }
    o
}

/// Runs a boot; a guest that hung (seen once in about ten boots under emulation: soft lockups
/// of the guest's CPU on a loaded host) is booted once more, and the row says so and keeps the
/// hung boot's console log. A second hang, or any failed test, still fails the row.
fn boot_once_more_if_hung(
    boot: &Boot<'_>,
    binaries: &[guest::TestBinary],
    job: Option<&suite::Job<'_>>,
    ws: &Workspace,
) -> Result<guest::Outcome> {
    let first = guest::run_boot(boot, binaries, job, &ws.children)?;
    if !first.hung {
        return Ok(first);
    }
    let name = boot
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kept = boot.run_dir.with_file_name(format!("{name}-hung"));
    let _ = fs::remove_dir_all(&kept);
    fs::rename(boot.run_dir, &kept)
        .with_context(|| format!("keep the hung boot's logs in {}", kept.display()))?;
    eprintln!(
        "xtask: matrix: the guest hung (stopped after {} s; logs in {}): booting it once more",
        boot.timeout.as_secs(),
        kept.display()
    );
    let mut again = guest::run_boot(boot, binaries, job, &ws.children)?;
    again.hung_before = Some(kept.join("console.log"));
    Ok(again)
}

/// `cargo xtask matrix`: the matrix alone (with `--bench`, the bench in the guests instead;
/// with `--detections`, the detection corpus),
/// stopping qemu by its process group on SIGINT/SIGTERM.
pub fn command(opts: &crate::tasks::Opts) -> Result<()> {
    let ws = Workspace::locate()?;
    let _stop = crate::procs::stop_on_signal(ws.children.clone(), || {})?;
    crate::apt::ensure(crate::apt::PACKAGES)?;
    if opts.bench {
        bench::run(&ws, &opts.filters, opts.rounds, opts.scale, opts.pods)
    } else if opts.detections {
        detections::run(&ws, &opts.filters, opts.seconds)
    } else {
        run(&ws, &opts.filters)
    }
}

fn summary(r: &Row) -> String {
    match &r.outcome {
        Ok(o) if o.passed() => format!(
            "{}: {} passed{} in {:.0} s{}",
            r.label,
            o.tests_passed,
            o.suite
                .as_ref()
                .map(|s| format!(", security suite through containerd {}", s.cell()))
                .unwrap_or_default(),
            r.seconds,
            o.hung_before
                .as_ref()
                .map(|c| format!(", on a second boot after one hung ({})", c.display()))
                .unwrap_or_default()
        ),
        Ok(o) => format!(
            "{}: {} passed, {} failed{}{}{}",
            r.label,
            o.tests_passed,
            o.tests_failed,
            if o.failed_names.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.failed_names.join(", "))
            },
            o.problem
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default(),
            o.suite
                .as_ref()
                .filter(|s| !s.ok())
                .map(|s| format!(
                    "; security suite through containerd {}: {}",
                    s.cell(),
                    s.problems.join("; ")
                ))
                .unwrap_or_default()
        ),
        Err(e) => format!("{}: {e:#}", r.label),
    }
}

/// Which boots run which checks through containerd, for the table's heading: `6.1, 6.12:
/// `a`, `b`; 5.10, ...: `a``.
fn checks_per_boot() -> String {
    let mut groups: Vec<(&[&str], Vec<&str>)> = Vec::new();
    for b in BOOTS.iter().filter(|b| !b.cri.is_empty()) {
        match groups.iter_mut().find(|(c, _)| *c == b.cri) {
            Some((_, labels)) => labels.push(b.label),
            None => groups.push((b.cri, vec![b.label])),
        }
    }
    groups
        .iter()
        .map(|(checks, labels)| {
            let checks: Vec<String> = checks.iter().map(|c| format!("`{c}`")).collect();
            format!("{}: {}", labels.join(", "), checks.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The results in Markdown, labelled with how the guests ran.
fn table(rows: &[Row], accel: Accel, lanes: usize, total: Duration) -> String {
    let mut s = format!(
        "Kernel matrix, guests under {} ({} vCPU(s), 2 GiB, {} at a time), cgroup v2 only; \
         {:.0} s in all. \
         The suite column: the security suite's checks under {} through containerd in the \
         guest ({}).\n\n\
         The records column: per rule kind, the enforcers the shims recorded in those \
         containers, checked against the LSMs and the monitor's BPF-LSM probe.\n\n\
         | boot | kernel | package | LSMs | hooks chosen | passed | failed | suite | records | seconds |\n\
         | --- | --- | --- | --- | --- | ---: | ---: | --- | --- | ---: |\n",
        accel.name(),
        accel.cpus(),
        lanes,
        total.as_secs_f64(),
        suite::HANDLERS,
        checks_per_boot(),
    );
    for r in rows {
        match &r.outcome {
            Ok(o) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                    r.label,
                    o.kernel,
                    r.version,
                    o.lsm,
                    o.hooks,
                    o.tests_passed,
                    o.tests_failed,
                    o.suite
                        .as_ref()
                        .map_or("not run".into(), suite::SuiteOutcome::cell),
                    o.records
                        .as_ref()
                        .map_or("none".into(), guest::Records::cell),
                    r.seconds
                );
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "| {} | not run: {} | {} | | | 0 | 0 | | | {:.0} |",
                    r.label,
                    format!("{e:#}").replace('|', "/"),
                    r.version,
                    r.seconds
                );
            }
        }
    }
    for r in rows {
        if let Ok(o) = &r.outcome {
            if !o.passed() || o.hung_before.is_some() {
                let _ = writeln!(s, "\n{}", summary(r));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_label_picks_that_boot_alone() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(picked("6.1", &f(&["6.1"])) && !picked("6.12", &f(&["6.1"])));
        assert!(picked("5.10", &f(&["5.10"])) && !picked("5.10 lsm+bpf", &f(&["5.10"])));
        assert!(picked("5.10 lsm+bpf", &f(&["lsm"])) && picked("sid", &f(&[])));
        assert!(!picked("sid", &f(&["6.1"])));
    }

    #[test]
    fn a_record_that_disagrees_with_the_kernel_fails_the_boot() {
        let boot = |lsm: &str, bpf_lsm: bool, kind_enforcer: (&str, &str), refusals: usize| {
            let mut r = guest::Records {
                containers: 1,
                refusals,
                ..guest::Records::default()
            };
            r.enforcers
                .entry(kind_enforcer.0.into())
                .or_default()
                .insert(kind_enforcer.1.into());
            expect_records(Outcome {
                lsm: lsm.into(),
                hooks: format!("syscall hook=fexit, bpf-lsm={bpf_lsm}"),
                tests_passed: 3,
                records: Some(r),
                ..Outcome::default()
            })
        };
        let with_bpf = "lockdown,capability,yama,apparmor,bpf";
        let without = "lockdown,capability,yama,apparmor,tomoyo";
        assert!(boot(with_bpf, true, ("file", "bpf-lsm"), 0).passed());
        assert!(boot(without, false, ("file", "bind-mount-mask"), 2).passed());
        let unlisted = boot(without, false, ("file", "bpf-lsm"), 0);
        assert!(unlisted
            .problem
            .unwrap()
            .contains("claims bpf-lsm for file rules, yet bpf is not among the LSMs"));
        let not_running = boot(with_bpf, false, ("process", "bpf-lsm"), 0);
        assert!(!not_running.passed());
        let refused = boot(with_bpf, true, ("file", "bpf-lsm"), 1);
        assert!(refused
            .problem
            .unwrap()
            .contains("1 container(s) refused for want of BPF-LSM where it is in force"));
        let mut empty = boot(with_bpf, true, ("file", "bpf-lsm"), 0);
        empty.problem = None;
        empty.records = Some(guest::Records::default());
        assert!(!expect_records(empty).passed());
    }

    #[test]
    fn a_boot_whose_monitor_chose_another_hook_fails() {
        let chose = |hooks: &str| Outcome {
            hooks: hooks.into(),
            tests_passed: 3,
            ..Outcome::default()
        };
        let ok = expect_hook(chose("syscall hook=fexit, bpf-lsm=true"), "fexit");
        assert!(ok.passed(), "{:?}", ok.problem);
        let fell_back = expect_hook(chose("syscall hook=raw-sys-exit, bpf-lsm=true"), "fexit");
        assert!(!fell_back.passed());
        assert!(fell_back
            .problem
            .unwrap()
            .contains("not syscall hook=fexit"));
        let no_load = expect_hook(chose("monitor did not load: x"), "fexit");
        assert!(!no_load.passed());
    }
}
