//! Refused execs: the finding of an execve or execveat the kernel refused ([`EventKind::ExecRefused`],
//! reported by the syscall hooks, `bpf/execs.h`), with the enforcer that refused it as far as the
//! monitor can tell, and the one refusal reported twice left out.
//!
//! The enforcer: EACCES in a container whose landlock ruleset handles the execute right is
//! landlock's; EPERM of a call the container's seccomp filter refuses outright is seccomp's;
//! anything else is `unknown` (a file without an execute bit, another LSM), never a guess.
//! An exec the monitor's own BPF-LSM program refused (an exec deny rule) is reported by that
//! program already ([`EventKind::Exec`] with `refused`): the EPERM its syscall then returns is
//! the same refusal and is not reported again ([`Echoes`]).

use std::collections::HashSet;

use palisade_events::Action;

use crate::event::{EventKind, Finding, EACCES, EPERM};
use crate::rules::{ContainerRules, Enforcer};

/// Severity of a refused exec: a refused attempt stays below a compromise kill's default
/// threshold, as the detections' refused attempts do.
const SEVERITY: u8 = 5;

/// Threads past which [`Echoes`] forgets (an exec refusal whose syscall event was dropped
/// would otherwise stay).
const MAX_ECHOES: usize = 4096;

/// What refused an exec that returned `result` in a container with `rules`.
pub(crate) fn refuser(rules: &ContainerRules, call: &str, result: i64) -> Enforcer {
    if result == -EACCES && rules.landlock_exec {
        Enforcer::Landlock
    } else if result == -EPERM && rules.seccomp_refused.iter().any(|c| c == call) {
        Enforcer::Seccomp
    } else {
        Enforcer::Unknown
    }
}

/// The finding of a refused exec: a `block` naming the path asked for and what refused it.
pub(crate) fn finding(rules: &ContainerRules, kind: &EventKind) -> Option<Finding> {
    let EventKind::ExecRefused {
        path,
        dirfd,
        result,
    } = kind
    else {
        return None;
    };
    let call = if dirfd.is_some() {
        "execveat"
    } else {
        "execve"
    };
    let enforcer = refuser(rules, call, *result);
    let errno = if *result == -EACCES {
        "EACCES"
    } else {
        "EPERM"
    };
    Some(Finding {
        rule: "exec-refused".into(),
        severity: SEVERITY,
        tags: vec!["MITRE_T1059".into(), "process".into(), "blocked".into()],
        message: format!("exec of {path} refused by {enforcer} ({errno})"),
        action: Action::Block,
        enforcer: enforcer.as_str(),
    })
}

/// The threads whose exec the monitor's BPF-LSM program refused, until their syscall's EPERM
/// comes (it follows on the same ring, from the same thread).
#[derive(Debug, Default)]
pub(crate) struct Echoes(HashSet<u32>);

impl Echoes {
    /// Whether the event of thread `tid` repeats a refusal already reported (and is to be
    /// dropped); notes the BPF-LSM's refusals.
    pub(crate) fn echo(&mut self, tid: u32, kind: &EventKind) -> bool {
        match kind {
            EventKind::Exec { refused: true, .. } => {
                if self.0.len() >= MAX_ECHOES {
                    self.0.clear();
                }
                self.0.insert(tid);
                false
            }
            EventKind::ExecRefused { result, .. } => self.0.remove(&tid) && *result == -EPERM,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &str, dirfd: Option<i32>, result: i64) -> EventKind {
        EventKind::ExecRefused {
            path: path.into(),
            dirfd,
            result,
        }
    }

    #[test]
    fn the_enforcer_is_named_only_where_the_container_has_it() {
        let mut rules = ContainerRules::default();
        let f = finding(&rules, &refused("/usr/bin/probe", None, -EACCES)).unwrap();
        assert_eq!(f.enforcer, "unknown", "no landlock execute allow-list");
        assert_eq!(f.action, Action::Block);
        assert_eq!(f.rule, "exec-refused");
        assert_eq!(
            f.message,
            "exec of /usr/bin/probe refused by unknown (EACCES)"
        );
        rules.landlock_exec = true;
        let f = finding(&rules, &refused("/usr/bin/probe", None, -EACCES)).unwrap();
        assert_eq!(f.enforcer, "landlock");
        assert_eq!(
            f.message,
            "exec of /usr/bin/probe refused by landlock (EACCES)"
        );
        // landlock refuses with EACCES only
        let f = finding(&rules, &refused("/usr/bin/probe", None, -EPERM)).unwrap();
        assert_eq!(f.enforcer, "unknown");
        rules.seccomp_refused = vec!["execveat".into()];
        let f = finding(&rules, &refused("probe", Some(3), -EPERM)).unwrap();
        assert_eq!(f.enforcer, "seccomp");
        let f = finding(&rules, &refused("/usr/bin/probe", None, -EPERM)).unwrap();
        assert_eq!(
            f.enforcer, "unknown",
            "seccomp refuses execveat, not execve"
        );
        assert!(finding(&rules, &EventKind::Fork { child_pid: 3 }).is_none());
    }

    #[test]
    fn the_syscall_echo_of_a_bpf_lsm_refusal_is_dropped_once() {
        let lsm = EventKind::Exec {
            filename: "/bin/nc".into(),
            args: Vec::new(),
            parent: "/bin/sh".into(),
            ino: 1,
            dev: 2,
            killed: false,
            refused: true,
            deny_rule: Some("no-nc".into()),
            entrypoint: false,
        };
        let mut echoes = Echoes::default();
        assert!(!echoes.echo(7, &lsm));
        assert!(
            !echoes.echo(8, &refused("/bin/nc", None, -EPERM)),
            "another thread's refusal is its own"
        );
        assert!(echoes.echo(7, &refused("/bin/nc", None, -EPERM)));
        assert!(
            !echoes.echo(7, &refused("/bin/nc", None, -EPERM)),
            "only the one echo"
        );
        assert!(!echoes.echo(9, &lsm));
        assert!(
            !echoes.echo(9, &refused("/bin/nc", None, -EACCES)),
            "an EACCES is not the BPF-LSM's"
        );
        assert!(
            !echoes.echo(9, &refused("/bin/nc", None, -EPERM)),
            "consumed"
        );
    }
}
