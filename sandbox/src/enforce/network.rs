//! Network protocol rules as seccomp filters on `socket()`: every (family, type, protocol)
//! combination KubeArmor's protocols name gets the action the policy decides for it, and
//! every other socket keeps what the profile gave `socket` before.

use std::collections::BTreeSet;

use palisade_policy::{Action, CompiledPolicy, Protocol};
use serde_json::{json, Value};

use super::monitor::MonitorTarget;
use super::profile::{Act, Editor, Treatment};
use super::{Ctx, Enforcer, RuleId, RuleKind};

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_PACKET: u64 = 17;
/// One past the highest address family Linux defines (AF_MCTP is 45).
const AF_MAX: u64 = 46;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
const SOCK_RAW: u64 = 3;
/// The type bits of `socket()`'s second argument; the rest are SOCK_NONBLOCK and
/// SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u64 = 0xf;
const IPPROTO_ICMP: u64 = 1;
const IPPROTO_ICMPV6: u64 = 58;

/// The policy's decision for sockets matching a set of protocols. Protocols in `carried` have
/// a fromSource allow-list that the monitor checks per binary at socket creation: seccomp lets
/// them through.
fn decide(
    policy: &CompiledPolicy,
    protocols: &[Protocol],
    degraded_allows: &[Protocol],
    carried: &[Protocol],
) -> Action {
    if !protocols.is_empty() && protocols.iter().all(|p| carried.contains(p)) {
        return Action::Allow;
    }
    let rules = || {
        policy
            .network
            .iter()
            .filter(|c| c.rule.from_source.is_empty() && protocols.contains(&c.rule.protocol))
    };
    let has = |action| rules().any(|c| c.rule.meta.action == action);
    if has(Action::Block) {
        return Action::Block;
    }
    let allowed = has(Action::Allow) || protocols.iter().any(|p| degraded_allows.contains(p));
    if allowed {
        return if has(Action::Audit) {
            Action::Audit
        } else {
            Action::Allow
        };
    }
    if policy.posture.network != Action::Allow {
        return policy.posture.network;
    }
    if has(Action::Audit) {
        Action::Audit
    } else {
        Action::Allow
    }
}

fn cmp(index: u32, value: u64, op: &str) -> Value {
    json!({"index": index, "value": value, "valueTwo": 0, "op": op})
}

fn masked_type(t: u64) -> Value {
    json!({"index": 1, "value": SOCK_TYPE_MASK, "valueTwo": t, "op": "SCMP_CMP_MASKED_EQ"})
}

