//! What the monitor reports and to which container: attribution by cgroup, the built-in
//! detections, server calls with their addresses, ring overruns, and one watch per cgroup.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use palisade_monitor::{
    ContainerRules, EventKind, ExecRule, MonitorConfig, MonitorEvent, NodeMonitor, SyscallHook,
};

use crate::harness::*;

/// With either syscall hook.
#[test]
fn events_are_attributed_to_the_watched_cgroup_only() {
    with_each_hook(check_attribution);
}

fn check_attribution(hook: SyscallHook) {
    let name = format!("attr-{}", hook_tag(hook));
    let name = name.as_str();
    let scratch = Scratch::new(name);
    let readable = scratch.0.join("readable");
    std::fs::write(&readable, "x").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = scratch.0.join("secret");
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = listener.local_addr().unwrap();

    let rules = ContainerRules {
        report_all_opens: true,
        ..Default::default()
    };
    let w = Watched::on_hook("attr", hook, rules);
    assert_eq!(w.watch.stats().events, 0);

    // The same actions from outside the cgroup first: none of them may come through.
    let (outside_exec, st) = run(None, None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    let (outside_open, st) = run(None, None, &open(&readable, 1));
    assert_eq!(exited(st), Some(0));
    let (outside_connect, st) = run(None, None, &connect(dest));
    assert_eq!(exited(st), Some(0));

    let (pid, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true", "--marker"]));
    assert_eq!(exited(st), Some(0));
    let (ev, before) = event_of(&w.rx, "exec", pid, "exec");
    let outsiders = [outside_exec, outside_open, outside_connect].map(|p| p as u32);
    assert!(
        before.iter().all(|e| !outsiders.contains(&e.process.pid)),
        "an event of a process outside the cgroup arrived"
    );
    assert_eq!(ev.slot, w.watch.slot());
    assert_eq!(ev.container.pod, "attr");
    assert_eq!(ev.process.uid, 0);
    assert_eq!(ev.process.ppid, std::process::id());
    let EventKind::Exec {
        filename,
        args,
        entrypoint,
        killed,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    assert_eq!(filename, "/bin/true");
    assert_eq!(args, &["true", "--marker"]);
    assert!(
        *entrypoint,
        "the first exec of the container is its entrypoint"
    );
    assert!(!killed);
    assert!(!ev.parent_binary.is_empty(), "parent binary is known");

    let (pid, st) = run(Some(&w.cg), None, &open(&readable, 1));
    assert_eq!(exited(st), Some(0));
    let (ev, _) = event_of(&w.rx, "open", pid, "open");
    let EventKind::Open {
        path,
        flags,
        result,
        ..
    } = &ev.kind
    else {
        unreachable!()
    };
    assert_eq!(Path::new(path), readable);
    assert_eq!(*flags & 3, 0, "read-only open");
    assert!(*result >= 0, "open succeeded: {result}");
    assert!(ev.findings.is_empty(), "a plain read is no finding");

    let (pid, st) = run(Some(&w.cg), Some(65534), &open(&secret, 1));
    assert_eq!(exited(st), Some(libc::EACCES));
    let (ev, _) = event_of(&w.rx, "denied open", pid, "open");
    assert_eq!(ev.process.uid, 65534);
    let EventKind::Open { result, .. } = &ev.kind else {
        unreachable!()
    };
    assert_eq!(*result, -(libc::EACCES as i64));
    assert_eq!(ev.findings[0].rule, "file-access-denied");
    let schema = ev.to_events("node-test");
    assert_eq!(schema[0].evidence["denied"], true);
    assert_eq!(schema[0].workload.container_id, "id-attr");

    let (pid, st) = run(Some(&w.cg), None, &connect(dest));
    assert_eq!(exited(st), Some(0));
    connect_event(&w.rx, "connect", pid, dest, 0);

    // A second exec is no longer the entrypoint; a shell there is flagged.
    let (pid, st) = run(Some(&w.cg), None, &exec("/bin/sh", &["sh", "-c", "exit 3"]));
    assert_eq!(exited(st), Some(3));
    let (ev, _) = event_of(&w.rx, "shell exec", pid, "exec");
    assert_eq!(ev.findings[0].rule, "shell-in-container");
    let (ev, _) = event_of(&w.rx, "exit", pid, "exit");
    assert_eq!(ev.kind, EventKind::Exit { code: 3 << 8 });

    // An exec by a subshell, forked and never executed: its parent is the shell's binary as
    // the shell was executed (carried over the fork), not the file name of its executable
    // (which stands for runc's init, entering from outside).
    let (pid, st) = run(
        Some(&w.cg),
        None,
        &exec(
            "/bin/sh",
            &["sh", "-c", "( /bin/true --in-subshell; true ); true"],
        ),
    );
    assert_eq!(exited(st), Some(0));
    let (ev, _) = until(
        &w.rx,
        "exec in a subshell",
        |e| matches!(&e.kind, EventKind::Exec { args, .. } if args.iter().any(|a| a == "--in-subshell")),
    );
    assert_ne!(
        ev.process.ppid, pid as u32,
        "the subshell is a process of its own"
    );
    let EventKind::Exec { parent, .. } = &ev.kind else {
        unreachable!()
    };
    assert_eq!(parent, "/bin/sh");
    assert_eq!(ev.parent_binary, "/bin/sh");
    assert!(w.watch.stats().events >= 6);
    assert_eq!(w.watch.stats().drops, 0);

    // Dropping the watch stops the events of the cgroup.
    drop(w.watch);
    let (pid, _) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(e) = w.rx.try_recv() {
        assert_ne!(
            e.process.pid, pid as u32,
            "event after the watch was dropped"
        );
    }
}

#[test]
fn overruns_of_a_tiny_ring_are_counted() {
    let root = PinRoot::new("ring");
    let cg = TestCgroup::new("ring");
    let (tx, _rx) = sync_channel(1 << 16);
    let config = MonitorConfig {
        ring_size: 4096,
        ..root.config()
    };
    let monitor = NodeMonitor::open(config, tx).unwrap();
    let rules = ContainerRules {
        report_all_opens: true,
        ..Default::default()
    };
    let watch = monitor.watch(cg.container("ring"), rules).unwrap();
    let (_, st) = run(Some(&cg), None, &open(Path::new("/etc/hostname"), 20_000));
    assert_eq!(exited(st), Some(0));
    let stats = watch.stats();
    assert!(stats.drops > 0, "no drop counted: {stats:?}");
    assert!(stats.events > 0, "some events fit: {stats:?}");
}

/// With either syscall hook.
#[test]
fn built_in_detections_fire_on_real_syscalls_after_the_entrypoint() {
    with_each_hook(check_built_in_detections);
}

fn check_built_in_detections(hook: SyscallHook) {
    // Before the entrypoint the same calls are the runtime's set-up: reported, not flagged.
    let (w, early) = Watched::after_call("builtin", hook, escape_attempts, "escape attempts");
    let (ev, _) = until(&w.rx, "early unshare", |e| {
        e.process.pid == early as u32 && e.kind.name() == "unshare"
    });
    assert!(ev.findings.is_empty(), "{:?}", ev.findings);

    let (_, st) = run(Some(&w.cg), None, &exec("/bin/true", &["true"]));
    assert_eq!(exited(st), Some(0));
    // The same calls from a program the container runs (it entered by exec, as its own code
    // does, not from outside as runc init does).
    let probe = env!("CARGO_BIN_EXE_palisade-monitor");
    let (pid, st) = run(
        Some(&w.cg),
        None,
        &exec(probe, &["palisade-monitor", "detect-probe"]),
    );
    assert_eq!(exited(st), Some(0));
    let mut rules = Vec::new();
    for kind in ["unshare", "socket", "setuid"] {
        let (ev, _) = until(&w.rx, kind, |e| {
            e.process.pid == pid as u32 && e.kind.name() == kind
        });
        rules.extend(ev.findings.iter().map(|f| f.rule.clone()));
        if kind == "socket" {
            let EventKind::Socket {
                domain,
                kind,
                result,
                ..
            } = ev.kind
            else {
                unreachable!()
            };
            assert_eq!((domain, kind & 0xf), (libc::AF_PACKET, libc::SOCK_RAW));
            assert!(result >= 0);
        }
    }
    // The probe runs as root: its setuid(0) gains nothing (precision.rs has a real gain).
    assert_eq!(rules, ["namespace-change", "raw-socket"]);
}

fn escape_attempts() -> i32 {
    // SAFETY: raw syscalls in a forked child that exits right after.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUTS) != 0 {
            return 10;
        }
        let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if s < 0 {
            return 11;
        }
        libc::close(s);
        if libc::setuid(0) != 0 {
            return 12;
        }
    }
    0
}

/// With either syscall hook.
#[test]
fn bind_listen_and_accept_are_reported_with_addresses() {
    with_each_hook(check_server_calls);
}

fn check_server_calls(hook: SyscallHook) {
    let (w, pid) =
        Watched::after_call("server", hook, serve_one_connection, "serve one connection");
    let mine = |kind: &'static str| {
        move |e: &MonitorEvent| e.process.pid == pid as u32 && e.kind.name() == kind
    };
    // The address a successful bind or connect names.
    let addr_of = |kind: &'static str| {
        let (ev, _) = until(&w.rx, kind, mine(kind));
        match ev.kind {
            EventKind::Bind {
                addr: Some(a),
                result: 0,
            }
            | EventKind::Connect {
                addr: Some(a),
                result: 0,
            } => a,
            other => panic!("{kind}: {other:?}"),
        }
    };
    let bound = addr_of("bind");
    assert_eq!(bound, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
    let (listen, _) = until(&w.rx, "listen", mine("listen"));
    assert!(
        matches!(
            listen.kind,
            EventKind::Listen {
                backlog: 4,
                result: 0,
                ..
            }
        ),
        "{:?}",
        listen.kind
    );
    let server = addr_of("connect");
    let (accept, _) = until(&w.rx, "accept", mine("accept"));
    let EventKind::Accept {
        peer: Some(peer),
        result,
    } = accept.kind
    else {
        panic!("{:?}", accept.kind)
    };
    assert!(result >= 0);
    assert_eq!(peer.ip(), server.ip());
    assert_ne!(peer.port(), server.port(), "the peer is the client side");
}

