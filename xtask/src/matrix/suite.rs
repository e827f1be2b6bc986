//! The security suite (or the monitor bench) through a real containerd inside a guest: on the
//! host, what the guest needs (the release shim and palisade-init, the suite binary, xtask
//! itself, the test images) and the lines of the guest script that run it; in the guest,
//! `xtask matrix-guest-suite`, which sets up the same private containerd as `cargo xtask test`
//! (env.rs) on the guest's root disk, runs the suite's chosen checks (or, with `--bench`, the
//! monitor bench) and always tears it down.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _, Result};

use crate::cargo::Workspace;
use crate::env::{self, Env};
use crate::images::{self, Images};

/// The checks run in the guests (each name a `--filter`, matched as a substring): every
/// KubeArmor policy check and every monitor check of the security suite, whose enforcement and
/// detections depend on the kernel (landlock's ABI for the process allow-list, BPF-LSM or the
/// exec kill for a process Block, the cgroup socket hooks for `fromSource` and raw sockets,
/// BPF-LSM or the masks for file Block rules, each checked against the container's enforcement
/// record; the monitor's hooks for detections, attribution and content identity), and the
/// learned profile's checks that record and enforce through the kernel (learning through the
/// BPF-LSM and fexit hooks that production kernels give the monitor, and the CI host's 6.18
/// does not; enforcing through landlock, seccomp, BPF-LSM and the cgroup sock_addr hook; the
/// drops counted in the kernel; the canary's rollback on refusals seen there). The rest of the
/// suite (sinks, the gate, bad input such as `profile_bad_annotation`, compromise) does not
/// depend on the kernel and runs on the host in `cargo xtask test`.
pub const FILTERS: &[&str] = &[
    "policy_process_allow_list",
    "policy_block_apt",
    "policy_sockets_from_source",
    "policy_service_account_token",
    "policy_file_glob_and_source",
    "policy_file_owner_only",
    "policy_file_integrity",
    "policy_raw_socket_block",
    "policy_selects_by_pod_labels",
    "policy_status_per_container",
    "monitor_attribution",
    "monitor_block_rule_per_pod",
    "monitor_shell_and_package_manager",
    "monitor_refused_renamed_and_credentials",
    "profile_learn_record_export",
    "profile_drops_refuse_promotion",
    "profile_enforce_refuses_departures",
    "profile_canary_rolls_back",
];
/// The checks run in the 5.10 guests: those whose outcome turns on BPF-LSM. With Debian 11's
/// default LSMs (`bpf` not among them) a policy that needs BPF-LSM (a glob, a fromSource file
/// rule) is refused with the reason, the service account token is masked and a process Block is
/// killed at exec; with `bpf` added the same policies are enforced by BPF-LSM. Each checks the
/// container's enforcement record against the kernel's LSM list.
pub const FILTERS_5_10: &[&str] = &[
    "policy_file_glob_and_source",
    "policy_service_account_token",
    "policy_block_apt",
    "policy_status_per_container",
];
/// The handlers they run under (the policy checks concern palisade only; the monitor's
/// attribution check records runc's behaviour for comparison).
pub const HANDLERS: &str = "runc,palisade";

/// Where the private containerd's run dirs go in the guest: on its root disk (ext4: overlayfs
/// and unix sockets work there, not over 9p), with short socket paths.
pub(super) const GUEST_BASE: &str = "/var/lib/palisade-matrix";

/// The host's binaries the guest runs, all under the workspace's target directory (shared
/// read-only into the guest at the same path).
pub struct Payload {
    pub xtask: PathBuf,
    pub shim: PathBuf,
    pub conformance: PathBuf,
    pub images: Images,
}

/// Builds the release shim and the suite binary, and the test images (cached as for `test`);
/// checks that every binary lies under the shared target directory.
pub fn prepare(ws: &Workspace) -> Result<Payload> {
    let shim = ws.build_shim().context("build the shim for the guests")?;
    let conformance = ws.build_conformance()?;
    let xtask = own_copy(ws)?;
    let base = ws.root.join(".palisade-run");
    let images = images::build(&ws.root, &base.join("images")).context("build test images")?;
    for b in [&shim, &conformance, &xtask] {
        if !b.starts_with(&ws.target) {
            bail!(
                "{} is not under {}, which the guests see",
                b.display(),
                ws.target.display()
            );
        }
    }
    Ok(Payload {
        xtask,
        shim,
        conformance,
        images,
    })
}

