//! `cargo xtask fresh-machine`: runs a command as on a fresh machine, every package it lacks uninstalled in a private view.
//!
//! The fresh-machine check of `cargo xtask test` (`fresh.rs`) proves that xtask builds before
//! any package is installed. This command goes further, for a whole `cargo xtask demo` or
//! `cargo xtask test`: in a mount namespace of its own, overlays on `/usr`, `/etc` and `/var`
//! uninstall the packages a fresh machine of CI's kind lacks. Their files are whited out and
//! dpkg's database forgets them, so the command's own `apt-get install` really downloads,
//! unpacks and configures them again, into the overlays. Nothing outside the view changes:
//! when the command ends, the overlays' directories are deleted.
//!
//! Which packages: `apt::FRESH_LACKS`, those of `apt::PACKAGES` that a fresh machine does not
//! have (protoc, clang, libelf-dev, libbpf-dev, containerd, runc, qemu, ...), and, so that
//! dpkg's database stays consistent, every installed package that depends on one of them with
//! no other installed package to satisfy the dependency, and what `apt-get autoremove` would
//! then take (the automatically installed packages nothing kept needs). The result is the
//! fresh machine's package list, give or take what was installed by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::procs::Children;

/// The overlays' mount points. Everything a Debian package installs lives below one of them
/// (`/bin`, `/lib` and `/sbin` are links into `/usr`).
const MOUNTS: &[&str] = &["/usr", "/etc", "/var"];

/// One installed package, as dpkg describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Installed {
    pub name: String,
    /// The virtual package names it provides.
    pub provides: Vec<String>,
    /// Pre-Depends and Depends: groups of alternatives, any one of which satisfies the group.
    pub depends: Vec<Vec<String>>,
    /// Recommends, as groups of alternatives: apt's autoremove keeps what a kept package
    /// recommends.
    pub recommends: Vec<Vec<String>>,
    /// Essential, or of priority required or important: apt never removes it by itself.
    pub base: bool,
}

/// The name in a dependency or provides item: `libc6 (>= 2.34)` and `awk:any` give `libc6`
/// and `awk`.
fn bare(item: &str) -> String {
    let name = item.split_whitespace().next().unwrap_or("");
    name.split(':').next().unwrap_or(name).to_string()
}

/// What `parse_installed` reads: `dpkg-query -W -f=` this.
pub const QUERY: &str =
    "${Package}\t${Status}\t${Provides}\t${Pre-Depends}\t${Depends}\t${Recommends}\t${Essential}\t${Priority}\n";

/// Parses what dpkg-query prints for `QUERY` into the installed packages.
pub fn parse_installed(out: &str) -> Vec<Installed> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 8 || !f[1].ends_with(" installed") {
                return None;
            }
            let list = |s: &str| -> Vec<String> {
                s.split(',').map(bare).filter(|n| !n.is_empty()).collect()
            };
            let groups = |fields: &[&str]| -> Vec<Vec<String>> {
                fields
                    .iter()
                    .flat_map(|s| s.split(','))
                    .map(|group| {
                        group
                            .split('|')
                            .map(bare)
                            .filter(|n| !n.is_empty())
                            .collect::<Vec<_>>()
                    })
                    .filter(|g| !g.is_empty())
                    .collect()
            };
            Some(Installed {
                name: bare(f[0]),
                provides: list(f[2]),
                depends: groups(&[f[3], f[4]]),
                recommends: groups(&[f[5]]),
                base: f[6] == "yes" || f[7] == "required" || f[7] == "important",
            })
        })
        .collect()
}

/// The packages to uninstall: `seeds`, then every package that depends on an uninstalled one
/// with no installed, kept package (or provider) to satisfy the dependency instead.
pub fn closure(installed: &[Installed], seeds: &BTreeSet<String>) -> BTreeSet<String> {
    let mut satisfiers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in installed {
        satisfiers.entry(&p.name).or_default().push(&p.name);
        for v in &p.provides {
            satisfiers.entry(v).or_default().push(&p.name);
        }
    }
    let mut gone: BTreeSet<String> = installed
        .iter()
        .filter(|p| seeds.contains(&p.name))
        .map(|p| p.name.clone())
        .collect();
    loop {
        let before = gone.len();
        for p in installed {
            if gone.contains(&p.name) {
                continue;
            }
            let broken = p.depends.iter().any(|group| {
                let mut names = group
                    .iter()
                    .flat_map(|n| satisfiers.get(n.as_str()).into_iter().flatten());
                // A group nothing installed satisfies was broken before: not our doing.
                let mut any = false;
                let kept = names.any(|n| {
                    any = true;
                    !gone.contains(*n)
                });
                any && !kept
            });
            if broken {
                gone.insert(p.name.clone());
            }
        }
        if gone.len() == before {
            return gone;
        }
    }
}

