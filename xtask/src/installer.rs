//! `cargo xtask installer-image`: the installer image of runtimeclass/deploy/ built without a
//! registry or a container engine, as an OCI layout from this machine's Debian files (busybox,
//! curl, nsenter and their libraries) and the release binaries, then checked by running its
//! programs inside its own root.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cargo::Workspace;
use crate::images;
use crate::procs::run;

/// The name the DaemonSets in runtimeclass/deploy/ use.
pub const INSTALLER_NAME: &str = "localhost/palisade-installer";
pub const INSTALLER_TAG: &str = "0.1.0";
const BUSYBOX: &str = "/usr/bin/busybox";
/// The host programs the entrypoint needs besides busybox's applets.
const HOST_TOOLS: [&str; 2] = ["/usr/bin/curl", "/usr/bin/nsenter"];
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Builds the image; returns the OCI layout's directory and its tar (for `ctr images import`).
pub fn build(ws: &Workspace) -> Result<(PathBuf, PathBuf)> {
    crate::apt::ensure(&["busybox", "curl", "util-linux", "ca-certificates", "umoci"])?;
    ws.cargo(&["build", "--release", "-p", "palisade-cli"])?;
    let [shim, init] = ws.build_static(&["palisade-shim", "palisade-init"])?;
    let release = ws.target.join("release");
    let ours = [
        release.join("palisade"),
        shim,
        init,
        ws.root.join("runtimeclass/deploy/palisade-deploy.sh"),
    ];
    let mut libs = Vec::new();
    for bin in [Path::new(BUSYBOX)]
        .into_iter()
        .chain(HOST_TOOLS.iter().map(Path::new))
        .chain(ours.iter().map(PathBuf::as_path))
    {
        for lib in images::libs_of(bin)? {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
    }

    let work = ws.root.join(".palisade-run").join("installer-image");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let tar = work.join("palisade-installer.tar");
    let entrypoint = "/opt/palisade/bin/palisade-deploy.sh";
    images::pack(
        &work,
        "installer",
        INSTALLER_TAG,
        &tar,
        &[
            "--config.env",
            "PATH=/opt/palisade/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--config.entrypoint",
            entrypoint,
            "--config.cmd",
            "install",
        ],
        |rootfs| fill(rootfs, &libs, &ours),
    )?;
    let bundle = work.join("installer-bundle");
    smoke_test(&bundle.join("rootfs"))?;
    fs::remove_dir_all(&bundle).ok();
    Ok((work.join("installer-layout"), tar))
}

fn copy_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    // fs::copy follows symlinks: a library's link lands as the file it names.
    fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn fill(rootfs: &Path, libs: &[PathBuf], ours: &[PathBuf]) -> Result<()> {
    for d in ["bin", "etc", "proc", "sys", "dev", "host", "root", "tmp"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    copy_mode(Path::new(BUSYBOX), &rootfs.join("bin/busybox"), 0o755)?;
    let applets = run(Command::new(BUSYBOX).arg("--list"))?;
    for applet in applets.lines().map(str::trim) {
        // The host's curl and nsenter stand beside the applets, in /usr/bin.
        if applet.is_empty() || applet == "busybox" || applet == "nsenter" {
            continue;
        }
        symlink("busybox", rootfs.join("bin").join(applet))
            .with_context(|| format!("link applet {applet}"))?;
    }
    for tool in HOST_TOOLS {
        copy_mode(Path::new(tool), &rootfs.join(&tool[1..]), 0o755)?;
    }
    for lib in libs {
        // The host's modes: the dynamic loader must stay executable.
        let dest = rootfs.join(lib.strip_prefix("/")?);
        let mode = fs::metadata(lib)
            .with_context(|| format!("stat {}", lib.display()))?
            .permissions()
            .mode();
        copy_mode(lib, &dest, mode & 0o7777)?;
    }
    for bin in ours {
        let name = bin.file_name().context("binary without a name")?;
        copy_mode(bin, &rootfs.join("opt/palisade/bin").join(name), 0o755)?;
    }
    copy_mode(Path::new(CA_BUNDLE), &rootfs.join(&CA_BUNDLE[1..]), 0o644)?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// Every program the entrypoint calls runs from inside the image's root: the libraries are
/// complete and the script parses.
fn smoke_test(rootfs: &Path) -> Result<()> {
    for args in [
        &["/opt/palisade/bin/palisade", "--version"][..],
        &["/opt/palisade/bin/palisade", "install", "--help"],
        &["/usr/bin/curl", "--version"],
        &["/usr/bin/nsenter", "--version"],
        &["/bin/sh", "-n", "/opt/palisade/bin/palisade-deploy.sh"],
        &["/bin/sh", "-c", "command -v awk sleep test touch cat"],
    ] {
        // Absolute: the PATH set below is the image's, and resolves the program too.
        let out = Command::new("/usr/sbin/chroot")
            .arg(rootfs)
            .args(args)
            .env_clear()
            .env("PATH", "/opt/palisade/bin:/usr/bin:/bin")
            .output()
            .context("run chroot")?;
        if !out.status.success() {
            bail!(
                "installer image: {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The shim is only copied by `palisade install`, never run here; it must be there.
    for name in [crate::SHIM_BINARY, "palisade-init", "palisade-deploy.sh"] {
        let p = rootfs.join("opt/palisade/bin").join(name);
        if !p.is_file() {
            bail!("installer image: {} missing", p.display());
        }
    }
    Ok(())
}

/// `cargo xtask installer-image`.
pub fn command() -> Result<()> {
    let ws = Workspace::locate()?;
    let (layout, tar) = build(&ws)?;
    println!(
        "installer image {INSTALLER_NAME}:{INSTALLER_TAG}\n  OCI layout: {}\n  archive: {}\n\
         load it on a node: ctr -n k8s.io images import --base-name {INSTALLER_NAME} {}\n\
         or push it: skopeo copy oci:{}:{INSTALLER_TAG} docker://REGISTRY/palisade-installer:{INSTALLER_TAG}",
        layout.display(),
        tar.display(),
        tar.display(),
        layout.display()
    );
    Ok(())
}
