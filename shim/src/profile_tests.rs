use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use palisade_monitor::Syscall;
use serde_json::json;

use super::*;
use crate::cri::CriContainer;
use crate::test_support::{saved_document, workload};

fn event(container: &str, pid: u32, binary: &str, kind: EventKind) -> MonitorEvent {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    crate::test_support::monitor_event(container, "web-7d9f8c6b5-x2k4q", pid, binary, at, kind)
}

use crate::test_support::exec_event as exec;

fn open(path: &str, flags: u64, result: i64) -> EventKind {
    EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        result,
        secret: false,
        credential: false,
        system_dir: false,
    }
}

fn socket(domain: i32, kind: i32, protocol: i32) -> EventKind {
    EventKind::Socket {
        domain,
        kind,
        protocol,
        result: 3,
    }
}

fn connect(addr: SocketAddr, result: i64) -> EventKind {
    EventKind::Connect {
        addr: Some(addr),
        result,
    }
}

fn bind(addr: SocketAddr, result: i64) -> EventKind {
    EventKind::Bind {
        addr: Some(addr),
        result,
    }
}

fn obs(kind: EventKind) -> Vec<Observation> {
    observations(
        &event("c1", 10, "/usr/sbin/httpd", kind),
        &mut NetState::default(),
        &|_, _| Some("/srv/www".into()),
    )
}

#[test]
fn the_runtimes_files_are_not_learned_its_calls_are() {
    let mut lineage = Lineage::default();
    let mut net = NetState::default();
    let init = palisade_sandbox::install::INIT_PATH;
    let mut of = |comm: &str, binary: &str, kind: EventKind| {
        let mut e = event("c1", 40, binary, kind);
        e.process.comm = comm.into();
        attributed(&e, &mut lineage, &mut net, &|_, _| Some("/".into()))
    };
    let openat = Observation::Syscall {
        name: "openat".into(),
    };
    // A CRI exec: runc's init and palisade-init read their files; only the calls stay.
    assert_eq!(
        of("runc:[2:INIT]", "", open("/etc/passwd", 0, 3)),
        std::slice::from_ref(&openat)
    );
    assert_eq!(
        of("palisade-init", init, open("/.palisade/plan.json", 0, 3)),
        std::slice::from_ref(&openat)
    );
    // The command it runs is the workload's, started by the runtime, and so is what it reads.
    assert_eq!(
        of("palisade-init", init, exec("/bin/cat", init, false))[0],
        Observation::Exec {
            path: "/bin/cat".into(),
            parent: None
        }
    );
    assert_eq!(
        of("cat", "/bin/cat", open("/www/data/seed", 0, 3)),
        [
            Observation::Open {
                path: "/www/data/seed".into(),
                write: false
            },
            openat
        ]
    );
}

#[test]
fn execs_carry_their_parent_and_the_entrypoint_comes_from_the_runtime() {
    assert_eq!(
        obs(exec("/usr/sbin/httpd", "/usr/bin/runc", true)),
        [
            Observation::Exec {
                path: "/usr/sbin/httpd".into(),
                parent: None
            },
            Observation::Syscall {
                name: "execve".into()
            }
        ]
    );
    assert_eq!(
        obs(exec(
            "cgi-bin/../cgi-bin/report.sh",
            "/usr/sbin/httpd",
            false
        ))[0],
        Observation::Exec {
            path: "/srv/www/cgi-bin/report.sh".into(),
            parent: Some("/usr/sbin/httpd".into())
        }
    );
    // palisade-init is the runtime's, and what it starts is started by the runtime.
    assert_eq!(
        obs(exec("/.palisade/palisade-init", "/usr/bin/runc", true)),
        [Observation::Syscall {
            name: "execve".into()
        }]
    );
    assert_eq!(
        obs(exec("/bin/sh", "/.palisade/palisade-init", false))[0],
        Observation::Exec {
            path: "/bin/sh".into(),
            parent: None
        }
    );
    // runc's init, named by its file name only (it was never executed in the container),
    // starting a CRI exec's process: the runtime as well (it was counted unrecognized).
    assert_eq!(
        obs(exec("/bin/sh", "runc", false))[0],
        Observation::Exec {
            path: "/bin/sh".into(),
            parent: None
        }
    );
    // The root directory itself is no file a policy names: only the call is recorded.
    assert_eq!(
        obs(open("/", 0, 3)),
        [Observation::Syscall {
            name: "openat".into()
        }]
    );
    let mut refused = exec("/bin/sh", "/usr/sbin/httpd", false);
    if let EventKind::Exec { refused: r, .. } = &mut refused {
        *r = true;
    }
    assert!(obs(refused).is_empty(), "a refused exec is not learned");
}

