//! The folding rules: when file paths become a directory, and when peer addresses become a CIDR.
//!
//! Files: a path folds into the directory above its first *generated* segment (all digits, a
//! run of six digits or more, a hex or UUID-like name of eight characters or more with at
//! least two digits, or a temporary-file name), and a directory folds as a whole once more
//! than [`FOLD_THRESHOLD`] distinct file names sit directly in it. A folded directory is
//! recursive. `/` and the system top-level directories ([`NEVER_FOLDED`]) are never folded
//! into: a path that would fold there is kept exactly.
//!
//! Peers: more than [`PEER_FOLD_THRESHOLD`] distinct addresses of one /24 (IPv4) or /64 (IPv6)
//! reached on the same port and protocol become that network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// More distinct file names than this directly in one directory fold the directory.
pub const FOLD_THRESHOLD: usize = 16;

/// More distinct addresses than this in one /24 or /64 (same port and protocol) fold to it.
pub const PEER_FOLD_THRESHOLD: usize = 8;

/// Top-level directories that are never folded into (nor `/`): a recursive rule on them would
/// grant the whole system tree.
pub const NEVER_FOLDED: &[&str] = &[
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
    "proc", "root", "run", "sbin", "srv", "sys", "usr", "var",
];

/// Errors of this module: a CIDR that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FoldError {
    /// Not `ADDRESS/PREFIX` with a prefix that fits the address family.
    #[error("cidr {0:?}: expected ADDRESS/PREFIX (prefix up to 32 for IPv4, 128 for IPv6)")]
    Cidr(String),
}

/// The longest path the recording keeps (bytes). Linux allows 4096; the recording keeps less
/// so that a document's worst case stays under `persist::MAX_DOCUMENT_BYTES`.
pub const MAX_PATH_BYTES: usize = 1024;

/// Whether `path` is a path the recording keeps: absolute, normalized (no empty, `.` or `..`
/// segments), no control characters, at most [`MAX_PATH_BYTES`], segments of at most 255
/// bytes, not ending in `/`.
pub fn valid_file_path(path: &str) -> bool {
    if path.len() > MAX_PATH_BYTES
        || !path.starts_with('/')
        || path.ends_with('/')
        || path.chars().any(char::is_control)
    {
        return false;
    }
    path[1..]
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.len() <= 255)
}

/// Whether one path segment looks generated (see the module documentation).
pub fn looks_generated(segment: &str) -> bool {
    let b = segment.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let mut run = 0;
    for c in b {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 6 {
            return true;
        }
    }
    let stem = segment.split('.').next().unwrap_or(segment);
    let digits = stem.bytes().filter(u8::is_ascii_digit).count();
    if stem.len() >= 8 && digits >= 2 && stem.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-') {
        return true;
    }
    let lower = segment.to_ascii_lowercase();
    if [".tmp", ".temp", ".swp", ".part", "~"]
        .iter()
        .any(|s| lower.ends_with(s) && lower.len() > s.len())
    {
        return true;
    }
    let rest = lower
        .strip_prefix(".tmp")
        .or_else(|| lower.strip_prefix("tmp"));
    matches!(rest, Some(r) if r.len() >= 4 && r.bytes().any(|c| c.is_ascii_digit()))
}

/// Whether a rule may be folded into the directory `dir` (ending with `/`).
pub fn foldable_dir(dir: &str) -> bool {
    let inner = dir.trim_matches('/');
    if inner.is_empty() {
        return false;
    }
    inner.contains('/') || !NEVER_FOLDED.contains(&inner)
}

/// The directory (ending with `/`) that `path` folds into because one of its segments looks
/// generated, if that directory may be folded into.
pub fn generated_fold(path: &str) -> Option<String> {
    let mut end = 0;
    for seg in path[1..].split('/') {
        if looks_generated(seg) {
            let dir = &path[..=end];
            return foldable_dir(dir).then(|| dir.to_string());
        }
        end += seg.len() + 1;
    }
    None
}

