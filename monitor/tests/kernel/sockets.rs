//! Socket creation rules: limited to the listed executables (allow-lists), refused to the
//! listed executables (block lists, fromSource Block), reported only in audit, and a rule that
//! does not fit the kernel refusing the watch.

use std::path::Path;

use palisade_events::Action as EventAction;
use palisade_monitor::{ContainerRules, Enforcer, EventKind, SockClass, SockRule};

use crate::harness::*;

/// Creates one socket and closes it: 0, or the errno of `socket()`.
fn make_socket(family: i32, kind: i32, protocol: i32) -> i32 {
    // SAFETY: raw socket calls in a forked child that exits right after.
    unsafe {
        let s = libc::socket(family, kind, protocol);
        if s < 0 {
            return *libc::__errno_location();
        }
        libc::close(s);
        0
    }
}

fn tcp_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_STREAM, 0)
}

fn tcp6_socket() -> i32 {
    make_socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
}

fn udp_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

fn raw_socket() -> i32 {
    make_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
}

fn sock_rule(name: &str, class: SockClass, sources: &[&Path], audit: bool) -> SockRule {
    SockRule {
        name: name.into(),
        class,
        sources: sources.iter().map(|p| p.to_path_buf()).collect(),
        block_listed: false,
        audit,
        severity: 6,
        message: String::new(),
    }
}

#[test]
fn socket_creation_is_limited_to_the_listed_executables() {
    // The forked children run this test binary's image: listing it lets them through, listing
    // /bin/true only does not.
    let me = std::env::current_exe().unwrap();
    let rules = ContainerRules {
        sock_create: vec![
            sock_rule(
                "tcp-me",
                SockClass::Tcp,
                &[Path::new("/bin/true"), &me],
                false,
            ),
            sock_rule("udp-true", SockClass::Udp, &[Path::new("/bin/true")], false),
            sock_rule("no-raw", SockClass::Raw, &[], false),
        ],
        learning_window: None,
        ..Default::default()
    };
    let w = Watched::new("sock", rules);
    assert!(
        w.monitor.features().sock_create,
        "{:?}",
        w.monitor.features()
    );
    for e in w.watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfSockCreate, "{e:?}");
    }

    call_in(&w, tcp_socket, 0, "listed executable: tcp socket");
    call_in(&w, tcp6_socket, 0, "listed executable: tcp6 socket");
    let udp = call_in(
        &w,
        udp_socket,
        libc::EPERM,
        "unlisted executable: udp refused",
    );
    let raw = call_in(&w, raw_socket, libc::EPERM, "raw refused to everyone");
    // Outside the cgroup the rules do not apply.
    let (_, st) = run(None, None, &Act::Call(udp_socket));
    assert_eq!(exited(st), Some(0), "udp outside the cgroup");
    let (_, st) = run(None, None, &Act::Call(raw_socket));
    assert_eq!(exited(st), Some(0), "raw outside the cgroup (root)");

    assert_eq!(
        w.watch.rule_hits(),
        vec![
            ("tcp-me".to_string(), 0),
            ("udp-true".to_string(), 1),
            ("no-raw".to_string(), 1)
        ]
    );
    for (pid, rule, class) in [
        (udp, "udp-true", SockClass::Udp),
        (raw, "no-raw", SockClass::Raw),
    ] {
        let (ev, seen) = event_of(&w.rx, rule, pid, "socket-create");
        let EventKind::SockCreate {
            class: got,
            refused,
            ..
        } = &ev.kind
        else {
            unreachable!()
        };
        assert_eq!((*got, *refused), (Some(class), true), "{:?}", ev.kind);
        let f = &ev.findings[0];
        assert_eq!(
            (f.rule.as_str(), f.action, f.enforcer),
            (rule, EventAction::Block, "bpf-sock-create")
        );
        assert!(
            seen.iter()
                .all(|e| !matches!(e.kind, EventKind::SockCreate { refused: false, .. })),
            "an allowed socket was reported"
        );
        let schema = ev.to_events("node");
        assert_eq!(schema[0].rule.name, rule);
        assert_eq!(schema[0].evidence["class"], class.as_str());
    }
    // Dropping the watch detaches the hook: the cgroup creates udp sockets again.
    drop(w.watch);
    let (_, st) = run(Some(&w.cg), None, &Act::Call(udp_socket));
    assert_eq!(exited(st), Some(0), "udp after the watch is gone");
}

