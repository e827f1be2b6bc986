//! The runc harness the runc-backed suites share (`init/tests/runc.rs` and, through `#[path]`,
//! `sandbox/tests/enforce_runc.rs`): the static palisade-init, a busybox root filesystem, a
//! bundle's spec from `runc spec`, runc under a deadline, and a container deleted even when a
//! test fails half way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;

pub const RUNC: &str = "/usr/sbin/runc";
pub const BUSYBOX: &str = "/usr/bin/busybox";

#[cfg(target_arch = "x86_64")]
const TARGET: &str = "x86_64-unknown-linux-gnu";
#[cfg(target_arch = "aarch64")]
const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The static helper the shim ships: `PALISADE_INIT_STATIC` if set, otherwise built here with
/// the documented release command into a target dir of its own, so the outer cargo's build
/// lock is not in the way.
pub fn static_init() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_INIT_STATIC") {
        return Ok(PathBuf::from(p));
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("static-init");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cargo = Command::new(cargo);
    cargo
        .args([
            "build",
            "--release",
            "-p",
            "palisade-init",
            "--bin",
            "palisade-init",
        ])
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdin(Stdio::null());
    succeeded(&mut cargo, "static build of palisade-init")?;
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join("palisade-init"))
}

/// Copies `src` to `dest` under `root`, contents only (symlinks followed).
pub fn copy_into(root: &Path, src: &Path, dest: &str) -> Result<()> {
    let dst = root.join(dest.trim_start_matches('/'));
    fs::create_dir_all(dst.parent().context("parent")?)?;
    fs::copy(src, &dst).with_context(|| format!("copy {} to {dest}", src.display()))?;
    Ok(())
}

/// busybox at /bin/busybox, the libraries `ldd` lists at their own paths, and links for
/// `applets`; returns how many libraries were copied.
pub fn busybox(root: &Path, applets: &[&str]) -> Result<usize> {
    copy_into(root, Path::new(BUSYBOX), "/bin/busybox")?;
    let ldd = Command::new("ldd").arg(BUSYBOX).output().context("ldd")?;
    ensure!(ldd.status.success(), "ldd {BUSYBOX} failed");
    let mut libs = 0;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy_into(root, Path::new(p), p)?;
            libs += 1;
        }
    }
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    Ok(libs)
}

/// The spec `runc spec` writes into `bundle`, to be shaped by the test and written back.
pub fn runc_spec(bundle: &Path) -> Result<Value> {
    succeeded(
        Command::new(RUNC).args(["spec", "--bundle"]).arg(bundle),
        "runc spec",
    )?;
    Ok(serde_json::from_slice(&fs::read(
        bundle.join("config.json"),
    )?)?)
}

/// Runs `cmd`, a `what` that must succeed, to its end: its output, or an error with its exit
/// status and stderr.
pub fn succeeded(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    ensure!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Deletes the container and its state even when the test fails half way; `state` is runc's
/// `--root` (a `TempDir` goes only after the delete: fields drop after `drop`).
pub struct Container<S: AsRef<Path>> {
    pub state: S,
    pub id: String,
}

impl<S: AsRef<Path>> Drop for Container<S> {
    fn drop(&mut self) {
        let _ = Command::new(RUNC)
            .arg("--root")
            .arg(self.state.as_ref())
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Container<tempfile::TempDir> {
    /// A container to run, with runc state of its own: its id is `name` and this test
    /// process's pid.
    pub fn fresh(name: &str) -> Result<Self> {
        Ok(Self {
            state: tempfile::tempdir().context("create a runc state directory")?,
            id: format!("{name}-{}", std::process::id()),
        })
    }

    /// `runc --root STATE`, to add the subcommand to.
    pub fn runc(&self) -> Command {
        let mut cmd = Command::new(RUNC);
        cmd.arg("--root").arg(self.state.path());
        cmd
    }
}

/// Runs `cmd` (runc) with its output captured; killed and an error after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn runc")?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(anyhow!(
                "runc run timed out; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}