/// `gone` grown by what `apt-get autoremove` would then remove: every automatically installed
/// package that no kept package depends on or recommends (directly or through a name it
/// provides, and only where no package installed by hand satisfies the same dependency).
pub fn autoremove(
    installed: &[Installed],
    auto: &BTreeSet<String>,
    mut gone: BTreeSet<String>,
) -> BTreeSet<String> {
    let mut satisfiers: BTreeMap<&str, Vec<&Installed>> = BTreeMap::new();
    for p in installed {
        satisfiers.entry(&p.name).or_default().push(p);
        for v in &p.provides {
            satisfiers.entry(v).or_default().push(p);
        }
    }
    let removable = |p: &Installed| auto.contains(&p.name) && !p.base;
    loop {
        let mut needed: BTreeSet<&str> = BTreeSet::new();
        for p in installed.iter().filter(|p| !gone.contains(&p.name)) {
            for group in p.depends.iter().chain(&p.recommends) {
                let sats: Vec<&Installed> = group
                    .iter()
                    .flat_map(|n| satisfiers.get(n.as_str()).into_iter().flatten())
                    .copied()
                    .filter(|s| !gone.contains(&s.name))
                    .collect();
                if sats.iter().all(|s| removable(s)) {
                    needed.extend(sats.iter().map(|s| s.name.as_str()));
                }
            }
        }
        let before = gone.len();
        for p in installed {
            if !gone.contains(&p.name) && removable(p) && !needed.contains(p.name.as_str()) {
                gone.insert(p.name.clone());
            }
        }
        if gone.len() == before {
            return gone;
        }
    }
}

/// dpkg's status file without the stanzas of `gone`.
pub fn filter_status(status: &str, gone: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(status.len());
    for stanza in status.split("\n\n") {
        let name = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package: "))
            .map(str::trim);
        if name.is_some_and(|n| gone.contains(n)) || stanza.trim().is_empty() {
            continue;
        }
        out.push_str(stanza.trim_end_matches('\n'));
        out.push_str("\n\n");
    }
    out
}

/// The files of `packages` grouped by the overlay that holds them (relative to its mount
/// point); files outside every overlay are counted, not hidden.
type ByMount = BTreeMap<&'static str, BTreeSet<PathBuf>>;

fn package_files(packages: &BTreeSet<String>) -> Result<(ByMount, usize)> {
    let names: Vec<&String> = packages.iter().collect();
    let mut by_mount = ByMount::new();
    let mut outside = 0;
    for abs in crate::fresh::package_files(&names)? {
        let at = MOUNTS
            .iter()
            .find_map(|m| abs.strip_prefix(m).ok().map(|rel| (*m, rel.to_path_buf())));
        match at {
            Some((m, rel)) => {
                by_mount.entry(m).or_default().insert(rel);
            }
            None => outside += 1,
        }
    }
    Ok((by_mount, outside))
}

