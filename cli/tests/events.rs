//! `palisade events` on logs written and rotated by the shim's own reporter: reading every
//! rotated file in order, filters, malformed lines, the configuration's log_dir, and following
//! the live file while the reporter appends and rotates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_events::{Action, Event, Rule, Severity, Source, Workload};
use palisade_shim::report::{EventSettings, Reporter, SinkContext};

mod support;
use support::{assert_contains, fails, succeeds, PALISADE};
/// The longest a test waits for the follower to print what was written.
const WAIT: Duration = Duration::from_secs(30);

fn event(n: u32) -> Event {
    let action = [Action::Audit, Action::Block, Action::Kill][n as usize % 3];
    let mut e = Event::new(
        "node-a",
        Source::Monitor,
        Workload {
            namespace: if n % 2 == 0 { "shop" } else { "kube-system" }.into(),
            pod: format!("web-{}", n % 4),
            container: "app".into(),
            ..Default::default()
        },
        Rule {
            name: format!("rule-{n}"),
            severity: Severity::clamped((n % 10 + 1) as u8),
            tags: vec![],
            message: format!("event number {n}"),
        },
        action,
        "bpf-exec",
    );
    e.time = format!("2026-11-23T00:{:02}:{:02}.250Z", n / 60, n % 60);
    e
}

/// The shim's reporter writing into `dir`, rotating every few lines; no folding or limit, so
/// every event reaches the file.
fn reporter(dir: &Path) -> Reporter {
    let settings = EventSettings {
        log_dir: dir.to_path_buf(),
        max_bytes: 900,
        keep: 20,
        metrics_dir: None,
        dedup_window_ms: 0,
        rate_per_second: 0,
        ..Default::default()
    };
    Reporter::start_with(settings, SinkContext::default())
}

/// A new directory with a reporter's log `log` in it, holding events 0..n.
fn written_log(n: u32) -> (tempfile::TempDir, PathBuf, Reporter) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let r = reporter(&log);
    report_written(&r, &log, n);
    (dir, log, r)
}

/// Reports events 0..n through `r` and waits until they are all in the log in `dir`.
fn report_written(r: &Reporter, dir: &Path, n: u32) {
    for i in 0..n {
        r.report(event(i));
    }
    wait_for_lines(dir, n as usize);
}

/// Waits (bounded) until the log in `dir` holds `n` lines in all its files.
fn wait_for_lines(dir: &Path, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        // Files may vanish under a rotation between listing and reading: count them as empty.
        let total: usize = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("events.jsonl"))
            })
            .map(|p| std::fs::read_to_string(p).map_or(0, |t| t.lines().count()))
            .sum();
        if total >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{total} of {n} lines written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(args: &[&str]) -> (String, String) {
    let out = succeeds(Command::new(PALISADE).arg("events").args(args));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn rules(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            let e: Event = serde_json::from_str(l).unwrap();
            e.rule.name
        })
        .collect()
}

fn names(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("rule-{n}")).collect()
}

