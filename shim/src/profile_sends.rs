//! A learning container's connects and unconnected sends, as the monitor's sock_addr hooks
//! report them (once per destination, never refused: `ContainerRules::learn_egress`), turned
//! into learned peers.
//!
//! The connect system call's own event already names TCP and connected-UDP peers (with the
//! protocol guessed from the process's sockets); only the hooks see an unconnected UDP
//! `sendto`/`sendmsg` (a musl resolver, syslog, statsd), and they name the socket's real
//! protocol. Both are recorded: a peer is a set member, recording it twice changes nothing.

use palisade_monitor::EventKind;
use palisade_policy::Protocol;
use palisade_profile::Observation;

/// The learned peer of an egress report that let its destination through: its address, port
/// and protocol (tcp, udp, icmp; a report of another protocol, or of port 0, names no peer).
pub(crate) fn peer(kind: &EventKind) -> Option<Observation> {
    let EventKind::Egress {
        addr,
        protocol,
        refused: false,
        ..
    } = kind
    else {
        return None;
    };
    let protocol = match protocol {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        1 | 58 => Protocol::Icmp,
        _ => return None,
    };
    (addr.port() != 0).then(|| Observation::Connect {
        address: addr.ip(),
        port: addr.port(),
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(addr: &str, protocol: u32, sendmsg: bool, refused: bool) -> EventKind {
        EventKind::Egress {
            addr: addr.parse().unwrap(),
            protocol,
            sendmsg,
            refused,
        }
    }

    #[test]
    fn sends_and_connects_let_through_are_peers_with_their_protocol() {
        let got = peer(&egress("10.0.0.10:53", 17, true, false));
        assert_eq!(
            got,
            Some(Observation::Connect {
                address: "10.0.0.10".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
            })
        );
        let v6 = peer(&egress("[fd00::1]:9000", 6, false, false));
        assert!(matches!(
            v6,
            Some(Observation::Connect {
                port: 9000,
                protocol: Protocol::Tcp,
                ..
            })
        ));
        let ping = peer(&egress("10.0.0.1:0", 1, true, false));
        assert_eq!(ping, None, "port 0 names no peer");
        assert_eq!(peer(&egress("10.0.0.1:7", 132, true, false)), None, "sctp");
        // A refused destination is no part of the workload's behaviour.
        assert_eq!(peer(&egress("10.0.0.10:53", 17, true, true)), None);
        assert_eq!(peer(&EventKind::Exit { code: 0 }), None);
    }

    #[test]
    fn the_recorder_learns_a_send_as_a_peer_and_no_system_call() {
        let at = std::time::SystemTime::UNIX_EPOCH;
        let ev = crate::test_support::monitor_event(
            "c1",
            "web-1",
            10,
            "/bin/tftp",
            at,
            egress("10.0.0.9:9002", 17, true, false),
        );
        let got =
            crate::profile::observations(&ev, &mut crate::profile::NetState::default(), &|_, _| {
                None
            });
        assert_eq!(
            got,
            [Observation::Connect {
                address: "10.0.0.9".parse().unwrap(),
                port: 9002,
                protocol: Protocol::Udp,
            }]
        );
    }
}
