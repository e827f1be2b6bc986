//! Finding a container's cgroup v2 directory and id, on pure v2 and on hybrid hierarchies.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a cgroup could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
    #[error("no cgroup2 mount in /proc/self/mountinfo")]
    NoUnifiedMount,
    #[error("process {pid}: cgroup file: {source}")]
    ProcCgroup {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {0}: no unified (0::) line in its cgroup file")]
    NoUnifiedEntry(u32),
    #[error("cgroup {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup id {0}: no directory with that inode under the unified mount")]
    NotFound(u64),
}

/// The cgroup2 mount point: /sys/fs/cgroup on v2-only nodes, /sys/fs/cgroup/unified on hybrid
/// ones. The first cgroup2 entry of our own mountinfo wins.
pub fn unified_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    unified_mount_from(&text).ok_or(CgroupError::NoUnifiedMount)
}

fn unified_mount_from(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields after " - " are: fstype, source, super options.
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace()
            .nth(4)
            .map(|m| PathBuf::from(unescape(m)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of a process's cgroup in the unified hierarchy.
pub fn cgroup_dir_of_pid(pid: u32) -> Result<PathBuf, CgroupError> {
    let mount = unified_mount()?;
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|source| CgroupError::ProcCgroup { pid, source })?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(CgroupError::NoUnifiedEntry(pid))?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// The cgroup v2 id of a process: the inode of its unified cgroup directory, which is what
/// `bpf_get_current_cgroup_id()` returns in the kernel.
pub fn cgroup_id_of_pid(pid: u32) -> Result<u64, CgroupError> {
    cgroup_id_of_dir(&cgroup_dir_of_pid(pid)?)
}

/// The cgroup v2 id of a cgroup directory.
pub fn cgroup_id_of_dir(dir: &Path) -> Result<u64, CgroupError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Stat {
            path: dir.to_path_buf(),
            source,
        })
}

/// Finds the unified cgroup directory whose inode is `id` (used when the caller gave only the
/// id). Walks the hierarchy; only called when a container is registered.
pub fn find_cgroup_dir(id: u64) -> Result<PathBuf, CgroupError> {
    let root = unified_mount()?;
    let mut queue = vec![root];
    while let Some(dir) = queue.pop() {
        if cgroup_id_of_dir(&dir)? == id {
            return Ok(dir);
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                queue.push(entry.path());
            }
        }
    }
    Err(CgroupError::NotFound(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_on_hybrid_and_pure_v2() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            unified_mount_from(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            unified_mount_from(v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            unified_mount_from("22 27 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn our_own_cgroup_id_is_the_inode_of_our_directory() {
        let dir = cgroup_dir_of_pid(std::process::id()).unwrap();
        let id = cgroup_id_of_pid(std::process::id()).unwrap();
        assert_eq!(id, fs::metadata(&dir).unwrap().ino());
        assert_eq!(find_cgroup_dir(id).unwrap(), dir);
    }
}
