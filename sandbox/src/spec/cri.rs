//! The annotations containerd's CRI plugin (and the kubelet through it) writes into a
//! container's spec: who the container is. Defined here, the lowest crate that reads them;
//! the shim re-exports them.

/// `sandbox` on the pod's sandbox ("pause") container, `container` on the others.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The value of [`CONTAINER_TYPE`] on a pod's sandbox container.
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
/// The pod's sandbox id: the same on every container of a pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The pod's namespace.
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The container's name in its pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// The image the container was created from, as the pod names it.
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// The kubelet's path of the container's termination message, when passed on.
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
