//! Binaries known by their content, so that a copy or a rename of a package manager, a shell or
//! a network tool is still one: the image's own copies are hashed once (on the container's
//! first exec, on the reader thread), and an exec of a file with another name is hashed only
//! when its size is the size of one of them, once per file version (device, inode, size, mtime,
//! ctime). And miners, which no image ships: a file written since the container started is
//! searched, once per version, for what every XMRig build carries (a mining pool's URL scheme
//! and the miner's or its algorithms' names).

use std::collections::HashMap;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the image keeps its programs.
const BIN_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];
/// Files larger than this are not hashed (no package manager or shell is).
const MAX_SIZE: u64 = 64 << 20;
/// File versions remembered per container.
const MAX_CACHED: usize = 4096;

/// A file version: device, inode, size, mtime and ctime (seconds and nanoseconds).
type Version = (u64, u64, u64, i64, i64, i64, i64);

/// The URL schemes of mining pools (stratum), one of which a miner's binary names.
const POOL_SCHEMES: &[&[u8]] = &[b"stratum+tcp://", b"stratum+ssl://", b"stratum+tls://"];
/// Names one of which a miner's binary carries beside the scheme: XMRig's own, and the
/// proof-of-work algorithms it implements.
const MINER_NAMES: &[&[u8]] = &[
    b"xmrig",
    b"XMRig",
    b"cryptonight",
    b"CryptoNight",
    b"randomx",
    b"RandomX",
    b"kawpow",
    b"ethash",
];
/// How far a file's change time may lag the wall clock (the filesystem's clock is coarse):
/// a file changed this little before the registration still counts as changed since.
const COARSE_CLOCK: Duration = Duration::from_secs(1);
/// Files larger than this are not searched for a miner's strings (XMRig's static builds are
/// under 10 MiB).
const MAX_MINER_SIZE: u64 = 32 << 20;

/// The image's known binaries by content, and what execs of other files turned out to be.
#[derive(Debug, Default)]
pub(crate) struct Known {
    scanned: bool,
    /// size -> (content hash, the known name)
    by_size: HashMap<u64, Vec<(u64, String)>>,
    seen: HashMap<Version, Option<String>>,
    /// File versions searched for a miner's strings, and the answer.
    miners: HashMap<Version, bool>,
}

