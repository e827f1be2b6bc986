//! Files an enforced workload creates. Landlock grants a right beneath a path that exists when
//! the rule is added (palisade-init, at the container's start): a learned write of a file the
//! workload creates, or of a directory it makes, names a path absent then, and would be
//! refused. After `runc create`, the learned writes absent from the container's filesystem (its
//! root and mounts, looked up inside it) are granted on their nearest existing ancestor
//! directory instead, with only the rights creating and writing them need, and the container's
//! landlock plan is rewritten before palisade-init reads it.
//!
//! The widening: a grant on a directory covers everything beneath it, so the workload may
//! create and write any file there, not only the names it learned (the names still count as
//! departures when they are new). It is never made on `/` or a system top-level directory
//! (`fold::NEVER_FOLDED`, where the profile never folds either): such a creation stays refused,
//! and a note says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use palisade_init::plan::{FsAccess, FsRule, Plan};
use palisade_profile::{fold, Recording};

/// Errors of this module: a plan that cannot be read or rewritten refuses the container.
#[derive(Debug, thiserror::Error)]
pub enum CreationError {
    #[error("container {container}: landlock plan {path}: {source}")]
    Io {
        container: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container}: landlock plan {path}: {source}")]
    Json {
        container: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The learned system calls that remove or rename a file: with one of them, a created file may
/// also be removed.
const REMOVING_CALLS: [&str; 5] = ["unlink", "unlinkat", "rename", "renameat", "renameat2"];

/// The grants for `recording`'s learned writes of paths `exists` says are absent (nearest
/// existing ancestor, rights limited to those `handled` by the ruleset), and a note for each
/// grant made or refused.
pub fn creations(
    recording: &Recording,
    exists: &dyn Fn(&str) -> bool,
    handled: &BTreeSet<FsAccess>,
) -> (Vec<FsRule>, Vec<String>) {
    let removes = REMOVING_CALLS
        .iter()
        .any(|c| recording.syscalls.contains(*c));
    let mut grants: BTreeMap<String, BTreeSet<FsAccess>> = BTreeMap::new();
    let mut notes = Vec::new();
    for (entry, access) in &recording.files {
        let folded = entry.ends_with('/') && entry != "/";
        let path = entry.trim_end_matches('/');
        if !access.write || path.is_empty() || exists(path) {
            continue;
        }
        let mut ancestors: Vec<&str> = fold::ancestors(path).collect();
        ancestors.reverse();
        let Some(dir) = ancestors.into_iter().find(|d| exists(without_slash(d))) else {
            continue;
        };
        if !fold::foldable_dir(dir) {
            notes.push(format!(
                "landlock: the learned write of {path}, absent at Create, is not granted: its nearest existing directory is {dir}, which is never granted whole"
            ));
            continue;
        }
        let mut rights =
            BTreeSet::from([FsAccess::MakeReg, FsAccess::WriteFile, FsAccess::Truncate]);
        // Directories between it and the file were made by the workload too.
        if folded || fold::parent_dir(path) != dir {
            rights.insert(FsAccess::MakeDir);
        }
        if removes {
            rights.insert(FsAccess::RemoveFile);
        }
        grants
            .entry(without_slash(dir).to_string())
            .or_default()
            .extend(rights.intersection(handled).copied());
    }
    let rules = grants
        .into_iter()
        .filter(|(_, access)| !access.is_empty())
        .map(|(dir, access)| {
            let names: Vec<&str> = access.iter().map(|a| a.name()).collect();
            notes.push(format!(
                "landlock: learned writes absent at Create granted beneath {dir} ({}): every file beneath it may be created and written",
                names.join(", ")
            ));
            FsRule {
                path: dir.into(),
                access: access.into_iter().collect(),
                optional: true,
            }
        })
        .collect();
    (rules, notes)
}

/// A directory of the recording's spelling (`/www/data/`) as a path (`/www/data`, `/`).
fn without_slash(dir: &str) -> &str {
    match dir.trim_end_matches('/') {
        "" => "/",
        d => d,
    }
}

/// Adds the [`creations`] of `recording` to container `container`'s landlock plan at
/// `plan_path`, looking paths up inside the container's root `root` (`/proc/PID/root` of its
/// init after `runc create`). The file is rewritten in place: it is bind-mounted into the
/// container already. Returns the notes.
pub fn grant_creations(
    container: &str,
    plan_path: &Path,
    root: &Path,
    recording: &Recording,
) -> Result<Vec<String>, CreationError> {
    let io = |source| CreationError::Io {
        container: container.to_string(),
        path: plan_path.display().to_string(),
        source,
    };
    let json = |source| CreationError::Json {
        container: container.to_string(),
        path: plan_path.display().to_string(),
        source,
    };
    let text = std::fs::read(plan_path).map_err(io)?;
    let mut plan: Plan = serde_json::from_slice(&text).map_err(json)?;
    let Some(landlock) = plan.landlock.as_mut() else {
        return Ok(Vec::new());
    };
    let handled: BTreeSet<FsAccess> = landlock.handled_fs.iter().flatten().copied().collect();
    if !handled.contains(&FsAccess::MakeReg) {
        return Ok(Vec::new());
    }
    let exists = |p: &str| match palisade_monitor::open_in_root(root, Path::new(p), libc::O_PATH) {
        Ok(_) => true,
        // Only a path known to be missing is widened for.
        Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)),
    };
    let (rules, notes) = creations(recording, &exists, &handled);
    if rules.is_empty() {
        return Ok(notes);
    }
    landlock.fs.extend(rules);
    let text = serde_json::to_vec(&plan).map_err(json)?;
    // In place (same inode), not renamed over: the container's bind mount holds this file.
    std::fs::write(plan_path, text).map_err(io)?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use palisade_profile::{Observation, WorkloadId};

