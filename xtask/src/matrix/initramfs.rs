//! The guests' initramfs: Debian's static busybox, the modules a guest needs to reach its root
//! disk and the host's shares, and an `/init` that sets up a cgroup-v2-only node, runs the
//! run's script in the root disk, and powers off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::apt::Suite;
use super::kernels::{write_atomic, TempDir};
use crate::procs;

/// The modules loaded at boot, with what `modprobe --show-depends` says they need: the
/// virtio disk and its ext4, the 9p shares, overlayfs for the monitor's overlay tests and
/// containerd's snapshots, and the bridge and veth pairs of the CNI network.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "ext4",
    "9pnet_virtio",
    "9p",
    "overlay",
    "bridge",
    "veth",
];

/// The name of a kernel's cached modules directory: it follows [`MODULES`].
pub fn modules_dir_name() -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in MODULES.join(",").bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("modules-{h:08x}")
}

/// The tag of the 9p share that carries the run's script and takes its results.
pub const RUN_TAG: &str = "run";
/// Where the run share is mounted in the guest's root.
pub const RUN_DIR: &str = "/mnt/run";
/// The script in the run share that `/init` runs, chrooted into the root disk.
pub const GUEST_SCRIPT: &str = "guest.sh";
/// Written by `/init` into the run share once the script has returned: its exit code.
pub const EXIT_FILE: &str = "exit-code";

/// `/init`: cgroup2 only (no v1 hierarchy exists in the guest), bpffs, tracefs, securityfs,
/// `lo` up, then the run's script in the root disk as PID 1 there, powering off whatever it
/// does (the root disk's busybox; a PID 1 that exits panics the kernel, and qemu then ends too).
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod /lib/modules/$m || echo "palisade-init: insmod $m failed"; done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
    echo "palisade-init: no root disk"; poweroff -f
fi
mkdir -p /newroot{run}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {tag} /newroot{run}
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t securityfs securityfs /newroot/sys/kernel/security
ip link set lo up
# switch_root, not chroot: a chrooted process may not create user namespaces.
exec switch_root /newroot /bin/sh -c \
    "/bin/sh {run}/{script}; echo \$? > {run}/{exit}; sync; busybox poweroff -f"
"#,
        run = RUN_DIR,
        tag = RUN_TAG,
        script = GUEST_SCRIPT,
        exit = EXIT_FILE,
    )
}

/// Debian's `busybox-static` (bookworm), unpacked once into `cache`: the dynamic `busybox` the
/// harness installs on the host conflicts with it, so it never comes from the host.
pub fn busybox_static(cache: &Path) -> Result<PathBuf> {
    let out = cache.join("busybox-static");
    if out.is_file() {
        return Ok(out);
    }
    let apt = Suite::new(cache, "bookworm")?;
    apt.update()?;
    let (version, _) = apt.show("busybox-static")?;
    let deb = apt.download("busybox-static", &version)?;
    let tree = TempDir::new(cache.join("busybox-extract"))?;
    procs::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree.0))
        .with_context(|| format!("unpack {}", deb.display()))?;
    let bin = [tree.0.join("bin/busybox"), tree.0.join("usr/bin/busybox")]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("no busybox in {}", deb.display()))?;
    let data = fs::read(&bin).with_context(|| format!("read {}", bin.display()))?;
    write_atomic(&out, &data)?;
    Ok(out)
}

