//! Violations reach a real containerd on `/palisade/violation` through the shim's own event path
//! (`RemotePublisher` on containerd's ttrpc socket, `events::forward`), and `ctr events` shows them.
//! Needs root and `/usr/bin/containerd`; the private containerd and `ctr` are stopped by PID.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: panics are its failure reports

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use containerd_shim::publisher::RemotePublisher;
use palisade_events::{Action, Event, Rule, Severity, Source, Workload};
use palisade_shim::events::{self, EventSender};
use palisade_shim::report::{EventSettings, Reporter, SinkContext};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const NAMESPACE: &str = "palisade-test";

/// A child stopped by its PID when dropped, also when the test fails.
struct Stopped(Child, &'static str);

impl Drop for Stopped {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_containerd(dir: &Path) -> (Stopped, PathBuf, PathBuf) {
    let sock = dir.join("c.sock");
    let ttrpc = dir.join("c.sock.ttrpc");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
            ttrpc = ttrpc.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new(CONTAINERD)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let guard = Stopped(child, "containerd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(sock.exists() && ttrpc.exists()) {
        assert!(
            Instant::now() < deadline,
            "containerd did not create its sockets: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, sock, ttrpc)
}

fn violation(attempt: u32) -> Event {
    Event::new(
        "node-a",
        Source::Monitor,
        Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "app".into(),
            ..Default::default()
        },
        Rule {
            name: "shell-in-container".into(),
            severity: Severity::new(9).unwrap(),
            tags: vec![],
            message: "shell spawned".into(),
        },
        Action::Kill,
        "bpf-exec-kill",
    )
    .with_evidence("attempt", attempt)
}

#[test]
fn ctr_events_shows_palisade_violations() {
    if !nix::unistd::geteuid().is_root() || !Path::new(CONTAINERD).exists() {
        eprintln!("skipped: needs root and {CONTAINERD}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pal-ctrd")
        .tempdir_in("/tmp")
        .unwrap();
    let (_containerd, sock, ttrpc) = start_containerd(dir.path());

    let mut ctr = Command::new(CTR)
        .arg("-a")
        .arg(&sock)
        .arg("events")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ctr events");
    let stdout = ctr.stdout.take().unwrap();
    let _ctr = Stopped(ctr, "ctr events");
    let (line_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let publisher = rt
        .block_on(RemotePublisher::new(ttrpc.to_string_lossy()))
        .expect("connect to containerd's ttrpc socket");
    let (sender, rx) = EventSender::channel();
    rt.spawn(events::forward(publisher, NAMESPACE.to_string(), rx));
    let reporter = {
        let _enter = rt.enter();
        Reporter::start_with(
            EventSettings {
                log_dir: dir.path().join("log"),
                metrics_dir: None,
                containerd_topic: true,
                ..Default::default()
            },
            SinkContext {
                shim_id: "ctrd-test".into(),
                containerd: Some(sender),
                ..Default::default()
            },
        )
    };

    // `ctr events` subscribes some time after it starts: publish until one shows up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut attempt = 0;
    let found = 'outer: loop {
        assert!(
            Instant::now() < deadline,
            "no /palisade/violation in ctr events; it printed {seen:?}; containerd log:\n{}",
            std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default()
        );
        attempt += 1;
        reporter.report(violation(attempt));
        let until = Instant::now() + Duration::from_millis(500);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("/palisade/violation") => break 'outer line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
    };
    eprintln!("ctr events printed: {found}");
    assert!(found.contains(NAMESPACE), "namespace missing: {found}");
    // containerd knows google.protobuf.StringValue: ctr prints it decoded, the JSON line inside.
    let json_start = found.find('{').expect("a JSON payload");
    let payload: serde_json::Value = serde_json::from_str(&found[json_start..])
        .unwrap_or_else(|e| panic!("ctr printed no JSON ({e}): {found}"));
    let inner = payload["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no StringValue value: {found}"));
    let event: Event = serde_json::from_str(inner).expect("the event's JSON line");
    assert_eq!(event.rule.name, "shell-in-container");
    assert_eq!(event.schema, "palisade.dev/events/v1");
    assert_eq!(event.workload.pod, "web-0");
    assert_eq!(reporter.dropped_by("containerd"), 0);
    reporter.shutdown();
}
