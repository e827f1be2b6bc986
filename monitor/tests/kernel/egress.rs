//! Egress allow-lists: a watched cgroup reaches only the peers of its list (address, port,
//! protocol); a connect or an unconnected UDP send elsewhere fails with EPERM in the cgroup
//! sock_addr hooks and is reported with the peer, the rule and the enforcer; an IPv4-mapped
//! IPv6 destination is its IPv4 peer; in audit nothing is refused; processes outside the
//! cgroup are untouched. A learning cgroup (no list) has every destination let through and
//! reported once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

use palisade_events::Action as EventAction;
use palisade_monitor::{
    ContainerRules, EgressList, EgressPeer, Enforcer, EventKind, MonitorEvent, SockClass,
};

use crate::harness::*;

/// The UDP port the forked child sends to (set before the fork; the child reads its copy).
static UDP_PORT: AtomicU16 = AtomicU16::new(0);

/// An unconnected UDP send of one byte to 127.0.0.1:UDP_PORT: 0 or the errno. Raw syscalls,
/// for a forked child.
fn udp_send() -> i32 {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: UDP_PORT.load(Ordering::Relaxed).to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    send_one(libc::AF_INET, &addr)
}

/// One byte sent from a new UDP socket of `family` to `addr`, without connecting: 0 or the
/// errno. Raw syscalls, for a forked child.
fn send_one<A>(family: i32, addr: &A) -> i32 {
    // SAFETY: raw syscalls on a valid address of the size given.
    unsafe {
        let s = libc::socket(family, libc::SOCK_DGRAM, 0);
        let rc = libc::sendto(
            s,
            b"x".as_ptr().cast(),
            1,
            0,
            (addr as *const A).cast(),
            std::mem::size_of::<A>() as u32,
        );
        if rc == 1 {
            0
        } else {
            *libc::__errno_location()
        }
    }
}

/// An unconnected UDP send of one byte from an IPv6 socket to ::ffff:127.0.0.1:UDP_PORT (an
/// IPv4-mapped destination): 0 or the errno.
fn udp_send_mapped() -> i32 {
    let addr = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as u16,
        sin6_port: UDP_PORT.load(Ordering::Relaxed).to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
        },
        sin6_scope_id: 0,
    };
    send_one(libc::AF_INET6, &addr)
}

fn udp_send_to(w: &Watched, port: u16) -> (i32, i32) {
    UDP_PORT.store(port, Ordering::Relaxed);
    run(Some(&w.cg), None, &Act::Call(udp_send))
}

fn host(port: u16, protocol: SockClass) -> EgressPeer {
    EgressPeer {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        prefix_len: 32,
        port: Some(port),
        protocol,
    }
}

fn list(peers: Vec<EgressPeer>, audit: bool) -> ContainerRules {
    ContainerRules {
        egress: Some(EgressList {
            name: "learned: egress".into(),
            peers,
            audit,
            severity: 7,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// The egress event of `pid`, checked to name `peer` with `protocol`.
fn egress_event(
    w: &Watched,
    what: &str,
    pid: i32,
    peer: SocketAddr,
    protocol: u32,
) -> MonitorEvent {
    let (ev, _) = event_of(&w.rx, what, pid, "egress");
    match &ev.kind {
        EventKind::Egress {
            addr, protocol: p, ..
        } => assert_eq!((*addr, *p), (peer, protocol), "{what}"),
        other => panic!("{what}: {other:?}"),
    }
    ev
}

#[test]
fn only_listed_peers_are_reached_and_the_others_refused_and_reported() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp_ok = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a, b) = (allowed.local_addr().unwrap(), other.local_addr().unwrap());
    let (u, v) = (
        udp_ok.local_addr().unwrap(),
        udp_other.local_addr().unwrap(),
    );
    let w = Watched::new(
        "egress",
        list(
            vec![
                host(a.port(), SockClass::Tcp),
                host(u.port(), SockClass::Udp),
            ],
            false,
        ),
    );
    let e = &w.watch.enforcement()[0];
    assert_eq!(
        (e.rule.as_str(), e.enforcer),
        ("learned: egress", Enforcer::BpfSockAddr)
    );

    let (_, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(0), "the listed peer");
    let (pid, st) = run(Some(&w.cg), None, &connect(b));
    assert_eq!(
        exited(st),
        Some(libc::EPERM),
        "another port of the same address"
    );
    let ev = egress_event(&w, "refused connect", pid, b, 6);
    assert!(matches!(
        ev.kind,
        EventKind::Egress {
            refused: true,
            sendmsg: false,
            ..
        }
    ));
    let f = &ev.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.action, f.enforcer),
        ("learned: egress", EventAction::Block, "bpf-sock-addr")
    );
    assert!(f.message.contains(&b.to_string()), "{}", f.message);

    // An IPv4-mapped IPv6 destination is its IPv4 peer.
    let mapped =
        |p: SocketAddr| SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), p.port());
    let (_, st) = run(Some(&w.cg), None, &connect(mapped(a)));
    assert_eq!(exited(st), Some(0), "the listed peer through a v6 socket");
    let (pid, st) = run(Some(&w.cg), None, &connect(mapped(b)));
    assert_eq!(
        exited(st),
        Some(libc::EPERM),
        "another port through a v6 socket"
    );
    egress_event(&w, "refused mapped connect", pid, b, 6);

    // Unconnected UDP sends: the listed udp peer passes; another port, or the tcp peer's port
    // over udp, is refused and reported as a send.
    let (_, st) = udp_send_to(&w, u.port());
    assert_eq!(exited(st), Some(0), "the listed udp peer");
    let mut buf = [0u8; 4];
    assert_eq!(udp_ok.recv(&mut buf).unwrap(), 1, "the datagram arrived");
    let (pid, st) = udp_send_to(&w, v.port());
    assert_eq!(exited(st), Some(libc::EPERM), "another udp port");
    let ev = egress_event(&w, "refused send", pid, v, 17);
    assert!(matches!(
        ev.kind,
        EventKind::Egress {
            refused: true,
            sendmsg: true,
            ..
        }
    ));
    let (pid, st) = udp_send_to(&w, a.port());
    assert_eq!(
        exited(st),
        Some(libc::EPERM),
        "the tcp peer's port over udp"
    );
    egress_event(
        &w,
        "refused udp to the tcp peer",
        pid,
        SocketAddr::new(a.ip(), a.port()),
        17,
    );

    // Outside the cgroup nothing is refused.
    let (_, st) = run(None, None, &connect(b));
    assert_eq!(exited(st), Some(0), "an unwatched process");

    // Dropping the watch detaches the hooks and takes the keys out.
    drop(w.watch);
    let (_, st) = run(Some(&w.cg), None, &connect(b));
    assert_eq!(exited(st), Some(0), "after the watch");
}

