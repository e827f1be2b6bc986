//! Network rules: socket families and types filtered by seccomp, audits, and what only the
//! monitor can carry.

use super::*;

#[test]
fn network_block_raw_filters_socket_by_family_and_type() -> Result<()> {
    let mut s = hardened(&HardeningConfig {
        drop_net_raw: false,
        ..HardeningConfig::default()
    })?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, RAW, 1]), ALLOW);
    let e = enforce_policy(&mut s, policy_file!("block-raw"))?;
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    for (args, want) in [
        ([AF_INET, RAW, 1], EPERM),
        ([AF_INET6, RAW | NONBLOCK_CLOEXEC, 58], EPERM),
        ([AF_INET, RAW, 255], EPERM),
        ([AF_PACKET, DGRAM, 0], EPERM),
        ([AF_PACKET, RAW, 768], EPERM),
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM | NONBLOCK_CLOEXEC, 6], ALLOW),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 1], ALLOW),
        ([AF_UNIX, STREAM, 0], ALLOW),
        ([AF_NETLINK, RAW, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    assert_eq!(seccomp_action(&s, "socketcall", [1, 0, 0]), EPERM);
    assert_eq!(seccomp_action(&s, "connect", [3, 0, 16]), ALLOW);
    Ok(())
}

#[test]
fn network_allow_list_refuses_the_complement_and_logs_audited_protocols() -> Result<()> {
    let (s, e) = enforced(policy_file!("tcp-only"))?;
    for (args, want) in [
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM, 0], ALLOW),
        ([AF_INET, DGRAM, 0], EPERM),
        ([AF_INET, DGRAM, 17], EPERM),
        ([AF_INET, DGRAM, 1], EPERM),
        ([AF_INET, RAW, 1], EPERM),
        ([AF_INET, 5, 132], EPERM),
        ([AF_PACKET, RAW, 0], EPERM),
        ([AF_UNIX, DGRAM, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    // icmp is audited but the allow-list's posture refuses it: nothing to log in seccomp.
    assert_enforcers(
        &e,
        &[
            ("spec.network.matchProtocols[0]", Enforcer::Seccomp),
            ("spec.network.matchProtocols[1]", Enforcer::MonitorAudit),
        ],
    );
    Ok(())
}

#[test]
fn network_audit_logs_through_seccomp_or_goes_to_the_monitor() -> Result<()> {
    let (s, e) = enforced(policy_file!("audit-udp"))?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), LOG);
    assert_eq!(
        seccomp_action(&s, "socket", [AF_INET, DGRAM, 1]),
        ALLOW,
        "icmp is not udp"
    );
    assert_eq!(seccomp_action(&s, "socket", [AF_INET6, DGRAM, 17]), LOG);
    assert_eq!(
        seccomp_action(&s, "socket", [AF_INET, DGRAM, 136]),
        LOG,
        "every datagram protocol but icmp is udp"
    );
    assert_eq!(
        strings(&s["linux"]["seccomp"]["architectures"]),
        ["SCMP_ARCH_X86_64"],
        "the default profile covers only the native entry (and libseccomp cannot filter \
         x86's socketcall by family anyway)"
    );
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, STREAM, 0]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    assert!(e.monitor.audit.is_empty());

    let mut s = spec()?;
    let e = enforce(
        ID,
        &mut s,
        Some(&policy(policy_file!("audit-udp"))?),
        None,
        &kernel(Some(7), false),
    )?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::MonitorAudit);
    assert_eq!(e.monitor.audit.len(), 1);
    Ok(())
}

#[test]
fn network_audit_of_icmp_tells_ping_sockets_and_raw_icmp_apart() -> Result<()> {
    let yaml = policy_file!("audit-udp").replace("protocol: udp", "protocol: icmp");
    let (s, e) = enforced(&yaml)?;
    for (args, want) in [
        ([AF_INET, DGRAM, 1], LOG),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 17], ALLOW),
        ([AF_INET, RAW, 1], LOG),
        ([AF_INET, RAW, 0], ALLOW),
        ([AF_INET, RAW, 255], ALLOW),
        ([AF_INET6, RAW, 58], LOG),
        ([AF_INET6, RAW, 6], ALLOW),
        ([AF_INET6, DGRAM | NONBLOCK_CLOEXEC, 58], LOG),
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_PACKET, RAW, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    Ok(())
}

