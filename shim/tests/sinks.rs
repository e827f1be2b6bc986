//! The event pipeline's sinks for real: webhooks on 127.0.0.1 (working, dead and stalled), the
//! JSON-lines log on a full tmpfs, the Prometheus textfile and listener, and a 10 000-event flood.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: panics are its failure reports

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_events::{Action, Event, Rule, Severity, Source, Workload};
use palisade_shim::report::{EventSettings, Reporter, SinkContext, EVENTS_FILE};

fn event(container: &str, rule: &str, source: Source, action: Action) -> Event {
    Event::new(
        "node-a",
        source,
        Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: container.into(),
            container_id: format!("id-{container}"),
            image: "busybox".into(),
        },
        Rule {
            name: rule.into(),
            severity: Severity::new(8).unwrap(),
            tags: vec!["MITRE_T1611".into()],
            message: "mount refused".into(),
        },
        action,
        "seccomp",
    )
    .with_evidence("syscall", "mount")
}

fn settings(log_dir: &Path) -> EventSettings {
    EventSettings {
        log_dir: log_dir.to_path_buf(),
        metrics_dir: None,
        ..Default::default()
    }
}

fn ctx(id: &str) -> SinkContext {
    SinkContext {
        shim_id: id.into(),
        ..Default::default()
    }
}

/// A reporter named `id` that logs into a fresh directory, its settings changed by `tweak`.
fn reporter(id: &str, tweak: impl FnOnce(&mut EventSettings)) -> (tempfile::TempDir, Reporter) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    tweak(&mut s);
    (dir, Reporter::start_with(s, ctx(id)))
}

/// Reports `count` events of container app from `source`, rules `r0`, `r1`, ...
fn report_numbered(r: &Reporter, count: usize, source: Source, action: Action) {
    for n in 0..count {
        r.report(event("app", &format!("r{n}"), source, action));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn lines(log_dir: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(log_dir.join(EVENTS_FILE)).unwrap_or_default();
    // the writer may be in the middle of a line while the test reads: only the lines it has
    // finished (ended by a newline) count, and each of those must be one whole event
    let done = text.rfind('\n').map_or("", |end| &text[..end]);
    done.lines()
        .map(|l| serde_json::from_str(l).expect("a whole event per line"))
        .collect()
}

/// Reads one HTTP request and returns its head and body.
fn read_request(conn: &mut TcpStream) -> (String, Vec<u8>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).expect("request head");
        assert!(n > 0, "connection closed inside the request head");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length");
    while data.len() < head_end + len {
        let n = conn.read(&mut buf).expect("request body");
        assert!(n > 0, "connection closed inside the body");
        data.extend_from_slice(&buf[..n]);
    }
    (head, data[head_end..head_end + len].to_vec())
}

/// A webhook that answers 200 and hands every request to the test.
fn webhook_server() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/falco", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let req = read_request(&mut conn);
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            if tx.send(req).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn webhook_receives_the_falco_json_form() {
    let (url, requests) = webhook_server();
    let (dir, r) = reporter("webhook-ok", |s| s.webhook_url = Some(url));
    r.report(event("app", "block-mount", Source::Sandbox, Action::Block));
    let (head, body) = requests
        .recv_timeout(Duration::from_secs(20))
        .expect("the webhook got no request");
    assert!(head.starts_with("POST /falco HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["rule"], "block-mount");
    assert_eq!(v["priority"], "Error");
    assert_eq!(v["source"], "palisade");
    assert_eq!(v["hostname"], "node-a");
    assert_eq!(v["tags"], serde_json::json!(["MITRE_T1611"]));
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        v["output"]
            .as_str()
            .unwrap()
            .starts_with("block-mount: mount refused (action=block"),
        "{v}"
    );
    let f = &v["output_fields"];
    assert_eq!(f["k8s.ns.name"], "shop");
    assert_eq!(f["k8s.pod.name"], "web-0");
    assert_eq!(f["container.name"], "app");
    assert_eq!(f["palisade.action"], "block");
    assert_eq!(f["palisade.evidence.syscall"], "mount");
    assert_eq!(f["palisade.count"], 1);
    wait_for("the json line", || lines(dir.path()).len() == 1);
    assert_eq!(r.dropped(), 0);
}

#[test]
fn dead_webhook_counts_drops_and_the_log_keeps_working() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let (dir, r) = reporter("webhook-dead", |s| {
        s.webhook_url = Some(format!("http://127.0.0.1:{port}/"));
        s.webhook_timeout_ms = 500;
    });
    report_numbered(&r, 5, Source::Monitor, Action::Audit);
    wait_for("five json lines", || lines(dir.path()).len() == 5);
    wait_for("five webhook drops", || r.dropped_by("webhook") == 5);
    assert_eq!(r.dropped_by("jsonl"), 0);
}

#[test]
fn stalled_webhook_never_blocks_report() {
    // Accepts and never answers: connections are held until the test ends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let (dir, r) = reporter("webhook-slow", |s| {
        s.webhook_url = Some(url);
        s.webhook_timeout_ms = 60_000;
        s.rate_per_second = 0;
    });
    // More events than the webhook's queue holds, from another thread: the test only goes on
    // if every report() call returned while the webhook sits on its first request. Batches
    // paced to the log's pace, so that the log's own queue never overflows.
    let (batch, batches) = (500, 6);
    let total = batch * batches;
    let (done_tx, done) = mpsc::channel();
    let reporter = r.clone();
    let log_dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        for b in 0..batches {
            for n in b * batch..(b + 1) * batch {
                reporter.report(event("app", &format!("r{n}"), Source::Gate, Action::Block));
            }
            wait_for("the log to catch up", || {
                lines(&log_dir).len() >= (b + 1) * batch
            });
        }
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("report() blocked behind a stalled webhook");
    wait_for("every json line", || {
        lines(dir.path()).len() + r.dropped_by("jsonl") as usize + r.dropped_by("queue") as usize
            == total
    });
    assert_eq!(
        lines(dir.path()).len(),
        total,
        "the log lost lines to a stalled webhook"
    );
    wait_for("webhook drops counted", || {
        r.dropped_by("webhook") >= (total - 1025) as u64
    });
}

