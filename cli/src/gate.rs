//! `palisade gate export|import`: a service's learned HTTP gate profile, in the layout the
//! shim keeps (`<state_dir>/<service>/<pod>.profile.json`, merged per service).

use std::path::{Path, PathBuf};

use palisade_gate::{PersistError, Profile};

/// The file an imported profile is written to in the service's directory; the shim merges it
/// with the pods' files when the next pod of the service starts.
pub const IMPORTED: &str = "imported";

/// Exporting or importing a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("service {service}: no profiles in {dir}")]
    NoProfiles { service: String, dir: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {path}: {source}")]
    Profile {
        path: PathBuf,
        #[source]
        source: PersistError,
    },
}

/// The directory of `service` under `state_dir`, refusing names that are not plain file names.
pub fn service_dir(state_dir: &Path, service: &str) -> Result<PathBuf, GateError> {
    // path_in checks the name; the shim keeps one directory per service under that name.
    palisade_gate::path_in(state_dir, service)?;
    Ok(state_dir.join(service))
}

/// The profile files of a service directory, sorted by name.
fn profile_files(dir: &Path) -> Result<Vec<PathBuf>, GateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(GateError::Io {
                what: "service directory",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".profile.json") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The service's profile: every pod's file merged, as the shim loads it at a pod's start.
/// A file that is not a profile is an error here (the shim skips it with a warning), so an
/// export never silently leaves a pod out.
pub fn merged(state_dir: &Path, service: &str) -> Result<(Profile, Vec<PathBuf>), GateError> {
    let dir = service_dir(state_dir, service)?;
    let files = profile_files(&dir)?;
    let mut merged: Option<Profile> = None;
    for path in &files {
        let profile = palisade_gate::load(path).map_err(|source| GateError::Profile {
            path: path.clone(),
            source,
        })?;
        if let Some(p) = profile {
            match merged.as_mut() {
                Some(m) => m.merge(&p),
                None => merged = Some(p),
            }
        }
    }
    match merged {
        Some(p) => Ok((p, files)),
        None => Err(GateError::NoProfiles {
            service: service.to_string(),
            dir,
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
    let profile = palisade_gate::import(document)?;
    let dir = service_dir(state_dir, service)?;
    std::fs::create_dir_all(&dir).map_err(|source| GateError::Io {
        what: "service directory",
        path: dir.clone(),
        source,
    })?;
    let path = palisade_gate::path_in(&dir, IMPORTED)?;
    palisade_gate::save(&profile, &path)?;
    Ok(path)
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
