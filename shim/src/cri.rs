//! What CRI says about a container: the annotations containerd's CRI plugin writes into its
//! spec, read once per Create into a [`CriContainer`] and converted from there into the
//! workload types of the policy selector, the event schema and the monitor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

pub use palisade_sandbox::spec::cri::{
    CONTAINER_NAME, CONTAINER_TYPE, CONTAINER_TYPE_SANDBOX, IMAGE_NAME, SANDBOX_ID, SANDBOX_NAME,
    SANDBOX_NAMESPACE, TERMINATION_MESSAGE_PATH,
};

/// Where the kubelet mounts the termination message file unless the pod says otherwise.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// Which of a pod's containers this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The pod's sandbox ("pause") container: it holds the pod's namespaces and its gate.
    Sandbox,
    /// Any other container, also one created without CRI (`ctr run`).
    Container,
}

/// One container as CRI names it; a name annotation that is absent reads as `""`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriContainer {
    /// containerd's container id.
    pub id: String,
    /// The pod's sandbox id, shared by all of its containers.
    pub sandbox_id: Option<String>,
    pub kind: Kind,
    pub namespace: String,
    pub pod: String,
    /// The container's name in its pod.
    pub container: String,
    pub image: String,
}

impl CriContainer {
    /// Reads the container's identity from its spec's annotations.
    pub fn of(id: &str, spec: &Value) -> Self {
        let ann = |k: &str| {
            spec["annotations"][k]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let kind = if ann(CONTAINER_TYPE) == CONTAINER_TYPE_SANDBOX {
            Kind::Sandbox
        } else {
            Kind::Container
        };
        CriContainer {
            id: id.to_string(),
            sandbox_id: spec["annotations"][SANDBOX_ID].as_str().map(String::from),
            kind,
            namespace: ann(SANDBOX_NAMESPACE),
            pod: ann(SANDBOX_NAME),
            container: ann(CONTAINER_NAME),
            image: ann(IMAGE_NAME),
        }
    }

    /// Whether this is a pod's sandbox container, which policies and the compromise judge do
    /// not target.
    pub fn is_sandbox(&self) -> bool {
        self.kind == Kind::Sandbox
    }
}

impl From<&CriContainer> for palisade_policy::Workload {
    fn from(c: &CriContainer) -> Self {
        palisade_policy::Workload {
            namespace: c.namespace.clone(),
            pod_name: c.pod.clone(),
            container_name: c.container.clone(),
            image: c.image.clone(),
            // Pod labels live in containerd's record of the sandbox, not in the spec.
            labels: BTreeMap::new(),
        }
    }
}

impl From<&CriContainer> for palisade_events::Workload {
    fn from(c: &CriContainer) -> Self {
        palisade_events::Workload {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
            container_id: c.id.clone(),
            image: c.image.clone(),
        }
    }
}

impl From<&CriContainer> for palisade_monitor::ContainerRef {
    fn from(c: &CriContainer) -> Self {
        palisade_monitor::ContainerRef {
            cgroup_id: 0,
            cgroup_dir: None,
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
            container_id: c.id.clone(),
            image: c.image.clone(),
        }
    }
}

/// The host file the kubelet reads the container's termination message from.
pub fn termination_log(spec: &Value) -> Option<PathBuf> {
    let dest = spec["annotations"][TERMINATION_MESSAGE_PATH]
        .as_str()
        .unwrap_or(DEFAULT_TERMINATION_PATH);
    spec["mounts"].as_array()?.iter().find_map(|m| {
        (m["destination"].as_str() == Some(dest))
            .then(|| m["source"].as_str().map(PathBuf::from))
            .flatten()
            .filter(|p| p.is_absolute())
    })
}

/// The monitor's detection settings for a container: the configuration's `[detection]` table
/// with the pod's `palisade.dev/detection` annotation applied; a malformed annotation is an
/// error naming it.
pub fn detection_settings(
    spec: &Value,
    config: &palisade_config::DetectionSettings,
) -> Result<palisade_config::DetectionSettings, palisade_config::DetectionError> {
    match spec["annotations"][palisade_config::DETECTION_ANNOTATION].as_str() {
        Some(v) => config.with_annotation(v),
        None => Ok(config.clone()),
    }
}

/// Puts detection settings into a container's monitor rules.
pub fn apply_detection(
    rules: &mut palisade_monitor::ContainerRules,
    s: &palisade_config::DetectionSettings,
) {
    rules.builtins = s.builtins;
    rules.learning_window = (s.learning_window_secs > 0)
        .then(|| std::time::Duration::from_secs(s.learning_window_secs));
}

/// The user namespace mappings of a container's spec (`linux.uidMappings`/`gidMappings`),
/// which the monitor reads the kernel's host ids through; empty without a user namespace.
pub fn id_maps(spec: &Value) -> palisade_monitor::IdMaps {
    let ranges = |key: &str| -> Vec<palisade_monitor::IdRange> {
        spec["linux"][key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|m| {
                let n = |k: &str| m[k].as_u64().and_then(|v| u32::try_from(v).ok());
                Some(palisade_monitor::IdRange {
                    inside: n("containerID")?,
                    outside: n("hostID")?,
                    count: n("size")?,
                })
            })
            .collect()
    };
    palisade_monitor::IdMaps {
        uid: ranges("uidMappings"),
        gid: ranges("gidMappings"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod123",
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.container-name": "app",
            "io.kubernetes.cri.image-name": "localhost/app:1",
        }})
    }

    #[test]
    fn workload_comes_from_cri_annotations() {
        let c = CriContainer::of("c1", &spec());
        let w = palisade_policy::Workload::from(&c);
        assert_eq!(
            (
                w.namespace.as_str(),
                w.pod_name.as_str(),
                w.container_name.as_str()
            ),
            ("shop", "web-0", "app")
        );
        assert_eq!(w.image, "localhost/app:1");
        let e = palisade_events::Workload::from(&c);
        assert_eq!((e.container_id.as_str(), e.pod.as_str()), ("c1", "web-0"));
        let m = palisade_monitor::ContainerRef::from(&c);
        assert_eq!(
            (m.container_id.as_str(), m.image.as_str()),
            ("c1", "localhost/app:1")
        );
        assert_eq!(c.sandbox_id.as_deref(), Some("pod123"));
        assert!(!c.is_sandbox());
        assert!(CriContainer::of(
            "p",
            &json!({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}})
        )
        .is_sandbox());
        let bare = CriContainer::of("x", &json!({}));
        assert_eq!((bare.kind, bare.pod.as_str()), (Kind::Container, ""));
    }

    #[test]
    fn detection_settings_come_from_the_configuration_and_the_annotation() {
        let config = palisade_config::DetectionSettings {
            learning_window_secs: 300,
            ..Default::default()
        };
        let plain = detection_settings(&spec(), &config).unwrap();
        assert_eq!(plain, config);
        let mut rules = palisade_monitor::ContainerRules::default();
        apply_detection(&mut rules, &plain);
        assert_eq!(
            rules.learning_window,
            Some(std::time::Duration::from_secs(300))
        );
        let mut annotated = spec();
        annotated["annotations"]["palisade.dev/detection"] = json!("learning-window=off");
        let s = detection_settings(&annotated, &config).unwrap();
        apply_detection(&mut rules, &s);
        assert_eq!((rules.learning_window, rules.builtins), (None, true));
        annotated["annotations"]["palisade.dev/detection"] = json!("learning-window=5m");
        let err = detection_settings(&annotated, &config).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pod annotation palisade.dev/detection: learning-window: \"5m\""),
            "{err}"
        );
    }

    #[test]
    fn id_maps_come_from_the_specs_user_namespace() {
        let spec = json!({"linux": {
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1}],
        }});
        let m = id_maps(&spec);
        assert_eq!((m.uid_inside(100_033), m.gid_inside(200_000)), (33, 0));
        assert_eq!(m.gid_inside(200_001), 65534, "not mapped");
        assert_eq!(id_maps(&json!({})), palisade_monitor::IdMaps::default());
    }

    #[test]
    fn termination_log_is_the_mount_behind_the_message_path() {
        let spec = json!({"mounts": [
            {"destination": "/etc/hosts", "source": "/var/lib/x/hosts"},
            {"destination": "/dev/termination-log", "source": "/var/lib/kubelet/pods/u/containers/web/1"},
        ]});
        assert_eq!(
            termination_log(&spec),
            Some(PathBuf::from("/var/lib/kubelet/pods/u/containers/web/1"))
        );
        let custom = json!({
            "annotations": {TERMINATION_MESSAGE_PATH: "/tmp/msg"},
            "mounts": [{"destination": "/tmp/msg", "source": "/host/msg"}],
        });
        assert_eq!(termination_log(&custom), Some(PathBuf::from("/host/msg")));
        assert_eq!(termination_log(&json!({"mounts": []})), None);
    }
}