impl Known {
    /// The known name (`apt-get`, `bash`) whose content the file process `pid` executes has,
    /// in the container whose root filesystem is `rootfs` (as the shim sees it); `filename` is
    /// what the exec named.
    pub fn identify(
        &mut self,
        rootfs: &Path,
        names: &[&str],
        pid: u32,
        filename: &str,
    ) -> Option<String> {
        if !self.scanned {
            self.scan(rootfs, names);
        }
        if self.by_size.is_empty() {
            return None;
        }
        let (path, meta) = executed(rootfs, pid, filename)?;
        let candidates = self.by_size.get(&meta.len())?;
        let version = version(&meta);
        if let Some(hit) = self.seen.get(&version) {
            return hit.clone();
        }
        let hash = hash_file(&path)?;
        let hit = candidates
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, name)| name.clone());
        if self.seen.len() >= MAX_CACHED {
            self.seen.clear();
        }
        self.seen.insert(version, hit.clone());
        hit
    }

    /// Whether the file process `pid` executes (`filename` below `rootfs` when the process is
    /// gone) changed since `since` (the container's registration, before its start) and
    /// carries a miner's strings: a mining pool's URL scheme and a miner's or its algorithms'
    /// name. The image's own files are not searched; each file version is searched once.
    pub fn miner(&mut self, rootfs: &Path, pid: u32, filename: &str, since: SystemTime) -> bool {
        let Some((path, meta)) = executed(rootfs, pid, filename) else {
            return false;
        };
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                meta.ctime().max(0) as u64,
                meta.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        if changed + COARSE_CLOCK < since || meta.len() > MAX_MINER_SIZE {
            return false;
        }
        let version = version(&meta);
        if let Some(hit) = self.miners.get(&version) {
            return *hit;
        }
        let hit = carries_miner_strings(&path).unwrap_or(false);
        if self.miners.len() >= MAX_CACHED {
            self.miners.clear();
        }
        self.miners.insert(version, hit);
        hit
    }

    /// Hashes the image's own copies of `names`. A multi-call binary (busybox: one file under
    /// many names, hard links or symbolic links to a file of another name) identifies nothing:
    /// its content is every applet at once.
    fn scan(&mut self, rootfs: &Path, names: &[&str]) {
        self.scanned = true;
        for dir in BIN_DIRS {
            for name in names {
                let link = rootfs.join(dir).join(name);
                let Ok(meta) = std::fs::metadata(&link) else {
                    continue;
                };
                if !meta.is_file() || meta.nlink() > 1 || meta.len() > MAX_SIZE {
                    continue;
                }
                // a symbolic link counts when it leads to a file of a known name (sh -> dash)
                let own = std::fs::read_link(&link)
                    .ok()
                    .map(|target| {
                        target
                            .file_name()
                            .is_some_and(|t| names.iter().any(|n| t == *n))
                    })
                    .unwrap_or(true);
                if !own {
                    continue;
                }
                let Some(hash) = hash_file(&link) else {
                    continue;
                };
                let entry = self.by_size.entry(meta.len()).or_default();
                if !entry.iter().any(|(h, _)| *h == hash) {
                    entry.push((hash, name.to_string()));
                }
            }
        }
        self.drop_shared(rootfs, names);
    }

    /// Forgets a content the image also ships under a name that is neither a shell nor a
    /// package manager (a multi-call binary copied rather than linked, a test image's
    /// stand-in): an exec of that other name is not one of them. Only files of a known
    /// binary's size are read.
    fn drop_shared(&mut self, rootfs: &Path, names: &[&str]) {
        for dir in BIN_DIRS {
            let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if names.iter().any(|n| name == *n) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(e.path()) else {
                    continue;
                };
                if !meta.is_file() || !self.by_size.contains_key(&meta.len()) {
                    continue;
                }
                let Some(hash) = hash_file(&e.path()) else {
                    continue;
                };
                if let Some(list) = self.by_size.get_mut(&meta.len()) {
                    list.retain(|(h, _)| *h != hash);
                }
            }
        }
        self.by_size.retain(|_, list| !list.is_empty());
    }
}

/// The executed file itself while the process lives; else the path under the root.
fn executed(rootfs: &Path, pid: u32, filename: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    match std::fs::metadata(&exe) {
        Ok(m) => Some((exe, m)),
        Err(_) => {
            let p = rootfs.join(filename.strip_prefix('/')?);
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m))
        }
    }
}

/// Whether the file at `path` holds one of [`POOL_SCHEMES`] and one of [`MINER_NAMES`].
fn carries_miner_strings(path: &Path) -> Option<bool> {
    let mut f = std::fs::File::open(path).ok()?;
    let longest = POOL_SCHEMES
        .iter()
        .chain(MINER_NAMES)
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let (mut scheme, mut name) = (false, false);
    // chunks that overlap by the longest string, so none is cut in two unseen
    let mut buf = vec![0u8; 256 * 1024];
    let mut kept = 0;
    loop {
        let n = f.read(&mut buf[kept..]).ok()?;
        if n == 0 {
            break;
        }
        let window = &buf[..kept + n];
        scheme = scheme || POOL_SCHEMES.iter().any(|s| contains(window, s));
        name = name || MINER_NAMES.iter().any(|s| contains(window, s));
        if scheme && name {
            return Some(true);
        }
        let tail = window.len().min(longest);
        let start = window.len() - tail;
        buf.copy_within(start..start + tail, 0);
        kept = tail;
    }
    Some(false)
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if hay[at + 1..].starts_with(rest) {
            return true;
        }
        from = at + 1;
    }
    false
}

