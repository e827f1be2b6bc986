//! Debian's kernels for the matrix: the current `linux-image-amd64` of a suite, resolved at run
//! time, downloaded once, and cut into what qemu boots (the uncompressed `vmlinux`, entered
//! through its PVH note) and the modules the initramfs loads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use super::apt::Suite;
use super::initramfs;
use crate::procs;

/// One kernel, ready to boot. Its directory in the cache keeps `vmlinux`, the modules the
/// guests load (decompressed) and `release`; the initramfs is packed again on each run.
pub struct Kernel {
    /// The running kernel's release (`uname -r`), e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The Debian package version of `linux-image-amd64`.
    pub version: String,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
}

/// The package prefixes a kernel image is made of: the image itself, and on sid the
/// `linux-binary-*`, `linux-modules-*` and `linux-base-*` (config, `modules.builtin`, which
/// modprobe needs to tell a built-in module from a missing one) packages it depends on.
const KERNEL_PACKAGES: [&str; 4] = [
    "linux-image-",
    "linux-binary-",
    "linux-modules-",
    "linux-base-",
];

/// A package of one kernel version (its name carries the version: not the `-amd64` metapackages).
fn is_kernel_package(name: &str) -> bool {
    KERNEL_PACKAGES.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Resolves, downloads (once) and prepares the newest `linux-image-amd64` of `suite`.
pub fn fetch(cache: &Path, suite: &'static str, busybox: &Path) -> Result<Kernel> {
    let apt = Suite::new(cache, suite)?;
    apt.update()?;
    let (version, depends) = apt.show("linux-image-amd64")?;
    let image = depends
        .into_iter()
        .find(|d| is_kernel_package(d))
        .with_context(|| format!("{suite}: linux-image-amd64 {version} names no kernel image"))?;
    let dir = cache
        .join("kernels")
        .join(format!("{image}_{}", version.replace(':', "_")));
    let kernel = Kernel {
        release: String::new(),
        version: version.clone(),
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio"),
    };
    // Named after the module list, so that a changed list collects the modules again.
    let modules = dir.join(initramfs::modules_dir_name());
    if let Ok(release) = fs::read_to_string(dir.join("release")) {
        if kernel.vmlinux.is_file() && modules.is_dir() {
            initramfs::build(&modules, busybox, &kernel.initramfs)?;
            return Ok(Kernel {
                release: release.trim().to_string(),
                ..kernel
            });
        }
    }
    // The image and the packages it is made of, each at the suite's candidate version.
    let mut todo = vec![image];
    let mut debs = Vec::new();
    while let Some(pkg) = todo.pop() {
        let (v, deps) = apt.show(&pkg)?;
        debs.push(apt.download(&pkg, &v)?);
        todo.extend(deps.into_iter().filter(|d| is_kernel_package(d)));
    }
    apt.prune(&debs);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tree = TempDir::new(dir.join("extract"))?;
    for deb in &debs {
        procs::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree.0))
            .with_context(|| format!("unpack {}", deb.display()))?;
    }
    let (release, vmlinuz) = find_vmlinuz(&tree.0)
        .with_context(|| format!("{suite}: no kernel image in {}", debs_names(&debs)))?;
    let bz = fs::read(&vmlinuz).with_context(|| format!("read {}", vmlinuz.display()))?;
    let elf = vmlinux_of(&bz).with_context(|| format!("{suite}: extract vmlinux of {release}"))?;
    write_atomic(&kernel.vmlinux, &elf)?;
    initramfs::collect_modules(&tree.0, &release, &modules)
        .with_context(|| format!("{suite}: modules of {release}"))?;
    initramfs::build(&modules, busybox, &kernel.initramfs)?;
    fs::write(dir.join("release"), &release).context("record the kernel release")?;
    Ok(Kernel { release, ..kernel })
}

fn debs_names(debs: &[PathBuf]) -> String {
    debs.iter()
        .filter_map(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel release and path of the kernel image in an unpacked tree: `boot/vmlinuz-RELEASE`
/// (bullseye to trixie), or `usr/lib/modules/RELEASE/vmlinuz` (sid's `linux-binary-*`).
fn find_vmlinuz(tree: &Path) -> Option<(String, PathBuf)> {
    let in_boot = fs::read_dir(tree.join("boot")).ok().and_then(|rd| {
        rd.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((release, e.path()))
        })
    });
    in_boot.or_else(|| {
        ["usr/lib/modules", "lib/modules"].iter().find_map(|m| {
            fs::read_dir(tree.join(m)).ok()?.flatten().find_map(|e| {
                let image = e.path().join("vmlinuz");
                image
                    .is_file()
                    .then(|| (e.file_name().to_string_lossy().into_owned(), image))
            })
        })
    })
}

