use std::net::SocketAddr;
use std::time::SystemTime;

use palisade_profile::persist::Document;
use palisade_profile::{Command, EventKind as StageEventKind, StageState};

use super::*;
use crate::test_support::{cri_in, recording_of, saved_document, workload};

fn event(container: &str, binary: &str, kind: EventKind) -> MonitorEvent {
    crate::test_support::monitor_event(container, "web-1", 10, binary, SystemTime::now(), kind)
}

fn open(path: &str, flags: u64, result: i64) -> EventKind {
    EventKind::Open {
        path: path.into(),
        flags,
        dirfd: libc::AT_FDCWD,
        result,
        secret: false,
        credential: false,
        system_dir: false,
    }
}

fn connect(addr: &str, result: i64) -> EventKind {
    EventKind::Connect {
        addr: Some(addr.parse::<SocketAddr>().unwrap()),
        result,
    }
}

/// The profile of a web server that reads /srv/www and calls 10.0.0.5:5432.
fn recording() -> Recording {
    recording_of(&[
        Observation::Open {
            path: "/srv/www/index.html".into(),
            write: false,
        },
        Observation::Connect {
            address: "10.0.0.5".parse().unwrap(),
            port: 5432,
            protocol: Protocol::Tcp,
        },
    ])
}

/// The workload's document at `stage` (not pinned), and a governor of container c1 under it.
fn governed(
    dir: &std::path::Path,
    stage: Stage,
    mode: Mode,
) -> (Governors, Governing, Arc<Mutex<Vec<Event>>>) {
    // Now, as the flush's promotion check reads the clock: the stage was just entered.
    let now = epoch_secs(SystemTime::now());
    let mut rec = recording();
    let mut s = StageState::new(now);
    s.command(now, Command::Pin(stage), &mut rec).unwrap();
    s.command(now, Command::Unpin, &mut rec).unwrap();
    persist::save(dir, &Document::new(rec.clone(), s)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let governors = Governors::default();
    let hold = governors.start_with(
        &cri_in("c1", "web-1", "sb1", false),
        Target {
            workload: workload(),
            mode,
            recording: rec,
            state_dir: dir.to_path_buf(),
            rule: Rule::default(),
        },
        Box::new(move |e: &Event| sink.lock().unwrap().push(e.clone())),
    );
    (governors, hold, seen)
}

#[test]
fn what_the_profile_covers_is_no_departure() {
    let dir = tempfile::tempdir().unwrap();
    let (governors, hold, events) = governed(dir.path(), Stage::Audit, Mode::Audit);
    governors.observe(&event(
        "c1",
        "/bin/httpd",
        open("/srv/www/index.html", 0, 3),
    ));
    governors.observe(&event("c1", "/bin/httpd", connect("10.0.0.5:5432", 0)));
    // Another container's events are not this governor's.
    governors.observe(&event("c9", "/bin/sh", open("/etc/shadow", 0, 3)));
    drop(hold);
    assert!(governors.0.lock().unwrap().is_empty());
    let doc = saved_document(dir.path());
    assert!(
        doc.stage.departures.is_empty(),
        "{:?}",
        doc.stage.departures
    );
    assert!(events.lock().unwrap().is_empty());
}

#[test]
fn a_cri_execs_runtime_work_is_no_departure_but_its_command_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let (governors, hold, _) = governed(dir.path(), Stage::Enforce, Mode::Enforce);
    let init = palisade_sandbox::install::INIT_PATH;
    let of = |comm: &str, binary: &str, kind: EventKind| {
        let mut e = event("c1", binary, kind);
        e.process.pid = 40;
        e.process.comm = comm.into();
        e
    };
    let exec = |filename: &str| crate::test_support::exec_event(filename, "runc", false);
    // runc's init looks the user up and runs palisade-init, which reads its plan.
    let runc = "runc:[2:INIT]";
    governors.observe(&of(runc, "", open("/etc/passwd", 0, 3)));
    governors.observe(&of(runc, "", exec(init)));
    governors.observe(&of(
        "palisade-init",
        init,
        open("/.palisade/plan.json", 0, 3),
    ));
    governors.observe(&of("palisade-init", init, open("/proc/40/status", 0, 3)));
    // The command: what it does departs.
    governors.observe(&of("palisade-init", init, exec("/bin/cat")));
    governors.observe(&of("cat", "/bin/cat", open("/etc/shadow", 0, -13)));
    drop(hold);
    let doc = saved_document(dir.path());
    let seen: Vec<&Observation> = doc
        .stage
        .departures
        .iter()
        .map(|d| &d.observation)
        .collect();
    assert_eq!(
        seen,
        vec![
            &Observation::Exec {
                path: "/bin/cat".into(),
                parent: None
            },
            &Observation::Open {
                path: "/etc/shadow".into(),
                write: false
            },
        ],
        "{:?}",
        doc.stage.departures
    );
    assert!(doc.stage.departures[1].refused);
}