/// A tmpfs of a few pages, unmounted when dropped, also when the test fails.
struct TinyTmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyTmpfs {
    fn mount() -> Option<TinyTmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(&path)
            .status()
            .ok()?;
        status.success().then_some(TinyTmpfs { path, _dir: dir })
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn full_disk_for_the_log_leaves_webhook_and_metrics_working() {
    let tmpfs = TinyTmpfs::mount();
    let (log_dir, _keep) = match &tmpfs {
        Some(t) => {
            // Fill it: every append then fails with ENOSPC.
            let mut f = std::fs::File::create(t.path.join("filler")).unwrap();
            let chunk = vec![b'x'; 4096];
            while f.write_all(&chunk).is_ok() {}
            (t.path.clone(), None)
        }
        None => {
            eprintln!("cannot mount a tmpfs (not root?): using an unwritable path instead");
            let d = tempfile::tempdir().unwrap();
            (PathBuf::from("/proc/palisade-no-such-dir"), Some(d))
        }
    };
    let metrics_dir = tempfile::tempdir().unwrap();
    let (url, requests) = webhook_server();
    let r = Reporter::start_with(
        EventSettings {
            webhook_url: Some(url),
            metrics_dir: Some(metrics_dir.path().to_path_buf()),
            ..settings(&log_dir)
        },
        ctx("full-disk"),
    );
    report_numbered(&r, 3, Source::Sandbox, Action::Block);
    for _ in 0..3 {
        requests
            .recv_timeout(Duration::from_secs(20))
            .expect("the webhook got the events the log could not take");
    }
    wait_for("jsonl drops", || r.dropped_by("jsonl") == 3);
    let prom = metrics_dir.path().join("full-disk.prom");
    wait_for("the metrics file", || {
        std::fs::read_to_string(&prom)
            .map(|t| {
                t.contains("palisade_events_dropped_total{sink=\"jsonl\",shim=\"full-disk\"} 3")
            })
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("palisade_violations_total{rule=\"r2\",severity=\"8\",action=\"block\",source=\"sandbox\",shim=\"full-disk\"} 1"),
        "{text}"
    );
}

#[test]
fn a_flood_of_identical_events_is_a_handful_of_lines_counting_all() {
    let (dir, r) = reporter("flood", |s| s.dedup_window_ms = 500);
    for _ in 0..10_000 {
        r.report(event("app", "shell", Source::Monitor, Action::Kill));
    }
    wait_for("counts summing to 10 000", || {
        lines(dir.path()).iter().map(|e| e.count).sum::<u64>() == 10_000
    });
    let got = lines(dir.path());
    assert!(got.len() <= 10, "{} lines for one flood", got.len());
    assert_eq!(got[0].count, 1, "the first event goes out at once");
    assert!(got.iter().all(|e| e.rule.name == "shell"));
    assert_eq!(r.dropped(), 0);
}

#[test]
fn rate_limit_drops_are_reported_by_an_events_dropped_event() {
    let (dir, r) = reporter("rate", |s| s.rate_per_second = 10);
    report_numbered(&r, 200, Source::Monitor, Action::Audit);
    let passed_plus_dropped = || {
        let got = lines(dir.path());
        let passed = got
            .iter()
            .filter(|e| e.rule.name != "events-dropped")
            .count() as u64;
        let dropped: u64 = got
            .iter()
            .filter(|e| e.rule.name == "events-dropped")
            .map(|e| e.evidence["dropped"].as_u64().unwrap())
            .sum();
        (passed, dropped)
    };
    wait_for("the events-dropped report", || {
        let (p, d) = passed_plus_dropped();
        p + d == 200
    });
    let (passed, dropped) = passed_plus_dropped();
    assert!(passed <= 20, "{passed} passed a limit of 10/s");
    let report = lines(dir.path())
        .into_iter()
        .find(|e| e.rule.name == "events-dropped")
        .unwrap();
    assert_eq!(report.source, Source::Runtime);
    assert_eq!(report.workload.container, "app");
    assert_eq!(r.dropped_by("rate_limit"), dropped);
}

#[test]
fn metrics_file_and_listener_carry_the_counters() {
    let metrics_dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_dir, r) = reporter("pod/one", |s| {
        s.metrics_dir = Some(metrics_dir.path().join("m"));
        s.metrics_listen = Some(listen);
    });
    r.report(event("app", "block-mount", Source::Sandbox, Action::Block));
    r.report(event("app", "gate-deny", Source::Gate, Action::Block));
    r.report(event("app", "gate-new-path", Source::Gate, Action::Audit));
    let prom = metrics_dir.path().join("m").join("pod_one.prom");
    assert_eq!(r.metrics_file(), Some(prom.as_path()));
    wait_for("the .prom file", || prom.exists());
    let text = std::fs::read_to_string(&prom).unwrap();
    for want in [
        "# TYPE palisade_violations_total counter",
        "palisade_violations_total{rule=\"block-mount\",severity=\"8\",action=\"block\",source=\"sandbox\",shim=\"pod/one\"} 1",
        "palisade_gate_decisions_total{action=\"block\",shim=\"pod/one\"} 1",
        "palisade_gate_decisions_total{action=\"audit\",shim=\"pod/one\"} 1",
        "# TYPE palisade_events_dropped_total counter",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    let mut conn = TcpStream::connect(listen).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("palisade_gate_decisions_total{action=\"block\",shim=\"pod/one\"} 1"),
        "{answer}"
    );
    r.shutdown();
    assert!(!prom.exists(), "the metrics file outlived the shim");
}
