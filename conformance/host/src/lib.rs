#![doc = include_str!("../README.md")]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// Command line of a process, NUL separators turned into spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Parent pid of a process.
pub fn ppid(pid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(
                state.and_then(|s| s.chars().next()),
                Some('Z') | Some('X') | None
            )
        }
    }
}

/// Start time of a process in clock ticks since boot (`/proc/PID/stat`, field 22): with the
/// pid, it tells a process from a later one that reuses its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (the state).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// All pids currently in /proc.
pub fn pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Shim processes of this run: their command line names the containerd address.
pub fn shim_pids(containerd_address: &str) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|&p| {
            cmdline(p)
                .is_some_and(|c| c.contains("containerd-shim") && c.contains(containerd_address))
        })
        .collect()
}

/// Walks up from `pid` to the first ancestor whose command line is a containerd shim.
pub fn shim_of(pid: i32) -> Result<(i32, String)> {
    let mut cur = pid;
    for _ in 0..16 {
        let parent = ppid(cur).with_context(|| format!("pid {cur}: no parent"))?;
        if parent <= 1 {
            break;
        }
        let cmd = cmdline(parent).unwrap_or_default();
        if cmd.contains("containerd-shim") {
            return Ok((parent, cmd));
        }
        cur = parent;
    }
    anyhow::bail!("pid {pid}: no containerd-shim among its ancestors")
}

/// The shim binary a handler's containers should run under.
pub fn shim_binary_name(handler: &str) -> String {
    format!("containerd-shim-{handler}-v2")
}

/// Checks that `pid`'s shim runs `shim_binary_name(handler)`; returns (shim pid, exe, cmdline).
pub fn expect_shim(pid: i32, handler: &str) -> Result<(i32, PathBuf, String)> {
    let (shim, cmdline) = shim_of(pid)?;
    let exe = fs::read_link(format!("/proc/{shim}/exe"))
        .with_context(|| format!("readlink /proc/{shim}/exe"))?;
    let want = shim_binary_name(handler);
    if exe.file_name().is_none_or(|n| n.to_string_lossy() != want) {
        anyhow::bail!(
            "pid {pid} runs under {} ({cmdline}), want {want}",
            exe.display()
        );
    }
    Ok((shim, exe, cmdline))
}

/// Mount points (from mountinfo) under `prefix`.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// Mount points of cgroup (v1 and v2) hierarchies.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            if fstype == "cgroup" || fstype == "cgroup2" {
                pre.split(' ').nth(4).map(PathBuf::from)
            } else {
                None
            }
        })
        .collect()
}

/// Number of container-level cgroup directories (two or more levels below `root`,
/// a cgroupfs path) in every hierarchy. Pod-level directories are left out: as
/// with the kubelet, the runtime does not remove the pod's parent cgroup.
pub fn cgroup_dirs(root: &str) -> usize {
    fn count(dir: &Path, depth: usize) -> usize {
        let Ok(rd) = fs::read_dir(dir) else {
            return 0;
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| usize::from(depth >= 1) + count(&e.path(), depth + 1))
            .sum()
    }
    let rel = root.trim_start_matches('/');
    cgroup_mounts().iter().map(|m| count(&m.join(rel), 0)).sum()
}

/// A process's cgroup directory for `controller`: (path, is cgroup v2).
/// A v1 hierarchy carrying the controller wins over the unified one (hybrid hosts).
pub fn cgroup_dir(pid: i32, controller: &str) -> Result<(PathBuf, bool)> {
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    let info = fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let mounts: Vec<(String, String, String)> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let opts = post.nth(1).unwrap_or("").to_string();
            Some((fstype, pre.split(' ').nth(4)?.to_string(), opts))
        })
        .collect();
    let mut unified = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if ctrls.is_empty() {
            unified = mounts
                .iter()
                .find(|(t, _, _)| t == "cgroup2")
                .map(|(_, mp, _)| Path::new(mp).join(rel));
        } else if ctrls.split(',').any(|c| c == controller) {
            if let Some((_, mp, _)) = mounts
                .iter()
                .find(|(t, _, o)| t == "cgroup" && o.split(',').any(|c| c == controller))
            {
                return Ok((Path::new(mp).join(rel), false));
            }
        }
    }
    unified
        .map(|p| (p, true))
        .with_context(|| format!("pid {pid}: no cgroup for {controller}"))
}

fn read_trim(p: &Path) -> Result<String> {
    Ok(fs::read_to_string(p)
        .with_context(|| format!("read {}", p.display()))?
        .trim()
        .to_string())
}

/// CFS (quota, period) in microseconds of the process's cgroup; None when unlimited.
pub fn cpu_quota(pid: i32) -> Result<Option<(i64, i64)>> {
    let (dir, v2) = cgroup_dir(pid, "cpu")?;
    let (quota, period) = if v2 {
        let max = read_trim(&dir.join("cpu.max"))?;
        let (q, p) = max.split_once(' ').context("cpu.max format")?;
        (q.to_string(), p.to_string())
    } else {
        (
            read_trim(&dir.join("cpu.cfs_quota_us"))?,
            read_trim(&dir.join("cpu.cfs_period_us"))?,
        )
    };
    if quota == "max" || quota == "-1" {
        return Ok(None);
    }
    Ok(Some((quota.parse()?, period.parse()?)))
}

/// Memory limit in bytes of the process's cgroup; None when unlimited.
pub fn memory_limit(pid: i32) -> Result<Option<i64>> {
    let (dir, v2) = cgroup_dir(pid, "memory")?;
    let raw = read_trim(&dir.join(if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    }))?;
    if raw == "max" {
        return Ok(None);
    }
    let v: i64 = raw.parse()?;
    // cgroup v1 shows "unlimited" as a huge page-aligned number.
    Ok((v < i64::MAX / 2).then_some(v))
}

/// Entries of a directory (0 when it does not exist).
pub fn dir_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: i32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list fds of pid {pid}"))?
        .count())
}

/// Inode of one of a process's namespaces, as `readlink /proc/<pid>/ns/<ns>` shows it.
pub fn ns_link(pid: &str, ns: &str) -> Result<String> {
    let p = format!("/proc/{pid}/ns/{ns}");
    Ok(fs::read_link(&p)
        .with_context(|| format!("readlink {p}"))?
        .display()
        .to_string())
}

/// Whether the kernel lists `bpf` among its active LSMs (`/sys/kernel/security/lsm`), where
/// the shim puts file Block rules into BPF-LSM, whose refusal is EACCES.
pub fn bpf_lsm_listed() -> bool {
    fs::read_to_string("/sys/kernel/security/lsm")
        .unwrap_or_default()
        .trim()
        .split(',')
        .any(|l| l == "bpf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_visible() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(alive(me));
        assert!(pids().contains(&me));
        assert!(ppid(me).is_some());
        assert!(start_time(me).is_some_and(|t| t >= start_time(1).unwrap()));
        assert!(cmdline(me).unwrap().contains("palisade_host"));
        assert!(fd_count(me).unwrap() >= 3);
        assert!(ns_link("self", "net").unwrap().starts_with("net:["));
    }

    #[test]
    fn own_cgroup_is_found() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (dir, _) = cgroup_dir(me, "memory").unwrap();
        assert!(dir.is_dir(), "{}", dir.display());
    }

    #[test]
    fn root_mount_is_listed() {
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
    }
}
