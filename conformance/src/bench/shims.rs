//! What a configuration leaves behind, waited for after its pods are removed: a palisade shim
//! whose pods are gone still parks its monitor (unpins its links) for a few seconds (6.1), and
//! the kernel may detach the released BPF trampolines later still (6.12); the next
//! configuration would otherwise pay part of the monitor as its own figures.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cri::Cri;
use crate::host;

/// How long the shims of removed pods may take to exit: under instruction-counting emulation
/// a monitored shim took several guest seconds to unpin its links.
pub(super) const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The kernel functions with an ftrace callback, a BPF trampoline's direct call among them.
const ENABLED_FUNCTIONS: &str = "/sys/kernel/tracing/enabled_functions";

/// Between two looks at the shims' pids.
const POLL: Duration = Duration::from_millis(100);

/// One shim process, told from a later process that reuses its pid by its start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shim {
    pid: i32,
    start: u64,
    /// The pod it serves, for messages.
    pod: String,
}

impl Shim {
    /// The shim above `pid` (a process of pod `pod`).
    fn above(pid: i32, pod: &str) -> Result<Shim> {
        let (shim, _) = host::shim_of(pid)?;
        Self::process(shim, pod)
    }

    fn process(pid: i32, pod: &str) -> Result<Shim> {
        let start = host::start_time(pid).with_context(|| format!("shim {pid}: no start time"))?;
        Ok(Shim {
            pid,
            start,
            pod: pod.to_string(),
        })
    }

    /// Still running: neither gone nor a zombie, and not replaced by another process.
    fn running(&self) -> bool {
        host::alive(self.pid) && host::start_time(self.pid) == Some(self.start)
    }
}

/// Adds the shims of pod `pod` (named `name`) to `shims`: the one above its sandbox's pause
/// process and the one above container `container`'s process, usually the same.
pub(super) async fn add_pod_shims(
    shims: &mut Vec<Shim>,
    cri: &Cri,
    pod: &str,
    container: &str,
    name: &str,
) -> Result<()> {
    let pids = [
        cri.sandbox_pid(pod).await?,
        cri.container_pid(container).await?,
    ];
    for pid in pids {
        let shim = Shim::above(pid, name).with_context(|| format!("pod {name}"))?;
        if !shims.iter().any(|s| s.pid == shim.pid) {
            shims.push(shim);
        }
    }
    Ok(())
}

/// Waits until none of `shims` runs any more, up to `timeout`; returns how long it took.
pub(super) async fn wait_exited(shims: &[Shim], timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let left: Vec<&Shim> = shims.iter().filter(|s| s.running()).collect();
        if left.is_empty() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            bail!(
                "shims still running {} s after their pods were removed: {}",
                timeout.as_secs(),
                left.iter()
                    .map(|s| format!("pid {} (pod {})", s.pid, s.pod))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How many kernel functions have a direct call (a BPF trampoline) attached; None where tracefs
/// cannot be read.
pub(super) fn direct_calls() -> Option<usize> {
    let text = std::fs::read_to_string(ENABLED_FUNCTIONS).ok()?;
    Some(count_direct(&text))
}

fn count_direct(enabled_functions: &str) -> usize {
    enabled_functions
        .lines()
        .filter(|l| l.contains("direct"))
        .count()
}

/// Waits until no more kernel functions have a direct call than `before` (counted before the
/// bench started), up to `timeout`; returns how long it took. Without tracefs it does not wait.
pub(super) async fn wait_detached(before: Option<usize>, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    let Some(before) = before else {
        return Ok(Duration::ZERO);
    };
    loop {
        let now = direct_calls().unwrap_or(0);
        if now <= before {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            bail!(
                "{now} kernel functions still have a BPF trampoline attached {} s after the shims \
                 exited, {before} before the bench ({ENABLED_FUNCTIONS})",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_an_exited_process_and_names_a_running_one() {
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let done_shim = Shim::process(i32::try_from(done.id()).unwrap(), "done").unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let live_shim = Shim::process(i32::try_from(live.id()).unwrap(), "live").unwrap();

        // Not reaped yet, the child that exits stays a zombie: not running.
        let waited = wait_exited(std::slice::from_ref(&done_shim), Duration::from_secs(600)).await;
        done.wait().unwrap();
        assert!(waited.is_ok(), "{waited:?}");

        let err = wait_exited(&[done_shim, live_shim.clone()], Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        live.kill().unwrap();
        live.wait().unwrap();
        assert_eq!(
            err,
            format!(
                "shims still running 0 s after their pods were removed: pid {} (pod live)",
                live_shim.pid
            )
        );
    }

    #[test]
    fn direct_calls_are_counted_from_enabled_functions() {
        let text = "__x64_sys_openat (1) R   D   tramp: 0xffffffffc0201000 (call_direct_funcs+0x0/0x20) ->call_direct_funcs+0x0/0x20\n\
                    do_sys_poll (1)             tramp: ftrace_caller\n\
                    __x64_sys_connect (1) R   D   direct-->0xffffffffc0203000\n";
        assert_eq!(count_direct(text), 2);
        assert_eq!(count_direct(""), 0);
    }

    #[test]
    fn a_reused_pid_is_not_the_shim() {
        let me = i32::try_from(std::process::id()).unwrap();
        let mut shim = Shim::process(me, "p").unwrap();
        assert!(shim.running());
        shim.start += 1;
        assert!(!shim.running());
    }
}
