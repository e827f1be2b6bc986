//! What a guest runs and what it reports: the test binaries built on the host (seen in the
//! guest at their host paths through the read-only target share, so `CARGO_BIN_EXE_*` paths
//! hold), the hook probe, the security suite through containerd where the boot asks for it,
//! and the parsing of their results from the run share.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use super::initramfs::{EXIT_FILE, GUEST_SCRIPT, RUN_DIR};
use super::qemu::{self, Boot, TARGET_TAG};
use super::suite::{self, Job, SuiteOutcome};
use crate::cargo::Workspace;
use crate::procs::Children;

/// One test binary and the name its results are filed under.
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// The cargo build of the test binaries: the workspace's, as `cargo test --workspace` builds
/// them. Built per package (`-p palisade-monitor`), cargo resolves the features anew and
/// compiled some 60 crates again (75 s in a fresh-clone test run) that `cargo test` had just
/// built; this way, after `cargo test`, nothing is compiled.
const BUILD: &[&str] = &["test", "--workspace", "--no-run"];

/// The test binaries every guest runs, as (package, test target; empty for all of the
/// package's): the monitor's unit, kernel and binary tests, and the sandbox's kernel tests.
const GUEST_TESTS: &[(&str, &str)] = &[
    ("palisade-monitor", ""),
    ("palisade-sandbox", "kernel_features"),
    ("palisade-sandbox", "seccomp_kernel"),
];

/// Builds the test binaries (dev profile, as `cargo test` does) and lists those of
/// [`GUEST_TESTS`].
pub fn build_tests(ws: &Workspace, scratch: &Path) -> Result<Vec<TestBinary>> {
    let json = scratch.join("cargo-build.json");
    let file = fs::File::create(&json).with_context(|| format!("create {}", json.display()))?;
    eprintln!("xtask: matrix: cargo {}", BUILD.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = ws
        .children
        .status(
            Command::new(cargo)
                .args(BUILD)
                .arg("--message-format=json-render-diagnostics")
                .current_dir(&ws.root)
                .stdout(Stdio::from(file)),
        )
        .context("run cargo for the matrix's test binaries")?;
    if !st.success() {
        bail!("cargo {} failed: {st}", BUILD.join(" "));
    }
    let text = fs::read_to_string(&json).context("read cargo's messages")?;
    let _ = fs::remove_file(&json);
    let out = test_executables(&text, GUEST_TESTS);
    if out.is_empty() {
        bail!("cargo built no test binaries for the matrix");
    }
    Ok(out)
}

/// The test executables among cargo's JSON messages that `wanted` names (package, target or
/// empty for all), named `package-target[-kind]`.
fn test_executables(json: &str, wanted: &[(&str, &str)]) -> Vec<TestBinary> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .filter_map(|v| {
            let path = PathBuf::from(v["executable"].as_str()?);
            let package = package_name(v["package_id"].as_str().unwrap_or("crate"));
            let target = v["target"]["name"].as_str().unwrap_or("tests");
            if !wanted
                .iter()
                .any(|&(p, t)| p == package && (t.is_empty() || t == target))
            {
                return None;
            }
            let kind = v["target"]["kind"][0].as_str().unwrap_or("");
            let name = match kind {
                "lib" => format!("{package}-unit"),
                "bin" => format!("{package}-bin-{target}"),
                _ => format!("{package}-{target}"),
            };
            Some(TestBinary { name, path })
        })
        .collect()
}

/// The package's name in a cargo package id: `path+file:///w/dir#name@0.1.0`, or
/// `path+file:///w/name#0.1.0` when the directory has the package's name.
fn package_name(id: &str) -> String {
    let tail = id.rsplit('/').next().unwrap_or(id);
    match tail.split_once('#') {
        Some((dir, rest)) => rest.split_once('@').map_or(dir, |(name, _)| name),
        None => tail.split('@').next().unwrap_or(tail),
    }
    .to_string()
}

/// The pin root of the hook probe (its own, removed after).
const PROBE_PIN_ROOT: &str = "/sys/fs/bpf/palisade-matrix-probe";