/// A copy of the running xtask under the target directory, which the guests run: the build
/// this run makes (`cargo test --workspace` builds the xtask binary for its tests) may replace
/// the file it was started from, which then leaves only a "(deleted)" name behind.
fn own_copy(ws: &Workspace) -> Result<PathBuf> {
    let dir = ws.target.join("palisade-bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let copy = dir.join("xtask-guest");
    let part = dir.join("xtask-guest.part");
    // /proc/self/exe opens the running binary even when its file was replaced.
    std::fs::copy("/proc/self/exe", &part)
        .with_context(|| format!("copy xtask's own binary to {}", part.display()))?;
    std::fs::rename(&part, &copy).with_context(|| format!("rename to {}", copy.display()))?;
    Ok(copy)
}

/// What a guest runs through containerd after (or instead of) the kernel tests.
pub enum Job<'a> {
    /// These checks of the security suite (each a `--filter`) under [`HANDLERS`].
    Suite(&'a Payload, &'a [&'a str]),
    /// The monitor bench with an unwatched loop; the probe binary is staged beside the images.
    Bench(&'a Payload, &'a BenchArgs),
    /// The detection corpus (`super::detections`).
    Detections(&'a Payload, &'a super::detections::Args),
}

impl Job<'_> {
    fn payload(&self) -> &Payload {
        match self {
            Job::Suite(p, _) | Job::Bench(p, _) | Job::Detections(p, _) => p,
        }
    }
}

/// The monitor bench's options in the guests.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub rounds: u32,
    pub scale: f64,
    pub pods: u32,
    /// `palisade-probe` compiled on the host (static), for the unwatched loop.
    pub probe: PathBuf,
}

/// Copies the image archives (and the bench's probe) into the boot's run share (the image
/// cache is not shared).
pub fn stage(job: &Job<'_>, run_dir: &Path) -> Result<()> {
    let p = job.payload();
    let dir = run_dir.join("images");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    fs::copy(&p.images.busybox, dir.join("busybox.tar")).context("stage the busybox image")?;
    fs::copy(&p.images.pause, dir.join("pause.tar")).context("stage the pause image")?;
    if let Job::Bench(_, b) = job {
        fs::copy(&b.probe, run_dir.join("palisade-probe")).context("stage the probe")?;
    }
    if let Job::Detections(_, a) = job {
        super::detections::stage(a, run_dir)?;
    }
    Ok(())
}

/// The guest script's lines for `job`.
pub fn job_script(job: &Job<'_>, run: &str) -> String {
    match job {
        Job::Suite(p, checks) => script(p, checks, run),
        Job::Bench(p, b) => bench_script(p, b, run),
        Job::Detections(p, a) => super::detections::script(p, a, run),
    }
}

/// The files CRI copies from the node into every pod.
pub(super) const NODE_FILES: &str = r#"[ -s /etc/resolv.conf ] || echo "nameserver 127.0.0.1" > /etc/resolv.conf
[ -s /etc/hosts ] || echo "127.0.0.1 localhost" > /etc/hosts
[ -s /etc/hostname ] || echo matrix > /etc/hostname
"#;

/// The lines of the guest script that run the monitor bench: its table in `bench.md`, the
/// harness's lines in `bench.err`, the exit code in `bench.rc`.
fn bench_script(p: &Payload, b: &BenchArgs, run: &str) -> String {
    format!(
        "# The monitor bench through containerd, and a loop outside any container.\n\
         {NODE_FILES}\
         {xtask} matrix-guest-suite --bench --rounds {rounds} --scale {scale} --pods {pods} \\\n    \
         --probe {run}/palisade-probe --shim {shim} --conformance {conformance} \\\n    \
         --busybox {run}/images/busybox.tar --pause {run}/images/pause.tar \
         > {run}/bench.md 2> {run}/bench.err\n\
         echo $? > {run}/bench.rc\n",
        xtask = p.xtask.display(),
        shim = p.shim.display(),
        conformance = p.conformance.display(),
        rounds = b.rounds,
        scale = b.scale,
        pods = b.pods,
    )
}