/// Copies the modules of kernel `release`, unpacked in `tree`, that the guests load into
/// `dest`, decompressed and named in load order (`00-crc16.ko`, ...).
pub fn collect_modules(tree: &Path, release: &str, dest: &Path) -> Result<()> {
    // depmod and modprobe look under BASE/lib/modules; merged-/usr packages ship only
    // usr/lib/modules.
    if !tree.join("lib/modules").exists() && tree.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", tree.join("lib")).context("link lib to usr/lib")?;
    }
    if !tree.join("lib/modules").join(release).is_dir() {
        bail!("no modules for {release} in the kernel's packages");
    }
    procs::run(Command::new("depmod").arg("-b").arg(tree).arg(release))
        .with_context(|| format!("depmod for {release}"))?;
    let mut order: Vec<PathBuf> = Vec::new();
    for m in MODULES {
        let listed = procs::run(Command::new("modprobe").arg("-d").arg(tree).args([
            "-S",
            release,
            "--show-depends",
            m,
        ]))
        .with_context(|| format!("modprobe --show-depends {m} for {release}"))?;
        for path in module_paths(&listed) {
            let path = if path.starts_with(tree) {
                path
            } else {
                tree.join(path.strip_prefix("/").unwrap_or(&path))
            };
            if !order.contains(&path) {
                order.push(path);
            }
        }
    }
    fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    for (i, path) in order.iter().enumerate() {
        let ko = decompressed_module(path)?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = file.split(".ko").next().unwrap_or("module");
        let out = dest.join(format!("{i:02}-{stem}.ko"));
        fs::write(&out, ko).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(())
}

/// Packs busybox, `/init` and the modules collected in `modules` into the initramfs `out`
/// (rebuilt on each run: it takes milliseconds, and a changed `/init` needs no new download).
pub fn build(modules: &Path, busybox: &Path, out: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    let bb = fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &bb);
    cpio.file("init", 0o755, init_script().as_bytes());
    let mut names: Vec<String> = fs::read_dir(modules)
        .with_context(|| format!("list {}", modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ko"))
        .collect();
    names.sort();
    for name in &names {
        let path = modules.join(name);
        let ko = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &ko);
    }
    cpio.file("modules", 0o644, (names.join("\n") + "\n").as_bytes());
    write_atomic(out, &cpio.finish())
}

/// The module files of `modprobe --show-depends` output, in load order (built-in modules are
/// listed as `builtin NAME` and need nothing).
fn module_paths(listed: &str) -> Vec<PathBuf> {
    listed
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .collect()
}

/// A module file as `insmod` takes it: busybox's cannot read compressed modules.
fn decompressed_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        Some("gz") => Some("gzip"),
        _ => None,
    };
    match tool {
        None => fs::read(path).with_context(|| format!("read {}", path.display())),
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("run {t}"))?;
            if !out.status.success() {
                bail!("{t} -dc {}: {}", path.display(), out.status);
            }
            Ok(out.stdout)
        }
    }
}

/// A cpio archive in the `newc` format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            body.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while self.data.len() % 4 != 0 {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), body);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_lists_files_in_order_and_skips_builtins() {
        let out = "builtin virtio_pci\ninsmod /r/lib/modules/6.1/kernel/crc16.ko \n\
                   insmod /r/lib/modules/6.1/kernel/ext4.ko opt=1\n";
        assert_eq!(
            module_paths(out),
            [
                PathBuf::from("/r/lib/modules/6.1/kernel/crc16.ko"),
                PathBuf::from("/r/lib/modules/6.1/kernel/ext4.ko")
            ]
        );
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let data = c.finish();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // the file's size field (7th) says 10 bytes
        let second = text
            .find("070701")
            .and_then(|_| text[6..].find("070701"))
            .unwrap()
            + 6;
        assert_eq!(&text[second + 6 + 6 * 8..second + 6 + 7 * 8], "0000000a");
    }

    #[test]
    fn init_runs_the_share_script_on_a_cgroup2_only_root() {
        let init = init_script();
        assert!(init.contains("mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup"));
        assert!(!init.contains("-t cgroup "));
        assert!(init.contains("exec switch_root /newroot /bin/sh -c"));
        assert!(init.contains("\"/bin/sh /mnt/run/guest.sh; echo \\$? > /mnt/run/exit-code;"));
        assert!(init.contains("busybox poweroff -f"));
    }
}
