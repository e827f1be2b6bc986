//! A bounded, coverage-guided fuzz run of the policy parser on the stable toolchain: the
//! `policy/fuzz` target built with LLVM's sanitizer-coverage passes (stable codegen flags)
//! and libFuzzer, seeded with the policy fixtures, run for a fixed time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::procs::Children;

/// The instrumentation cargo-fuzz adds, minus the sanitizer (which needs nightly).
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds and runs the parser's fuzz target for `seconds`; fails on any crash, leaving the
/// input that caused it under `<target>/fuzz/artifacts`.
pub fn run(root: &Path, target_dir: &Path, seconds: u32, children: &Children) -> Result<String> {
    let fuzz_dir = root.join("policy/fuzz");
    let out = target_dir.join("fuzz");
    let st = children
        .status(
            Command::new("cargo")
                .args(["build", "--release", "--bin", "parse", "--target", TARGET])
                .current_dir(&fuzz_dir)
                .env("RUSTFLAGS", RUSTFLAGS)
                .env("CARGO_TARGET_DIR", &out),
        )
        .context("build the policy fuzz target")?;
    if !st.success() {
        bail!("build the policy fuzz target: {st}");
    }
    let corpus = out.join("corpus");
    let artifacts = out.join("artifacts");
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    seed(&root.join("policy/tests/fixtures"), &corpus)?;
    let bin: PathBuf = out.join(TARGET).join("release/parse");
    let output = Command::new(&bin)
        .arg(&corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=65536")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=1024")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let done = log
        .lines()
        .rev()
        .find(|l| l.starts_with("Done "))
        .unwrap_or("")
        .to_string();
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        bail!(
            "policy fuzz target failed ({}); inputs in {}:\n{}",
            output.status,
            artifacts.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(done)
}

/// Copies the policy fixtures into the corpus, so the fuzzer starts from real policies.
fn seed(fixtures: &Path, corpus: &Path) -> Result<()> {
    for e in fs::read_dir(fixtures).with_context(|| format!("read {}", fixtures.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            if let Some(name) = p.file_name() {
                fs::copy(&p, corpus.join(name)).with_context(|| format!("seed {}", p.display()))?;
            }
        }
    }
    Ok(())
}
