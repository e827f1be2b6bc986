//! The landlock ruleset: each kind of right (read, write, execute) is handled only when
//! something restricts it, and granted beneath the paths of that restriction.

use std::collections::{BTreeMap, BTreeSet};

use palisade_init::landlock::abi_of;
use palisade_init::plan::{FsAccess, FsRule, LandlockPlan, LogPlan, Plan, ScopePlan, VERSION};

use super::{Ctx, EnforceError, Enforcer};

/// Opening a file to read it, listing a directory.
pub(super) const READ: [FsAccess; 2] = [FsAccess::ReadFile, FsAccess::ReadDir];

/// First landlock ABI with signal and abstract unix socket scoping.
const ABI_SCOPE: u32 = 6;

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
    let have = available.unwrap_or(0);
    let mut best_effort = false;
    if have < required {
        let mut missing: Vec<&str> = handled
            .iter()
            .filter(|r| abi_of(**r) > have)
            .map(|r| r.name())
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
    use super::*;
    use crate::owned;

    fn strings(v: &[&str]) -> Vec<String> {
        owned(v)
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