pub(super) fn apply(ctx: &mut Ctx<'_>, seccomp: &mut Editor<'_>, policy: &CompiledPolicy) {
    if policy.network.is_empty() {
        return;
    }
    let log = ctx.kernel.seccomp_action("log");
    let base = match seccomp.treatment("socket") {
        Treatment::Unconditional(act) | Treatment::Default(act) => Some(act),
        Treatment::Conditional => None,
    };
    let mut degraded_allows: Vec<Protocol> = Vec::new();
    let mut carried: Vec<Protocol> = Vec::new();
    let mut ids = Vec::new();
    for compiled in &policy.network {
        let r = &compiled.rule;
        let id = RuleId::of(RuleKind::Network, compiled, r.protocol.as_str().to_owned());
        let to_monitor = id.monitor(
            MonitorTarget::Protocol(r.protocol.as_str().to_owned()),
            &r.from_source,
            false,
        );
        if base.is_none() && r.meta.action != Action::Audit {
            let why = "the spec's seccomp profile filters socket() by argument already, \
                       palisade cannot combine its rules with them";
            ctx.audit_instead(&id, why, to_monitor(r.meta.action));
            continue;
        }
        if !r.from_source.is_empty() {
            let rule = to_monitor(r.meta.action);
            match r.meta.action {
                Action::Audit => {
                    ctx.out.monitor.network.push(rule);
                    ctx.record(&id, Enforcer::MonitorAudit, None);
                }
                Action::Block if r.protocol == Protocol::Raw => {
                    let why = "fromSource: the socket-creation hook does not see AF_PACKET \
                               sockets, and socket filters apply to every process of the \
                               container";
                    if ctx.cannot(&id, why, Enforcer::AuditOnly) {
                        ctx.out.monitor.network.push(to_monitor(Action::Audit));
                    }
                }
                Action::Block => {
                    // A block list: the monitor refuses the named binaries' sockets at
                    // creation; seccomp keeps what the other rules decide for the protocol.
                    ctx.out.monitor.network.push(rule);
                    ctx.record(
                        &id,
                        Enforcer::MonitorSockCreate,
                        Some(format!(
                            "checked at socket creation (cgroup sock_create): {} sockets of the \
                             binaries fromSource names fail with EPERM",
                            r.protocol.as_str()
                        )),
                    );
                }
                Action::Allow => {
                    // What the binaries the rule does not list get (fromSource rules decide
                    // alone for the binaries they name).
                    let unlisted = decide(policy, &[r.protocol], &[], &[]);
                    if unlisted == Action::Allow {
                        let note = "every process may create these sockets: no allow-list \
                                    posture or a rule without fromSource lets them through";
                        ctx.record(&id, Enforcer::Seccomp, Some(note.to_owned()));
                    } else if r.protocol == Protocol::Raw {
                        let why = "fromSource: the socket-creation hook does not see AF_PACKET \
                                   sockets, and socket filters would permit raw sockets to every \
                                   process of the container";
                        if ctx.cannot(&id, why, Enforcer::Seccomp) {
                            ctx.out.monitor.network.push(rule);
                            degraded_allows.push(r.protocol);
                        }
                    } else {
                        let p = r.protocol.as_str();
                        ctx.out.monitor.network.push(rule);
                        ctx.out
                            .monitor
                            .socket_unlisted
                            .insert(p.to_owned(), unlisted);
                        if !carried.contains(&r.protocol) {
                            carried.push(r.protocol);
                        }
                        let other = if unlisted == Action::Block {
                            "fail with EPERM"
                        } else {
                            "are reported"
                        };
                        ctx.record(
                            &id,
                            Enforcer::MonitorSockCreate,
                            Some(format!(
                                "checked at socket creation (cgroup sock_create): {p} sockets of \
                                 binaries fromSource does not name {other}"
                            )),
                        );
                    }
                }
            }
            continue;
        }
        // The rules seccomp decides keep `id`, which `to_monitor` borrows.
        drop(to_monitor);
        ids.push((id, r.meta.clone()));
    }
    let Some(base) = base else { return };

    let final_act = |protocols: &[Protocol]| -> Act {
        match decide(policy, protocols, &degraded_allows, &carried) {
            Action::Block => Act::eperm(),
            Action::Audit if base == Act::allow() && log => Act::log(),
            _ => base.clone(),
        }
    };
    // (conditions, action, protocols): disjoint, so that no socket() call matches two rules
    // (libseccomp does not say which of overlapping rules wins).
    let mut combos: Vec<(Vec<Value>, Act, Vec<Protocol>)> = Vec::new();
    for (family, icmp) in [(AF_INET, IPPROTO_ICMP), (AF_INET6, IPPROTO_ICMPV6)] {
        let typed = |t: u64, extra: Option<Value>| {
            let mut args = vec![cmp(0, family, "SCMP_CMP_EQ"), masked_type(t)];
            args.extend(extra);
            args
        };
        let tcp = vec![Protocol::Tcp];
        combos.push((typed(SOCK_STREAM, None), final_act(&tcp), tcp));

        // Each type's protocols are told apart by argument 2 only when their actions
        // differ: ICMP against every other protocol.
        for (t, with_icmp, without_icmp) in [
            (SOCK_DGRAM, vec![Protocol::Icmp], vec![Protocol::Udp]),
            (
                SOCK_RAW,
                vec![Protocol::Raw, Protocol::Icmp],
                vec![Protocol::Raw],
            ),
        ] {
            let (icmp_act, other_act) = (final_act(&with_icmp), final_act(&without_icmp));
            if icmp_act == other_act {
                let mut all = with_icmp;
                all.extend(without_icmp);
                all.sort();
                all.dedup();
                combos.push((typed(t, None), icmp_act, all));
            } else {
                let is_icmp = typed(t, Some(cmp(2, icmp, "SCMP_CMP_EQ")));
                combos.push((is_icmp, icmp_act, with_icmp));
                let not_icmp = typed(t, Some(cmp(2, icmp, "SCMP_CMP_NE")));
                combos.push((not_icmp, other_act, without_icmp));
            }
        }
        // Other types on the inet families (SCTP's SOCK_SEQPACKET) name no protocol: only
        // the posture applies.
        let posture = final_act(&[]);
        for t in (0..=SOCK_TYPE_MASK).filter(|t| ![SOCK_STREAM, SOCK_DGRAM, SOCK_RAW].contains(t)) {
            combos.push((typed(t, None), posture.clone(), Vec::new()));
        }
    }
    let raw = vec![Protocol::Raw];
    combos.push((vec![cmp(0, AF_PACKET, "SCMP_CMP_EQ")], final_act(&raw), raw));
    let acts: Vec<Act> = combos.iter().map(|(_, a, _)| a.clone()).collect();
    let changed = acts.iter().any(|a| *a != base);
    let logged_protocols: BTreeSet<Protocol> = combos
        .iter()
        .filter(|(_, a, _)| *a == Act::log())
        .flat_map(|(_, _, p)| p.iter().copied())
        .collect();
    for (id, meta) in &ids {
        let action = meta.action;
        let protocol = Protocol::parse(&id.target);
        let logged = protocol.is_some_and(|p| logged_protocols.contains(&p));
        match action {
            Action::Audit if !logged => {
                let to_monitor = id.monitor(MonitorTarget::Protocol(id.target.clone()), &[], false);
                ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                let note = if log {
                    "seccomp refuses or does not let these sockets through unconditionally"
                } else {
                    "the kernel has no SCMP_ACT_LOG"
                };
                ctx.record(id, Enforcer::MonitorAudit, Some(note.to_owned()));
            }
            Action::Audit => ctx.record(id, Enforcer::Seccomp, Some("SCMP_ACT_LOG on socket()".to_owned())),
            Action::Block => ctx.record(
                id,
                Enforcer::Seccomp,
                Some("socket() fails with EPERM; sockets made before (none in a new container) are unaffected".to_owned()),
            ),
            Action::Allow => ctx.record(
                id,
                Enforcer::Seccomp,
                (policy.posture.network == Action::Block).then(|| {
                    "allow-list: socket() refuses the inet and packet sockets no rule lists"
                        .to_owned()
                }),
            ),
        }
    }
    if !changed {
        return;
    }
    // socketcall multiplexes socket() for 32-bit x86 with its arguments in memory, out of
    // the filter's reach; libseccomp turns every socket() rule into a socketcall rule on
    // x86 too, comparing the other conditions with the pointer (and refusing two such
    // rules with different actions). So the x86 personality leaves the filter: 32-bit x86
    // system calls get the filter's bad-architecture action (the process is killed)
    // instead of a filter that lets socket() through by accident.
    seccomp.remove(&["socket", "socketcall"]);
    for (args, act, _) in &combos {
        seccomp.push(&["socket"], act, args.clone());
    }
    if seccomp.remove_architecture("SCMP_ARCH_X86") {
        ctx.out.applied.push(
            "policy: seccomp filter without SCMP_ARCH_X86: a 32-bit x86 system call kills the process, \
             since socketcall() cannot be filtered by family"
                .to_owned(),
        );
    }
    // Every other family keeps what socket() had.
    for family in (0..AF_MAX).filter(|f| ![AF_INET, AF_INET6, AF_PACKET].contains(f)) {
        seccomp.push(&["socket"], &base, vec![cmp(0, family, "SCMP_CMP_EQ")]);
    }
    ctx.out.applied.push(
        "policy: seccomp filters socket() by family, type and protocol (socketcall refused)"
            .to_owned(),
    );
}
