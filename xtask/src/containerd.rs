//! Other containerd releases for the harness: Debian's packages of containerd 1.7 (trixie)
//! and 2.1 (sid), fetched once, checked against pinned hashes and unpacked beside the run
//! dirs, so the suites run against the versions production nodes use, not only 1.6.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// A containerd release the harness can run: its `.deb` in Debian's pool and the hash it must have.
struct Release {
    version: &'static str,
    pool_path: &'static str,
    sha256: &'static str,
}

const MIRROR: &str = "http://deb.debian.org/debian";

const RELEASES: &[Release] = &[
    Release {
        version: "1.7",
        pool_path: "pool/main/c/containerd/containerd_1.7.24~ds1-6+deb13u1_amd64.deb",
        sha256: "ed708deb96fe476a3bce4efa5c0538dfbcf717ab9a7c7944ba7260342c25899c",
    },
    Release {
        version: "2.1",
        pool_path: "pool/main/c/containerd/containerd_2.1.9+ds1-5_amd64.deb",
        sha256: "2dda86ce7033fd612fc50e136679d8174ccad680eb29cd4611e0d2a1b84cf591",
    },
];

/// The versions `--containerd` accepts: the system's (Debian 12: 1.6) and the fetched ones.
pub fn known() -> Vec<&'static str> {
    let mut v = vec!["1.6"];
    v.extend(RELEASES.iter().map(|r| r.version));
    v
}

/// The directory holding `containerd`, `ctr` and `containerd-shim-runc-v2` of `version`
/// (fetched into `cache` on first use); `None` for the system's 1.6.
pub fn bin_dir(version: &str, cache: &Path) -> Result<Option<PathBuf>> {
    if version == "1.6" {
        return Ok(None);
    }
    let Some(r) = RELEASES.iter().find(|r| r.version == version) else {
        bail!("--containerd {version}: not one of {}", known().join(", "));
    };
    let root = cache.join(format!("containerd-{}", r.version));
    let bin = root.join("usr/bin");
    if bin.join("containerd").exists() {
        return Ok(Some(bin));
    }
    fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let deb = root.join("containerd.deb");
    let url = format!("{MIRROR}/{}", r.pool_path);
    eprintln!("xtask: fetching containerd {} from {url}", r.version);
    run(Command::new("curl")
        .args(["-sSfL", "--retry", "3", "-o"])
        .arg(&deb)
        .arg(&url))?;
    let sum = Command::new("sha256sum")
        .arg(&deb)
        .output()
        .context("run sha256sum")?;
    let got = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if got != r.sha256 {
        let _ = fs::remove_file(&deb);
        bail!("{url}: sha256 {got}, expected {}", r.sha256);
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let _ = fs::remove_file(&deb);
    if !bin.join("containerd").exists() {
        bail!("{url}: no usr/bin/containerd in the package");
    }
    Ok(Some(bin))
}

fn run(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("run {what}"))?;
    if !st.success() {
        bail!("{what}: {st}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_named_and_hashes_pinned() {
        assert_eq!(known(), ["1.6", "1.7", "2.1"]);
        for r in RELEASES {
            assert_eq!(r.sha256.len(), 64, "{}", r.version);
            assert!(r.pool_path.ends_with("_amd64.deb"), "{}", r.pool_path);
        }
        let err = bin_dir("1.5", Path::new("/nonexistent")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--containerd 1.5: not one of 1.6, 1.7, 2.1"
        );
        assert_eq!(bin_dir("1.6", Path::new("/nonexistent")).unwrap(), None);
    }
}
