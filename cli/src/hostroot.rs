//! Node paths seen from this process when the node's root is mounted elsewhere (`--host-root`).

use std::fs;
use std::path::{Path, PathBuf};

/// Where the node's `path` is when the node's root is mounted at `root` (`--host-root`).
pub fn under_root(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

/// The file a (possibly symlinked) node path finally names, in this process's view: an
/// absolute link target is the node's path, so it is resolved under the root too.
pub fn resolve_under(root: Option<&Path>, path: &Path) -> PathBuf {
    let mut real = under_root(root, path);
    // As many hops as the kernel follows before ELOOP.
    for _ in 0..40 {
        let Ok(target) = fs::read_link(&real) else {
            break;
        };
        real = if target.is_absolute() {
            under_root(root, &target)
        } else {
            real.parent().map_or(target.clone(), |d| d.join(&target))
        };
    }
    real
}