#[test]
fn reads_rotated_files_in_order_with_filters() {
    let (dir, log, r) = written_log(12);
    r.shutdown();
    let rotated = std::fs::read_dir(&log)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.jsonl.")
        })
        .count();
    assert!(
        rotated >= 3,
        "the reporter rotated the log: {rotated} files"
    );
    // A line no shim wrote, in the middle of a rotated file.
    let second = log.join("events.jsonl.2");
    let mut text = std::fs::read_to_string(&second).unwrap();
    text.insert_str(text.find('\n').unwrap() + 1, "{\"schema\": truncated\n");
    std::fs::write(&second, text).unwrap();

    let d = log.to_str().unwrap();
    let (out, err) = events(&["--log-dir", d, "--json"]);
    assert_eq!(rules(&out), names(0..12), "every event once, oldest first");
    assert!(
        err.contains(&format!(
            "palisade: {}:2: malformed event, skipped: ",
            second.display()
        )),
        "{err}"
    );
    // --json prints the lines as written.
    let written: Vec<String> = std::fs::read_to_string(log.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(out.ends_with(&format!("{}\n", written.last().unwrap())));

    let (out, _) = events(&["--log-dir", d, "--json", "--namespace", "shop"]);
    assert_eq!(
        rules(&out),
        ["rule-0", "rule-2", "rule-4", "rule-6", "rule-8", "rule-10"]
    );
    let (out, _) = events(&["--log-dir", d, "--json", "--severity", "9"]);
    assert_eq!(rules(&out), ["rule-8", "rule-9"]);
    let (out, _) = events(&["--log-dir", d, "--json", "--action", "kill"]);
    assert_eq!(rules(&out), ["rule-2", "rule-5", "rule-8", "rule-11"]);
    let (out, _) = events(&[
        "--log-dir",
        d,
        "--json",
        "--pod",
        "web-1",
        "--action",
        "block",
    ]);
    assert_eq!(rules(&out), ["rule-1"]);
    let (out, _) = events(&["--log-dir", d, "--json", "--container", "sidecar"]);
    assert_eq!(out, "");
    let (out, _) = events(&["--log-dir", d, "--json", "--rule", "rule-7"]);
    assert_eq!(rules(&out), ["rule-7"]);
    let (out, _) = events(&[
        "--log-dir",
        d,
        "--json",
        "--since",
        "2026-11-23T01:00:10+01:00",
    ]);
    assert_eq!(rules(&out), names(10..12));
    // A relative --since counts back from now.
    let recent = dir.path().join("recent");
    std::fs::create_dir(&recent).unwrap();
    let now = std::time::SystemTime::now();
    let mut old = event(100);
    old.time = palisade_events::rfc3339(now - Duration::from_secs(7200));
    let mut new = event(101);
    new.time = palisade_events::rfc3339(now);
    std::fs::write(
        recent.join("events.jsonl"),
        format!(
            "{}\n{}\n",
            serde_json::to_string(&old).unwrap(),
            serde_json::to_string(&new).unwrap()
        ),
    )
    .unwrap();
    let rd = recent.to_str().unwrap();
    let (out, _) = events(&["--log-dir", rd, "--json", "--since", "1h"]);
    assert_eq!(rules(&out), ["rule-101"]);
    let (out, _) = events(&["--log-dir", rd, "--json", "--since", "3h"]);
    assert_eq!(rules(&out), ["rule-100", "rule-101"]);

    let (out, _) = events(&["--log-dir", d, "--rule", "rule-5"]);
    assert_eq!(
        out,
        "2026-11-23T00:00:05.250Z  6 kube-system/web-1/app rule-5 kill event number 5\n"
    );

    // The log directory from the shim configuration's [events] table.
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, format!("[events]\nlog_dir = {:?}\n", d)).unwrap();
    let (out, _) = events(&["--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(rules(&out), names(0..12));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[events]\nlog_dir = \"relative\"\n").unwrap();
    let err = fails(Command::new(PALISADE).args(["events", "--config", bad.to_str().unwrap()]));
    assert_contains(&err, "events.log_dir: must be an absolute path");

    let out = Command::new(PALISADE)
        .args(["events", "--log-dir", d, "--severity", "11"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(&err, "severity \"11\": expected a level from 1 to 10");
}

/// Kills the follower by its PID when dropped, also when the test fails.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = Command::new(PALISADE)
            .arg("events")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next `n` lines, waiting at most [`WAIT`] in all.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("follower printed {} of {n} lines: {got:?}", got.len()),
            }
        }
        got
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follows_the_live_file_across_rotations() {
    let (_dir, log, r) = written_log(5);
    let d = log.to_str().unwrap();
    let f = Follower::start(&["--log-dir", d, "--json", "--follow"]);
    assert_eq!(rules(&f.take(5).join("\n")), names(0..5));

    // Appends that rotate the live file, several times between two polls of the follower.
    for n in 5..20 {
        r.report(event(n));
    }
    assert_eq!(rules(&f.take(15).join("\n")), names(5..20));

    // One at a time, each waited for: the follower sees each as it lands.
    for n in 20..26 {
        r.report(event(n));
        assert_eq!(rules(&f.take(1).join("\n")), names(n..n + 1));
    }
    r.shutdown();
    // Nothing printed twice: after a last write, exactly that line follows.
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.join("events.jsonl"))
        .map(|mut file| {
            use std::io::Write;
            let line = serde_json::to_string(&event(26)).unwrap();
            file.write_all(format!("{line}\n").as_bytes()).unwrap();
        })
        .unwrap();
    assert_eq!(rules(&f.take(1).join("\n")), names(26..27));
}

#[test]
fn follow_waits_for_a_log_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later");
    let d = log.to_str().unwrap();
    let err = fails(Command::new(PALISADE).args(["events", "--log-dir", d]));
    assert_contains(&err, &format!("event log {d}: no such directory"));

    let f = Follower::start(&["--log-dir", d, "--follow", "--severity", "5"]);
    let r = reporter(&log);
    for n in 0..6 {
        r.report(event(n));
    }
    r.shutdown();
    // Severities 1..6: the ones from 5 up, in the human form.
    let lines = f.take(2);
    assert_contains(&lines[0], " 5 shop/web-0/app rule-4 block event number 4");
    assert_contains(
        &lines[1],
        " 6 kube-system/web-1/app rule-5 kill event number 5",
    );
}