/// The lines of the guest script that run the suite (after the kernel tests); `run` is the run
/// share's path in the guest. The results: `suite.log` (the suite's table), `suite.err`
/// (the harness's and containerd's lines), `suite.rc`, `suite.seconds`, and what the shims
/// recorded ([`RECORDS_FILE`], [`REFUSALS_FILE`]).
fn script(p: &Payload, checks: &[&str], run: &str) -> String {
    let filters: String = checks.iter().map(|f| format!(" --filter {f}")).collect();
    GuestJob {
        title: "The security suite through containerd.",
        command: "matrix-guest-suite",
        args: format!("--handlers {HANDLERS}{filters} --out {run}"),
        stdout: "suite.log",
        name: "suite",
    }
    .script(p, run)
}

/// A timed run of a guest command (`xtask matrix-guest-suite`, `matrix-guest-detections`)
/// on the node's files, in a guest script.
pub(super) struct GuestJob<'a> {
    /// The script comment heading the lines.
    pub title: &'a str,
    pub command: &'a str,
    /// The options after the node's files.
    pub args: String,
    /// The file of the run share that keeps its stdout.
    pub stdout: &'a str,
    /// The run share's `NAME.err`, `NAME.rc` and `NAME.seconds` keep its stderr, exit code
    /// and time.
    pub name: &'a str,
}

impl GuestJob<'_> {
    /// The script lines; `run` is the run share's path in the guest.
    pub(super) fn script(&self, p: &Payload, run: &str) -> String {
        let GuestJob {
            title,
            command,
            args,
            stdout,
            name,
        } = self;
        format!(
            r#"# {title}
{NODE_FILES}t0=$(date +%s)
{xtask} {command} --shim {shim} --conformance {conformance} \
    --busybox {run}/images/busybox.tar --pause {run}/images/pause.tar \
    {args} > {run}/{stdout} 2> {run}/{name}.err
echo $? > {run}/{name}.rc
echo $(( $(date +%s) - t0 )) > {run}/{name}.seconds
"#,
            xtask = p.xtask.display(),
            shim = p.shim.display(),
            conformance = p.conformance.display(),
        )
    }
}

/// What the suite reported in a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteOutcome {
    pub passed: usize,
    pub failed: usize,
    pub seconds: u64,
    /// The suite's failure lines (`  check [handler]: reason`), or why it gave no table.
    pub problems: Vec<String>,
}

impl SuiteOutcome {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.problems.is_empty() && self.passed > 0
    }

    /// The cell of the results table.
    pub fn cell(&self) -> String {
        format!(
            "{} passed, {} failed ({} s)",
            self.passed, self.failed, self.seconds
        )
    }
}

/// Reads the suite's results from the run share: its table's closing counts and failures.
pub fn outcome(log: &str, err: &str, rc: &str, seconds: &str) -> SuiteOutcome {
    let mut o = SuiteOutcome {
        seconds: seconds.trim().parse().unwrap_or(0),
        ..SuiteOutcome::default()
    };
    let closing = log.lines().rev().find_map(|l| {
        let (p, rest) = l.trim().split_once(" passed, ")?;
        let f = rest.strip_suffix(" failed")?;
        Some((p.parse().ok()?, f.parse().ok()?))
    });
    match closing {
        Some((p, f)) => {
            o.passed = p;
            o.failed = f;
            let mut in_failures = false;
            for l in log.lines() {
                if l.starts_with("failures:") {
                    in_failures = true;
                } else if in_failures && l.starts_with("  ") {
                    o.problems.push(l.trim().to_string());
                }
            }
            if f == 0 && rc.trim() != "0" {
                o.problems.push(format!("the suite exited {}", rc.trim()));
            }
        }
        None => {
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            o.problems.push(format!(
                "the suite gave no table (exit {}): {}",
                if rc.trim().is_empty() {
                    "none"
                } else {
                    rc.trim()
                },
                last.trim()
            ));
        }
    }
    o
}

/// The host side of one boot of `matrix bench` or `matrix detections` (`command`): the boot's
/// run directory below `last`, and its kernel, fetched into `cache`; says on stderr that the
/// boot starts, with `what` after the kernel and the accelerator.
pub(super) fn fetch_boot(
    command: &str,
    spec: &super::BootSpec,
    cache: &Path,
    last: &Path,
    busybox: &Path,
    accel: super::qemu::Accel,
    what: &str,
) -> Result<(PathBuf, super::kernels::Kernel)> {
    let dir = last.join(spec.label.replace([' ', '+'], "-"));
    let k = super::kernels::fetch(cache, spec.suite, busybox)
        .with_context(|| format!("fetch the {} kernel", spec.suite))?;
    eprintln!(
        "xtask: {command}: booting {} ({}, {}){what}",
        spec.label,
        k.release,
        accel.name()
    );
    Ok((dir, k))
}