/// The uncompressed kernel ELF inside a bzImage: the setup header gives the compressed
/// payload's place (`payload_offset`, `payload_length`, relative to the protected-mode code
/// after the setup sectors); its magic gives the compressor. The build appends the
/// uncompressed size (4 bytes) to xz and zstd payloads, which the decompressors must not see.
pub fn vmlinux_of(bz: &[u8]) -> Result<Vec<u8>> {
    let u32_at = |off: usize| -> Result<usize> {
        let b = bz
            .get(off..off + 4)
            .context("bzImage shorter than its setup header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let len = u32_at(0x24c)?;
    let payload = bz
        .get(start..start + len)
        .context("payload outside the bzImage")?;
    let (tool, args): (&str, &[&str]) = if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ("xz", &["-dc", "--single-stream"])
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ("zstd", &["-dc"])
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        ("gzip", &["-dc"])
    } else {
        bail!(
            "unknown payload compression (magic {:02x?})",
            &payload[..payload.len().min(6)]
        );
    };
    let body = &payload[..payload.len().saturating_sub(4)];
    let elf = pipe_through(tool, args, body)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("the {tool} payload is not an ELF file");
    }
    Ok(elf)
}

/// `input` through `tool args` (stdin to stdout).
fn pipe_through(tool: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {tool}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for {tool}"))?;
    let wrote = writer.join();
    if !out.status.success() {
        bail!(
            "{tool} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !matches!(wrote, Ok(Ok(()))) {
        bail!("{tool} did not take all of its input");
    }
    Ok(out.stdout)
}

/// Writes `path` through a temporary file beside it, so a cut run leaves no half file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part");
    fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// A directory removed when dropped, also when the step that made it fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(path: PathBuf) -> Result<Self> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped buffer: the setup header's fields and a payload at the given offset.
    fn bz_with(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 2u8;
        let code = (usize::from(setup_sects) + 1) * 512;
        let offset = 64usize;
        let mut bz = vec![0u8; code + offset + payload.len() + 4];
        bz[0x1f1] = setup_sects;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x248..0x24c].copy_from_slice(&(offset as u32).to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&((payload.len() + 4) as u32).to_le_bytes());
        bz[code + offset..code + offset + payload.len()].copy_from_slice(payload);
        bz
    }

    #[test]
    fn the_payload_is_found_by_the_header_and_decompressed_without_its_size_suffix() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(100);
        for (tool, args) in [("xz", &["-c"][..]), ("zstd", &["-c", "-q"][..])] {
            let packed = pipe_through(tool, args, &elf).unwrap();
            assert_eq!(vmlinux_of(&bz_with(&packed)).unwrap(), elf, "{tool}");
        }
    }

    #[test]
    fn the_image_is_found_in_boot_or_beside_the_modules() {
        let base = std::env::temp_dir().join(format!("xtask-vmlinuz-{}", std::process::id()));
        let sid = TempDir::new(base.join("sid")).unwrap();
        let dir = sid.0.join("usr/lib/modules/7.2.13+deb14-amd64");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz"), b"k").unwrap();
        assert_eq!(
            find_vmlinuz(&sid.0),
            Some(("7.2.13+deb14-amd64".into(), dir.join("vmlinuz")))
        );
        let old = TempDir::new(base.join("old")).unwrap();
        fs::create_dir_all(old.0.join("boot")).unwrap();
        fs::write(old.0.join("boot/vmlinuz-6.1.0-50-amd64"), b"k").unwrap();
        assert_eq!(
            find_vmlinuz(&old.0).map(|(r, _)| r),
            Some("6.1.0-50-amd64".into())
        );
        drop((sid, old));
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_file_without_a_setup_header_is_refused() {
        let err = vmlinux_of(&[0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("not a bzImage"), "{err}");
    }

    #[test]
    fn only_the_packages_a_kernel_is_made_of_are_followed() {
        assert!(is_kernel_package("linux-binary-7.2.13+deb14-amd64"));
        assert!(is_kernel_package("linux-image-6.1.0-57-amd64"));
        assert!(!is_kernel_package("linux-image-amd64"));
        assert!(is_kernel_package("linux-base-7.2.13+deb14-amd64"));
        assert!(!is_kernel_package("linux-base-amd64"));
        assert!(!is_kernel_package("linux-base"));
        assert!(!is_kernel_package("initramfs-tools"));
    }
}