#[test]
fn opens_are_reads_or_writes_and_failed_ones_are_not_learned() {
    assert_eq!(
        obs(open("/etc/passwd", 0, 3))[0],
        Observation::Open {
            path: "/etc/passwd".into(),
            write: false
        }
    );
    let append = (libc::O_WRONLY | libc::O_APPEND) as u64;
    assert_eq!(
        obs(open("./logs/access.log", append, 4))[0],
        Observation::Open {
            path: "/srv/www/logs/access.log".into(),
            write: true
        }
    );
    assert!(obs(open("/etc/shadow", 0, -13)).is_empty());
    // A relative path whose directory is unknown stays relative: the recording counts it as
    // unrecognized (which blocks promotion) rather than guess.
    let got = observations(
        &event("c1", 10, "/bin/cat", open("notes.txt", 0, 3)),
        &mut NetState::default(),
        &|_, _| None,
    );
    assert_eq!(
        got[0],
        Observation::Open {
            path: "notes.txt".into(),
            write: false
        }
    );
}

/// An openat relative to a directory descriptor starts from that directory, not from the
/// working directory; a descriptor no longer known leaves the path relative (unrecognized).
#[test]
fn a_path_relative_to_a_directory_descriptor_starts_there() {
    let at = |dirfd| EventKind::Open {
        path: "cache/item".into(),
        dirfd,
        flags: 0,
        result: 4,
        secret: false,
        credential: false,
        system_dir: false,
    };
    let dirs = |_: u32, fd: i32| match fd {
        libc::AT_FDCWD => Some("/srv/www".to_string()),
        7 => Some("/var/lib/app".to_string()),
        _ => None,
    };
    let ev = |kind| event("c1", 10, "/usr/sbin/httpd", kind);
    let mut net = NetState::default();
    assert_eq!(
        observations(&ev(at(7)), &mut net, &dirs)[0],
        Observation::Open {
            path: "/var/lib/app/cache/item".into(),
            write: false
        }
    );
    assert_eq!(
        observations(&ev(at(libc::AT_FDCWD)), &mut net, &dirs)[0],
        Observation::Open {
            path: "/srv/www/cache/item".into(),
            write: false
        }
    );
    assert_eq!(
        observations(&ev(at(9)), &mut net, &dirs)[0],
        Observation::Open {
            path: "cache/item".into(),
            write: false
        },
        "never the working directory for another descriptor"
    );
}

/// A process with sockets of two protocols: its connect is recorded for both (which one it
/// used is not in the event), never for only the last one made.
#[test]
fn a_connect_of_a_process_with_two_socket_kinds_is_recorded_for_both() {
    let mut net = NetState::default();
    let mut run = |kind| {
        observations(&event("c1", 40, "/usr/bin/app", kind), &mut net, &|_, _| {
            None
        })
    };
    run(socket(2, libc::SOCK_DGRAM, 0));
    run(socket(2, libc::SOCK_STREAM, 0));
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 53);
    let got = run(EventKind::Connect {
        addr: Some(peer),
        result: 0,
    });
    let protocols: Vec<Protocol> = got
        .iter()
        .filter_map(|o| match o {
            Observation::Connect { protocol, .. } => Some(*protocol),
            _ => None,
        })
        .collect();
    assert_eq!(protocols, [Protocol::Tcp, Protocol::Udp]);
}

