//! Runs cargo for the workspace and finds its root and target directory via `cargo metadata`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::procs::Children;

/// The target triple of the static builds (naming it keeps RUSTFLAGS off build scripts and
/// proc macros).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The static builds' flags. Packed relative relocations (`DT_RELR`: binutils 2.38, glibc
/// 2.36) shrink the position-independent binary's relocation table from half a megabyte to a
/// few kilobytes, which every shim otherwise reads, and keeps resident, at start.
const STATIC_RUSTFLAGS: &str =
    "-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs";

/// Where the workspace is and where cargo puts what it builds.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
    /// The cargo runs under way, for a signal's teardown to stop.
    pub children: Children,
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
            children: Children::default(),
        })
    }

    /// Runs `cargo <args>` in the workspace root, streaming its output.
    pub fn cargo(&self, args: &[&str]) -> Result<()> {
        eprintln!("xtask: cargo {}", args.join(" "));
        let st = self
            .children
            .status(Command::new(cargo_bin()).args(args).current_dir(&self.root))
            .with_context(|| format!("run cargo {}", args.join(" ")))?;
        if !st.success() {
            bail!("cargo {} failed: {st}", args.join(" "));
        }
        Ok(())
    }

    pub fn conformance_binary(&self) -> PathBuf {
        self.target.join("debug").join("palisade-conformance")
    }

    /// Builds the release shim and palisade-init statically and lays them out as a node has
    /// them (init beside the shim, where the shim looks for it); returns the shim's path there.
    pub fn build_shim(&self) -> Result<PathBuf> {
        let [shim, init] = self.build_static(&["palisade-shim", "palisade-init"])?;
        self.lay_out(&[(shim, crate::SHIM_BINARY), (init, "palisade-init")])
    }

    /// What the demo runs, in one static build with the `demo` profile (`Cargo.toml`: the
    /// release profile with parallel code generation and thin LTO, for build time): the shim
    /// and palisade-init laid out as for `build_shim`, the `palisade` CLI beside them, and the
    /// suite binary. Returns (shim, cli, suite).
    pub fn build_demo(&self) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let [shim, init, cli, suite] = self.build_static_with(
            "demo",
            &[
                "palisade-shim",
                "palisade-init",
                "palisade-cli",
                "palisade-conformance",
            ],
        )?;
        let shim = self.lay_out(&[
            (shim, crate::SHIM_BINARY),
            (init, "palisade-init"),
            (cli, "palisade"),
        ])?;
        Ok((shim.clone(), shim.with_file_name("palisade"), suite))
    }

    /// Copies built binaries into `palisade-bin/` under their node names; returns the first.
    fn lay_out(&self, bins: &[(PathBuf, &str)]) -> Result<PathBuf> {
        let dir = self.target.join("palisade-bin");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for (from, name) in bins {
            let to = dir.join(name);
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).with_context(|| format!("copy {}", from.display()))?;
            std::fs::rename(&tmp, &to).with_context(|| format!("install {}", to.display()))?;
        }
        Ok(dir.join(bins.first().map_or("", |b| b.1)))
    }

    /// Builds the release binaries of `packages` statically linked (glibc, libelf and zlib
    /// included): palisade-init runs inside containers whatever their libc, and the shim on
    /// nodes whatever their libraries (a node without libelf runs it too), and maps no shared
    /// library (a smaller resident set per pod, docs/benchmarks.md). Built into a target dir
    /// of its own so the static flags never invalidate the workspace's builds. Returns the
    /// binaries, in the order of `packages` (each package's binary has the name the node
    /// uses).
    pub fn build_static<const N: usize>(&self, packages: &[&str; N]) -> Result<[PathBuf; N]> {
        self.build_static_with("release", packages)
    }

    /// As `build_static`, with the cargo profile `profile`.
    fn build_static_with<const N: usize>(
        &self,
        profile: &str,
        packages: &[&str; N],
    ) -> Result<[PathBuf; N]> {
        let target_dir = self.target.join("init-static");
        let mut cmd = Command::new(cargo_bin());
        cmd.args(["build", "--profile", profile, "--target", STATIC_TARGET]);
        for p in packages {
            cmd.args(["-p", p]);
        }
        eprintln!(
            "xtask: cargo build --profile {profile} (static) -p {}",
            packages.join(" -p ")
        );
        cmd.arg("--target-dir")
            .arg(&target_dir)
            .current_dir(&self.root)
            .env("RUSTFLAGS", STATIC_RUSTFLAGS);
        let st = self
            .children
            .status(&mut cmd)
            .context("run cargo build (static)")?;
        if !st.success() {
            bail!("cargo build {} (static) failed: {st}", packages.join(", "));
        }
        let out = target_dir.join(STATIC_TARGET).join(profile);
        Ok(packages.map(|p| {
            out.join(match p {
                "palisade-shim" => crate::SHIM_BINARY,
                "palisade-cli" => "palisade",
                other => other,
            })
        }))
    }

    /// Builds the suite binary and, beside it, the `palisade` CLI that its status check runs
    /// (dev profile), with the workspace's test targets: so cargo resolves the features as
    /// `cargo test --workspace` does and reuses what it built (per package, `-p
    /// palisade-conformance -p palisade-cli`, it resolved them anew and compiled some 80
    /// crates again: 75 s of a fresh-clone test run).
    pub fn build_conformance(&self) -> Result<PathBuf> {
        self.cargo(&[
            "build",
            "--workspace",
            "--tests",
            "--bin",
            "palisade-conformance",
            "--bin",
            "palisade",
        ])?;
        Ok(self.conformance_binary())
    }
}