    use super::*;

    fn recording(writes: &[&str], reads: &[&str], calls: &[&str]) -> Recording {
        let mut r = Recording::new(WorkloadId::new("shop", "web").unwrap());
        for (paths, write) in [(writes, true), (reads, false)] {
            for p in paths {
                r.observe(
                    1,
                    &Observation::Open {
                        path: (*p).into(),
                        write,
                    },
                );
            }
        }
        for c in calls {
            r.observe(1, &Observation::Syscall { name: (*c).into() });
        }
        r
    }

    fn handled() -> BTreeSet<FsAccess> {
        FsAccess::WRITE
            .into_iter()
            .chain([FsAccess::ReadFile])
            .collect()
    }

    const PRESENT: &[&str] = &[
        "/",
        "/etc",
        "/etc/hostname",
        "/www",
        "/www/data",
        "/www/data/seed",
        "/tmp",
    ];

    fn exists(p: &str) -> bool {
        PRESENT.contains(&p)
    }

    fn rights(rules: &[FsRule], dir: &str) -> Vec<FsAccess> {
        rules
            .iter()
            .find(|r| r.path == Path::new(dir))
            .map(|r| r.access.clone())
            .unwrap_or_default()
    }

    #[test]
    fn files_created_are_granted_on_their_nearest_existing_directory() {
        let r = recording(
            &[
                "/www/data/req-1",
                "/www/data/req-2",
                "/www/data/seed",
                "/www/cache/a/b",
            ],
            &["/www/data/gone"],
            &[],
        );
        let (rules, notes) = creations(&r, &exists, &handled());
        assert_eq!(
            rights(&rules, "/www/data"),
            [FsAccess::WriteFile, FsAccess::MakeReg, FsAccess::Truncate]
        );
        // /www/cache/a did not exist either: the workload made the directories.
        assert_eq!(
            rights(&rules, "/www"),
            [
                FsAccess::WriteFile,
                FsAccess::MakeDir,
                FsAccess::MakeReg,
                FsAccess::Truncate
            ]
        );
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert!(rules.iter().all(|r| r.optional));
        assert!(
            notes.iter().any(|n| n.contains("beneath /www/data")),
            "{notes:?}"
        );
    }

    #[test]
    fn existing_files_reads_and_system_directories_get_no_grant() {
        let r = recording(
            &[
                "/etc/hostname",
                "/etc/new.conf",
                "/newfile",
                "/www/data/seed",
            ],
            &["/www/data/absent"],
            &["unlinkat"],
        );
        let (rules, notes) = creations(&r, &exists, &handled());
        assert!(rules.is_empty(), "{rules:?}");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| n.contains("is not granted")));
    }

    #[test]
    fn removals_learned_and_the_rulesets_rights_shape_the_grant() {
        let r = recording(&["/tmp/out/x"], &[], &["unlinkat"]);
        let (rules, _) = creations(&r, &exists, &handled());
        assert_eq!(
            rights(&rules, "/tmp"),
            [
                FsAccess::WriteFile,
                FsAccess::RemoveFile,
                FsAccess::MakeDir,
                FsAccess::MakeReg,
                FsAccess::Truncate
            ]
        );
        // A ruleset that does not handle truncate (landlock abi 2) is not given it.
        let older: BTreeSet<FsAccess> = handled()
            .into_iter()
            .filter(|a| *a != FsAccess::Truncate)
            .collect();
        let (rules, _) = creations(&r, &exists, &older);
        assert!(!rights(&rules, "/tmp").contains(&FsAccess::Truncate));
    }
}
