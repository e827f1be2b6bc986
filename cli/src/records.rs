//! The enforcement records of the containers palisade's shims serve: the
//! `palisade-enforcement.json` the shim writes into each container's bundle when it creates the
//! container (the enforcer in force for each policy rule, the same list as the container's
//! `enforcement-record` event), found beside each serving shim's working directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hostroot::under_root;
use crate::status::ShimProcess;

/// The record's file name in a bundle (the shim's `bundle::ENFORCEMENT_FILE`).
pub const ENFORCEMENT_FILE: &str = "palisade-enforcement.json";

/// One policy rule and the enforcer the shim found in force for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub rule: String,
    pub kind: String,
    pub target: String,
    pub action: String,
    pub enforcer: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// A container's record, as its shim wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub rules: Vec<RuleRecord>,
}

/// The records of every container that has a bundle beside a serving shim's: containerd starts
/// each shim in the bundle of the container it was started for, and keeps the bundles of one
/// containerd namespace in one directory, so the directory above each shim's working directory
/// holds the bundles its containers have (created and not yet deleted). With the records come
/// the files that could not be read, as `path: reason`. `root` is the node's root as mounted
/// here (`--host-root`).
pub fn container_records(
    proc_root: &Path,
    root: Option<&Path>,
    shims: &[ShimProcess],
) -> (Vec<ContainerRecord>, Vec<String>) {
    let mut dirs = BTreeSet::new();
    for s in shims {
        let Ok(cwd) = std::fs::read_link(proc_root.join(s.pid.to_string()).join("cwd")) else {
            continue;
        };
        if let Some(parent) = cwd.parent() {
            dirs.insert(under_root(root, parent));
        }
    }
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join(ENFORCEMENT_FILE))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for path in files {
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<ContainerRecord>(&b).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(r) => records.push(r),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
    }
    records.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container, &a.id).cmp(&(
            &b.namespace,
            &b.pod,
            &b.container,
            &b.id,
        ))
    });
    (records, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundle `id` under `tasks`, with `json` as its enforcement record when given.
    fn bundle(tasks: &Path, id: &str, json: Option<&str>) -> PathBuf {
        let b = tasks.join(id);
        std::fs::create_dir_all(&b).unwrap();
        if let Some(json) = json {
            std::fs::write(b.join(ENFORCEMENT_FILE), json).unwrap();
        }
        b
    }

    #[test]
    fn records_are_read_from_the_bundles_beside_each_shim() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("task/k8s.io");
        let sandbox = bundle(
            &tasks,
            "sandbox1",
            Some(r#"{"id":"sandbox1","namespace":"shop","pod":"web-0","container":"","rules":[]}"#),
        );
        bundle(
            &tasks,
            "app1",
            Some(
                r#"{"id":"app1","namespace":"shop","pod":"web-0","container":"app","rules":[
                {"rule":"shop/no-shadow","kind":"file","target":"/etc/shadow","action":"Block","enforcer":"bpf-lsm","note":null}]}"#,
            ),
        );
        bundle(&tasks, "broken", Some("{"));
        bundle(&tasks, "runc-only", None);
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("10")).unwrap();
        std::os::unix::fs::symlink(&sandbox, proc.join("10/cwd")).unwrap();
        let shim = |pid| ShimProcess {
            pid,
            id: Some("sandbox1".into()),
            namespace: Some("k8s.io".into()),
        };
        // A shim that is gone (no cwd) adds nothing.
        let (records, problems) = container_records(&proc, None, &[shim(10), shim(11)]);
        let names: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.container.as_str(), r.id.as_str()))
            .collect();
        assert_eq!(names, [("", "sandbox1"), ("app", "app1")]);
        assert_eq!(records[1].rules[0].enforcer, "bpf-lsm");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("broken/palisade-enforcement.json"),
            "{problems:?}"
        );
    }
}
