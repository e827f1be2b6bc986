//! The fresh-machine check: builds xtask with the system tools and headers a fresh machine lacks hidden.
//!
//! `cargo xtask` installs the Debian packages the rest of the workspace builds with (protoc,
//! clang, libelf, ...), so xtask itself must build before any of them is there. This check
//! proves it on a machine that already has them: in a mount namespace of its own, an overlay on
//! `/usr` whites out every file of the packages a fresh machine lacks (every `-dev` package but
//! the C library's and the compiler's own, clang and LLVM, protoc, pkg-config, bpftool), then
//! xtask is built from scratch in a target directory of its own and run. Two controls run first
//! in the same view: the hidden tools and headers must really be gone (`protoc`, `clang`, an
//! `#include <libelf.h>`), and a plain C program must still compile and link, so the check can
//! neither pass by hiding nothing nor fail by hiding the compiler.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::procs::Children;

/// `-dev` packages that gcc and rustc's linker need: a fresh machine has them.
const TOOLCHAIN_DEV: &[&str] = &[
    "libc6-dev",
    "linux-libc-dev",
    "libcrypt-dev",
    "libnsl-dev",
    "libtirpc-dev",
];

/// Prefixes of toolchain `-dev` packages whose names carry a version (`libgcc-12-dev`).
const TOOLCHAIN_DEV_PREFIXES: &[&str] = &["libgcc-", "libstdc++-"];

/// Build tools a fresh machine lacks, by package name or name prefix.
const HIDDEN_TOOLS: &[&str] = &[
    "protobuf-compiler",
    "bpftool",
    "pkg-config",
    "pkgconf",
    "pkgconf-bin",
    "libpkgconf3",
];
const HIDDEN_PREFIXES: &[&str] = &["clang", "llvm", "lld", "libclang", "libllvm", "libprotoc"];

/// True for an installed package whose files the check hides.
pub fn hidden_package(name: &str) -> bool {
    let name = name.split(':').next().unwrap_or(name);
    if HIDDEN_TOOLS.contains(&name) || HIDDEN_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    name.ends_with("-dev")
        && !TOOLCHAIN_DEV.contains(&name)
        && !TOOLCHAIN_DEV_PREFIXES
            .iter()
            .any(|p| name.starts_with(p) && name.ends_with("-dev"))
}

fn installed_packages() -> Result<Vec<String>> {
    let out =
        crate::procs::run(Command::new("dpkg-query").args(["-W", "-f=${Package}\t${Status}\n"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, st)| st.ends_with("installed") && !st.contains("not-installed"))
        .map(|(p, _)| p.to_string())
        .collect())
}

/// The files and symlinks (not directories) that dpkg lists for `packages`, as absolute paths
/// with merged-/usr aliases (`/bin`, `/lib`) resolved.
pub fn package_files<S: AsRef<str>>(packages: &[S]) -> Result<BTreeSet<PathBuf>> {
    let mut paths = BTreeSet::new();
    for chunk in packages.chunks(64) {
        let out = Command::new("dpkg")
            .arg("-L")
            .args(chunk.iter().map(AsRef::as_ref))
            .output()
            .context("run dpkg -L")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = Path::new(line);
            let Ok(meta) = fs::symlink_metadata(p) else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
                continue;
            };
            if let Ok(dir) = fs::canonicalize(parent) {
                paths.insert(dir.join(name));
            }
        }
    }
    Ok(paths)
}

/// The paths under /usr (relative to it) of the hidden packages' files.
fn hidden_paths(packages: &[String]) -> Result<BTreeSet<PathBuf>> {
    Ok(package_files(packages)?
        .iter()
        .filter_map(|p| p.strip_prefix("/usr").ok().map(Path::to_path_buf))
        .collect())
}

/// An overlay's upper directory that whites out `paths` (relative to the lower directory).
pub fn write_whiteouts(upper: &Path, paths: &BTreeSet<PathBuf>) -> Result<()> {
    for rel in paths {
        let at = upper.join(rel);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        // A character device 0:0 in an overlay's upper layer hides the lower file.
        mknod(&at, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .with_context(|| format!("whiteout {}", at.display()))?;
    }
    Ok(())
}

/// The view a command runs in: a private mount namespace with the overlay on /usr.
struct View {
    dir: PathBuf,
    script: PathBuf,
}

impl View {
    fn new(dir: &Path, paths: &BTreeSet<PathBuf>) -> Result<Self> {
        let _ = fs::remove_dir_all(dir);
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        fs::create_dir_all(&upper).with_context(|| format!("create {}", upper.display()))?;
        write_whiteouts(&upper, paths)?;
        let script = dir.join("enter.sh");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nset -e\nmount -t overlay palisade-fresh -o lowerdir=/usr,upperdir={},workdir={} /usr\nexec \"$@\"\n",
                upper.display(),
                work.display()
            ),
        )
        .with_context(|| format!("write {}", script.display()))?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", script.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            script,
        })
    }

    /// `args` in the view, with the environment variables that would point a build at a tool
    /// removed.
    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"])
            .arg(&self.script)
            .args(args);
        scrub_env(&mut cmd);
        cmd
    }
}