/// The script a guest runs (as root, in the root disk, cgroup2 mounted): `target` is the
/// workspace's target directory, shared at the same path.
fn script(target: &Path, tests: &[TestBinary], job: Option<&Job<'_>>) -> String {
    let monitor = target.join("debug").join("palisade-monitor");
    let target = target.display();
    let monitor = monitor.display();
    let mut s = format!(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
R={RUN_DIR}
mkdir -p {target}
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 {TARGET_TAG} {target} || exit 90
uname -r > $R/kernel
cat /sys/kernel/security/lsm > $R/lsm 2>&1
cd /tmp
{monitor} hold {PROBE_PIN_ROOT} > $R/hold.out 2> $R/hold.err &
probe=$!
i=0
while [ $i -lt 600 ] && ! grep -q ready $R/hold.out && kill -0 $probe 2>/dev/null; do
    sleep 1; i=$((i + 1))
done
kill $probe 2>/dev/null; wait $probe
{monitor} cleanup {PROBE_PIN_ROOT} > /dev/null 2>&1
"#
    );
    for t in tests {
        s += &format!(
            "RUST_BACKTRACE=1 {} > $R/test-{name}.log 2>&1; echo $? > $R/test-{name}.rc\n",
            t.path.display(),
            name = t.name
        );
    }
    if let Some(j) = job {
        s += &suite::job_script(j, RUN_DIR);
    }
    s
}

/// What a boot reported.
#[derive(Debug, Default)]
pub struct Outcome {
    pub kernel: String,
    pub lsm: String,
    pub hooks: String,
    pub tests_passed: usize,
    pub tests_failed: usize,
    pub failed_names: Vec<String>,
    /// Something other than a failed test: a binary that ended without its summary, a guest
    /// that never finished its script.
    pub problem: Option<String>,
    /// The guest ran into its deadline and was stopped.
    pub hung: bool,
    /// The console log of an earlier boot of the same kernel that hung and was run again.
    pub hung_before: Option<PathBuf>,
    /// The security suite through containerd, in the boots that run it.
    pub suite: Option<SuiteOutcome>,
    /// What the shims recorded in the suite's containers, in the boots that run it.
    pub records: Option<Records>,
}

/// The enforcers the shims recorded for the containers of a boot's suite, per rule kind, and
/// how many containers were refused because a rule needed BPF-LSM that was not in force.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    /// Containers with an `enforcement-record` event.
    pub containers: usize,
    /// Rule kind (`file`, `process`, ...) to the enforcers recorded for its rules.
    pub enforcers: BTreeMap<String, BTreeSet<String>>,
    /// Containers refused for want of BPF-LSM (containerd's log lines saying so, counted once
    /// per container id they name: the shim's warning and containerd's error name the same).
    pub refusals: usize,
}

impl Records {
    /// The rule kinds with a rule recorded as enforced by BPF-LSM.
    pub fn bpf_lsm_kinds(&self) -> Vec<&str> {
        self.enforcers
            .iter()
            .filter(|(_, e)| e.iter().any(|e| e.contains("bpf-lsm")))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The table's cell: `file: bpf-lsm, seccomp; process: bpf-lsm; refused: 1`.
    pub fn cell(&self) -> String {
        let mut parts: Vec<String> = self
            .enforcers
            .iter()
            .map(|(k, e)| format!("{k}: {}", e.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        parts.push(format!("refused for want of BPF-LSM: {}", self.refusals));
        format!("{} containers; {}", self.containers, parts.join("; "))
    }
}

/// Reads the records kept by the guest ([`suite::RECORDS_FILE`], [`suite::REFUSALS_FILE`]).
pub fn records_of(jsonl: &str, refusals: &str) -> Records {
    let mut refused = BTreeSet::new();
    for (n, l) in refusals
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(suite::BPF_LSM_REFUSAL))
    {
        let id = l
            .split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() == 64)
            .map_or_else(|| format!("line {n}"), str::to_string);
        refused.insert(id);
    }
    let mut r = Records {
        refusals: refused.len(),
        ..Records::default()
    };
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(rules) = v.pointer("/evidence/rules").and_then(|r| r.as_array()) else {
            continue;
        };
        r.containers += 1;
        for rule in rules {
            let kind = rule["kind"].as_str().unwrap_or("?").to_string();
            let enforcer = rule["enforcer"].as_str().unwrap_or("?").to_string();
            r.enforcers.entry(kind).or_default().insert(enforcer);
        }
    }
    r
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.tests_failed == 0
            && self.problem.is_none()
            && self.tests_passed > 0
            && self.suite.as_ref().is_none_or(SuiteOutcome::ok)
    }
}

