//! What the unit tests share: a file in a fresh temporary directory; and for the learned
//! profile's tests the workload shop/web, its containers, a recording of what it did, and
//! reading its saved document back.

use std::path::{Path, PathBuf};

use palisade_profile::persist::{self, Document, Loaded};
use palisade_profile::{Observation, Recording, WorkloadId};
use serde_json::json;

use crate::cri::CriContainer;

/// A fresh temporary directory (removed when dropped) and the path of `name` in it, not yet
/// created.
pub(crate) fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// The workload the tests learn: web in namespace shop.
pub(crate) fn workload() -> WorkloadId {
    WorkloadId::new("shop", "web").unwrap()
}

/// Container `id` of shop/web's pod `pod`, with the given extra annotations.
pub(crate) fn cri_in(id: &str, pod: &str, sandbox: &str, learn: bool) -> CriContainer {
    let mut spec = json!({"annotations": {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox,
        "io.kubernetes.cri.sandbox-name": pod,
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.container-name": "app",
    }});
    if learn {
        spec["annotations"]["palisade.dev/profile"] = json!("learn");
    }
    CriContainer::of(id, &spec)
}

/// shop/web's recording of `observations`, each seen at second 1,000.
pub(crate) fn recording_of(observations: &[Observation]) -> Recording {
    let mut r = Recording::new(workload());
    for o in observations {
        r.observe(1_000, o);
    }
    r
}

/// shop/web's document as saved in `dir`; panics when it is absent or unreadable.
pub(crate) fn saved_document(dir: &Path) -> Document {
    let Loaded::Present(doc) = persist::load(dir, &workload()) else {
        panic!("document unreadable");
    };
    *doc
}

/// Asserts that one of `notes` starts with `prefix`, showing them all when none does.
pub(crate) fn assert_noted(notes: &[String], prefix: &str) {
    assert!(
        notes.iter().any(|n| n.starts_with(prefix)),
        "{prefix:?} not in {notes:?}"
    );
}

/// A monitor exec event of `filename` by a process running `parent`, succeeded.
pub(crate) fn exec_event(
    filename: &str,
    parent: &str,
    entrypoint: bool,
) -> palisade_monitor::EventKind {
    palisade_monitor::EventKind::Exec {
        filename: filename.into(),
        args: Vec::new(),
        parent: parent.into(),
        ino: 1,
        dev: 1,
        killed: false,
        refused: false,
        deny_rule: None,
        entrypoint,
    }
}

/// A monitor event of `kind` at `time` by process `pid` running `binary`, in container
/// `container` of pod `pod` (namespace `shop`, container `app`).
pub(crate) fn monitor_event(
    container: &str,
    pod: &str,
    pid: u32,
    binary: &str,
    time: std::time::SystemTime,
    kind: palisade_monitor::EventKind,
) -> palisade_monitor::MonitorEvent {
    palisade_monitor::MonitorEvent {
        time,
        slot: 1,
        container: std::sync::Arc::new(palisade_monitor::ContainerRef {
            cgroup_id: 7,
            namespace: "shop".into(),
            pod: pod.into(),
            container: "app".into(),
            container_id: container.into(),
            image: "localhost/web:1".into(),
            cgroup_dir: None,
        }),
        process: palisade_monitor::ProcessInfo {
            pid,
            binary: binary.into(),
            ..palisade_monitor::ProcessInfo::default()
        },
        parent_binary: String::new(),
        kind,
        findings: Vec::new(),
    }
}
