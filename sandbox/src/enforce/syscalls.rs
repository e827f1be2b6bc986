//! Syscall rules: Block to an EPERM rule in the spec's seccomp profile, Audit to
//! `SCMP_ACT_LOG` where the kernel has it and the profile lets the call through, an
//! allow-list to a profile that permits nothing else.

use std::collections::BTreeSet;

use palisade_policy::{Action, CompiledPolicy};

use super::monitor::MonitorTarget;
use super::profile::{Act, Editor, Treatment};
use super::{Ctx, Enforcer, RuleId, RuleKind};

/// What palisade-init and runc's last steps call after the filter is installed: under a
/// syscall allow-list these stay permitted, or no container could start.
pub const STARTUP_SYSCALLS: [&str; 38] = [
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "close",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fcntl",
    "fstat",
    "futex",
    "getpid",
    "getrandom",
    "gettid",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "newfstatat",
    "open",
    "openat",
    "poll",
    "prctl",
    "pread64",
    "read",
    "readlink",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "set_robust_list",
    "set_tid_address",
    "sigaltstack",
    "statx",
    "write",
];

pub(super) fn apply(ctx: &mut Ctx<'_>, seccomp: &mut Editor<'_>, policy: &CompiledPolicy) {
    if policy.syscalls.is_empty() {
        return;
    }
    let log = ctx.kernel.seccomp_action("log");
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    for compiled in &policy.syscalls {
        let r = &compiled.rule;
        let id = RuleId::of(RuleKind::Syscalls, compiled, r.syscalls.join(","));
        let to_monitor = id.monitor(
            MonitorTarget::Syscalls {
                names: r.syscalls.clone(),
                path: r.target.clone(),
            },
            &r.from_source,
            false,
        );
        let unexpressible = if r.target.is_some() {
            Some("matchPaths: seccomp cannot read path arguments")
        } else if !r.from_source.is_empty() {
            Some("fromSource: seccomp applies to every process of the container")
        } else {
            None
        };
        let names: Vec<&str> = r.syscalls.iter().map(String::as_str).collect();
        match r.meta.action {
            Action::Audit => {
                if unexpressible.is_some() || !log {
                    ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                    let note = (!log).then(|| "the kernel has no SCMP_ACT_LOG".to_owned());
                    ctx.record(&id, Enforcer::MonitorAudit, note);
                    continue;
                }
                let (logged, left) = audit(seccomp, &names);
                if left.is_empty() {
                    ctx.record(&id, Enforcer::Seccomp, Some("SCMP_ACT_LOG".to_owned()));
                } else {
                    ctx.out.monitor.audit.push(to_monitor(Action::Audit));
                    let note = format!(
                        "the profile refuses or filters {} by argument, so the monitor reports \
                         them{}",
                        left.join(","),
                        if logged.is_empty() {
                            String::new()
                        } else {
                            format!("; SCMP_ACT_LOG for {}", logged.join(","))
                        }
                    );
                    ctx.record(&id, Enforcer::MonitorAudit, Some(note));
                }
            }
            Action::Block => {
                if let Some(why) = unexpressible {
                    ctx.audit_instead(&id, why, to_monitor(Action::Block));
                    continue;
                }
                blocked.extend(r.syscalls.iter().cloned());
                ctx.record(
                    &id,
                    Enforcer::Seccomp,
                    Some("SCMP_ACT_ERRNO (EPERM)".to_owned()),
                );
            }
            Action::Allow => {
                if let Some(why) = unexpressible {
                    let why = format!("{why}; the allow-list would permit it to every process");
                    if !ctx.cannot(&id, &why, Enforcer::Seccomp) {
                        continue;
                    }
                } else {
                    ctx.record(&id, Enforcer::Seccomp, None);
                }
                allowed.extend(r.syscalls.iter().cloned());
            }
        }
    }
    match policy.posture.syscalls {
        Action::Block => {
            // The allow-list narrows the profile: it never permits what the profile refused.
            seccomp.retain_permitted(|n| allowed.contains(n) || STARTUP_SYSCALLS.contains(&n));
            if seccomp.default_act().permits() {
                seccomp.deny_by_default();
                let names: Vec<&str> = allowed
                    .iter()
                    .map(String::as_str)
                    .chain(STARTUP_SYSCALLS)
                    .filter(|n| !blocked.contains(*n))
                    .collect();
                seccomp.push(&names, &Act::allow(), Vec::new());
            }
            ctx.out.applied.push(format!(
                "policy: syscall allow-list: the seccomp profile permits only {} (and what \
                 palisade-init needs to start)",
                allowed.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        Action::Audit => ctx.out.warnings.push(
            "policy: syscall allow-list in audit posture: calls outside it are not reported \
             (the monitor does not trace syscalls)"
                .to_owned(),
        ),
        Action::Allow => {}
    }
    if !blocked.is_empty() {
        let names: Vec<&str> = blocked.iter().map(String::as_str).collect();
        seccomp.remove(&names);
        seccomp.push(&names, &Act::eperm(), Vec::new());
    }
}

/// Moves the names the profile permits unconditionally to a `SCMP_ACT_LOG` rule; returns
/// the names logged and those left for the monitor.
fn audit<'n>(seccomp: &mut Editor<'_>, names: &[&'n str]) -> (Vec<&'n str>, Vec<&'n str>) {
    let mut logged = Vec::new();
    let mut left = Vec::new();
    for name in names {
        match seccomp.treatment(name) {
            Treatment::Unconditional(act) | Treatment::Default(act)
                if act == Act::allow() || act == Act::log() =>
            {
                logged.push(*name)
            }
            _ => left.push(*name),
        }
    }
    seccomp.remove(&logged);
    seccomp.push(&logged, &Act::log(), Vec::new());
    (logged, left)
}
