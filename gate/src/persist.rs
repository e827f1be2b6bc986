//! Profiles on disk and across the CLI: one compact JSON document per service.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::profile::{Profile, PROFILE_VERSION};
pub use crate::store::{Merged, ServiceProfiles, Strictness, IMPORTED, KEPT_FILES};

/// Documents larger than this are refused: a profile is bounded far below it, so a larger
/// file is not a profile.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Failures to read, write or parse a profile document.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file could not be read.
    #[error("profile {path}: read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written or renamed into place.
    #[error("profile {path}: write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The document is not a profile.
    #[error("profile document: {0}")]
    Parse(#[source] serde_json::Error),
    /// The profile could not be serialized.
    #[error("profile document: serialize: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The document was written by an incompatible version.
    #[error("profile document: version {found} not supported (want {PROFILE_VERSION})")]
    Version {
        /// The version in the document.
        found: u32,
    },
    /// The document is larger than any profile can be.
    #[error("profile document: {0} bytes is over the limit")]
    TooLarge(usize),
    /// A file that is not a profile this version can use (corrupt, edited into nonsense, or
    /// from an incompatible version).
    #[error("profile {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<PersistError>,
    },
    /// A service name that cannot name a file in the state directory.
    #[error("profile of service {0:?}: name not usable as a file name")]
    ServiceName(String),
}

/// The file that holds the profile of `service` in the node state directory `state_dir`.
/// The name must be a plain file name (`namespace_service` or similar): no separators, no
/// `..`, so that a service name cannot point outside the directory.
pub fn path_in(state_dir: &Path, service: &str) -> Result<PathBuf, PersistError> {
    let usable = !service.is_empty()
        && service.len() <= 200
        && !service.starts_with('.')
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !usable {
        return Err(PersistError::ServiceName(service.to_string()));
    }
    Ok(state_dir.join(format!("{service}.profile.json")))
}

/// Serializes `profile` to its compact JSON document (the CLI's export).
pub fn export(profile: &Profile) -> Result<String, PersistError> {
    serde_json::to_string(profile).map_err(PersistError::Serialize)
}

/// Parses a profile document (the CLI's import), checking its version and re-imposing every
/// bound, since the document may have been edited by hand.
pub fn import(document: &str) -> Result<Profile, PersistError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(PersistError::TooLarge(document.len()));
    }
    let mut profile: Profile = serde_json::from_str(document).map_err(PersistError::Parse)?;
    if profile.version != PROFILE_VERSION {
        return Err(PersistError::Version {
            found: profile.version,
        });
    }
    profile.normalize();
    Ok(profile)
}

/// Loads the profile at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Profile>, PersistError> {
    match fs::read_to_string(path) {
        Ok(doc) => import(&doc).map(Some).map_err(|e| PersistError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Saves `profile` to `path` through a temporary file and a rename, so a crash never leaves
/// half a profile behind.
pub fn save(profile: &Profile, path: &Path) -> Result<(), PersistError> {
    let doc = export(profile)?;
    let tmp = path.with_extension("tmp");
    let write_err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(&tmp).map_err(write_err)?;
    f.write_all(doc.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    fn sample_profile() -> Profile {
        let mut p = Profile::default();
        let mut req = Request::new(
            "POST",
            "HTTP/1.1",
            "/api/items?id=7&sort=asc",
            vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("content-length".into(), "27".into()),
                ("x-forwarded-for".into(), "203.0.113.9".into()),
            ],
            Some("10.1.0.3".parse().unwrap()),
        );
        req.attach_body(br#"{"name":"box","tags":["a"]}"#);
        p.learn(&req);
        p
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.json");
        assert_eq!(load(&path).unwrap(), None, "no file yet");
        let p = sample_profile();
        save(&p, &path).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back, p);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn service_names_stay_inside_the_state_dir() {
        let dir = Path::new("/var/lib/palisade/gate");
        assert_eq!(
            path_in(dir, "shop_frontend-v2").unwrap(),
            dir.join("shop_frontend-v2.profile.json")
        );
        for bad in ["", "../etc", "a/b", ".hidden", "a b"] {
            assert!(
                matches!(path_in(dir, bad), Err(PersistError::ServiceName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn export_is_compact_and_imports_back() {
        let p = sample_profile();
        let doc = export(&p).unwrap();
        assert!(!doc.contains('\n'));
        assert!(doc.len() < 4096, "{} bytes: {doc}", doc.len());
        assert_eq!(import(&doc).unwrap(), p);
    }

    #[test]
    fn wrong_version_and_garbage_are_refused() {
        let doc = export(&Profile::default())
            .unwrap()
            .replace("\"version\":2", "\"version\":9");
        assert!(matches!(
            import(&doc),
            Err(PersistError::Version { found: 9 })
        ));
        assert!(matches!(import("[1,2]"), Err(PersistError::Parse(_))));
    }

    #[test]
    fn import_reimposes_bounds() {
        let mut big = Profile::default();
        big.limits.keys = 100;
        for i in 0..50 {
            big.learn(&Request::new(
                "GET",
                "HTTP/1.1",
                &format!("/?k{i}=1"),
                vec![],
                None,
            ));
        }
        let doc = export(&big).unwrap().replace("\"keys\":100", "\"keys\":8");
        let p = import(&doc).unwrap();
        assert_eq!(p.req.query.len(), 8);
        assert!(p.req.query.has_other());
    }
}