fn serve_one_connection() -> i32 {
    // SAFETY: raw socket calls in a forked child that exits right after.
    unsafe {
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(l, (&addr as *const libc::sockaddr_in).cast(), len) != 0 {
            return 20;
        }
        if libc::listen(l, 4) != 0 {
            return 21;
        }
        if libc::getsockname(l, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return 22;
        }
        let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if libc::connect(c, (&addr as *const libc::sockaddr_in).cast(), len) != 0 {
            return 23;
        }
        let mut peer: libc::sockaddr_in = std::mem::zeroed();
        let mut plen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::accept(l, (&mut peer as *mut libc::sockaddr_in).cast(), &mut plen) < 0 {
            return 24;
        }
    }
    0
}

#[test]
fn a_cgroup_is_watched_once_and_a_failed_watch_leaves_nothing() {
    let node = Unwatched::new("once");
    let (monitor, cg) = (&node.monitor, &node.cg);
    let bad = ContainerRules {
        deny_exec: vec![ExecRule {
            name: "missing".into(),
            path: "/nonexistent/palisade".into(),
            from_parent: None,
            severity: 5,
            message: String::new(),
        }],
        ..Default::default()
    };
    let err = monitor.watch(cg.container("once"), bad).err().unwrap();
    assert!(
        err.to_string()
            .contains("rule missing: /nonexistent/palisade"),
        "{err}"
    );
    let first = monitor
        .watch(cg.container("once"), ContainerRules::default())
        .unwrap();
    let again = monitor.watch(cg.container("once"), ContainerRules::default());
    assert!(
        matches!(
            again,
            Err(palisade_monitor::MonitorError::AlreadyWatched { .. })
        ),
        "{:?}",
        again.err()
    );
    drop(first);
    monitor
        .watch(cg.container("once"), ContainerRules::default())
        .unwrap();
}
