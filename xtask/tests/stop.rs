//! A stopped xtask stops everything it started: a nested xtask run as a step, that run's own
//! steps, and their children in process groups and sessions of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use palisade_host::alive;

/// The bound for "gone" and "started": generous, this is no timing test.
const BOUND: Duration = Duration::from_secs(180);

/// A variable every process of a test's nested run inherits, recorded or not.
const MARK: &str = "XTASK_STOP_TEST";

/// The processes whose environment has `MARK=mark`.
fn marked(mark: &str) -> Vec<i32> {
    let want = format!("{MARK}={mark}").into_bytes();
    palisade_host::pids()
        .into_iter()
        .filter(|&p| alive(p))
        .filter(|&p| {
            fs::read(format!("/proc/{p}/environ"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|v| v == want.as_slice())
        })
        .collect()
}

/// A scratch directory removed on drop, which also kills (by pid) whatever the test recorded
/// and is still alive, so that a failing test leaves nothing behind.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-stop-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn mark(&self) -> String {
        self.dir.display().to_string()
    }

    fn recorded(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for f in ["outer", "inner", "pids"] {
            let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        pids
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in self.recorded().into_iter().chain(marked(&self.mark())) {
            if alive(p) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts `xtask run-steps` whose first step is another `xtask run-steps` (exec'd, as `.ci/run`
/// execs `cargo xtask test`), whose first step leaves behind, each recording its pid: a child
/// in the step's group, one in a session of its own, one in a session of its own that ignores
/// SIGTERM, and a shell in a session of its own with a child of its own. The second steps
/// touch `next-step` files: they must never run.
fn start_nested(s: &Scratch) -> Child {
    let d = s.dir.display();
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let long = format!(
        "echo $$ >> {d}/pids; \
         sleep 600 & echo $! >> {d}/pids; \
         setsid sleep 600 & echo $! >> {d}/pids; \
         setsid sh -c 'trap \"\" TERM; echo $$ >> {d}/pids; sleep 600 & echo $! >> {d}/pids; wait' & \
         setsid sh -c 'sleep 600 & echo $! >> {d}/pids; echo $$ >> {d}/pids; wait' & \
         timeout --kill-after=10 600 sleep 600 & echo $! >> {d}/pids; \
         wait"
    );
    let inner = format!(
        "echo $$ > {d}/inner; exec {xtask} run-steps {} 'touch {d}/next-step-inner'",
        shell_quote(&long)
    );
    let child = Command::new(xtask)
        .env(MARK, s.mark())
        .arg("run-steps")
        .arg(inner)
        .arg(format!("touch {d}/next-step-outer"))
        .spawn()
        .unwrap();
    fs::write(s.dir.join("outer"), child.id().to_string()).unwrap();
    child
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Waits until the nested run has started every process it records (the outer, the inner
/// xtask, the step shell and seven more).
fn wait_started(s: &Scratch) -> Vec<i32> {
    let deadline = Instant::now() + BOUND;
    loop {
        let pids = s.recorded();
        if pids.len() >= 10 && pids.iter().all(|&p| alive(p)) {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the nested run did not start: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "the outer xtask did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every recorded pid is gone within the bound; none of the next steps ran.
fn assert_all_gone(s: &Scratch, pids: &[i32]) {
    let deadline = Instant::now() + BOUND;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<(i32, String)> = pids
        .iter()
        .filter(|&&p| alive(p))
        .map(|&p| (p, palisade_host::cmdline(p).unwrap_or_default()))
        .collect();
    assert!(left.is_empty(), "still running after the stop: {left:?}");
    // And none that was not recorded (the sleeps of the trapping shell and of timeout).
    let unrecorded = marked(&s.mark());
    assert!(
        unrecorded.is_empty(),
        "still running after the stop: {unrecorded:?}"
    );
    for f in ["next-step-inner", "next-step-outer"] {
        assert!(
            !Path::new(&s.dir.join(f)).exists(),
            "{f}: a step started after the stop"
        );
    }
}

#[test]
fn sigterm_to_the_outer_xtask_stops_the_nested_run_and_everything_below_it() {
    let s = Scratch::new("term");
    let mut outer = start_nested(&s);
    let pids = wait_started(&s);
    kill(Pid::from_raw(outer.id() as i32), Signal::SIGTERM).unwrap();
    let st = wait_exit(&mut outer);
    assert_eq!(
        st.code(),
        Some(130),
        "the outer's status after SIGTERM: {st}"
    );
    assert_all_gone(&s, &pids);
}

#[test]
fn sigkill_to_the_outer_xtask_still_stops_the_nested_run() {
    let s = Scratch::new("kill");
    let mut outer = start_nested(&s);
    let pids = wait_started(&s);
    // The outer cannot clean up: the inner xtask gets SIGTERM from the kernel (its parent
    // death signal) and stops everything below it.
    kill(Pid::from_raw(outer.id() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut outer);
    assert_all_gone(&s, &pids);
}