#[test]
fn network_block_from_source_becomes_a_socket_block_list_in_the_monitor() -> Result<()> {
    let p = policy(policy_file!("network-from-source"))?;
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&p), None, &node())?;
    assert_eq!(e.rules[0].enforcer, Enforcer::MonitorSockCreate);
    assert_eq!(e.monitor.network.len(), 1);
    assert_eq!(e.monitor.network[0].from_source, ["/usr/bin/curl"]);
    assert_eq!(e.monitor.network[0].action, palisade_policy::Action::Block);
    // Seccomp lets every other binary's UDP sockets through.
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), ALLOW);

    // Raw sockets also come as AF_PACKET, which the hook does not see: refused, or audited.
    let raw =
        policy(&policy_file!("network-from-source").replace("protocol: udp", "protocol: raw"))?;
    let err = enforce(ID, &mut spec()?, Some(&raw), None, &node()).unwrap_err();
    assert!(
        err.to_string().contains(
            "network rule raw: fromSource: the socket-creation hook does not see AF_PACKET"
        ),
        "{err}"
    );
    let e = enforce(ID, &mut spec()?, Some(&raw), Some(&degraded()), &node())?;
    assert_eq!(e.rules[0].enforcer, Enforcer::AuditOnly);
    assert_eq!(e.monitor.network[0].action, palisade_policy::Action::Audit);
    Ok(())
}

#[test]
fn network_allow_from_source_becomes_a_socket_allow_list_in_the_monitor() -> Result<()> {
    let yaml = NETWORK_SPECIFIC_PROCESSES
        .replace("namespace: shop", "namespace: demo")
        .replace("app: nginx", "app: web");
    let p = policy(&yaml)?;
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&p), None, &node())?;
    for origin in [
        "spec.network.matchProtocols[0]",
        "spec.network.matchProtocols[1]",
    ] {
        assert_eq!(enforcer_of(&e, origin), Enforcer::MonitorSockCreate);
    }
    assert_eq!(
        enforcer_of(&e, "spec.network.matchProtocols[2]"),
        Enforcer::Seccomp
    );
    // Seccomp lets TCP and UDP through (the monitor decides per binary) and keeps refusing
    // raw and ICMP sockets, which no binary may open.
    for (args, want) in [
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM | NONBLOCK_CLOEXEC, 6], ALLOW),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 1], EPERM),
        ([AF_INET, RAW, 1], EPERM),
        ([AF_PACKET, RAW, 0], EPERM),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    let targets: Vec<_> = e
        .monitor
        .network
        .iter()
        .map(|r| (format!("{:?}", r.target), r.action, r.from_source.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            (
                "Protocol(\"tcp\")".to_owned(),
                palisade_policy::Action::Allow,
                vec!["/usr/sbin/nginx".to_owned()]
            ),
            (
                "Protocol(\"udp\")".to_owned(),
                palisade_policy::Action::Allow,
                vec!["/usr/sbin/nginx".to_owned()]
            ),
        ]
    );
    let unlisted: Vec<_> = e.monitor.socket_unlisted.iter().collect();
    assert_eq!(
        unlisted,
        [
            (&"tcp".to_owned(), &palisade_policy::Action::Block),
            (&"udp".to_owned(), &palisade_policy::Action::Block)
        ]
    );
    Ok(())
}

#[test]
fn network_allow_from_source_of_raw_sockets_is_refused() -> Result<()> {
    let yaml = NETWORK_SPECIFIC_PROCESSES
        .replace("namespace: shop", "namespace: demo")
        .replace("app: nginx", "app: web")
        .replace("protocol: udp", "protocol: raw")
        .replace("    - protocol: raw\n      action: Block\n", "");
    let err = enforce(ID, &mut spec()?, Some(&policy(&yaml)?), None, &node()).unwrap_err();
    assert!(
        err.to_string().contains(
            "network rule raw: fromSource: the socket-creation hook does not see AF_PACKET"
        ),
        "{err}"
    );
    Ok(())
}
