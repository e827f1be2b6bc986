//! Connect deny rules: refused with EPERM by the cgroup sock_addr hooks, for IPv4 and IPv6,
//! and letting one named executable through.

use std::net::TcpListener;
use std::path::Path;

use palisade_events::Action as EventAction;
use palisade_monitor::{ConnectRule, ContainerRules, Enforcer};

use crate::harness::*;

#[test]
fn connect_to_a_denied_destination_is_refused_with_eperm() {
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = denied.local_addr().unwrap();
    let b = allowed.local_addr().unwrap();

    let rules = ContainerRules {
        deny_connect: vec![deny_connect_to("no-port-a", a, 7)],
        ..Default::default()
    };
    let w = Watched::new("connect", rules);
    assert_eq!(w.watch.enforcement()[0].enforcer, Enforcer::BpfSockAddr);

    let (pid, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM), "connect to the denied port");
    let (_, st) = run(Some(&w.cg), None, &connect(b));
    assert_eq!(exited(st), Some(0), "connect to the other port");
    let (_, st) = run(None, None, &connect(a));
    assert_eq!(
        exited(st),
        Some(0),
        "outside the cgroup the rule does not apply"
    );

    let ev = connect_event(&w.rx, "refused connect", pid, a, libc::EPERM);
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("no-port-a", EventAction::Block, "bpf-sock-addr")
    );
    assert_eq!(w.watch.rule_hits(), vec![("no-port-a".to_string(), 1)]);

    // Dropping the watch detaches the hook.
    drop(w.watch);
    let (_, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(0));
}

#[test]
fn from_source_lets_only_the_named_executable_connect() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // The forked children run this test binary's image (they do not exec): a rule whose
    // source is this binary lets them through, a rule whose source is /bin/true does not.
    let me = std::env::current_exe().unwrap();
    let rule = |name: &str, port: u16, only_from: &Path| ConnectRule {
        name: name.into(),
        addr: "127.0.0.1".parse().unwrap(),
        prefix_len: 32,
        port: Some(port),
        only_from: Some(only_from.to_path_buf()),
        severity: 6,
        message: String::new(),
    };
    let rules = ContainerRules {
        deny_connect: vec![
            rule("only-true", a.port(), Path::new("/bin/true")),
            rule("only-me", b.port(), &me),
        ],
        ..Default::default()
    };
    let w = Watched::new("source", rules);
    for e in w.watch.enforcement() {
        assert_eq!(e.enforcer, Enforcer::BpfSockAddr, "{e:?}");
    }

    let (refused, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM), "not /bin/true: refused");
    let (allowed, st) = run(Some(&w.cg), None, &connect(b));
    assert_eq!(exited(st), Some(0), "the named executable connects");
    assert_eq!(
        w.watch.rule_hits(),
        vec![("only-true".to_string(), 1), ("only-me".to_string(), 0)]
    );
    let (ev, _) = event_of(&w.rx, "refused connect", refused, "connect");
    assert_eq!(ev.findings[0].rule, "only-true");
    assert_eq!(ev.findings[0].action, EventAction::Block);
    let (ev, _) = event_of(&w.rx, "allowed connect", allowed, "connect");
    assert!(
        ev.findings.iter().all(|f| f.rule != "only-me"),
        "the allowed source is not reported: {:?}",
        ev.findings
    );
}

#[test]
fn ipv6_connect_rules_use_the_connect6_hook() {
    let Ok(denied) = TcpListener::bind("[::1]:0") else {
        panic!("no IPv6 loopback on this machine")
    };
    let allowed = TcpListener::bind("[::1]:0").unwrap();
    let (a, b) = (denied.local_addr().unwrap(), allowed.local_addr().unwrap());
    let rules = ContainerRules {
        deny_connect: vec![deny_connect_to("no-v6-a", a, 5)],
        ..Default::default()
    };
    let w = Watched::new("v6", rules);
    let (pid, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM));
    let (_, st) = run(Some(&w.cg), None, &connect(b));
    assert_eq!(exited(st), Some(0));
    connect_event(&w.rx, "refused v6 connect", pid, a, libc::EPERM);
}
