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

/// How long the outermost xtask's stop waits for its steps' process groups to end after
/// SIGTERM before it sends SIGKILL: a step may itself be an xtask (`fresh-machine -- cargo
/// xtask test`) that needs this long to stop its own steps and tear down its containerd,
/// guests and mounts. Steps that end at once (cargo, qemu under `timeout`) end the wait at
/// once. A nested xtask waits half as long as the one above it ([`stop_grace`]), so that its
/// own escalation and teardown fit in its parent's wait.
pub const STOP_GRACE: Duration = Duration::from_secs(90);

/// The variable through which an xtask tells the steps it starts how deep they are nested:
/// 1 below the outermost xtask, 2 below an xtask that is itself a step, ...
const DEPTH_VAR: &str = "PALISADE_XTASK_DEPTH";

/// How deep this xtask is nested in others (0: it is the outermost).
fn depth() -> u32 {
    std::env::var(DEPTH_VAR)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// The grace this xtask's stop gives its steps.
fn stop_grace() -> Duration {
    grace_at(depth())
}

/// [`STOP_GRACE`] halved per level of nesting, at least 5 s.
fn grace_at(depth: u32) -> Duration {
    (STOP_GRACE / 2u32.saturating_pow(depth.min(16))).max(Duration::from_secs(5))
}

/// How long a stop waits for the processes left below xtask after SIGTERM (the steps'
/// grandchildren, orphaned children of an xtask that was killed) before SIGKILL.
const SWEEP_GRACE: Duration = Duration::from_secs(10);

/// The long-running steps xtask is waiting for (cargo builds and tests, guests, a nested
/// xtask), each in a process group of its own: a signal's stop ([`stop_on_signal`]) ends
/// them by their group ids, so that none outlives xtask, and none starts after it (threads
/// running steps side by side may be about to start their next one). Each step also gets
/// SIGTERM from the kernel when xtask dies, even by SIGKILL (`PR_SET_PDEATHSIG`).
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
    /// without starting it once the steps are being stopped. The step is sent SIGTERM if the
    /// thread that started it dies: it is this one, which waits for the step here.
    pub fn status(&self, cmd: &mut Command) -> std::io::Result<ExitStatus> {
        let parent = nix::unistd::getpid();
        let mut child = {
            let mut steps = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if steps.stopping {
                return Err(std::io::Error::other(
                    "xtask is stopping: the step was not started",
                ));
            }
            cmd.env(DEPTH_VAR, (depth() + 1).to_string());
            // SAFETY: between fork and exec the closure only makes the async-signal-safe
            // prctl and getppid calls and allocates nothing (errors are raw OS errors).
            let child = unsafe {
                cmd.process_group(0).pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                    // xtask died between the fork and the prctl: the signal will never come.
                    if nix::unistd::getppid() != parent {
                        return Err(nix::errno::Errno::ESRCH.into());
                    }
                    Ok(())
                })
            }
            .spawn()?;
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
        while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &g in &groups {
            if group_alive(g) {
                eprintln!("xtask: step process group {g} outlived {grace:?}: SIGKILL");
                signal(-g, Signal::SIGKILL);
            }
        }
    }
}

/// Whether any live (not zombie) process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    palisade_host::pids().into_iter().any(|p| {
        alive(p) && nix::unistd::getpgid(Some(Pid::from_raw(p))).ok() == Some(Pid::from_raw(pgid))
    })
}

/// How long a stop waits, after its sweep, for the command to return: the command's own
/// clean-up on the way out (debootstrap's mounts, extraction directories, a view's overlay
/// directories) runs while the stop runs, and the process exits only after it.
const RETURN_GRACE: Duration = Duration::from_secs(30);

/// Handles SIGINT/SIGTERM in a thread: [`stop`] with `teardown`, waits (up to
/// [`RETURN_GRACE`]) for the command to return, sweeps again what its way out started, then
/// exits with 130. The signals are caught, not blocked: a blocked mask would be inherited by
/// every child (cargo test included) and change what the tests see. Install it once per
/// command, and keep the guard until the command returns.
pub fn stop_on_signal(
    children: Children,
    teardown: impl FnOnce() + Send + 'static,
) -> Result<StopGuard> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("catch SIGINT/SIGTERM")?;
    let guard = StopGuard::default();
    let state = Arc::clone(&guard.state);
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            state.0.lock().unwrap_or_else(PoisonError::into_inner).begun = true;
            eprintln!("\nxtask: signal {sig}: stopping");
            stop(&children, teardown);
            let deadline = Instant::now() + RETURN_GRACE;
            let mut s = state.0.lock().unwrap_or_else(PoisonError::into_inner);
            while !s.returned && Instant::now() < deadline {
                s = state
                    .1
                    .wait_timeout(s, Duration::from_millis(200))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(s);
            let left = stop_descendants(Duration::from_secs(1));
            if !left.is_empty() {
                eprintln!("xtask: stop: processes still running below xtask: {left:?}");
            }
            std::process::exit(130);
        }
    });
    Ok(guard)
}

