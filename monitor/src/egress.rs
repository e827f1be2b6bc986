//! Egress allow-lists: the peers a container may connect and send to ([`EgressList`]), their
//! keys in the kernel's connect trie, and the finding of a destination the list does not name.
//!
//! Decided semantics: a destination is its address, its port and its IP protocol; an IPv4-mapped
//! IPv6 destination (`::ffff:10.0.0.1`, a dual-stack socket) is its IPv4 peer. Loopback is a peer
//! like any other (listed only when learned): it reaches the pod's other containers, whose
//! admin and debug ports are what an intruder looks for, and nothing else (a NetworkPolicy)
//! sees that traffic. DNS is a peer like any other too: the resolver's address, port 53, udp
//! (and tcp when used). Raw sockets never pass these hooks and cannot be listed.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::event::{EventKind, Finding};
use crate::rules::{encode_net_key, Enforcer, RuleError, SockClass};
use crate::skel::monitor::types;

/// Top byte of an allow key's slot word (`EGRESS_MARK` in egress.h).
const EGRESS_MARK: u32 = 0x80;

/// One peer a container may reach: an address prefix, a port (`None`: every port) and a
/// protocol (tcp, udp or icmp; raw sockets are not seen by the hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPeer {
    pub addr: IpAddr,
    /// Prefix length of `addr` (32 or 128 for one host).
    pub prefix_len: u8,
    pub port: Option<u16>,
    pub protocol: SockClass,
}

/// A container's egress allow-list: a connect (TCP, connected UDP) or an unconnected UDP send
/// to a destination no peer names is refused with EPERM by the cgroup sock_addr programs
/// (reported only when `audit`) and reported as an [`EventKind::Egress`] with this rule. An
/// empty list refuses every destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressList {
    pub name: String,
    pub peers: Vec<EgressPeer>,
    pub audit: bool,
    /// 1..=10, KubeArmor's scale.
    pub severity: u8,
    pub message: String,
}

/// The IP protocol numbers a peer's protocol stands for (ICMP: v4 and v6).
fn ip_protocols(name: &str, class: SockClass) -> Result<&'static [u8], RuleError> {
    match class {
        SockClass::Tcp => Ok(&[6]),
        SockClass::Udp => Ok(&[17]),
        SockClass::Icmp => Ok(&[1, 58]),
        SockClass::Raw => Err(RuleError::EgressRaw {
            name: name.to_string(),
        }),
    }
}

/// The trie keys of one peer of the list `name` for the container at `slot`: one per IP
/// protocol, the slot word carrying the mark and the protocol.
pub(crate) fn allow_keys(
    slot: u32,
    name: &str,
    peer: &EgressPeer,
) -> Result<Vec<types::net_key>, RuleError> {
    let prefix_err = || RuleError::Prefix {
        name: name.to_string(),
        addr: peer.addr,
        prefix_len: peer.prefix_len,
    };
    let (addr, prefix) = match peer.addr {
        IpAddr::V4(a) if peer.prefix_len <= 32 => {
            (a.to_ipv6_mapped().octets(), 96 + u32::from(peer.prefix_len))
        }
        IpAddr::V6(a) if peer.prefix_len <= 128 => (a.octets(), u32::from(peer.prefix_len)),
        _ => return Err(prefix_err()),
    };
    if slot >> 24 != 0 {
        return Err(RuleError::EgressSlot {
            name: name.to_string(),
            slot,
        });
    }
    Ok(ip_protocols(name, peer.protocol)?
        .iter()
        .map(|p| {
            let word = slot | ((EGRESS_MARK | u32::from(*p)) << 24);
            encode_net_key(word, peer.port.unwrap_or(0), &addr, 48 + prefix)
        })
        .collect())
}

/// The protocol class of an IP protocol number, as the allow-list names it.
pub(crate) fn class_of(protocol: u32) -> Option<SockClass> {
    match protocol {
        6 => Some(SockClass::Tcp),
        17 => Some(SockClass::Udp),
        1 | 58 => Some(SockClass::Icmp),
        _ => None,
    }
}

/// The destination of an egress record: its IPv4 address when mapped.
pub(crate) fn destination(addr: [u8; 16], port_be: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, u16::from_be(port_be))
}