#[test]
fn sockets_map_to_kubearmor_protocols_and_connects_take_their_processes_last_socket() {
    let (inet, inet6, packet) = (2, 10, 17);
    let p = |d, k, pr| protocols(d, k, pr);
    assert_eq!(p(inet, libc::SOCK_STREAM, 0), [Protocol::Tcp]);
    assert_eq!(
        p(inet6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
        [Protocol::Udp]
    );
    assert_eq!(p(inet, libc::SOCK_DGRAM, 1), [Protocol::Icmp]);
    assert_eq!(p(inet, libc::SOCK_RAW, 1), [Protocol::Raw, Protocol::Icmp]);
    assert_eq!(p(inet, libc::SOCK_RAW, 255), [Protocol::Raw]);
    assert_eq!(p(packet, libc::SOCK_RAW, 768), [Protocol::Raw]);
    assert!(
        p(1, libc::SOCK_STREAM, 0).is_empty(),
        "unix sockets are no protocol"
    );

    let mut net = NetState::default();
    let mut run = |pid, kind| {
        observations(
            &event("c1", pid, "/usr/bin/dig", kind),
            &mut net,
            &|_, _| None,
        )
    };
    assert_eq!(
        run(20, socket(inet, libc::SOCK_DGRAM, 0))[1],
        Observation::Socket {
            executable: "/usr/bin/dig".into(),
            protocol: Protocol::Udp
        }
    );
    let dns = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53);
    assert_eq!(
        run(20, connect(dns, 0))[1],
        Observation::Connect {
            address: dns.ip(),
            port: 53,
            protocol: Protocol::Udp
        }
    );
    let api = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 443);
    assert_eq!(
        run(21, connect(api, -115))[1],
        Observation::Connect {
            address: api.ip(),
            port: 443,
            protocol: Protocol::Tcp
        },
        "a process with no socket seen connects over tcp; EINPROGRESS is a connect"
    );
    assert_eq!(run(21, connect(api, -111)), []);
    // A server: tcp socket, bind, listen.
    run(30, socket(inet, libc::SOCK_STREAM, 0));
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
    assert_eq!(run(30, bind(any, 0)).len(), 1);
    assert_eq!(
        run(
            30,
            EventKind::Listen {
                fd: 3,
                backlog: 128,
                result: 0
            }
        )[1],
        Observation::Listen {
            port: 8080,
            protocol: Protocol::Tcp
        }
    );
    // A udp server listens by binding.
    run(31, socket(inet, libc::SOCK_DGRAM, 0));
    let syslog = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 514);
    assert_eq!(
        run(31, bind(syslog, 0))[1],
        Observation::Listen {
            port: 514,
            protocol: Protocol::Udp
        }
    );
}

#[test]
fn successful_watched_syscalls_are_learned_by_name() {
    let call = |result| EventKind::Syscall {
        call: Syscall::Unshare,
        args: [0; 6],
        result,
    };
    assert_eq!(
        obs(call(0)),
        [Observation::Syscall {
            name: "unshare".into()
        }]
    );
    assert!(obs(call(-1)).is_empty(), "a refused unshare is not learned");
}

#[test]
fn paths_are_made_absolute_and_normal() {
    let cwd = || Some("/app/".to_string());
    assert_eq!(absolute("/a/./b//c/../d", cwd), "/a/b/d");
    assert_eq!(absolute("../../../etc/passwd", cwd), "/etc/passwd");
    assert_eq!(absolute("x", || None), "x");
    assert_eq!(absolute("x", || Some("relative".into())), "x");
}

fn pod_spec(annotation: Option<&str>, kind: &str) -> serde_json::Value {
    let mut spec = json!({"annotations": {
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-name": "web-7d9f8c6b5-x2k4q",
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.container-name": "app",
    }});
    if let Some(a) = annotation {
        spec["annotations"]["palisade.dev/profile"] = json!(a);
    }
    spec
}

#[test]
fn the_annotation_or_the_configuration_picks_the_workload_and_bad_values_refuse() {
    let settings = palisade_config::ProfileSettings::default();
    let ask = |annotation, kind, settings: &palisade_config::ProfileSettings| {
        let spec = pod_spec(annotation, kind);
        requested("c1", &spec, &CriContainer::of("c1", &spec), settings)
    };
    let learn = ask(Some("learn"), "container", &settings).unwrap().unwrap();
    assert_eq!(learn.to_string(), "shop/web");
    let named = ask(Some("learn,workload=storefront"), "container", &settings);
    assert_eq!(named.unwrap().unwrap().to_string(), "shop/storefront");
    assert_eq!(ask(None, "container", &settings).unwrap(), None);
    assert_eq!(ask(Some("learn"), "sandbox", &settings).unwrap(), None);
    let on = palisade_config::ProfileSettings {
        learn: true,
        ..settings.clone()
    };
    assert!(ask(None, "container", &on).unwrap().is_some());
    assert_eq!(ask(Some("off"), "container", &on).unwrap(), None);
    let bad = ask(Some("enforce"), "sandbox", &settings).unwrap_err();
    assert_eq!(
        bad.to_string(),
        "container c1: pod annotation palisade.dev/profile: \"enforce\": expected learn, learn,workload=NAME or off"
    );
    let bad = ask(Some("learn,workload=Store_Front"), "container", &settings).unwrap_err();
    assert!(
        bad.to_string()
            .starts_with("container c1: profile workload: workload \"shop\"/\"Store_Front\""),
        "{bad}"
    );
}

