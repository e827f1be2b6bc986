//! The credential files of a container, found at registration in its root as its processes see
//! it: `/etc/shadow` and `/etc/gshadow` (and their `-` backups), SSH host keys, kubeconfigs
//! (`/etc/kubernetes/*.conf`, `~/.kube/config`), cloud credentials (`~/.aws/credentials`,
//! `~/.config/gcloud/`, `~/.azure/`), users' SSH private keys and `~/.docker/config.json`, for
//! every home (`/root`, `/home/*` and the homes the image's `/etc/passwd` names). Each is keyed
//! in the kernel by device and inode, so a read is reported whatever path the process spelled.
//! A file created after registration (or replaced by a new inode) is not keyed.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags};
use tracing::{debug, warn};

use crate::enforce::Installed;
use crate::raw::bytes_of;
use crate::rules::{kernel_dev, open_in_root};
use crate::set::NodeMaps;
use crate::skel::monitor::types;

/// Files keyed per container at most; the rest are not watched (a warning says so).
pub(crate) const MAX_FILES: usize = 256;
/// Homes looked into per container at most.
const MAX_HOMES: usize = 64;
/// Entries read per directory at most.
const MAX_ENTRIES: usize = 4096;
/// How deep below `~/.config/gcloud` and `~/.azure` files are keyed.
const TREE_DEPTH: usize = 3;
/// The image's `/etc/passwd` is read up to this size.
const MAX_PASSWD: u64 = 1 << 20;

/// One credential file: the path inside the container and its (kernel device, inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredFile {
    pub path: PathBuf,
    pub dev: u32,
    pub ino: u64,
}

/// Keys the credential files found in `root` for the container in `slot` (`name` for the
/// logs) into the kernel's `cred_files`; returns how many. A file that cannot be keyed (the map
/// full) is left out with a warning: its reads go unreported, the container still runs.
pub(crate) fn install(
    maps: &NodeMaps,
    name: &str,
    slot: u32,
    root: &Path,
    installed: &mut Installed,
) -> usize {
    let (files, truncated) = find(root);
    if truncated {
        warn!(
            container = name,
            "more credential files than the monitor keys per container, only the first {MAX_FILES} are watched"
        );
    }
    for f in files {
        let key = types::cred_key {
            slot,
            dev: f.dev,
            ino: f.ino,
        };
        match maps
            .cred_files
            .update(bytes_of(&key), bytes_of(&1u32), MapFlags::ANY)
        {
            Ok(()) => {
                debug!(container = name, path = %f.path.display(), "credential file watched");
                installed.cred_keys.push(key);
            }
            Err(e) => warn!(
                container = name,
                path = %f.path.display(),
                error = %e,
                "credential file not watched"
            ),
        }
    }
    installed.cred_keys.len()
}

/// The bit of `container_info.cred_bits` an inode number sets: `cred_bit` of creds.h, which
/// the kernel programs test before looking an opened file up in `cred_files`.
pub(crate) fn cred_bit(ino: u64) -> u32 {
    1 << ((ino ^ (ino >> 5) ^ (ino >> 10)) & 31)
}

/// The filter bits of a container's keyed credential files.
pub(crate) fn cred_bits(keys: &[types::cred_key]) -> u32 {
    keys.iter().fold(0, |bits, k| bits | cred_bit(k.ino))
}

