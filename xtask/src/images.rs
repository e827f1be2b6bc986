//! Builds the test images (busybox and the pod sandbox "pause") as OCI archives, cached by their inputs.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::procs::run;

pub const BUSYBOX_REF: &str = "localhost/palisade-test/busybox:1";
pub const PAUSE_REF: &str = "localhost/palisade-test/pause:1";
const TAG: &str = "1";
/// Bump when the way images are built changes, to invalidate caches.
const RECIPE: &str = "images-v5";
const BUSYBOX: &str = "/usr/bin/busybox";

/// OCI archives ready for `ctr images import`.
pub struct Images {
    pub busybox: PathBuf,
    pub pause: PathBuf,
}

/// Builds (or reuses from `cache`) both image archives.
pub fn build(workspace_root: &Path, cache: &Path) -> Result<Images> {
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let pause_src = workspace_root.join("conformance/src/bin/palisade-pause.rs");
    let probe_src = workspace_root.join("conformance/src/bin/palisade-probe.rs");
    let libs = busybox_libs()?;
    let mut inputs: Vec<PathBuf> =
        vec![PathBuf::from(BUSYBOX), pause_src.clone(), probe_src.clone()];
    inputs.extend(libs.iter().cloned());
    let key = format!("{RECIPE} {:016x}", hash_files(&inputs)?);
    let images = Images {
        busybox: cache.join("busybox.tar"),
        pause: cache.join("pause.tar"),
    };
    let key_file = cache.join("key");
    if fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
        && images.busybox.exists()
        && images.pause.exists()
    {
        return Ok(images);
    }
    eprintln!("xtask: building test images in {}", cache.display());
    let _ = fs::remove_file(&key_file);
    let work = cache.join("build");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    let pause_bin = work.join("pause");
    compile_static(&pause_src, &pause_bin).context("compile the static pause program")?;
    let probe_bin = work.join("palisade-probe");
    compile_static(&probe_src, &probe_bin).context("compile the static probe program")?;
    pack(
        &work,
        "pause",
        TAG,
        &images.pause,
        &["--config.entrypoint", "/pause"],
        |rootfs| {
            fs::copy(&pause_bin, rootfs.join("pause")).context("copy pause")?;
            Ok(())
        },
    )?;
    pack(
        &work,
        "busybox",
        TAG,
        &images.busybox,
        &[
            "--config.env",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "--config.cmd",
            "/bin/sh",
        ],
        |rootfs| {
            busybox_rootfs(rootfs, &libs)?;
            probe_files(rootfs, &probe_bin)
        },
    )?;
    fs::remove_dir_all(&work).ok();
    fs::write(&key_file, &key)?;
    Ok(images)
}

/// Compiles one program alone with rustc into a static binary (no crates needed).
pub(crate) fn compile_static(src: &Path, out: &Path) -> Result<()> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-o",
        ])
        .arg(out)
        .arg(src))?;
    Ok(())
}

/// The security suite's probe: `/usr/bin/palisade-probe`, a setuid-root copy
/// (`palisade-probe-suid`), and real files (not busybox links) at `/usr/bin/apt` and
/// `/usr/bin/apt-get` for the package manager policy, and `/usr/bin/ncat` for the network tool
/// detection (not `nc`, which would shadow the busybox applet that checks use). `apt-get` and
/// `ncat` each have a content of their own (the probe and a trailing line), so that a copy of
/// either is known by its content; `apt` is the probe's.
fn probe_files(rootfs: &Path, probe: &Path) -> Result<()> {
    let bin = rootfs.join("usr/bin");
    fs::create_dir_all(&bin)?;
    for (name, mode) in [
        ("palisade-probe", 0o755),
        ("palisade-probe-suid", 0o4755),
        ("apt", 0o755),
        ("apt-get", 0o755),
        ("ncat", 0o755),
    ] {
        let dest = bin.join(name);
        fs::copy(probe, &dest).with_context(|| format!("copy probe to {}", dest.display()))?;
        if name == "apt-get" || name == "ncat" {
            let mut f = fs::OpenOptions::new().append(true).open(&dest)?;
            std::io::Write::write_all(
                &mut f,
                format!("\npalisade test image: {name}\n").as_bytes(),
            )?;
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Creates an OCI layout (`<work>/<name>-layout`, tagged `tag`: [`TAG`] for the test images)
/// with one layer made by `fill`, configures it and tars it to `out`.
pub(crate) fn pack(
    work: &Path,
    name: &str,
    tag: &str,
    out: &Path,
    config: &[&str],
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let layout = work.join(format!("{name}-layout"));
    let bundle = work.join(format!("{name}-bundle"));
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    fill(&bundle.join("rootfs")).with_context(|| format!("fill {name} rootfs"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("umoci")
        .args(["config", "--image", &image])
        .args(config))?;
    let tmp = out.with_extension("tar.tmp");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tmp)
        .arg("."))?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// The shared libraries the dynamic busybox loads (resolved host paths).
fn busybox_libs() -> Result<Vec<PathBuf>> {
    libs_of(Path::new(BUSYBOX))
}

/// The shared libraries a dynamic binary loads, from `ldd` (none for a static one).
pub(crate) fn libs_of(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("run ldd {}", binary.display()))?;
    // ldd fails on a static binary ("not a dynamic executable"): nothing to copy.
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// busybox, its libraries at their host paths, applet links, users and the usual directories.
fn busybox_rootfs(rootfs: &Path, libs: &[PathBuf]) -> Result<()> {
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/tester",
        "var/tmp",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    for d in ["tmp", "var/tmp"] {
        fs::set_permissions(rootfs.join(d), fs::Permissions::from_mode(0o1777))?;
    }
    std::os::unix::fs::chown(rootfs.join("home/tester"), Some(1000), Some(1000))?;
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).context("copy busybox")?;
    for lib in libs {
        let dest = rootfs.join(lib.strip_prefix("/")?);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        // fs::copy follows symlinks, so the loader lands as a regular file.
        fs::copy(lib, &dest).with_context(|| format!("copy {}", lib.display()))?;
    }
    let applets = run(Command::new(BUSYBOX).arg("--list"))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).with_context(|| format!("link applet {applet}"))?;
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntester:x:1000:\nnogroup:x:65534:\n",
    )?;
    // no password for anyone; there for the credential-file-read check
    let shadow = rootfs.join("etc/shadow");
    fs::write(
        &shadow,
        "root:*:19000:0:99999:7:::\ntester:!:19000:0:99999:7:::\n",
    )?;
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o640))?;
    Ok(())
}

/// FNV-1a over the paths and contents of the inputs: a cache key, not a security hash.
fn hash_files(paths: &[PathBuf]) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for p in paths {
        feed(p.as_os_str().as_encoded_bytes());
        feed(&fs::read(p).with_context(|| format!("read {}", p.display()))?);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_content() {
        let f = crate::procs::ScratchFile::new("hash", "a", "one");
        let h1 = hash_files(std::slice::from_ref(&f.path)).unwrap();
        fs::write(&f.path, "two").unwrap();
        let h2 = hash_files(std::slice::from_ref(&f.path)).unwrap();
        assert_ne!(h1, h2);
    }
}
