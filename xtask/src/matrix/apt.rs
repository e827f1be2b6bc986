//! A private apt configuration per Debian suite: its own sources list, lists, cache and (empty)
//! dpkg status under the matrix cache, so fetching kernels never touches the host's apt state.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::procs;

/// The archive key ring every suite is checked against (Debian's `debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One suite of the Debian archive, fetched through its own apt state.
pub struct Suite {
    pub name: &'static str,
    dir: PathBuf,
}

/// The archive that carries `suite`: the security suites live on their own host.
fn archive_of(suite: &str) -> &'static str {
    if suite.ends_with("-security") {
        "http://deb.debian.org/debian-security"
    } else {
        "http://deb.debian.org/debian"
    }
}

impl Suite {
    /// The suite's apt state under `cache`, created when missing (no network yet).
    pub fn new(cache: &Path, name: &'static str) -> Result<Self> {
        let dir = cache.join("apt").join(name);
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/parts",
            "debs",
        ] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("create {}", status.display()))?;
        }
        let line = format!(
            "deb [signed-by={KEYRING}] {} {name} main\n",
            archive_of(name)
        );
        fs::write(dir.join("etc/sources.list"), line).context("write the suite's sources.list")?;
        Ok(Self { name, dir })
    }

    /// The options that point apt at this suite's state only. The host's apt.conf.d is left
    /// out too (its extra index targets would be fetched for nothing); its proxy settings,
    /// if any, come from the environment.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={d}/etc/parts"),
            format!("Dir::Etc::Parts={d}/etc/parts"),
            format!("Dir::Etc::Preferences={d}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/etc/parts"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            "Acquire::Languages=none".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn apt(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(self.options())
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Fetches the suite's package lists (each run: the archive drops old kernels).
    pub fn update(&self) -> Result<()> {
        procs::run(self.apt("apt-get").args(["update", "-q"]))
            .with_context(|| format!("apt-get update for {}", self.name))?;
        Ok(())
    }

    /// The candidate version and the `Depends` of `package` in this suite.
    pub fn show(&self, package: &str) -> Result<(String, Vec<String>)> {
        let out = procs::run(
            self.apt("apt-cache")
                .args(["show", "--no-all-versions"])
                .arg(package),
        )
        .with_context(|| format!("{}: apt-cache show {package}", self.name))?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let version = field("Version:")
            .with_context(|| format!("{}: {package} has no version", self.name))?;
        let depends = field("Depends:")
            .map(|d| parse_depends(&d))
            .unwrap_or_default();
        Ok((version, depends))
    }

    /// The .deb of `package` at `version`, downloaded once into the suite's cache.
    pub fn download(&self, package: &str, version: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        let find = || -> Option<PathBuf> {
            fs::read_dir(&debs)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                        && p.extension().is_some_and(|e| e == "deb")
                })
        };
        if let Some(deb) = find() {
            return Ok(deb);
        }
        eprintln!(
            "xtask: matrix: downloading {package} {version} ({})",
            self.name
        );
        procs::run(
            self.apt("apt-get")
                .args(["download", "-q"])
                .arg(format!("{package}={version}"))
                .current_dir(&debs),
        )
        .with_context(|| format!("{}: apt-get download {package}={version}", self.name))?;
        match find() {
            Some(deb) => Ok(deb),
            None => bail!(
                "{}: apt-get download {package}={version} left no .deb in {}",
                self.name,
                debs.display()
            ),
        }
    }

    /// Removes cached .debs other than `keep` (earlier versions the archive has dropped).
    pub fn prune(&self, keep: &[PathBuf]) {
        let Ok(rd) = fs::read_dir(self.dir.join("debs")) else {
            return;
        };
        for e in rd.flatten() {
            if !keep.contains(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The package names of a `Depends` field, the first of each set of alternatives.
fn parse_depends(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|alt| {
            let first = alt.split('|').next()?.trim();
            let name = first.split([' ', '(', ':']).next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_take_the_first_alternative_without_versions() {
        assert_eq!(
            parse_depends(
                "dracut | initramfs-tools (>= 0.120+deb8u2), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), kmod:any"
            ),
            ["dracut", "linux-binary-7.2.13+deb14-amd64", "kmod"]
        );
    }

    #[test]
    fn security_suites_come_from_the_security_archive() {
        assert_eq!(
            archive_of("bullseye-security"),
            "http://deb.debian.org/debian-security"
        );
        assert_eq!(archive_of("sid"), "http://deb.debian.org/debian");
    }
}