/// The guest side's options.
struct GuestArgs {
    node: GuestNode,
    handlers: String,
    filters: Vec<String>,
    /// `--out`: where the containers' enforcement records and BPF-LSM refusals are kept.
    out: Option<PathBuf>,
    /// `--bench`: the monitor bench's options (rounds, scale, pods, probe) instead of the suite.
    bench: Option<Vec<(String, String)>>,
}

fn parse(args: &[String]) -> Result<GuestArgs> {
    let mut handlers = HANDLERS.to_string();
    let mut filters = Vec::new();
    let mut out = None;
    let mut bench: Option<Vec<(String, String)>> = None;
    let node = GuestNode::parse("matrix-guest-suite", args, |a, it| {
        match a {
            "--bench" => {
                bench.get_or_insert_with(Vec::new);
            }
            "--handlers" => handlers = value(a, it)?,
            "--filter" => filters.push(value(a, it)?),
            "--out" => out = Some(value(a, it)?.into()),
            "--rounds" | "--scale" | "--pods" => {
                let v = value(a, it)?;
                bench.get_or_insert_with(Vec::new).push((a.to_string(), v));
            }
            "--probe" => {
                let v = value(a, it)?;
                bench
                    .get_or_insert_with(Vec::new)
                    .push(("--host-probe".into(), v));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(GuestArgs {
        node,
        handlers,
        filters,
        out,
        bench,
    })
}

/// Fails, naming the command and the option, unless each of `files` is a file.
pub(super) fn require_files(command: &str, files: &[(&str, &PathBuf)]) -> Result<()> {
    for (name, p) in files {
        if !p.is_file() {
            bail!("{command}: {name} {}: no such file", p.display());
        }
    }
    Ok(())
}

/// The value after option `a` in a guest command's arguments.
pub(super) fn value(a: &str, it: &mut std::slice::Iter<'_, String>) -> Result<String> {
    it.next()
        .cloned()
        .with_context(|| format!("{a} needs a value"))
}

/// What a guest's private containerd is started with.
#[derive(Debug, Default)]
pub(super) struct GuestNode {
    pub shim: PathBuf,
    pub conformance: PathBuf,
    pub busybox: PathBuf,
    pub pause: PathBuf,
}

impl GuestNode {
    /// Reads guest command `command`'s options: `--shim`, `--conformance`, `--busybox` and
    /// `--pause` here (each must name a file), every other one through `other`, which takes
    /// its value from the iterator with [`value`] when it has one and answers `false` for an
    /// option it does not know.
    pub(super) fn parse(
        command: &str,
        args: &[String],
        mut other: impl FnMut(&str, &mut std::slice::Iter<'_, String>) -> Result<bool>,
    ) -> Result<Self> {
        let mut node = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let file = match a.as_str() {
                "--shim" => &mut node.shim,
                "--conformance" => &mut node.conformance,
                "--busybox" => &mut node.busybox,
                "--pause" => &mut node.pause,
                _ if other(a, &mut it)? => continue,
                _ => bail!("{command}: unknown option {a}"),
            };
            *file = value(a, &mut it)?.into();
        }
        require_files(
            command,
            &[
                ("--shim", &node.shim),
                ("--conformance", &node.conformance),
                ("--busybox", &node.busybox),
                ("--pause", &node.pause),
            ],
        )?;
        Ok(node)
    }
}

/// Inside a guest: starts the private containerd and its control server, runs `body`, calls
/// `after` (whatever the result), and always tears containerd down; when `body` failed,
/// containerd's last log lines (the shims' with them) go to stderr, which the run share keeps.
pub(super) fn with_guest_node(
    node: &GuestNode,
    body: impl FnOnce(&Env) -> Result<std::process::ExitStatus>,
    after: impl FnOnce(&Env),
) -> Result<std::process::ExitStatus> {
    let env = Env::new(
        Path::new(GUEST_BASE),
        env::Options {
            shim: Some(node.shim.clone()),
            conformance: node.conformance.clone(),
            containerd_bin: None,
        },
    )?;
    let images = Images {
        busybox: node.busybox.clone(),
        pause: node.pause.clone(),
    };
    let result = env
        .start(&images)
        .and_then(|()| env.serve_control())
        .and_then(|()| body(&env));
    if !matches!(&result, Ok(st) if st.success()) {
        eprintln!(
            "xtask: containerd log (last lines):\n{}",
            crate::procs::tail(&env.log, 60)
        );
    }
    after(&env);
    env.teardown(false);
    result
}

/// The file in a boot's run share with the shims' `enforcement-record` events (JSON lines).
pub const RECORDS_FILE: &str = "records.jsonl";
/// The file with containerd's log lines of containers refused because BPF-LSM is not in force.
pub const REFUSALS_FILE: &str = "refusals.log";
/// The words of every refusal of a rule only BPF-LSM carries (`sandbox/src/enforce/fs.rs`).
pub const BPF_LSM_REFUSAL: &str = "BPF-LSM is not in force here";

/// Keeps, in `out`, the `enforcement-record` events of the shims' log and containerd's log
/// lines that refuse a container for want of BPF-LSM: what the matrix checks against the
/// kernel (`super::records`).
fn keep_records(env: &Env, out: &Path) -> Result<()> {
    let log = env.events_dir().join("events.jsonl");
    let events = fs::read_to_string(&log).unwrap_or_default();
    let records: String = events
        .lines()
        .filter(|l| l.contains("\"enforcement-record\""))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(out.join(RECORDS_FILE), records)
        .with_context(|| format!("write {}", out.join(RECORDS_FILE).display()))?;
    let containerd = fs::read_to_string(&env.log).unwrap_or_default();
    let refusals: String = containerd
        .lines()
        .filter(|l| l.contains(BPF_LSM_REFUSAL))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(out.join(REFUSALS_FILE), refusals)
        .with_context(|| format!("write {}", out.join(REFUSALS_FILE).display()))
}

/// `xtask matrix-guest-suite`, run inside a guest: the private containerd, the security
/// suite's chosen checks (their table on stdout) or with `--bench` the monitor bench (its
/// Markdown on stdout), teardown; fails when the suite or bench did.
pub fn guest_main(args: &[String]) -> Result<()> {
    let g = parse(args)?;
    let result = with_guest_node(
        &g.node,
        |env| {
            if let Some(bench) = &g.bench {
                let mut cmd = crate::tasks::suite_cmd_of(env, &g.node.conformance, "bench");
                cmd.args(["--suite", "monitor"]);
                for (flag, v) in bench {
                    cmd.arg(flag).arg(v);
                }
                cmd.stdin(Stdio::null());
                return env.run_child(&mut cmd);
            }
            let mut cmd = env.security_cmd(&g.node.conformance, &g.handlers, &g.filters);
            cmd.stdin(Stdio::null());
            env.run_child(&mut cmd)
        },
        |env| {
            if let (Some(out), None) = (&g.out, &g.bench) {
                if let Err(e) = keep_records(env, out) {
                    eprintln!("xtask: keep the enforcement records: {e:#}");
                }
            }
        },
    );
    match result {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => bail!(
            "the {} exited {st}",
            if g.bench.is_some() {
                "monitor bench"
            } else {
                "security suite"
            }
        ),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_s_counts_and_failures_are_read_from_its_table() {
        let log = "security check  runc  palisade\npolicy_block_apt  n/a  PASS ok\n\
                   \nfailures:\n  monitor_attribution [palisade]: no event\n\n3 passed, 1 failed\n";
        let o = outcome(log, "", "1", "95\n");
        assert_eq!((o.passed, o.failed, o.seconds), (3, 1, 95));
        assert_eq!(o.problems, ["monitor_attribution [palisade]: no event"]);
        assert!(!o.ok());
        let good = outcome("x\n\n10 passed, 0 failed\n", "", "0", "80");
        assert!(good.ok(), "{good:?}");
        assert_eq!(good.cell(), "10 passed, 0 failed (80 s)");
    }

    #[test]
    fn a_suite_without_a_table_says_why() {
        let o = outcome("", "xtask: start containerd: No such file\n", "1", "");
        assert!(!o.ok());
        assert_eq!(
            o.problems,
            ["the suite gave no table (exit 1): xtask: start containerd: No such file"]
        );
    }
}
