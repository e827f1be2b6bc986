//! A container's bundle on disk: the files palisade keeps in it beside containerd's, the
//! hardened `config.json` written in one step, runc's pid files, and the root filesystem's
//! mounts.

use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;
use serde::{Deserialize, Serialize};

use crate::error::ShimError;
use crate::idmap::IdmappedOverlay;

/// The file in each bundle that lets `delete` (run without options) find the same runc.
pub const RUNTIME_FILE: &str = "palisade-runtime.json";
/// The spec the container was created with, hardened.
pub const CONFIG_FILE: &str = "config.json";
/// Where the hardened spec is written before it is renamed over [`CONFIG_FILE`].
const CONFIG_TEMP: &str = ".config.json.palisade";
/// palisade-init's plan (landlock and the rest), bind-mounted into the container.
pub const PLAN_FILE: &str = "palisade-plan.json";
/// The enforcer in force for each policy rule, written when the container is created (the
/// same list as its `enforcement-record` event), read by `palisade status`. It goes with the
/// bundle when containerd deletes the container.
pub const ENFORCEMENT_FILE: &str = "palisade-enforcement.json";

/// What `delete` needs to find runc again after the shim is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub runc_binary: String,
    pub runc_root: PathBuf,
    pub systemd_cgroup: bool,
}

impl RuntimeRecord {
    /// Writes the record into the bundle, for a later `delete` without options.
    pub fn write(&self, id: &str, bundle: &Path) -> Result<(), ShimError> {
        let json = serde_json::to_vec(self).map_err(|source| ShimError::Json {
            context: format!("container {id}: runtime record"),
            source,
        })?;
        std::fs::write(bundle.join(RUNTIME_FILE), json).map_err(ShimError::io(format!(
            "container {id}: write {RUNTIME_FILE}"
        )))
    }
}

/// Writes the container's enforcement record into its bundle: `{"id", "namespace", "pod",
/// "container", "rules": [...]}` with the rules as [`crate::monitoring::enforcement_record`]
/// gives them. Written beside, then renamed, so a reader never sees half of it.
pub fn write_enforcement(
    cri: &crate::cri::CriContainer,
    bundle: &Path,
    rules: &[serde_json::Value],
) -> Result<(), ShimError> {
    let id = &cri.id;
    let record = serde_json::json!({
        "id": id,
        "namespace": cri.namespace,
        "pod": cri.pod,
        "container": cri.container,
        "rules": rules,
    });
    let out = serde_json::to_vec(&record).map_err(|source| ShimError::Json {
        context: format!("container {id}: {ENFORCEMENT_FILE}"),
        source,
    })?;
    let tmp = bundle.join(format!(".{ENFORCEMENT_FILE}"));
    std::fs::write(&tmp, out).map_err(ShimError::io(format!(
        "container {id}: write {ENFORCEMENT_FILE}"
    )))?;
    std::fs::rename(&tmp, bundle.join(ENFORCEMENT_FILE)).map_err(ShimError::io(format!(
        "container {id}: write {ENFORCEMENT_FILE}"
    )))
}

/// The bundle's config.json, as hardened at Create.
pub fn read_config(id: &str, bundle: &Path) -> Result<serde_json::Value, ShimError> {
    let path = bundle.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(ShimError::io(format!(
        "container {id}: read {}",
        path.display()
    )))?;
    serde_json::from_slice(&bytes).map_err(|source| ShimError::Json {
        context: format!("container {id}: {}", path.display()),
        source,
    })
}

/// Writes the hardened spec over the bundle's config.json: beside it first, then renamed
/// over it, so runc never reads a half-written spec.
pub fn write_config(id: &str, bundle: &Path, spec: &serde_json::Value) -> Result<(), ShimError> {
    let out = serde_json::to_vec(spec).map_err(|source| ShimError::Json {
        context: format!("container {id}: config.json"),
        source,
    })?;
    let tmp = bundle.join(CONFIG_TEMP);
    std::fs::write(&tmp, out).map_err(ShimError::io(format!(
        "container {id}: write hardened config.json"
    )))?;
    std::fs::rename(&tmp, bundle.join(CONFIG_FILE)).map_err(ShimError::io(format!(
        "container {id}: replace config.json"
    )))
}

/// The path runc writes a process's pid to.
pub fn pid_file(bundle: &Path, name: &str) -> PathBuf {
    bundle.join(format!("{name}.pid"))
}

/// The pid runc wrote.
pub fn read_pid(path: &Path) -> Result<i32, ShimError> {
    let text = std::fs::read_to_string(path)
        .map_err(ShimError::io(format!("read pid file {}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| ShimError::Precondition {
            what: format!("pid file {}", path.display()),
            reason: e.to_string(),
        })
}

/// Mounts containerd's root filesystem mounts at the bundle's `rootfs`, idmapped where asked;
/// `None` when containerd mounted it itself.
pub async fn mount_rootfs(
    id: &str,
    bundle: &Path,
    rootfs: &[Mount],
) -> Result<Option<PathBuf>, ShimError> {
    if rootfs.is_empty() {
        return Ok(None);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(ShimError::io(format!("container {id}: create rootfs dir")))?;
    for m in rootfs {
        let idmap = |source| ShimError::Idmap {
            container: id.to_string(),
            source,
        };
        // containerd 2.x asks for an idmapped root filesystem for user-namespaced pods
        let mounted = match IdmappedOverlay::parse(m).map_err(idmap)? {
            Some(overlay) => overlay
                .mount(m, &bundle.join("idmapped"), &target)
                .await
                .map_err(idmap),
            None => containerd_shim::util::mount_rootfs(m, &target)
                .await
                .map_err(|source| ShimError::Mount {
                    container: id.to_string(),
                    source,
                }),
        };
        if let Err(e) = mounted {
            unmount(&target);
            return Err(e);
        }
    }
    Ok(Some(target))
}

/// Detaches a rootfs mount; errors are logged since a stale mount must not fail a delete.
pub fn unmount(target: &Path) {
    let target_str = target.to_string_lossy();
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(&target_str), libc::MNT_DETACH) {
        tracing::warn!("unmount {}: {e}", target.display());
    }
}