/// The directory (ending with `/`) directly holding `path`.
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// The proper ancestors of `path` as directories ending with `/`, shortest first (`/` included).
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    trimmed.match_indices('/').map(move |(i, _)| &trimmed[..=i])
}

/// An address or a network: `10.0.0.7/32`, `10.0.0.0/24`, `fd00::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// One address (a /32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    /// The network of `prefix` bits containing `addr` (host bits cleared); `None` when the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        // The mask keeps the top `prefix` bits; a shift by the whole width leaves none.
        let bits = u32::from(prefix);
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is a single address.
    pub fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `other` (an address or a network) lies inside this network.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix
            && Cidr::new(other.addr, self.prefix).is_some_and(|n| n.addr == self.addr)
    }

    /// The network an address folds into: its /24 (IPv4) or /64 (IPv6).
    pub fn fold_network(&self) -> Cidr {
        let prefix = if self.addr.is_ipv4() { 24 } else { 64 };
        Cidr::new(self.addr, prefix.min(self.prefix)).unwrap_or(*self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = FoldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FoldError::Cidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let cidr = Cidr::new(addr, prefix).ok_or_else(bad)?;
        // Host bits set means the text is not what it says: refuse rather than guess.
        if cidr.addr != addr {
            return Err(bad());
        }
        Ok(cidr)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names() {
        for g in [
            "1234",
            "7",
            "access.log.20261207",
            "3f2a9c1be4d0",
            "123e4567-e89b-12d3-a456-426614174000",
            "upload.tmp",
            "tmpa1b2c3",
            ".tmpX9zzzz",
            "notes.txt~",
            "blob.part",
        ] {
            assert!(looks_generated(g), "{g}");
        }
        for n in [
            "nginx.conf",
            "libc.so.6",
            "python3.11",
            "sha256sum",
            "x86_64-linux-gnu",
            "deadbeef",
            "tmp",
            ".tmp",
            "index.html",
            "rc1.d",
        ] {
            assert!(!looks_generated(n), "{n}");
        }
    }

    #[test]
    fn generated_folds_stop_at_system_top_levels() {
        assert_eq!(
            generated_fold("/var/cache/app/4711/data").as_deref(),
            Some("/var/cache/app/")
        );
        assert_eq!(generated_fold("/tmp/tmpab12cd").as_deref(), Some("/tmp/"));
        assert_eq!(
            generated_fold("/proc/123/status"),
            None,
            "/proc/ is never folded"
        );
        assert_eq!(generated_fold("/etc/nginx/nginx.conf"), None);
        assert!(!foldable_dir("/"));
        assert!(!foldable_dir("/etc/"));
        assert!(foldable_dir("/etc/nginx/"));
        assert!(foldable_dir("/app/"));
    }

    #[test]
    fn paths_and_ancestors() {
        assert!(valid_file_path("/etc/passwd"));
        for bad in [
            "etc/passwd",
            "/etc/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a\0b",
            "/",
        ] {
            assert!(!valid_file_path(bad), "{bad:?}");
        }
        assert_eq!(parent_dir("/a/b/c"), "/a/b/");
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            vec!["/", "/a/", "/a/b/"]
        );
        assert_eq!(ancestors("/a/b/").collect::<Vec<_>>(), vec!["/", "/a/"]);
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.2.0/24".parse().unwrap();
        let host = Cidr::host("10.1.2.9".parse().unwrap());
        assert!(net.contains(&host));
        assert!(!host.contains(&net));
        assert!(!net.contains(&Cidr::host("10.1.3.9".parse().unwrap())));
        assert_eq!(host.fold_network(), net);
        assert_eq!(host.to_string(), "10.1.2.9/32");
        let v6 = Cidr::host("fd00::1:2".parse().unwrap());
        assert_eq!(v6.fold_network().to_string(), "fd00::/64");
        assert!(v6.is_host());
        assert!(!net.contains(&v6));
        for bad in ["10.1.2.1/24", "10.0.0.0/33", "10.0.0.0", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, "\"10.1.2.0/24\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), net);
    }
}
