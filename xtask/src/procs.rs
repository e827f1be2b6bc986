//! Process, mount, cgroup and link helpers for teardown: everything by pid or by path, never by name.
//!
//! Reading /proc and mountinfo is shared with the suite (`palisade_host`).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
pub use palisade_host::{alive, cgroup_mounts, cmdline, mounts_under, shim_pids as shims_of};

/// The long-running steps xtask is waiting for (cargo builds and tests, guests), each in a
/// process group of its own: a signal's teardown stops them by their group ids, so that none
/// outlives xtask, and none starts after it (threads running steps side by side may be about
/// to start their next one).
#[derive(Clone, Debug, Default)]
pub struct Children(Arc<Mutex<Steps>>);

#[derive(Debug, Default)]
struct Steps {
    groups: Vec<i32>,
    /// Set by [`Children::stop_all`]: no step starts any more.
    stopping: bool,
}

impl Children {
    /// Runs `cmd` to its end as the leader of a new process group, known while it runs; fails
    /// without starting it once the steps are being stopped.
    pub fn status(&self, cmd: &mut Command) -> std::io::Result<ExitStatus> {
        let mut child = {
            let mut steps = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if steps.stopping {
                return Err(std::io::Error::other(
                    "xtask is stopping: the step was not started",
                ));
            }
            let child = cmd.process_group(0).spawn()?;
            steps
                .groups
                .push(i32::try_from(child.id()).unwrap_or(i32::MAX));
            child
        };
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let status = child.wait();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .groups
            .retain(|&p| p != pid);
        status
    }

    /// Stops starting steps; SIGTERM to every running step's process group, SIGKILL to those
    /// left after `grace`.
    pub fn stop_all(&self, grace: Duration) {
        let groups: Vec<i32> = {
            let mut steps = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            steps.stopping = true;
            steps.groups.clone()
        };
        for &g in &groups {
            eprintln!("xtask: stopping step process group {g}");
            signal(-g, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while groups.iter().any(|&g| alive(g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &g in &groups {
            signal(-g, Signal::SIGKILL);
        }
    }
}

pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    signal(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, Signal::SIGKILL);
    let _ = child.wait();
}

/// Lazily unmounts everything under `prefix`; returns what is still mounted.
pub fn unmount_all(prefix: &Path) -> Vec<PathBuf> {
    for _ in 0..3 {
        let mounts = mounts_under(prefix);
        if mounts.is_empty() {
            break;
        }
        // mountinfo lists parents first: undo the latest mounts first.
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(prefix)
}

/// Kills every process in the cgroups under `root` and removes those cgroups, deepest first.
pub fn remove_cgroup_tree(root: &str) {
    let rel = root.trim_start_matches('/');
    for mount in cgroup_mounts() {
        let top = mount.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        for d in &dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(p) = pid.trim().parse() {
                    signal(p, Signal::SIGKILL);
                }
            }
        }
        for d in dirs.iter().rev() {
            // A cgroup whose last process was just killed may take a moment to empty.
            for _ in 0..20 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn delete_link(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    let st = Command::new("ip")
        .args(["link", "del", name])
        .stderr(Stdio::null())
        .status()
        .context("run ip link del")?;
    if !st.success() {
        bail!("ip link del {name}: {st}");
    }
    Ok(())
}

/// Runs a command to completion, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A file with `contents` in a directory of its own under the temporary directory (named
/// after `name` and this process), removed with the directory when dropped: for tests.
#[cfg(test)]
pub struct ScratchFile {
    dir: PathBuf,
    pub path: PathBuf,
}

#[cfg(test)]
impl ScratchFile {
    pub fn new(name: &str, file: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        fs::write(&path, contents).unwrap();
        ScratchFile { dir, path }
    }
}

#[cfg(test)]
impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_step_starts_once_the_steps_are_stopped() {
        let children = Children::default();
        let marker = std::env::temp_dir().join(format!("xtask-steps-{}", std::process::id()));
        let mut touch = Command::new("touch");
        touch.arg(&marker);
        assert!(children.status(&mut touch).unwrap().success());
        std::fs::remove_file(&marker).unwrap();
        children.stop_all(Duration::from_millis(10));
        let err = children.status(&mut touch).unwrap_err();
        assert!(err.to_string().contains("stopping"), "{err}");
        let ran = marker.exists();
        let _ = std::fs::remove_file(&marker);
        assert!(!ran, "the step ran after stop_all");
    }

    #[test]
    fn stop_child_terminates_and_reaps() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(alive(pid));
        stop_child(&mut child, Duration::from_secs(5));
        assert!(!alive(pid));
    }

    #[test]
    fn tail_keeps_last_lines() {
        let f = ScratchFile::new("tail", "log", "a\nb\nc\n");
        assert_eq!(tail(&f.path, 2), "b\nc");
    }
}
