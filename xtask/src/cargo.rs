//! Runs cargo for the workspace and finds its root and target directory via `cargo metadata`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Where the workspace is and where cargo puts what it builds.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        let out = Command::new(cargo_bin())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("run cargo metadata")?;
        if !out.status.success() {
            bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parse cargo metadata")?;
        let field = |k: &str| -> Result<PathBuf> {
            Ok(PathBuf::from(
                v.get(k)
                    .and_then(|s| s.as_str())
                    .with_context(|| format!("cargo metadata: no {k}"))?,
            ))
        };
        Ok(Self {
            root: field("workspace_root")?,
            target: field("target_directory")?,
        })
    }

    /// Runs `cargo <args>` in the workspace root, streaming its output.
    pub fn cargo(&self, args: &[&str]) -> Result<()> {
        eprintln!("xtask: cargo {}", args.join(" "));
        let st = Command::new(cargo_bin())
            .args(args)
            .current_dir(&self.root)
            .status()
            .with_context(|| format!("run cargo {}", args.join(" ")))?;
        if !st.success() {
            bail!("cargo {} failed: {st}", args.join(" "));
        }
        Ok(())
    }

    pub fn shim_binary(&self) -> PathBuf {
        self.target.join("release").join(crate::SHIM_BINARY)
    }

    pub fn conformance_binary(&self) -> PathBuf {
        self.target.join("debug").join("palisade-conformance")
    }

    /// Builds the release shim.
    pub fn build_shim(&self) -> Result<PathBuf> {
        self.cargo(&["build", "--release", "-p", "palisade-shim"])?;
        Ok(self.shim_binary())
    }

    /// Builds the suite binary (dev profile: its dependencies are already built by `cargo test`).
    pub fn build_conformance(&self) -> Result<PathBuf> {
        self.cargo(&[
            "build",
            "-p",
            "palisade-conformance",
            "--bin",
            "palisade-conformance",
        ])?;
        Ok(self.conformance_binary())
    }
}