fn version(m: &std::fs::Metadata) -> Version {
    (
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// A 64-bit hash of a file's content (SipHash with fixed keys: stable within the process,
/// which is all the comparison needs).
fn hash_file(path: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_known_by_content_a_multi_call_binary_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["usr/bin", "bin", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("usr/bin/apt-get"), b"apt-get's code").unwrap();
        std::fs::write(root.join("usr/bin/dash"), b"dash's code....").unwrap();
        std::os::unix::fs::symlink("dash", root.join("bin/sh")).unwrap();
        std::fs::write(root.join("bin/busybox"), b"busybox's code").unwrap();
        std::fs::hard_link(root.join("bin/busybox"), root.join("bin/ash")).unwrap();
        std::fs::copy(root.join("usr/bin/apt-get"), root.join("tmp/x")).unwrap();
        std::fs::copy(root.join("usr/bin/dash"), root.join("tmp/y")).unwrap();
        std::fs::copy(root.join("bin/busybox"), root.join("tmp/z")).unwrap();
        std::fs::write(root.join("tmp/w"), b"something else").unwrap();
        // a stand-in: the same program as apt and under its own name too
        std::fs::write(root.join("usr/bin/apt"), b"probe's code!!").unwrap();
        std::fs::write(root.join("usr/bin/probe"), b"probe's code!!").unwrap();
        std::fs::copy(root.join("usr/bin/probe"), root.join("tmp/v")).unwrap();
        let names = ["apt-get", "apt", "dash", "sh", "ash"];
        let mut k = Known::default();
        // no process of that pid: the path under the root is read
        let pid = u32::MAX;
        let mut id = |f: &str| k.identify(root, &names, pid, f);
        assert_eq!(id("/tmp/x").as_deref(), Some("apt-get"));
        assert_eq!(id("/tmp/x").as_deref(), Some("apt-get"));
        assert!(
            matches!(id("/tmp/y").as_deref(), Some("dash" | "sh")),
            "dash, also reached as sh"
        );
        assert_eq!(id("/tmp/z"), None, "busybox is every applet");
        assert_eq!(id("/tmp/w"), None, "same size, other content");
        assert_eq!(
            id("/tmp/v"),
            None,
            "the image ships that content as probe too"
        );
    }

    #[test]
    fn a_file_written_since_the_start_with_a_miners_strings_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/shipped"), b"stratum+tcp:// xmrig").unwrap();
        let mut k = Known::default();
        let pid = u32::MAX;
        // changed before the registration (the image's): not searched, whatever it holds
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(!k.miner(root, pid, "/tmp/shipped", later));
        let since = SystemTime::UNIX_EPOCH;
        // written since: the strings decide, across a chunk boundary too
        let mut big = vec![b'.'; 256 * 1024 - 5];
        big.extend_from_slice(b"stratum+ssl://pool:443");
        big.extend_from_slice(&vec![b'.'; 300 * 1024]);
        big.extend_from_slice(b"RandomX");
        std::fs::write(root.join("tmp/kswapd0"), &big).unwrap();
        std::fs::write(root.join("tmp/pool-only"), b"stratum+tcp://pool:3333").unwrap();
        std::fs::write(root.join("tmp/names-only"), b"xmrig randomx").unwrap();
        std::fs::write(root.join("tmp/plain"), b"an ordinary program").unwrap();
        assert!(k.miner(root, pid, "/tmp/kswapd0", since));
        assert!(k.miner(root, pid, "/tmp/kswapd0", since), "cached");
        assert!(!k.miner(root, pid, "/tmp/pool-only", since));
        assert!(!k.miner(root, pid, "/tmp/names-only", since));
        assert!(!k.miner(root, pid, "/tmp/plain", since));
        assert!(!k.miner(root, pid, "/tmp/missing", since));
    }

    #[test]
    fn substrings_are_found_anywhere() {
        assert!(contains(b"abcstratum+tcp://x", b"stratum+tcp://"));
        assert!(contains(b"xmrig", b"xmrig"));
        assert!(!contains(b"xmri", b"xmrig"));
        assert!(!contains(b"", b"x"));
        assert!(contains(b"sstratum", b"stratum"));
    }
}
