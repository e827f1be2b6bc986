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
