//! The guests' root disk: a minimal Debian bookworm made by debootstrap, packed into an ext4
//! image once and booted with `snapshot=on` (no guest writes reach it). The root is a real
//! block-device filesystem because over 9p `stat()` reports device numbers the kernel never
//! sees, so the monitor's inode-keyed rules would never match.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::kernels::TempDir;
use crate::procs;

/// What the tests need beyond minbase: the monitor's libraries, busybox, the network tools
/// and python3 with its standard library (the monitor's precision test drives netlink and
/// setgid calls from it) that the sandbox's and the monitor's tests run, and containerd, runc
/// and the CNI plugins for the security suite's run through containerd (bookworm's, as on
/// the host).
const PACKAGES: &[&str] = &[
    "libelf1",
    "python3",
    "zlib1g",
    "busybox",
    "iproute2",
    "containerd",
    "runc",
    "containernetworking-plugins",
];

/// The suite the root is made of: the host's, so that binaries built here run there.
const SUITE: &str = "bookworm";

/// Free space in the image for what the tests write (copies of binaries, overlays).
const FREE_BYTES: u64 = 1 << 30;

/// The cached image's name: the package list is part of it, so a changed list makes a new one.
fn image_name() -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in PACKAGES.join(",").bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("root-{SUITE}-{h:08x}.ext4")
}

/// The root image under `cache`, made when missing (about a minute and a half).
pub fn image(cache: &Path) -> Result<PathBuf> {
    let img = cache.join(image_name());
    if img.is_file() {
        return Ok(img);
    }
    eprintln!("xtask: matrix: building the guest root ({SUITE}, debootstrap)");
    let tree = TempDir::new(cache.join("root-tree"))?;
    procs::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&tree.0)
            .arg("http://deb.debian.org/debian"),
    )
    .context("debootstrap the guest root")?;
    // The mount points /init uses, and no apt lists or caches in the image.
    for d in ["mnt/run", "sys/fs/cgroup", "sys/fs/bpf"] {
        let _ = fs::create_dir_all(tree.0.join(d));
    }
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_files(&tree.0.join(d));
    }
    let used: u64 = procs::run(Command::new("du").args(["-sb"]).arg(&tree.0))?
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du of the guest root")?;
    let part = img.with_extension("part");
    let _ = fs::remove_file(&part);
    procs::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "palisade-root", "-d"])
            .arg(&tree.0)
            .arg(&part)
            .arg(format!("{}k", (used + FREE_BYTES) / 1024)),
    )
    .context("pack the guest root into ext4")?;
    fs::rename(&part, &img).with_context(|| format!("rename to {}", img.display()))?;
    // Images of earlier package lists.
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("root-") && n.ends_with(".ext4") && e.path() != img {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(img)
}

fn clear_files(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_name_follows_the_package_list() {
        let n = image_name();
        assert!(
            n.starts_with("root-bookworm-") && n.ends_with(".ext4"),
            "{n}"
        );
        assert_eq!(n, image_name());
    }
}