/// Container `id` of pod `pod` learning `workload` into `dir` under `promotion`: it starts,
/// the recorders see `events`, and it finishes with `drops` events lost by the kernel.
fn learn(
    recorders: &Recorders,
    (id, pod): (&str, &str),
    workload: &WorkloadId,
    dir: &Path,
    promotion: Promotion,
    events: &[MonitorEvent],
    drops: u64,
) {
    let learning = recorders
        .start(id, pod, workload.clone(), dir, promotion)
        .unwrap();
    for e in events {
        recorders.observe(e);
    }
    learning.finish(drops);
}

/// The shim's Exec records a CRI exec's command into the learning container's recording (and
/// into no other container's).
#[test]
fn a_cri_exec_command_is_recorded_while_learning() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("profiles");
    let recorders = Recorders::default();
    let probe = Observation::RuntimeCommand {
        argv: vec!["/bin/busybox".into(), "cat".into(), "/data/seed".into()],
    };
    recorders.record("c1", &probe);
    assert!(!recorders.learns("c1"));
    let learning = recorders
        .start("c1", "web-1", workload(), &dir, quiet())
        .unwrap();
    assert!(recorders.learns("c1"));
    assert!(!recorders.learns("c2"));
    recorders.record("c1", &probe);
    recorders.record(
        "c2",
        &Observation::RuntimeCommand {
            argv: vec!["/bin/sh".into()],
        },
    );
    learning.finish(0);
    assert!(!recorders.learns("c1"));
    let r = saved_document(&dir).recording;
    let commands = r.runtime_commands.unwrap();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert!(commands.contains(&vec![
        "/bin/busybox".to_string(),
        "cat".into(),
        "/data/seed".into()
    ]));
}

#[test]
fn a_learning_container_is_merged_into_its_workloads_document_with_its_drops() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("profiles");
    let recorders = Recorders::default();
    let httpd = |id, kind| event(id, 10, "/usr/sbin/httpd", kind);
    let events = [
        httpd("c1", exec("/usr/sbin/httpd", "", true)),
        httpd("c1", open("/srv/www/index.html", 0, 5)),
        // Another container's events are not this one's.
        event("c2", 11, "/bin/sh", exec("/bin/sh", "", true)),
    ];
    learn(
        &recorders,
        ("c1", "web-1"),
        &workload(),
        &dir,
        quiet(),
        &events,
        0,
    );
    let r = saved_document(&dir).recording;
    assert_eq!(r.observations, 4, "exec + execve, open + openat");
    assert!(r.executables.contains_key("/usr/sbin/httpd"));
    assert!(!r.executables.contains_key("/bin/sh"));
    assert!(r.files.contains_key("/srv/www/index.html"));
    assert!(r.pods.contains("web-1"));
    assert!(r.promotable().is_ok());

    // A second pod of the workload, whose events the kernel dropped: merged, and the
    // workload's recording can no longer be promoted.
    let events = [httpd("c3", open("/srv/www/a.css", 0, 5))];
    learn(
        &recorders,
        ("c3", "web-2"),
        &workload(),
        &dir,
        quiet(),
        &events,
        3,
    );
    let doc = saved_document(&dir);
    assert_eq!(doc.recording.pods.len(), 2);
    assert!(doc.recording.files.contains_key("/srv/www/a.css"));
    assert_eq!(
        doc.recording.promotable().unwrap_err(),
        ["recording is lossy: 3 events were dropped before they were recorded"]
    );
    // Finished containers are no longer recorded.
    recorders.observe(&httpd("c3", open("/srv/www/late", 0, 5)));
    assert_eq!(saved_document(&dir).recording, doc.recording);
    assert!(recorders.0.lock().unwrap().is_empty());
}