/// Removes from `cmd`'s environment the variables that would point a build at a tool.
pub fn scrub_env(cmd: &mut Command) {
    for var in [
        "PROTOC",
        "PROTOC_INCLUDE",
        "CLANG",
        "BPF_CLANG",
        "LIBCLANG_PATH",
        "LLVM_CONFIG_PATH",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "LIBBPF_SYS_LIBRARY_PATH",
    ] {
        cmd.env_remove(var);
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs the controls in the view: the tools and headers are gone, the C compiler is not.
fn controls(view: &View) -> Result<()> {
    for tool in ["protoc", "clang", "pkg-config", "bpftool", "llvm-strip"] {
        let st = view
            .command(&["sh", "-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .context("run the tool control")?;
        if st.success() {
            bail!("control: {tool} is still found with the fresh-machine packages hidden");
        }
    }
    let c = |src: &str| -> Result<bool> {
        let st = view
            .command(&[
                "sh",
                "-c",
                &format!("printf '{src}' | cc -x c -o /dev/null -"),
            ])
            .stderr(Stdio::null())
            .status()
            .context("run the compiler control")?;
        Ok(st.success())
    };
    if c("#include <libelf.h>\\nint main(void){return 0;}\\n")? {
        bail!("control: libelf.h still compiles with the fresh-machine packages hidden");
    }
    if !c("#include <stdio.h>\\nint main(void){puts(\"x\");return 0;}\\n")? {
        bail!("control: a plain C program no longer compiles and links in the fresh view");
    }
    Ok(())
}

/// Builds the xtask of the workspace at `source` as a fresh machine would, and runs it.
/// Returns one line for the log.
pub fn check(source: &Path, scratch: &Path, children: &Children) -> Result<String> {
    let packages: Vec<String> = installed_packages()?
        .into_iter()
        .filter(|p| hidden_package(p))
        .collect();
    let paths = hidden_paths(&packages)?;
    let view = View::new(&scratch.join("fresh-view"), &paths)?;
    controls(&view)?;
    let target = scratch.join("fresh-target");
    let _ = fs::remove_dir_all(&target);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "xtask: fresh-machine build of {}/xtask ({} packages, {} files hidden)",
        source.display(),
        packages.len(),
        paths.len()
    );
    let mut build = view.command(&[
        cargo.as_str(),
        "build",
        "--locked",
        "-p",
        "xtask",
        "--target-dir",
    ]);
    build.arg(&target).current_dir(source);
    let st = children
        .status(&mut build)
        .context("run the fresh-machine build")?;
    let result = if st.success() {
        let out = view
            .command(&[target.join("debug/xtask").as_os_str(), OsStr::new("help")])
            .output()
            .context("run the freshly built xtask")?;
        if out.status.success() {
            Ok(format!(
                "xtask builds and runs with {} packages ({} files) hidden",
                packages.len(),
                paths.len()
            ))
        } else {
            Err(anyhow::anyhow!(
                "the freshly built xtask failed to run: {}",
                out.status
            ))
        }
    } else {
        Err(anyhow::anyhow!(
            "xtask does not build on a fresh machine ({st}): it needs a tool or header that \
             only a later `cargo xtask` step installs (see the build output above)"
        ))
    };
    let _ = fs::remove_dir_all(&target);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_tools_and_headers_but_not_the_toolchain() {
        for p in [
            "protobuf-compiler",
            "clang",
            "clang-14",
            "libclang-common-14-dev",
            "llvm-14",
            "libllvm14",
            "libelf-dev",
            "libbpf-dev",
            "zlib1g-dev:amd64",
            "pkg-config",
            "bpftool",
        ] {
            assert!(hidden_package(p), "{p} should be hidden");
        }
        for p in [
            "libc6-dev",
            "libc6-dev:amd64",
            "libgcc-12-dev",
            "libstdc++-12-dev",
            "linux-libc-dev",
            "gcc",
            "gcc-12",
            "make",
            "libelf1",
            "python3",
            "git",
        ] {
            assert!(!hidden_package(p), "{p} should stay");
        }
    }
}
