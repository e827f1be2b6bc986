//! The landlock ruleset: each kind of right (read, write, execute) is handled only when
//! something restricts it, and granted beneath the paths of that restriction.

use std::collections::{BTreeMap, BTreeSet};

use palisade_init::landlock::abi_of;
use palisade_init::plan::{FsAccess, FsRule, LandlockPlan, LogPlan, Plan, ScopePlan, VERSION};

use super::profile::{Editor, Treatment};
use super::{Ctx, EnforceError, Enforcer, RuleKind};

/// Opening a file to read it, listing a directory.
pub(super) const READ: [FsAccess; 2] = [FsAccess::ReadFile, FsAccess::ReadDir];

/// First landlock ABI with signal and abstract unix socket scoping.
const ABI_SCOPE: u32 = 6;

/// First landlock ABI that restricts truncating a file by path (`truncate(2)`).
const ABI_TRUNCATE: u32 = 3;

/// The system calls that truncate a file by path; `truncate64` exists on 32-bit ABIs
/// (i386 under an amd64 kernel, when the filter lists that architecture).
const TRUNCATE_CALLS: [&str; 2] = ["truncate", "truncate64"];

/// What the record of a write allow-list says when landlock leaves truncate to seccomp.
fn truncate_by_seccomp(abi: u32) -> String {
    format!("truncate: refused by seccomp (landlock abi {abi} cannot restrict it)")
}