#[test]
fn a_workload_past_learn_keeps_its_recording() {
    let state = tempfile::tempdir().unwrap();
    let recorders = Recorders::default();
    let events = [event(
        "c1",
        10,
        "/usr/sbin/httpd",
        open("/srv/www/index.html", 0, 5),
    )];
    learn(
        &recorders,
        ("c1", "web-1"),
        &workload(),
        state.path(),
        quiet(),
        &events,
        0,
    );
    persist::update(state.path(), &workload(), 2_000, |doc| {
        let mut r = doc.recording.clone();
        doc.stage
            .command(2_000, palisade_profile::Command::Pin(Stage::Audit), &mut r)
            .unwrap();
        doc.recording = r;
    })
    .unwrap();
    let events = [event(
        "c2",
        11,
        "/bin/sh",
        exec("/bin/sh", "/usr/sbin/httpd", false),
    )];
    learn(
        &recorders,
        ("c2", "web-2"),
        &workload(),
        state.path(),
        quiet(),
        &events,
        0,
    );
    let doc = saved_document(state.path());
    assert_eq!(doc.stage.stage, Stage::Audit);
    assert!(!doc.recording.executables.contains_key("/bin/sh"));
}

/// The kernel's table of syscall numbers is recorded by this architecture's names; a number
/// it does not name is kept as such, which the recording counts as unrecognized.
#[test]
fn syscall_numbers_are_recorded_by_name() {
    let execve = u32::try_from(libc::SYS_execve).unwrap();
    assert_eq!(
        syscall_observation(execve),
        Observation::Syscall {
            name: "execve".into()
        }
    );
    let mut r = Recording::new(workload());
    r.observe(1, &syscall_observation(511));
    assert!(r.syscalls.is_empty());
    assert!(r.promotable().is_err(), "an unnamed call is unrecognized");
}

/// The default rule: nothing learned in a test is old enough to move, so nothing is reported.
fn quiet() -> Promotion {
    Promotion {
        rule: Rule::default(),
        report: Box::new(|e| panic!("unexpected stage event {e:?}")),
    }
}

/// A rule that promotes at the first merge, and the events it reports.
fn eager() -> (Promotion, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let rule = Rule {
        min_learn: 0,
        min_observations: 1,
        ..Rule::default()
    };
    let report = Box::new(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    (Promotion { rule, report }, seen)
}

#[test]
fn a_merge_in_learn_runs_the_rule_and_a_lossy_recording_is_refused_promotion() {
    let state = tempfile::tempdir().unwrap();
    let recorders = Recorders::default();
    // Learns container `id` of `pod` in `workload` with one event and `drops`; what the rule
    // reported.
    let merge = |(id, pod), workload: &WorkloadId, drops| {
        let (promotion, seen) = eager();
        let events = [event(id, 10, "/bin/sh", open("/etc/hostname", 0, 5))];
        learn(
            &recorders,
            (id, pod),
            workload,
            state.path(),
            promotion,
            &events,
            drops,
        );
        let events = seen.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:?}");
        events
    };
    let events = merge(("c1", "web-1"), &workload(), 3);
    assert_eq!(
        events[0].kind,
        palisade_profile::EventKind::PromotionRefused
    );
    assert!(
        events[0].reason.contains("3 events were dropped"),
        "{}",
        events[0].reason
    );
    assert_eq!(saved_document(state.path()).stage.stage, Stage::Learn);

    // A lossless recording of another workload is promoted to audit by the same rule.
    let events = merge(("c2", "api-1"), &WorkloadId::new("shop", "api").unwrap(), 0);
    assert_eq!(events[0].kind, palisade_profile::EventKind::Promoted);
    assert_eq!(events[0].to, Stage::Audit);
}

#[test]
fn the_capabilities_a_container_holds_are_its_specs_five_sets() {
    let spec = json!({"process": {"capabilities": {
        "bounding": ["CAP_CHOWN", "CAP_SETUID"],
        "effective": ["CAP_CHOWN"],
        "permitted": ["CAP_CHOWN"],
        "inheritable": [],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    }}});
    let mut names: Vec<&str> = held_capabilities(&spec).iter().map(|c| c.name).collect();
    names.sort_unstable();
    assert_eq!(names, ["chown", "net_bind_service", "setuid"]);
    assert!(held_capabilities(&json!({"process": {}})).is_empty());
}
