//! Network protocol rules as seccomp filters on `socket()`: every (family, type, protocol)
//! combination KubeArmor's protocols name gets the action the policy decides for it, and
//! every other socket keeps what the profile gave `socket` before.

use std::collections::BTreeSet;

use palisade_policy::{Action, CompiledPolicy, Protocol};
use serde_json::{json, Value};

use super::monitor::{self, MonitorTarget};
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

/// The policy's decision for sockets matching a set of protocols.
fn decide(policy: &CompiledPolicy, protocols: &[Protocol], degraded_allows: &[Protocol]) -> Action {
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
    let mut ids = Vec::new();
    for compiled in &policy.network {
        let r = &compiled.rule;
        let id = RuleId::of(
            RuleKind::Network,
            compiled,
            &r.meta,
            r.protocol.as_str().to_owned(),
        );
        let to_monitor = |action| {
            monitor::rule(
                &id.rule,
                RuleKind::Network,
                action,
                MonitorTarget::Protocol(r.protocol.as_str().to_owned()),
                &r.from_source,
                false,
                &r.meta,
            )
        };
        if base.is_none() && r.meta.action != Action::Audit {
            let why = "the spec's seccomp profile filters socket() by argument already, \
                       palisade cannot combine its rules with them";
            if ctx.cannot(&id, why, Enforcer::AuditOnly) {
                ctx.out.monitor.audit.push(to_monitor(r.meta.action));
            }
            continue;
        }
        if !r.from_source.is_empty() {
            let rule = to_monitor(r.meta.action);
            match r.meta.action {
                Action::Audit => {
                    ctx.out.monitor.network.push(rule);
                    ctx.record(&id, Enforcer::MonitorAudit, None);
                }
                Action::Block => {
                    let why = "fromSource: socket filters apply to every process of the container";
                    if ctx.cannot(&id, why, Enforcer::AuditOnly) {
                        ctx.out.monitor.network.push(rule);
                    }
                }
                Action::Allow => {
                    let why = "fromSource: socket filters would permit the protocol to every \
                               process of the container";
                    if ctx.cannot(&id, why, Enforcer::Seccomp) {
                        ctx.out.monitor.network.push(rule);
                        degraded_allows.push(r.protocol);
                    }
                }
            }
            continue;
        }
        ids.push((id, r.meta.clone()));
    }
    let Some(base) = base else { return };

    // The (family, conditions, protocols) combinations, disjoint so that libseccomp never
    // sees two rules for the same arguments.
    let mut combos: Vec<(Vec<Value>, Vec<Protocol>)> = Vec::new();
    for (family, icmp) in [(AF_INET, IPPROTO_ICMP), (AF_INET6, IPPROTO_ICMPV6)] {
        let fam = cmp(0, family, "SCMP_CMP_EQ");
        combos.push((
            vec![fam.clone(), masked_type(SOCK_STREAM)],
            vec![Protocol::Tcp],
        ));
        for (t, with_icmp, without_icmp) in [
            (SOCK_DGRAM, vec![Protocol::Icmp], vec![Protocol::Udp]),
            (
                SOCK_RAW,
                vec![Protocol::Raw, Protocol::Icmp],
                vec![Protocol::Raw],
            ),
        ] {
            combos.push((
                vec![fam.clone(), masked_type(t), cmp(2, icmp, "SCMP_CMP_EQ")],
                with_icmp,
            ));
            combos.push((
                vec![fam.clone(), masked_type(t), cmp(2, icmp, "SCMP_CMP_NE")],
                without_icmp,
            ));
        }
        for t in (0..=SOCK_TYPE_MASK).filter(|t| ![SOCK_STREAM, SOCK_DGRAM, SOCK_RAW].contains(t)) {
            combos.push((vec![fam.clone(), masked_type(t)], Vec::new()));
        }
    }
    combos.push((vec![cmp(0, AF_PACKET, "SCMP_CMP_EQ")], vec![Protocol::Raw]));

    let final_act = |protocols: &[Protocol]| -> Act {
        // Sockets of other types on the inet families fall under the posture too.
        match decide(policy, protocols, &degraded_allows) {
            Action::Block => Act::eperm(),
            Action::Audit if base == Act::allow() && log => Act::log(),
            _ => base.clone(),
        }
    };
    let acts: Vec<Act> = combos.iter().map(|(_, p)| final_act(p)).collect();
    let changed = acts.iter().any(|a| *a != base);
    let logged_protocols: BTreeSet<Protocol> = combos
        .iter()
        .zip(&acts)
        .filter(|(_, a)| **a == Act::log())
        .flat_map(|((_, p), _)| p.iter().copied())
        .collect();
    for (id, meta) in &ids {
        let action = meta.action;
        let protocol = Protocol::parse(&id.target);
        let logged = protocol.is_some_and(|p| logged_protocols.contains(&p));
        match action {
            Action::Audit if !logged => {
                let rule = monitor::rule(
                    &id.rule,
                    RuleKind::Network,
                    Action::Audit,
                    MonitorTarget::Protocol(id.target.clone()),
                    &[],
                    false,
                    meta,
                );
                ctx.out.monitor.audit.push(rule);
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
    // the filter's reach: it goes, so 32-bit programs must use socket() directly.
    seccomp.remove(&["socket", "socketcall"]);
    for ((args, _), act) in combos.iter().zip(&acts) {
        seccomp.push(&["socket"], act, args.clone());
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
