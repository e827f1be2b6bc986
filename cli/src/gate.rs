//! `palisade gate export|import`: a service's learned HTTP gate profile, in the layout the
//! shim keeps (`<state_dir>/<service>/<pod>.profile.json`, merged per service).

use std::path::{Path, PathBuf};

use palisade_gate::persist::{ServiceProfiles, Strictness};
use palisade_gate::{PersistError, Profile};

/// The file an imported profile is written to in the service's directory; the shim merges it
/// with the pods' files when the next pod of the service starts.
pub const IMPORTED: &str = palisade_gate::persist::IMPORTED;

/// Exporting or importing a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("service {service}: no profiles in {dir}")]
    NoProfiles { service: String, dir: PathBuf },
}

/// The directory of `service` under `state_dir`, refusing names that are not plain file names.
pub fn service_dir(state_dir: &Path, service: &str) -> Result<PathBuf, GateError> {
    Ok(ServiceProfiles::of(state_dir, service)?.dir)
}

/// The service's profile as the shim loads it at a pod's start (`ServiceProfiles::merged`),
/// except that a file that is not a profile is an error here (the shim skips it), so an
/// export never silently leaves a pod out.
pub fn merged(state_dir: &Path, service: &str) -> Result<(Profile, Vec<PathBuf>), GateError> {
    let store = ServiceProfiles::of(state_dir, service)?;
    let merged = store.merged(Strictness::Strict)?;
    match merged.profile {
        Some(p) => Ok((p, merged.files)),
        None => Err(GateError::NoProfiles {
            service: service.to_string(),
            dir: store.dir,
        }),
    }
}

/// The service's merged profile as one JSON document.
pub fn export(state_dir: &Path, service: &str) -> Result<String, GateError> {
    let (profile, _) = merged(state_dir, service)?;
    Ok(palisade_gate::export(&profile)?)
}

/// Validates `document` and writes it as the service's imported profile; returns its path.
pub fn import(state_dir: &Path, service: &str, document: &str) -> Result<PathBuf, GateError> {
    Ok(ServiceProfiles::of(state_dir, service)?.import(document)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_service_names_that_leave_the_directory() {
        let err = service_dir(Path::new("/var/lib/palisade/gate"), "../etc")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "profile of service \"../etc\": name not usable as a file name"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = export(dir.path(), "shop_web").unwrap_err().to_string();
        assert!(
            err.starts_with("service shop_web: no profiles in "),
            "{err}"
        );
    }
}