/// A fromSource Block: the listed executable's sockets of the class fail with EPERM and are
/// reported naming the enforcer, every other executable's pass, and the other classes are
/// untouched. Where the hooks cannot read the current task, the watch is refused with the
/// reason.
#[test]
fn socket_block_lists_refuse_only_the_listed_executables() {
    let me = std::env::current_exe().unwrap();
    let block = |name: &str, class, sources: &[&Path]| SockRule {
        block_listed: true,
        ..sock_rule(name, class, sources, false)
    };
    let rules = ContainerRules {
        sock_create: vec![
            block("tcp-not-me", SockClass::Tcp, &[&me]),
            block("udp-not-true", SockClass::Udp, &[Path::new("/bin/true")]),
        ],
        learning_window: None,
        ..Default::default()
    };
    let node = Unwatched::new("sock-block");
    if !node.monitor.features().from_source {
        let err = node
            .monitor
            .watch(node.cg.container("sock-block"), rules)
            .err()
            .expect("a block list registered where the hook cannot read the task");
        assert!(
            err.to_string().contains("cannot read the current task"),
            "{err}"
        );
        return;
    }
    let watch = node
        .monitor
        .watch(node.cg.container("sock-block"), rules)
        .unwrap();
    for e in watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfSockCreate, "{e:?}");
        let note = e.note.as_deref().unwrap_or_default();
        assert!(note.contains("sockets of processes running "), "{note}");
    }
    let w = node.watched(watch);

    let tcp = call_in(
        &w,
        tcp_socket,
        libc::EPERM,
        "listed executable: tcp refused",
    );
    call_in(
        &w,
        tcp6_socket,
        libc::EPERM,
        "listed executable: tcp6 refused",
    );
    call_in(&w, udp_socket, 0, "udp lists another executable");
    call_in(&w, raw_socket, 0, "no raw rule");
    assert_eq!(
        w.watch.rule_hits(),
        vec![
            ("tcp-not-me".to_string(), 2),
            ("udp-not-true".to_string(), 0)
        ]
    );

    let (ev, seen) = event_of(&w.rx, "tcp-not-me", tcp, "socket-create");
    let EventKind::SockCreate { class, refused, .. } = &ev.kind else {
        unreachable!()
    };
    assert_eq!(
        (*class, *refused),
        (Some(SockClass::Tcp), true),
        "{:?}",
        ev.kind
    );
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("tcp-not-me", EventAction::Block, "bpf-sock-create")
    );
    assert_eq!(f.message, "tcp socket creation refused");
    assert!(
        seen.iter()
            .all(|e| !matches!(e.kind, EventKind::SockCreate { refused: false, .. })),
        "an allowed socket was reported"
    );
}

#[test]
fn socket_rules_in_audit_report_unlisted_executables_without_refusing() {
    let rules = ContainerRules {
        sock_create: vec![sock_rule(
            "tcp-true",
            SockClass::Tcp,
            &[Path::new("/bin/true")],
            true,
        )],
        learning_window: None,
        ..Default::default()
    };
    let w = Watched::new("sock-audit", rules);
    assert_eq!(w.watch.enforcement()[0].enforcer, Enforcer::AuditOnly);
    let pid = call_in(&w, tcp_socket, 0, "audit posture does not refuse");
    let (ev, _) = event_of(&w.rx, "audited socket", pid, "socket-create");
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("tcp-true", EventAction::Audit, "audit-only")
    );
    assert_eq!(w.watch.rule_hits(), vec![("tcp-true".to_string(), 1)]);
}

#[test]
fn socket_rules_listing_too_many_binaries_refuse_the_watch() {
    let node = Unwatched::new("sock-many");
    let (monitor, cg) = (&node.monitor, &node.cg);
    let t = Path::new("/bin/true");
    let rules = ContainerRules {
        sock_create: vec![sock_rule("tcp", SockClass::Tcp, &[t, t, t, t, t], false)],
        ..Default::default()
    };
    let err = monitor
        .watch(cg.container("sock-many"), rules)
        .err()
        .expect("five binaries do not fit");
    assert_eq!(
        err.to_string(),
        "socket rule tcp: 5 allowed binaries, at most 4 fit in the kernel rule"
    );
    // Nothing was registered: the same cgroup can be watched again.
    let again = monitor.watch(cg.container("sock-many"), ContainerRules::default());
    assert!(again.is_ok(), "{:?}", again.err());
}