/// The dynamic loaders of the supported architectures. The kernel opens a binary's
/// interpreter for execution (so landlock asks for `execute` on it), while shared libraries
/// are only mapped; an exec allow-list grants these so that allowed dynamic binaries start.
/// Missing ones are skipped (`optional`).
pub(super) const LOADERS: [&str; 8] = [
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib/ld-linux-aarch64.so.1",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

/// The restrictions gathered from strict mode and the policy; `None` leaves that kind of
/// right unhandled (allowed everywhere).
#[derive(Debug, Default)]
pub(super) struct Layers {
    /// Strict mode: writes only beneath these.
    pub write: Option<Vec<String>>,
    /// A file allow-list: reads only beneath these.
    pub file_read: Option<Vec<String>>,
    /// A file allow-list: writes only beneath these.
    pub file_write: Option<Vec<String>>,
    /// A process allow-list: `execve` only of these.
    pub exec: Option<Vec<String>>,
    pub scope_signal: bool,
    pub scope_abstract_unix: bool,
    /// The container's final seccomp filter refuses `truncate(2)` whatever its arguments
    /// (see [`seccomp_refuses_truncate`]).
    pub truncate_refused_by_seccomp: bool,
}

/// Whether the seccomp filter refuses every path truncation: each of [`TRUNCATE_CALLS`]
/// meets an action that fails the call (errno, kill, trap), by a rule without argument
/// conditions or by the default. A tracer or a user-space notifier may let the call
/// through, so those do not count.
pub(super) fn seccomp_refuses_truncate(seccomp: &Editor<'_>) -> bool {
    TRUNCATE_CALLS.iter().all(|name| {
        let act = match seccomp.treatment(name) {
            Treatment::Unconditional(act) | Treatment::Default(act) => act,
            Treatment::Conditional => return false,
        };
        matches!(
            act.name.as_str(),
            "SCMP_ACT_ERRNO"
                | "SCMP_ACT_KILL"
                | "SCMP_ACT_KILL_THREAD"
                | "SCMP_ACT_KILL_PROCESS"
                | "SCMP_ACT_TRAP"
        )
    })
}

/// Whether `path` is `dir` or lies beneath it, lexically (both absolute, no trailing `/`
/// except the root).
pub(super) fn beneath(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The paths beneath some entry of both lists: where two allow-lists of the same right both
/// grant it.
pub(super) fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for x in a {
        for y in b {
            if beneath(x, y) {
                out.insert(x.clone());
            } else if beneath(y, x) {
                out.insert(y.clone());
            }
        }
    }
    out.into_iter().collect()
}

/// A path as landlock rules take it: without the trailing `/` of KubeArmor's `dir`.
pub(super) fn clean(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Builds the plan, or `None` when nothing needs palisade-init. Checks the kernel's ABI:
/// too old refuses the container unless degrading is allowed (then `best_effort`, with a
/// warning naming what is lost).
pub(super) fn plan(ctx: &mut Ctx<'_>, layers: &Layers) -> Result<Option<Plan>, EnforceError> {
    let write = match (&layers.write, &layers.file_write) {
        (Some(a), Some(b)) => Some(intersect(a, b)),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    let exec = layers.exec.as_ref().map(|paths| {
        let mut all = paths.clone();
        all.extend(LOADERS.iter().map(|l| (*l).to_owned()));
        all
    });
    let mut handled: BTreeSet<FsAccess> = BTreeSet::new();
    let mut grants: BTreeMap<String, BTreeSet<FsAccess>> = BTreeMap::new();
    for (paths, rights) in [
        (&layers.file_read, &READ[..]),
        (&write, &FsAccess::WRITE[..]),
        (&exec, &[FsAccess::Execute][..]),
    ] {
        let Some(paths) = paths else { continue };
        // Granted beneath `/`, the right is restricted nowhere: leave it unhandled, so that
        // such an allow-list asks the kernel for no landlock ABI (truncate needs 3).
        if paths.iter().any(|p| p == "/") {
            continue;
        }
        handled.extend(rights.iter().copied());
        for path in paths {
            grants
                .entry(path.clone())
                .or_default()
                .extend(rights.iter().copied());
        }
    }
    // The kernel opens a binary (and its interpreter) for reading to execute it, and
    // landlock asks for `read_file` on that open as well as `execute`: with reads restricted
    // too, what may be executed must also be readable, or no allowed binary starts.
    if handled.contains(&FsAccess::ReadFile) && handled.contains(&FsAccess::Execute) {
        for (_, access) in grants
            .iter_mut()
            .filter(|(_, a)| a.contains(&FsAccess::Execute))
        {
            access.insert(FsAccess::ReadFile);
        }
        ctx.out.applied.push(
            "landlock: the exec allow-list's binaries and loaders are readable too (the kernel \
             reads a binary to execute it)"
                .to_owned(),
        );
    }
    let have = ctx.kernel.landlock_abi.unwrap_or(0);
    // Below abi 3 landlock cannot restrict truncate(2); an open with O_TRUNC is still
    // checked as a write, and ftruncate needs a writable descriptor. Where seccomp refuses
    // truncate(2) itself nothing is left open: leave the right unhandled rather than
    // refusing the container for it.
    if handled.contains(&FsAccess::Truncate)
        && (1..ABI_TRUNCATE).contains(&have)
        && layers.truncate_refused_by_seccomp
    {
        handled.remove(&FsAccess::Truncate);
        for access in grants.values_mut() {
            access.remove(&FsAccess::Truncate);
        }
        let line = truncate_by_seccomp(have);
        for rule in ctx
            .out
            .rules
            .iter_mut()
            .filter(|r| r.enforcer == Enforcer::Landlock && r.kind == RuleKind::File)
        {
            rule.note = Some(match rule.note.take() {
                Some(n) => format!("{n}; {line}"),
                None => line.clone(),
            });
        }
        ctx.out.applied.push(format!("landlock: {line}"));
    }
    let scope = ScopePlan {
        signal: layers.scope_signal,
        abstract_unix_socket: layers.scope_abstract_unix,
    };
    if handled.is_empty() && !scope.signal && !scope.abstract_unix_socket {
        return Ok(None);
    }

    let mut required = handled.iter().map(|r| abi_of(*r)).max().unwrap_or(1);
    if scope.signal || scope.abstract_unix_socket {
        required = required.max(ABI_SCOPE);
    }
    let available = ctx.kernel.landlock_abi;
    let mut best_effort = false;
    if have < required {
        let mut missing: Vec<&str> = handled
            .iter()
            .filter(|r| abi_of(**r) > have)
            .map(|r| match r {
                // Said so that the operator sees the other way out: a seccomp filter that
                // refuses truncate(2).
                FsAccess::Truncate => "truncate (the seccomp filter allows truncate(2))",
                _ => r.name(),
            })
            .collect();
        if scope.signal && have < ABI_SCOPE {
            missing.push("scope.signal");
        }
        if scope.abstract_unix_socket && have < ABI_SCOPE {
            missing.push("scope.abstract_unix_socket");
        }
        if have == 0 {
            missing = vec!["every landlock rule"];
        }
        let missing = missing.join(", ");
        if !ctx.degrade {
            return Err(EnforceError::LandlockAbi {
                container: ctx.container.to_owned(),
                required,
                available,
                missing,
            });
        }
        best_effort = true;
        let kernel = available.map_or_else(|| "no landlock".to_owned(), |v| format!("abi {v}"));
        ctx.out.warnings.push(format!(
            "landlock: the kernel has {kernel}, the ruleset needs abi {required}: running \
             without {missing} (allow_degraded)"
        ));
        // The report must not claim landlock for rules the kernel will not carry.
        for rule in ctx
            .out
            .rules
            .iter_mut()
            .filter(|r| r.enforcer == Enforcer::Landlock)
        {
            if have == 0 {
                rule.enforcer =
                    Enforcer::Unenforceable(format!("the kernel has {kernel} (allow_degraded)"));
            } else {
                let note = format!("best effort: the kernel lacks {missing}");
                rule.note = Some(match rule.note.take() {
                    Some(n) => format!("{n}; {note}"),
                    None => note,
                });
            }
        }
    }

    let fs = grants
        .into_iter()
        .map(|(path, access)| FsRule {
            path: path.into(),
            access: access.into_iter().collect(),
            optional: true,
        })
        .collect();
    Ok(Some(Plan {
        version: VERSION,
        landlock: Some(LandlockPlan {
            required_abi: required,
            best_effort,
            handled_fs: Some(handled.into_iter().collect()),
            fs,
            net: None,
            scope,
            log: LogPlan::default(),
        }),
        capabilities: None,
        no_new_privs: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{Enforcement, RuleEnforcement};
    use super::*;
    use crate::owned;

    fn strings(v: &[&str]) -> Vec<String> {
        owned(v)
    }

    fn kernel(abi: u32) -> crate::kernel::KernelFeatures {
        crate::kernel::KernelFeatures {
            landlock_abi: Some(abi),
            seccomp_actions: BTreeSet::new(),
            user_namespaces: true,
            unprivileged_user_namespaces: None,
            bpf_lsm: false,
        }
    }

    /// A file allow-list granting writes beneath /data, recorded as a KubeArmor file rule
    /// carried by landlock, planned on a kernel with landlock `abi`.
    fn plan_write_list(
        abi: u32,
        truncate_refused: bool,
    ) -> (Result<Option<Plan>, EnforceError>, Enforcement) {
        let kernel = kernel(abi);
        let mut ctx = Ctx {
            container: "c1",
            kernel: &kernel,
            degrade: false,
            out: Enforcement::default(),
            refused: Vec::new(),
        };
        ctx.out.rules.push(RuleEnforcement {
            rule: "demo/files: spec.file.matchDirectories[0]".to_owned(),
            kind: RuleKind::File,
            target: "/data/".to_owned(),
            action: palisade_policy::Action::Allow,
            enforcer: Enforcer::Landlock,
            note: None,
        });
        let layers = Layers {
            file_read: Some(strings(&["/data", "/usr"])),
            file_write: Some(strings(&["/data"])),
            truncate_refused_by_seccomp: truncate_refused,
            ..Layers::default()
        };
        let got = plan(&mut ctx, &layers);
        (got, ctx.out)
    }

    fn landlock_of(plan: Option<Plan>) -> LandlockPlan {
        plan.and_then(|p| p.landlock).expect("a landlock plan")
    }

    #[test]
    fn abi_2_leaves_truncate_to_a_seccomp_filter_that_refuses_it() {
        let (got, out) = plan_write_list(2, true);
        let ll = landlock_of(got.expect("starts on abi 2"));
        let handled = ll.handled_fs.expect("handled rights");
        assert!(!handled.contains(&FsAccess::Truncate), "{handled:?}");
        assert!(handled.contains(&FsAccess::WriteFile));
        assert!(handled.contains(&FsAccess::MakeReg));
        assert_eq!(ll.required_abi, 2, "refer is the newest right left");
        assert!(!ll.best_effort);
        assert!(ll
            .fs
            .iter()
            .all(|r| !r.access.contains(&FsAccess::Truncate)));
        let data = ll.fs.iter().find(|r| r.path.to_str() == Some("/data"));
        assert!(data
            .expect("/data granted")
            .access
            .contains(&FsAccess::WriteFile));
        let line = "truncate: refused by seccomp (landlock abi 2 cannot restrict it)";
        assert_eq!(out.rules[0].note.as_deref(), Some(line));
        assert!(
            out.applied.contains(&format!("landlock: {line}")),
            "{:?}",
            out.applied
        );
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn abi_2_refuses_a_write_list_when_seccomp_lets_truncate_through() {
        let (got, out) = plan_write_list(2, false);
        let err = got.expect_err("refused");
        assert_eq!(
            err.to_string(),
            "container c1: landlock: needs abi 3 for truncate (the seccomp filter allows \
             truncate(2)), the kernel has abi 2; refused (allow_degraded is off)"
        );
        assert_eq!(out.rules[0].note, None);
        assert!(out.applied.is_empty());
    }

    #[test]
    fn abi_3_handles_truncate_whatever_seccomp_does() {
        for refused in [true, false] {
            let (got, out) = plan_write_list(3, refused);
            let ll = landlock_of(got.expect("starts on abi 3"));
            assert!(ll
                .handled_fs
                .expect("handled")
                .contains(&FsAccess::Truncate));
            assert_eq!(ll.required_abi, 3);
            let data = ll.fs.iter().find(|r| r.path.to_str() == Some("/data"));
            assert!(data
                .expect("/data granted")
                .access
                .contains(&FsAccess::Truncate));
            assert_eq!(out.rules[0].note, None);
            assert!(out.applied.is_empty());
        }
    }

    fn refuses(profile: serde_json::Value) -> bool {
        let mut linux = serde_json::Map::new();
        linux.insert("seccomp".to_owned(), profile);
        seccomp_refuses_truncate(&Editor::new(&mut linux))
    }

    #[test]
    fn seccomp_refuses_truncate_only_when_no_path_truncation_gets_through() {
        use serde_json::json;
        // An allow-list that does not name it (a learned profile's shape).
        assert!(refuses(json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "ftruncate"], "action": "SCMP_ACT_ALLOW"}]})));
        // An allow-list that names it.
        assert!(!refuses(json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "truncate"], "action": "SCMP_ACT_ALLOW"}]})));
        // Only the 32-bit call allowed is still a way through.
        assert!(!refuses(json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["truncate64"], "action": "SCMP_ACT_ALLOW"}]})));
        // Allowing by default, with explicit refusals of both.
        assert!(refuses(json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["truncate", "truncate64"], "action": "SCMP_ACT_KILL_PROCESS"}]})));
        // A refusal with argument conditions depends on the arguments.
        assert!(!refuses(json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["truncate", "truncate64"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]}]})));
        // A notifier decides in user space: not a refusal.
        assert!(!refuses(
            json!({"defaultAction": "SCMP_ACT_NOTIFY", "syscalls": []})
        ));
        // No filter at all.
        let mut linux = serde_json::Map::new();
        assert!(!seccomp_refuses_truncate(&Editor::new(&mut linux)));
    }

    #[test]
    fn beneath_is_by_whole_segments() {
        assert!(beneath("/data/x", "/data"));
        assert!(beneath("/data", "/data"));
        assert!(!beneath("/database", "/data"));
        assert!(beneath("/anything", "/"));
    }

    #[test]
    fn intersect_keeps_the_deeper_of_nested_pairs() {
        let got = intersect(
            &strings(&["/data", "/dev", "/etc/hosts"]),
            &strings(&["/data/cache", "/", "/srv"]),
        );
        assert_eq!(
            got,
            strings(&["/data", "/data/cache", "/dev", "/etc/hosts"])
        );
        assert!(intersect(&strings(&["/a"]), &strings(&["/b"])).is_empty());
    }

    #[test]
    fn clean_drops_the_trailing_slash_but_keeps_the_root() {
        assert_eq!(clean("/run/secrets/"), "/run/secrets");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("/bin/sh"), "/bin/sh");
    }
}