/// The finding of a destination the list did not name: refused by the sock_addr programs, or
/// reported only.
pub(crate) fn finding(list: Option<&EgressList>, kind: &EventKind) -> Option<Finding> {
    let EventKind::Egress {
        addr,
        protocol,
        sendmsg,
        refused,
    } = kind
    else {
        return None;
    };
    let list = list?;
    let proto = class_of(*protocol).map_or_else(
        || format!("protocol {protocol}"),
        |c| c.as_str().to_string(),
    );
    let what = if *sendmsg { "send" } else { "connect" };
    let (action, enforcer) = crate::event::outcome(*refused, Enforcer::BpfSockAddr);
    Some(Finding {
        rule: list.name.clone(),
        severity: list.severity,
        tags: vec!["network".into(), "egress".into()],
        message: {
            let done = if *refused { "refused" } else { "reported" };
            if list.message.is_empty() {
                format!("{what} to {addr} ({proto}) {done}: not in the egress allow-list")
            } else {
                format!("{what} to {addr} ({proto}) {done}: {}", list.message)
            }
        },
        action,
        enforcer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_events::Action;
    use std::net::Ipv4Addr;

    fn peer(addr: IpAddr, prefix_len: u8, port: Option<u16>, protocol: SockClass) -> EgressPeer {
        EgressPeer {
            addr,
            prefix_len,
            port,
            protocol,
        }
    }

    #[test]
    fn allow_keys_mark_the_slot_word_with_the_protocol() {
        let p = peer(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            32,
            Some(9000),
            SockClass::Tcp,
        );
        let keys = allow_keys(0x0003_0002, "egress", &p).unwrap();
        assert_eq!(keys.len(), 1);
        let k = keys[0];
        assert_eq!(k.prefixlen, 48 + 128);
        assert_eq!(
            &k.data[0..4],
            &(0x0003_0002u32 | (0x86 << 24)).to_ne_bytes()
        );
        assert_eq!(&k.data[4..6], &9000u16.to_be_bytes());
        assert_eq!(&k.data[16..22], &[0xff, 0xff, 10, 0, 0, 7]);
        // ICMP is two protocols; every port is port 0; a v6 prefix keeps its length.
        let any = peer(IpAddr::V6(Ipv6Addr::LOCALHOST), 64, None, SockClass::Icmp);
        let keys = allow_keys(5, "egress", &any).unwrap();
        let words: Vec<u8> = keys.iter().map(|k| k.data[3]).collect();
        assert_eq!(words, [0x81, 0xba]);
        assert!(keys
            .iter()
            .all(|k| k.data[4..6] == [0, 0] && k.prefixlen == 48 + 64));
    }

    #[test]
    fn allow_keys_refuse_raw_long_prefixes_and_wide_slots() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let raw = allow_keys(1, "e", &peer(v4, 32, None, SockClass::Raw)).unwrap_err();
        assert_eq!(
            raw.to_string(),
            "egress allow-list e: raw sockets never pass the connect and sendmsg hooks, a raw peer cannot be listed"
        );
        assert!(matches!(
            allow_keys(1, "e", &peer(v4, 33, None, SockClass::Tcp)),
            Err(RuleError::Prefix { prefix_len: 33, .. })
        ));
        assert!(matches!(
            allow_keys(1 << 24, "e", &peer(v4, 32, None, SockClass::Tcp)),
            Err(RuleError::EgressSlot { .. })
        ));
    }

    #[test]
    fn destinations_unmap_ipv4_and_findings_name_peer_rule_and_enforcer() {
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        let dest = destination(mapped, 9001u16.to_be());
        assert_eq!(dest, "10.1.2.3:9001".parse().unwrap());
        let v6 = destination(Ipv6Addr::LOCALHOST.octets(), 53u16.to_be());
        assert_eq!(v6, "[::1]:53".parse().unwrap());
        let list = EgressList {
            name: "ns/learned: egress".into(),
            peers: Vec::new(),
            audit: false,
            severity: 7,
            message: String::new(),
        };
        let kind = EventKind::Egress {
            addr: dest,
            protocol: 6,
            sendmsg: false,
            refused: true,
        };
        let f = finding(Some(&list), &kind).unwrap();
        assert_eq!(f.rule, "ns/learned: egress");
        assert_eq!(f.enforcer, "bpf-sock-addr");
        assert_eq!(f.action, Action::Block);
        assert_eq!(
            f.message,
            "connect to 10.1.2.3:9001 (tcp) refused: not in the egress allow-list"
        );
        let sent = EventKind::Egress {
            addr: v6,
            protocol: 17,
            sendmsg: true,
            refused: false,
        };
        let f = finding(Some(&list), &sent).unwrap();
        assert_eq!((f.action, f.enforcer), (Action::Audit, "audit-only"));
        assert!(f.message.starts_with("send to [::1]:53 (udp) reported"));
        assert!(finding(None, &kind).is_none());
    }
}