/// Where a signal's stop and the command meet.
#[derive(Debug, Default)]
struct StopState {
    /// A signal came: the stop is under way.
    begun: bool,
    /// The command returned (while the stop was under way).
    returned: bool,
}

/// Held by a command while it runs: a command that returns while a signal's stop is under
/// way (its step was stopped under it) says so and waits here for the stop to end the
/// process, instead of exiting before the stop has ended everything below xtask.
#[must_use = "the command must hold the guard until it returns"]
#[derive(Debug, Default)]
pub struct StopGuard {
    state: Arc<(Mutex<StopState>, std::sync::Condvar)>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        {
            let mut s = self.state.0.lock().unwrap_or_else(PoisonError::into_inner);
            if !s.begun {
                return;
            }
            s.returned = true;
        }
        self.state.1.notify_all();
        // The stop exits the process; the bound only keeps a stop that died from hanging
        // the command forever.
        let deadline = Instant::now() + STOP_GRACE + SWEEP_GRACE + RETURN_GRACE * 4;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("xtask: the signal's stop did not end the process");
    }
}

/// Stops everything xtask started: becomes the reaper of orphaned descendants (so that the
/// children of a step that dies stay below xtask, where the sweep finds them), stops the
/// steps ([`Children::stop_all`], [`stop_grace`]), runs `teardown` (containerd, mounts,
/// cgroups), then ends every process still descending from xtask: SIGTERM, SIGKILL after
/// [`SWEEP_GRACE`].
pub fn stop(children: &Children, teardown: impl FnOnce()) {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("xtask: stop: become a subreaper: {e}");
    }
    children.stop_all(stop_grace());
    teardown();
    let left = stop_descendants(SWEEP_GRACE);
    if !left.is_empty() {
        eprintln!("xtask: stop: processes still running below xtask: {left:?}");
    }
}

/// Every live process below `root` in the process tree (by parent pid), children first.
pub fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = palisade_host::pids()
        .into_iter()
        .filter(|&p| alive(p))
        .filter_map(|p| Some((p, palisade_host::ppid(p)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && p != root && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// SIGTERM to every process below xtask, SIGKILL to those left after `grace` (and to any that
/// appeared meanwhile); returns those still alive at the end.
pub fn stop_descendants(grace: Duration) -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let first = descendants(me);
    for &p in &first {
        eprintln!(
            "xtask: stop: SIGTERM to {p} ({})",
            cmdline(p)
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect::<String>()
        );
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !descendants(me).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A process may fork while it is being stopped: kill until nothing is left.
    for _ in 0..20 {
        let left = descendants(me);
        if left.is_empty() {
            break;
        }
        for &p in &left {
            signal(p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    descendants(me)
}

/// `xtask run-steps CMD...` (for xtask's own tests of the stop, not meant to be run by hand):
/// each CMD through `sh -c` as a step, one after another, stopped on SIGINT/SIGTERM as every
/// command's steps are.
pub fn run_steps(cmds: &[String]) -> Result<()> {
    let children = Children::default();
    let _stop = stop_on_signal(children.clone(), || {})?;
    for c in cmds {
        let st = children
            .status(Command::new("sh").arg("-c").arg(c))
            .with_context(|| format!("run step {c:?}"))?;
        if !st.success() {
            bail!("step {c:?} failed: {st}");
        }
    }
    Ok(())
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
    fn a_nested_xtask_stops_its_steps_within_its_parents_wait() {
        assert_eq!(grace_at(0), STOP_GRACE);
        for depth in 1..20 {
            // The nested one's wait and its teardown (at most about 30 s) fit in its parent's.
            assert!(grace_at(depth) < grace_at(depth - 1) || grace_at(depth).as_secs() == 5);
        }
        assert!(grace_at(1) + Duration::from_secs(30) < grace_at(0));
        assert_eq!(grace_at(19), Duration::from_secs(5));
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