/// The credential files in `root` (a container's root: `/proc/PID/root` or its root
/// filesystem), at most [`MAX_FILES`], each inode once; `truncated` tells when more were found.
pub(crate) fn find(root: &Path) -> (Vec<CredFile>, bool) {
    let mut candidates: Vec<PathBuf> = [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for name in list(root, Path::new("/etc/ssh")) {
        if name.starts_with("ssh_host_") && name.ends_with("_key") {
            candidates.push(Path::new("/etc/ssh").join(name));
        }
    }
    for name in list(root, Path::new("/etc/kubernetes")) {
        if name.ends_with(".conf") {
            candidates.push(Path::new("/etc/kubernetes").join(name));
        }
    }
    for home in homes(root) {
        for f in [".aws/credentials", ".kube/config", ".docker/config.json"] {
            candidates.push(home.join(f));
        }
        let ssh = home.join(".ssh");
        for name in list(root, &ssh) {
            if name.starts_with("id_") && !name.ends_with(".pub") {
                candidates.push(ssh.join(name));
            }
        }
        for dir in [".config/gcloud", ".azure"] {
            tree(root, &home.join(dir), TREE_DEPTH, &mut candidates);
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut truncated = false;
    for path in candidates {
        let Some((dev, ino)) = regular_file(root, &path) else {
            continue;
        };
        if !seen.insert((dev, ino)) {
            continue;
        }
        if out.len() == MAX_FILES {
            truncated = true;
            break;
        }
        out.push(CredFile { path, dev, ino });
    }
    (out, truncated)
}

/// The (kernel device, inode) of `path` in `root` when it is a regular file.
fn regular_file(root: &Path, path: &Path) -> Option<(u32, u64)> {
    let meta = open_in_root(root, path, libc::O_PATH)
        .and_then(|f| f.metadata())
        .ok()?;
    meta.is_file().then(|| (kernel_dev(meta.dev()), meta.ino()))
}

/// The names in directory `dir` of `root` (empty when it is not one), at most
/// [`MAX_ENTRIES`].
fn list(root: &Path, dir: &Path) -> Vec<String> {
    let Ok(d) = open_in_root(root, dir, libc::O_RDONLY | libc::O_DIRECTORY) else {
        return Vec::new();
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{fd}")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Every path below `dir` in `root`, `depth` levels down (the files among them are kept by
/// the caller).
fn tree(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    for name in list(root, dir) {
        let p = dir.join(name);
        tree(root, &p, depth - 1, out);
        out.push(p);
    }
}

/// The homes of `root`: `/root`, the directories in `/home`, and those the image's
/// `/etc/passwd` names (`/` left out), at most
/// [`MAX_HOMES`].
fn homes(root: &Path) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    out.insert(PathBuf::from("/root"));
    for name in list(root, Path::new("/home")) {
        out.insert(Path::new("/home").join(name));
    }
    for home in passwd_homes(root) {
        out.insert(home);
    }
    out.into_iter().take(MAX_HOMES).collect()
}

fn passwd_homes(root: &Path) -> Vec<PathBuf> {
    let mut text = String::new();
    let read = open_in_root(root, Path::new("/etc/passwd"), libc::O_RDONLY)
        .and_then(|f| f.take(MAX_PASSWD).read_to_string(&mut text));
    if read.is_err() {
        return Vec::new();
    }
    passwd_home_dirs(&text)
}

/// The sixth field of each `/etc/passwd` line, when it is an absolute path other than `/`.
fn passwd_home_dirs(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| h.starts_with('/') && *h != "/" && !h.contains('\0'))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, p: &str) {
        let p = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn the_filter_bits_keep_every_credential_file_and_spread_neighbouring_inodes() {
        let keys: Vec<types::cred_key> = [12u64, 4_000_017, 1 << 40]
            .iter()
            .map(|&ino| types::cred_key {
                slot: 1,
                dev: 8,
                ino,
            })
            .collect();
        let bits = cred_bits(&keys);
        for k in &keys {
            assert_ne!(bits & cred_bit(k.ino), 0, "inode {} filtered out", k.ino);
        }
        assert_eq!(bits.count_ones(), 3);
        // 32 consecutive inode numbers take the 32 bits, none twice
        let all = (64u64..96).fold(0u32, |b, ino| {
            assert_eq!(b & cred_bit(ino), 0, "inode {ino} shares a bit");
            b | cred_bit(ino)
        });
        assert_eq!(all, u32::MAX);
        assert_eq!(cred_bits(&[]), 0);
    }

    #[test]
    fn credential_files_are_found_in_the_root_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/ssh/sshd_config",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/manifests/pod.yaml",
            "/root/.aws/credentials",
            "/root/.aws/config",
            "/root/.kube/config",
            "/home/ann/.ssh/id_rsa",
            "/home/ann/.ssh/id_rsa.pub",
            "/home/ann/.ssh/known_hosts",
            "/home/ann/.config/gcloud/legacy_credentials/ann/adc.json",
            "/srv/app/.azure/msal_token_cache.json",
            "/etc/hostname",
        ] {
            touch(root, f);
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:10:10::/srv/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nbin:x:2:2::/:/bin/false\n",
        )
        .unwrap();
        // an absolute link resolves inside the root: the host's files are never keyed
        std::fs::create_dir_all(root.join("root/.docker")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("root/.docker/config.json")).unwrap();
        let (found, truncated) = find(root);
        assert!(!truncated);
        let paths: BTreeSet<String> = found.iter().map(|f| f.path.display().to_string()).collect();
        let want: BTreeSet<String> = [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/kubernetes/admin.conf",
            "/root/.aws/credentials",
            "/root/.kube/config",
            "/home/ann/.ssh/id_rsa",
            "/home/ann/.config/gcloud/legacy_credentials/ann/adc.json",
            "/srv/app/.azure/msal_token_cache.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            paths, want,
            "the link to /etc/shadow is the same inode, once"
        );
        let shadow = std::fs::metadata(root.join("etc/shadow")).unwrap();
        let f = found.iter().find(|f| f.path == Path::new("/etc/shadow"));
        assert_eq!(
            f.map(|f| (f.dev, f.ino)),
            Some((kernel_dev(shadow.dev()), shadow.ino()))
        );
    }

    #[test]
    fn homes_come_from_passwd_without_system_placeholders() {
        let homes = passwd_home_dirs(
            "root:x:0:0::/root:/bin/sh\nbin:x:2:2::/:/bin/false\nw:x:3:3::relative:/bin/sh\nshort:x\nwww:x:33:33::/var/www:/usr/sbin/nologin\n",
        );
        assert_eq!(
            homes,
            vec![PathBuf::from("/root"), PathBuf::from("/var/www")]
        );
    }

    #[test]
    fn an_empty_or_missing_root_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path()), (Vec::new(), false));
        assert_eq!(find(&dir.path().join("missing")), (Vec::new(), false));
    }
}