#[test]
fn an_empty_list_refuses_everything_and_audit_refuses_nothing() {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = peer.local_addr().unwrap();
    let w = Watched::new("egress-empty", list(Vec::new(), false));
    let (pid, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(libc::EPERM), "no peer listed");
    egress_event(&w, "refused connect", pid, a, 6);
    drop(w);

    let w = Watched::new("egress-audit", list(Vec::new(), true));
    let e = &w.watch.enforcement()[0];
    assert_eq!(e.enforcer, Enforcer::AuditOnly, "{e:?}");
    let (pid, st) = run(Some(&w.cg), None, &connect(a));
    assert_eq!(exited(st), Some(0), "audit: let through");
    let ev = egress_event(&w, "reported connect", pid, a, 6);
    assert!(matches!(ev.kind, EventKind::Egress { refused: false, .. }));
    assert_eq!(
        (ev.findings[0].action, ev.findings[0].enforcer),
        (EventAction::Audit, "audit-only")
    );
}

#[test]
fn a_learning_cgroup_reports_each_destination_once_and_refuses_none() {
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let m = marker.local_addr().unwrap();
    let peers: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    let (u, v, unwatched) = (addrs[0], addrs[1], addrs[2]);
    let w = Watched::new(
        "egress-learn",
        ContainerRules {
            learn_egress: true,
            ..Default::default()
        },
    );
    assert!(w.watch.sends_observed(), "the hooks are attached");
    assert!(w.watch.enforcement().is_empty(), "learning is no rule");

    // Three sends to each of two peers, and one through a v6 socket to the first as a mapped
    // address: every one passes.
    let mut buf = [0u8; 4];
    for _ in 0..3 {
        for (peer, sock) in [(u, &peers[0]), (v, &peers[1])] {
            let (_, st) = udp_send_to(&w, peer.port());
            assert_eq!(exited(st), Some(0), "a learning send to {peer}");
            assert_eq!(sock.recv(&mut buf).unwrap(), 1, "the datagram to {peer}");
        }
    }
    UDP_PORT.store(u.port(), Ordering::Relaxed);
    let (_, st) = run(Some(&w.cg), None, &Act::Call(udp_send_mapped));
    assert_eq!(exited(st), Some(0), "a mapped send");
    assert_eq!(peers[0].recv(&mut buf).unwrap(), 1, "the mapped datagram");
    // A process outside the cgroup sends too, then the cgroup connects to the marker: its
    // report comes after those of everything before it.
    UDP_PORT.store(unwatched.port(), Ordering::Relaxed);
    let (_, st) = run(None, None, &Act::Call(udp_send));
    assert_eq!(exited(st), Some(0), "an unwatched send");
    let (pid, st) = run(Some(&w.cg), None, &connect(m));
    assert_eq!(exited(st), Some(0), "a learning connect");

    let (last, before) = event_of(&w.rx, "learned connect", pid, "egress");
    let egress: Vec<&MonitorEvent> = before
        .iter()
        .chain([&last])
        .filter(|e| matches!(e.kind, EventKind::Egress { .. }))
        .collect();
    let seen: Vec<(SocketAddr, u32, bool, bool)> = egress
        .iter()
        .map(|e| match e.kind {
            EventKind::Egress {
                addr,
                protocol,
                sendmsg,
                refused,
            } => (addr, protocol, sendmsg, refused),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        seen,
        [
            (u, 17, true, false),
            (v, 17, true, false),
            (m, 6, false, false)
        ],
        "one report per destination (the mapped send is the first peer's), none refused"
    );
    assert!(
        egress.iter().all(|e| e.findings.is_empty()),
        "observations, not violations: {egress:#?}"
    );
}