#[test]
fn departures_are_kept_in_audit_and_roll_enforce_back_with_their_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let (governors, hold, _) = governed(dir.path(), Stage::Audit, Mode::Audit);
    governors.observe(&event("c1", "/bin/httpd", open("/etc/passwd", 0o1, 3)));
    drop(hold);
    let doc = saved_document(dir.path());
    assert_eq!(doc.stage.stage, Stage::Audit);
    assert_eq!(doc.stage.departures.len(), 1);
    let d = &doc.stage.departures[0];
    assert_eq!(
        d.observation,
        Observation::Open {
            path: "/etc/passwd".into(),
            write: true
        }
    );
    assert!(!d.refused, "nothing is refused in audit");

    let (governors, hold, events) = governed(dir.path(), Stage::Enforce, Mode::Enforce);
    let stops = stop_counter(&hold);
    // Five refused departures (the rule's default limit) within the window.
    for peer in ["10.9.9.1:80", "10.9.9.2:80", "10.9.9.3:80"] {
        governors.observe(&event("c1", "/bin/httpd", connect(peer, -1)));
    }
    governors.observe(&event("c1", "/bin/sh", open("/etc/motd", 0o1, -13)));
    governors.observe(&event(
        "c1",
        "/bin/sh",
        EventKind::Syscall {
            call: palisade_monitor::Syscall::Unshare,
            args: [0; 6],
            result: -1,
        },
    ));
    drop(hold);
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.kind, e.from, e.to),
        (StageEventKind::RolledBack, Stage::Enforce, Stage::Audit)
    );
    assert_eq!(e.evidence.len(), 5);
    assert!(e.evidence.iter().all(|d| d.refused));
    assert!(stage_line(&workload(), e).contains("stopped, to be created again in audit"));
    // The container enforced: it is stopped, once, with the reason.
    let stops = stops.lock().unwrap();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(stops[0].contains("rolled back to audit while pod web-1 enforced it"));
    let doc = saved_document(dir.path());
    assert_eq!(doc.stage.stage, Stage::Audit);
    assert_eq!(
        doc.stage.departures.len(),
        5,
        "kept for the operator to accept"
    );
}

#[test]
fn an_unusable_document_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (governors, hold, _) = governed(dir.path(), Stage::Enforce, Mode::Enforce);
    let path = persist::path_in(dir.path(), &workload());
    std::fs::write(&path, b"{ corrupt").unwrap();
    governors.observe(&event("c1", "/bin/sh", open("/etc/motd", 0o1, -13)));
    drop(hold);
    assert_eq!(std::fs::read(&path).unwrap(), b"{ corrupt");
}

/// The reasons `hold`'s container was stopped for.
fn stop_counter(hold: &Governing) -> Arc<Mutex<Vec<String>>> {
    let stops = Arc::new(Mutex::new(Vec::new()));
    let sink = stops.clone();
    hold.on_demotion(Box::new(move |reason: &str| {
        sink.lock().unwrap().push(reason.to_string())
    }));
    stops
}

#[test]
fn only_an_enforcing_container_of_a_workload_rolled_back_by_the_rule_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // Rolled back while another pod enforced it: this enforcing container is stopped at its
    // next merge, with no departure of its own.
    let (_g, hold, _) = governed(dir.path(), Stage::Audit, Mode::Enforce);
    let stops = stop_counter(&hold);
    drop(hold);
    assert_eq!(stops.lock().unwrap().len(), 1);
    // Created again, in audit: never stopped for it (no restart loop).
    let (_g, hold, _) = governed(dir.path(), Stage::Audit, Mode::Audit);
    let stops = stop_counter(&hold);
    drop(hold);
    assert!(stops.lock().unwrap().is_empty());
    // Still enforced, or pinned in audit by the operator: not stopped.
    for (stage, pinned) in [(Stage::Enforce, false), (Stage::Audit, true)] {
        let (_g, hold, _) = governed(dir.path(), stage, Mode::Enforce);
        if pinned {
            persist::update(dir.path(), &workload(), 0, |d| d.stage.pinned = true).unwrap();
        }
        let stops = stop_counter(&hold);
        drop(hold);
        assert!(
            stops.lock().unwrap().is_empty(),
            "{stage:?} pinned {pinned}"
        );
    }
}

/// A UDP send the egress allow-list refused is a refused departure (no connect event tells of
/// it); a refused connect is judged from its own connect event, not twice.
#[test]
fn a_refused_udp_send_is_a_departure_and_a_refused_connect_counts_once() {
    let egress = |sendmsg: bool| EventKind::Egress {
        addr: "10.0.0.53:53".parse().unwrap(),
        protocol: 17,
        sendmsg,
        refused: true,
    };
    let sent = judged(&event("c1", "/bin/app", egress(true)));
    assert_eq!(
        sent,
        vec![(
            Observation::Connect {
                address: "10.0.0.53".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
            },
            true
        )]
    );
    assert!(judged(&event("c1", "/bin/app", egress(false))).is_empty());
}

/// An exec the kernel refused inside the container is a refused departure: the exec of the
/// path asked for, by the caller's image; a relative path (not resolved) is not judged.
#[test]
fn an_exec_refused_in_the_container_is_a_refused_departure_of_its_caller() {
    let refused = |path: &str| EventKind::ExecRefused {
        path: path.into(),
        dirfd: None,
        result: -EACCES,
    };
    let got = judged(&event("c1", "/bin/busybox", refused("/usr/bin/probe")));
    assert_eq!(
        got,
        vec![(
            Observation::Exec {
                path: "/usr/bin/probe".into(),
                parent: Some("/bin/busybox".into()),
            },
            true
        )]
    );
    assert!(judged(&event("c1", "/bin/busybox", refused("probe"))).is_empty());
}
