//! Which kernel sandboxing features this machine offers: landlock, seccomp actions and user
//! namespaces, probed once so that later hardening can choose what it relies on.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// A file under /proc could not be read for a reason other than its absence (absence means
/// the feature is not built in).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file exists but could not be read.
    #[error("kernel features: read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file does not hold what the kernel writes there.
    #[error("kernel features: {path}: unexpected content {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// The landlock probe failed with an errno that does not mean "unsupported".
    #[error("kernel features: landlock_create_ruleset: {0}")]
    Landlock(#[source] io::Error),
}

/// The sandboxing features of the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    /// The landlock ABI version, `None` when landlock is not built in or not enabled.
    pub landlock_abi: Option<u32>,
    /// The seccomp filter return actions the kernel offers (`errno`, `log`, `user_notif`,
    /// ...), from `/proc/sys/kernel/seccomp/actions_avail`; empty without seccomp filters.
    pub seccomp_actions: BTreeSet<String>,
    /// User namespaces can be created (`/proc/sys/user/max_user_namespaces` above 0).
    pub user_namespaces: bool,
    /// Debian's switch for unprivileged user namespaces
    /// (`/proc/sys/kernel/unprivileged_userns_clone`), `None` on kernels without it.
    pub unprivileged_user_namespaces: Option<bool>,
    /// BPF-LSM is in force in the node's eBPF monitor (its file_open program refuses file
    /// Block rules). Not probed here: the caller that holds the monitor sets it; `false` from
    /// [`KernelFeatures::probe`].
    pub bpf_lsm: bool,
}

impl KernelFeatures {
    /// Probes the running kernel.
    pub fn probe() -> Result<Self, KernelError> {
        Self::probe_with(Path::new("/proc"), landlock_abi()?)
    }

    /// Probes with the files of `proc_root` (a stand-in for /proc) and a landlock ABI found
    /// by the caller; split out so the parsing can be tested on prepared files.
    pub fn probe_with(proc_root: &Path, landlock_abi: Option<u32>) -> Result<Self, KernelError> {
        let actions = read_optional(&proc_root.join("sys/kernel/seccomp/actions_avail"))?
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let max_userns = match read_optional(&proc_root.join("sys/user/max_user_namespaces"))? {
            Some(s) => parse_number(&proc_root.join("sys/user/max_user_namespaces"), &s)?,
            None => 0,
        };
        let unprivileged_path = proc_root.join("sys/kernel/unprivileged_userns_clone");
        let unprivileged = match read_optional(&unprivileged_path)? {
            Some(s) => Some(parse_number(&unprivileged_path, &s)? != 0),
            None => None,
        };
        Ok(Self {
            landlock_abi,
            seccomp_actions: actions,
            user_namespaces: max_userns > 0,
            unprivileged_user_namespaces: unprivileged,
            bpf_lsm: false,
        })
    }

    /// Whether seccomp filters can return `action` (a name as in `actions_avail`).
    pub fn seccomp_action(&self, action: &str) -> bool {
        self.seccomp_actions.contains(action)
    }
}

/// The landlock ABI version of the running kernel: `None` when the syscall does not exist
/// (ENOSYS) or landlock is built in but not enabled at boot (EOPNOTSUPP).
pub fn landlock_abi() -> Result<Option<u32>, KernelError> {
    match palisade_init::landlock::probe_abi() {
        Ok(abi) => Ok(Some(abi)),
        Err(err) => match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(KernelError::Landlock(err)),
        },
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, KernelError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KernelError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_number(path: &Path, content: &str) -> Result<u64, KernelError> {
    content.trim().parse().map_err(|_| KernelError::Parse {
        path: path.to_owned(),
        content: content.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_proc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        dir
    }

    #[test]
    fn reads_every_feature_from_proc_files() {
        let dir = fake_proc(&[
            (
                "sys/kernel/seccomp/actions_avail",
                "kill_process kill_thread trap errno user_notif trace log allow\n",
            ),
            ("sys/user/max_user_namespaces", "96365\n"),
            ("sys/kernel/unprivileged_userns_clone", "0\n"),
        ]);
        let f = KernelFeatures::probe_with(dir.path(), Some(7)).unwrap();
        assert_eq!(f.landlock_abi, Some(7));
        assert_eq!(f.seccomp_actions.len(), 8);
        assert!(f.seccomp_action("user_notif") && f.seccomp_action("log"));
        assert!(!f.seccomp_action("kill"));
        assert!(f.user_namespaces);
        assert_eq!(f.unprivileged_user_namespaces, Some(false));
    }

    #[test]
    fn absent_files_mean_absent_features() {
        let dir = fake_proc(&[]);
        let f = KernelFeatures::probe_with(dir.path(), None).unwrap();
        assert!(f.seccomp_actions.is_empty());
        assert!(!f.user_namespaces);
        assert_eq!(f.unprivileged_user_namespaces, None);
    }

    #[test]
    fn zero_user_namespaces_means_unavailable() {
        let dir = fake_proc(&[("sys/user/max_user_namespaces", "0\n")]);
        let f = KernelFeatures::probe_with(dir.path(), None).unwrap();
        assert!(!f.user_namespaces);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let dir = fake_proc(&[("sys/user/max_user_namespaces", "lots\n")]);
        let err = KernelFeatures::probe_with(dir.path(), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_user_namespaces"), "{msg}");
        assert!(msg.contains("unexpected content \"lots\\n\""), "{msg}");
    }
}