/// Boots one guest with `tests` (and then `job` through containerd) and reads what it
/// reported from its run share (a bench's figures are read by its caller).
pub fn run_boot(
    boot: &Boot<'_>,
    tests: &[TestBinary],
    job: Option<&Job<'_>>,
    children: &Children,
) -> Result<Outcome> {
    let dir = boot.run_dir;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if let Some(j) = job {
        suite::stage(j, dir)?;
    }
    fs::write(dir.join(GUEST_SCRIPT), script(boot.target, tests, job))
        .context("write the guest script")?;
    let finished = qemu::run(boot, children)?;
    let read = |name: &str| {
        fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut o = Outcome {
        kernel: read("kernel"),
        lsm: read("lsm"),
        hooks: hooks_of(&read("hold.out"), &read("hold.err")),
        ..Outcome::default()
    };
    let mut problems = Vec::new();
    if !finished {
        o.hung = true;
        problems.push(format!("stopped after {} s", boot.timeout.as_secs()));
    }
    match read(EXIT_FILE).as_str() {
        "" => problems.push(format!(
            "the guest script did not finish (console: {})",
            crate::procs::tail(&boot.console, 5).replace('\n', " / ")
        )),
        "0" => {}
        code => problems.push(format!("the guest script exited {code}")),
    }
    for t in tests {
        let log = read(&format!("test-{}.log", t.name));
        let rc = read(&format!("test-{}.rc", t.name));
        match counts(&log) {
            Some((p, f)) => {
                o.tests_passed += p;
                o.tests_failed += f;
                o.failed_names.extend(failed_tests(&log));
                if f == 0 && rc != "0" {
                    problems.push(format!("{} exited {rc} with no failed test", t.name));
                }
            }
            None => problems.push(format!(
                "{} gave no results (exit {})",
                t.name,
                if rc.is_empty() { "none" } else { &rc }
            )),
        }
    }
    if let Some(Job::Suite(..)) = job {
        o.suite = Some(suite::outcome(
            &read("suite.log"),
            &read("suite.err"),
            &read("suite.rc"),
            &read("suite.seconds"),
        ));
        o.records = Some(records_of(
            &read(suite::RECORDS_FILE),
            &read(suite::REFUSALS_FILE),
        ));
    }
    if !problems.is_empty() {
        o.problem = Some(problems.join("; "));
    }
    Ok(o)
}

/// What the hook probe said it chose, or why it did not load.
fn hooks_of(out: &str, err: &str) -> String {
    if !out.contains("ready") {
        let last = err.lines().last().unwrap_or("no output");
        return format!("monitor did not load: {}", last.replace('|', "/"));
    }
    err.lines()
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.trim(), v.trim())))
        .filter(|(k, _)| !k.contains(' ') || k.starts_with("syscall"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The passed and failed counts over every `test result:` line of a libtest log.
fn counts(log: &str) -> Option<(usize, usize)> {
    let mut total: Option<(usize, usize)> = None;
    for l in log.lines().filter(|l| l.starts_with("test result:")) {
        let num = |word: &str| -> usize {
            l.split(';')
                .find_map(|part| part.trim().strip_suffix(word))
                .and_then(|n| n.trim().rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let (p, f) = total.unwrap_or_default();
        total = Some((p + num("passed"), f + num("failed")));
    }
    total
}

/// The names of the failed tests in a libtest log.
fn failed_tests(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_added_up_with_the_failed_names() {
        let log = "test a ... ok\ntest pins::b ... FAILED\n\
                   test result: FAILED. 23 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\n\
                   test result: ok. 2 passed; 0 failed; 0 ignored\n";
        assert_eq!(counts(log), Some((25, 3)));
        assert_eq!(failed_tests(log), ["pins::b"]);
        assert_eq!(counts("thread main panicked"), None);
    }

    #[test]
    fn cargo_messages_give_the_test_executables() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/monitor#palisade-monitor@0.1.0","target":{"kind":["lib"],"name":"palisade_monitor"},"profile":{"test":true},"executable":"/w/target/debug/deps/palisade_monitor-1"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/monitor#palisade-monitor@0.1.0","target":{"kind":["test"],"name":"kernel"},"profile":{"test":true},"executable":"/w/target/debug/deps/kernel-2"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/monitor#palisade-monitor@0.1.0","target":{"kind":["bin"],"name":"palisade-monitor"},"profile":{"test":false},"executable":"/w/target/debug/palisade-monitor"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/sandbox#palisade-sandbox@0.1.0","target":{"kind":["test"],"name":"kernel_features"},"profile":{"test":true},"executable":"/w/target/debug/deps/kernel_features-3"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/sandbox#palisade-sandbox@0.1.0","target":{"kind":["test"],"name":"seccomp_user"},"profile":{"test":true},"executable":"/w/target/debug/deps/seccomp_user-4"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/gate#palisade-gate@0.1.0","target":{"kind":["lib"],"name":"palisade_gate"},"profile":{"test":true},"executable":"/w/target/debug/deps/palisade_gate-5"}"#,
            "\n"
        );
        let t = test_executables(json, GUEST_TESTS);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "palisade-monitor-unit",
                "palisade-monitor-kernel",
                "palisade-sandbox-kernel_features"
            ]
        );
        assert_eq!(t[1].path, PathBuf::from("/w/target/debug/deps/kernel-2"));
        assert_eq!(package_name("path+file:///w/xtask#0.1.0"), "xtask");
    }

    #[test]
    fn the_script_probes_the_hooks_and_files_each_binary_s_results() {
        let t = [TestBinary {
            name: "palisade-monitor-kernel".into(),
            path: PathBuf::from("/w/target/debug/deps/kernel-2"),
        }];
        let s = script(Path::new("/w/target"), &t, None);
        assert!(s.contains(
            "mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 target /w/target"
        ));
        assert!(!s.contains("matrix-guest-suite"));
        assert!(
            s.contains("/w/target/debug/palisade-monitor hold /sys/fs/bpf/palisade-matrix-probe")
        );
        assert!(s.contains("/w/target/debug/deps/kernel-2 > $R/test-palisade-monitor-kernel.log"));
    }

    #[test]
    fn a_containerd_boot_runs_the_suite_after_the_tests() {
        let p = suite::Payload {
            xtask: PathBuf::from("/w/target/debug/xtask"),
            shim: PathBuf::from("/w/target/palisade-bin/containerd-shim-palisade-v2"),
            conformance: PathBuf::from("/w/target/debug/palisade-conformance"),
            images: crate::images::Images {
                busybox: PathBuf::from("/c/busybox.tar"),
                pause: PathBuf::from("/c/pause.tar"),
            },
        };
        let t = [TestBinary {
            name: "k".into(),
            path: PathBuf::from("/w/target/debug/deps/kernel-2"),
        }];
        let s = script(
            Path::new("/w/target"),
            &t,
            Some(&Job::Suite(&p, suite::FILTERS)),
        );
        let tests = s.find("test-k.rc").unwrap();
        let suite = s
            .find("/w/target/debug/xtask matrix-guest-suite --shim /w/target/palisade-bin/")
            .unwrap();
        assert!(tests < suite);
        assert!(s.contains("--busybox /mnt/run/images/busybox.tar"));
        assert!(s.contains(
            "--handlers runc,palisade --filter policy_process_allow_list --filter policy_block_apt"
        ));
        assert!(s.contains("> /mnt/run/suite.log 2> /mnt/run/suite.err"));
    }

    #[test]
    fn the_records_give_each_kind_s_enforcers_and_the_refusals() {
        let jsonl = concat!(
            r#"{"rule":{"name":"enforcement-record"},"evidence":{"rules":[{"kind":"file","enforcer":"bpf-lsm"},{"kind":"process","enforcer":"bpf-lsm"}]}}"#,
            "\n",
            r#"{"rule":{"name":"enforcement-record"},"evidence":{"rules":[{"kind":"file","enforcer":"bind-mount-mask"},{"kind":"network","enforcer":"seccomp"}]}}"#,
            "\nnot json\n"
        );
        let id = "c4e254a9a55587e905dac518eaeb53683ad5fa79572535a60dd4b73468aa6075";
        let refusals = format!(
            "WARN task{{container={id}}}: BPF-LSM is not in force here\n\
             level=error msg=\"StartContainer {id} failed\" error=\"matchPatterns: \
             landlock and mounts cannot express globs, and BPF-LSM is not in force here\"\n\
             other\nno id, and BPF-LSM is not in force here\n"
        );
        let r = records_of(jsonl, &refusals);
        assert_eq!(r.containers, 2);
        assert_eq!(r.refusals, 2);
        assert_eq!(r.bpf_lsm_kinds(), ["file", "process"]);
        assert_eq!(
            r.cell(),
            "2 containers; file: bind-mount-mask, bpf-lsm; network: seccomp; process: bpf-lsm; \
             refused for want of BPF-LSM: 2"
        );
    }

    #[test]
    fn the_hooks_column_says_why_the_monitor_did_not_load() {
        assert_eq!(
            hooks_of("", "Error: load programs: Permission denied (os error 13)"),
            "monitor did not load: Error: load programs: Permission denied (os error 13)"
        );
        assert_eq!(
            hooks_of("ready /sys/fs/bpf/x", "syscall hook: raw sys_exit"),
            "syscall hook=raw sys_exit"
        );
    }
}