/// dpkg's own files for `packages` (`/var/lib/dpkg/info/NAME.list`, `NAME:amd64.md5sums`, ...),
/// relative to `/var`.
fn dpkg_info_files(packages: &BTreeSet<String>) -> Result<BTreeSet<PathBuf>> {
    let info = Path::new("/var/lib/dpkg/info");
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(info).with_context(|| format!("read {}", info.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some((stem, _)) = name.rsplit_once('.') else {
            continue;
        };
        let pkg = stem.split(':').next().unwrap_or(stem);
        if packages.contains(pkg) {
            out.insert(PathBuf::from("lib/dpkg/info").join(&name));
        }
    }
    Ok(out)
}

/// The view's directories: one upper and work directory per overlay, and the script that
/// mounts them and runs the command.
struct View {
    dir: PathBuf,
    script: PathBuf,
    keep: bool,
}

impl View {
    fn new(dir: &Path, gone: &BTreeSet<String>, keep: bool) -> Result<(Self, usize)> {
        if MOUNTS.iter().any(|m| dir.starts_with(m)) {
            bail!(
                "{}: the view's directory must not lie below {}",
                dir.display(),
                MOUNTS.join(", ")
            );
        }
        let _ = fs::remove_dir_all(dir);
        let (mut files, outside) = package_files(gone)?;
        files
            .entry("/var")
            .or_default()
            .extend(dpkg_info_files(gone)?);
        let mut mounts = String::new();
        let mut hidden = 0;
        for m in MOUNTS {
            let name = m.trim_start_matches('/');
            let (upper, work) = (dir.join(name).join("upper"), dir.join(name).join("work"));
            for d in [&upper, &work] {
                fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            }
            let paths = files.remove(m).unwrap_or_default();
            hidden += paths.len();
            crate::fresh::write_whiteouts(&upper, &paths)?;
            mounts.push_str(&format!(
                "mount -t overlay palisade-fresh-machine -o lowerdir={m},upperdir={},workdir={} {m}\n",
                upper.display(),
                work.display()
            ));
        }
        let status_path = Path::new("/var/lib/dpkg/status");
        let status = fs::read_to_string(status_path)
            .with_context(|| format!("read {}", status_path.display()))?;
        let var_dpkg = dir.join("var/upper/lib/dpkg");
        fs::create_dir_all(&var_dpkg).with_context(|| format!("create {}", var_dpkg.display()))?;
        fs::write(var_dpkg.join("status"), filter_status(&status, gone))
            .context("write the view's dpkg status")?;
        // Packages configured in the view must not start or restart services of the host:
        // the host's service manager would run them from the host's files.
        let rc = dir.join("usr/upper/sbin/policy-rc.d");
        if let Some(parent) = rc.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        fs::write(&rc, "#!/bin/sh\nexit 101\n").context("write policy-rc.d")?;
        fs::set_permissions(&rc, fs::Permissions::from_mode(0o755)).context("chmod policy-rc.d")?;
        let script = dir.join("enter.sh");
        fs::write(&script, format!("#!/bin/sh\nset -e\n{mounts}exec \"$@\"\n"))
            .with_context(|| format!("write {}", script.display()))?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", script.display()))?;
        if outside > 0 {
            eprintln!(
                "xtask: {outside} files of those packages lie outside /usr, /etc and /var and stay"
            );
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                script,
                keep,
            },
            hidden,
        ))
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"])
            .arg(&self.script)
            .args(args);
        crate::fresh::scrub_env(&mut cmd);
        cmd
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The controls: in the view, the tools are gone and dpkg knows it; the compiler is not.
fn controls(view: &View) -> Result<()> {
    let sh = |script: &str| -> Result<bool> {
        Ok(view
            .command(&["sh".into(), "-c".into(), script.into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run a control in the fresh-machine view")?
            .success())
    };
    for tool in [
        "protoc",
        "clang",
        "containerd",
        "runc",
        "qemu-system-x86_64",
        "bpftool",
    ] {
        if sh(&format!("command -v {tool}"))? {
            bail!("control: {tool} is still found in the fresh-machine view");
        }
    }
    if sh("dpkg-query -W -f='${Status}' protobuf-compiler | grep -q 'install ok installed'")? {
        bail!("control: dpkg still lists protobuf-compiler as installed in the view");
    }
    if !sh("printf '#include <stdio.h>\\nint main(void){puts(\"x\");return 0;}\\n' | cc -x c -o /dev/null -")? {
        bail!("control: a plain C program no longer compiles and links in the view");
    }
    if !sh("dpkg --audit")? {
        bail!("control: dpkg --audit finds the view's package database inconsistent");
    }
    Ok(())
}

/// `cargo xtask fresh-machine [--dir D] [--keep] [-C DIR] -- COMMAND...`.
pub fn command(args: &[String], children: &Children) -> Result<()> {
    let mut dir = None;
    let mut cwd = None;
    let mut keep = false;
    let mut it = args.iter();
    let mut cmd: Vec<String> = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(it.next().context("--dir needs a value")?)),
            "-C" => cwd = Some(PathBuf::from(it.next().context("-C needs a value")?)),
            "--keep" => keep = true,
            "--" => {
                cmd = it.by_ref().cloned().collect();
                break;
            }
            other => bail!("fresh-machine: unknown option {other} (the command goes after --)"),
        }
    }
    if cmd.is_empty() {
        bail!("fresh-machine: no command: cargo xtask fresh-machine -- COMMAND [ARGS]");
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("fresh-machine: run as root (it mounts overlays in a mount namespace)");
    }
    let dir = match dir {
        Some(d) => d,
        None => crate::cargo::Workspace::locate()?
            .root
            .join(".palisade-run/fresh-machine"),
    };
    let out = crate::procs::run(
        Command::new("dpkg-query")
            .arg("-W")
            .arg(format!("-f={QUERY}")),
    )?;
    let installed = parse_installed(&out);
    let seeds: BTreeSet<String> = installed
        .iter()
        .map(|p| p.name.clone())
        .filter(|n| crate::apt::FRESH_LACKS.contains(&n.as_str()))
        .collect();
    let auto: BTreeSet<String> = crate::procs::run(Command::new("apt-mark").arg("showauto"))?
        .lines()
        .map(bare)
        .collect();
    let gone = autoremove(&installed, &auto, closure(&installed, &seeds));
    let (view, hidden) = View::new(&dir, &gone, keep)?;
    eprintln!(
        "xtask: fresh-machine view: {} packages uninstalled ({} files hidden): {}",
        gone.len(),
        hidden,
        gone.iter().cloned().collect::<Vec<_>>().join(" ")
    );
    controls(&view)?;
    let mut run = view.command(&cmd);
    if let Some(c) = &cwd {
        run.current_dir(c);
    }
    let st = children
        .status(&mut run)
        .with_context(|| format!("run {} in the fresh-machine view", cmd.join(" ")))?;
    if !st.success() {
        bail!("{} failed in the fresh-machine view: {st}", cmd.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG: &str = "\
libc6\tinstall ok installed\t\t\t\t\t\trequired
libelf1\tinstall ok installed\t\t\tlibc6 (>= 2.34)\t\t\toptional
libelf-dev\tinstall ok installed\t\t\tlibelf1 (= 0.188-2.1), zlib1g-dev\t\t\toptional
zlib1g-dev\tinstall ok installed\t\t\tlibc6-dev | libc-dev\t\t\toptional
libc6-dev\tinstall ok installed\tlibc-dev\t\tlibc6\tmanpages-dev\t\toptional
manpages-dev\tinstall ok installed\t\t\t\t\t\toptional
libbpf-dev\tinstall ok installed\t\t\tlibelf-dev, libbpf1\t\t\toptional
mawk\tinstall ok installed\tawk\t\tlibc6\t\t\toptional
tool\tinstall ok installed\t\t\tawk | gawk, libc6\t\t\toptional
dash\tinstall ok installed\t\t\t\t\tyes\trequired
gone-before\tdeinstall ok config-files\t\t\tlibelf-dev\t\t\toptional
";

    #[test]
    fn parses_what_dpkg_prints() {
        let p = parse_installed(DPKG);
        assert_eq!(p.len(), 10, "the config-files package is not installed");
        let dev = p.iter().find(|p| p.name == "libelf-dev").unwrap();
        assert_eq!(
            dev.depends,
            vec![vec!["libelf1".to_string()], vec!["zlib1g-dev".to_string()]]
        );
        let libc = p.iter().find(|p| p.name == "libc6-dev").unwrap();
        assert_eq!(libc.provides, vec!["libc-dev".to_string()]);
        let tool = p.iter().find(|p| p.name == "tool").unwrap();
        assert_eq!(tool.depends[0], vec!["awk".to_string(), "gawk".to_string()]);
    }

    #[test]
    fn the_closure_takes_dependents_and_keeps_what_has_another_satisfier() {
        let p = parse_installed(DPKG);
        let seeds = BTreeSet::from(["libelf-dev".to_string()]);
        let gone = closure(&p, &seeds);
        assert_eq!(
            gone,
            BTreeSet::from(["libbpf-dev".to_string(), "libelf-dev".to_string()]),
            "libbpf-dev depends on libelf-dev; its missing libbpf1 was missing before"
        );
        // A virtual package: removing the one provider breaks its dependents, unless an
        // alternative in the group is still there.
        let gone = closure(&p, &BTreeSet::from(["mawk".to_string()]));
        assert!(gone.contains("tool"), "tool's only awk is gone: {gone:?}");
        let gone = closure(&p, &BTreeSet::from(["libc6-dev".to_string()]));
        assert!(
            gone.contains("zlib1g-dev")
                && gone.contains("libelf-dev")
                && gone.contains("libbpf-dev")
        );
        assert!(!gone.contains("libelf1") && !gone.contains("libc6"));
    }

    #[test]
    fn automatic_dependencies_go_with_what_pulled_them_in() {
        let p = parse_installed(DPKG);
        let auto = BTreeSet::from([
            "libelf1".to_string(),
            "zlib1g-dev".to_string(),
            "mawk".to_string(),
        ]);
        let gone = autoremove(
            &p,
            &auto,
            BTreeSet::from(["libelf-dev".to_string(), "libbpf-dev".to_string()]),
        );
        assert!(
            gone.contains("libelf1") && gone.contains("zlib1g-dev"),
            "{gone:?}"
        );
        assert!(
            !gone.contains("mawk"),
            "tool still needs awk, which mawk provides"
        );
        assert!(
            !gone.contains("libc6-dev"),
            "libc6-dev was installed by hand"
        );
    }

    #[test]
    fn the_status_file_forgets_the_uninstalled() {
        let status = "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: install ok installed\nDescription: x\n y\n\nPackage: c\nStatus: install ok installed\n";
        let out = filter_status(status, &BTreeSet::from(["b".to_string()]));
        assert_eq!(
            out,
            "Package: a\nStatus: install ok installed\n\nPackage: c\nStatus: install ok installed\n\n"
        );
    }
}
