//! The profile store of one service: `<state_dir>/<service>/<pod>.profile.json`, one file per
//! pod (and `imported.profile.json` from the CLI), merged per service. The shim and the CLI
//! both read and write it through `ServiceProfiles`, with the same rules: the newest
//! `KEPT_FILES` files are merged (what older pods learned is already in newer files, which
//! merged it when they started), and a file that cannot be read is skipped with its error
//! (`Strictness::Lenient`, the shim: the service then learns afresh rather than blocking on a
//! profile it could not read) or refuses the whole merge (`Strictness::Strict`, the CLI: an
//! export never silently leaves a pod out).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::persist::{load, path_in, save, PersistError};
use crate::profile::Profile;

/// Per-pod files merged per service; older ones are removed by `prune`.
pub const KEPT_FILES: usize = 8;

/// The name the CLI imports a profile under.
pub const IMPORTED: &str = "imported";

const SUFFIX: &str = ".profile.json";

/// What a merge does with a file that is not a readable profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Skip it and say so in `Merged::skipped`.
    Lenient,
    /// Fail the merge with its error.
    Strict,
}

/// The outcome of a merge.
#[derive(Debug, Default)]
pub struct Merged {
    /// The merged profile; `None` when no file held one.
    pub profile: Option<Profile>,
    /// The files merged.
    pub files: Vec<PathBuf>,
    /// The files skipped (lenient merge), with why.
    pub skipped: Vec<(PathBuf, PersistError)>,
}

/// The profiles of one service in a node state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProfiles {
    /// `<state_dir>/<service>`.
    pub dir: PathBuf,
}

impl ServiceProfiles {
    /// The store of `service` under `state_dir`; the name must be a plain file name.
    pub fn of(state_dir: &Path, service: &str) -> Result<Self, PersistError> {
        path_in(state_dir, service)?;
        Ok(ServiceProfiles {
            dir: state_dir.join(service),
        })
    }

    /// The file of one pod (or of `IMPORTED`).
    pub fn file(&self, name: &str) -> Result<PathBuf, PersistError> {
        path_in(&self.dir, name)
    }

    /// The profile files, newest first (by modification time, then name); none when the
    /// directory does not exist yet.
    pub fn files(&self) -> Result<Vec<PathBuf>, PersistError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PersistError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(SUFFIX) && p.is_file())
            .map(|p| {
                let modified = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (modified, p)
            })
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(files.into_iter().map(|(_, p)| p).collect())
    }

    /// Merges the newest `KEPT_FILES` profiles.
    pub fn merged(&self, strictness: Strictness) -> Result<Merged, PersistError> {
        let mut out = Merged::default();
        for path in self.files()?.into_iter().take(KEPT_FILES) {
            match load(&path) {
                Ok(Some(p)) => {
                    match out.profile.as_mut() {
                        Some(m) => m.merge(&p),
                        None => out.profile = Some(p),
                    }
                    out.files.push(path);
                }
                Ok(None) => {}
                Err(e) if strictness == Strictness::Lenient => out.skipped.push((path, e)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes the files past the newest `KEPT_FILES`; returns how many.
    pub fn prune(&self) -> Result<usize, PersistError> {
        let old: Vec<PathBuf> = self.files()?.into_iter().skip(KEPT_FILES).collect();
        for path in &old {
            std::fs::remove_file(path).map_err(|source| PersistError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(old.len())
    }

    /// Validates `document` and writes it as the service's imported profile, which the next
    /// pod of the service merges; returns its path.
    pub fn import(&self, document: &str) -> Result<PathBuf, PersistError> {
        let profile = crate::persist::import(document)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| PersistError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.file(IMPORTED)?;
        save(&profile, &path)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decide;
    use crate::request::Request;

    fn learned(target: &str) -> Profile {
        let mut p = Profile::default();
        p.learn(&Request::new("GET", "HTTP/1.1", target, vec![], None));
        p
    }

    #[test]
    fn merges_pods_and_skips_or_refuses_broken_files() {
        let state = tempfile::tempdir().unwrap();
        let store = ServiceProfiles::of(state.path(), "shop_web").unwrap();
        assert!(store.merged(Strictness::Strict).unwrap().profile.is_none());
        std::fs::create_dir_all(&store.dir).unwrap();
        save(&learned("/a?id=1"), &store.file("pod1").unwrap()).unwrap();
        save(&learned("/b?id=2"), &store.file("pod2").unwrap()).unwrap();
        let m = store.merged(Strictness::Strict).unwrap();
        let p = m.profile.unwrap();
        assert_eq!(p.requests_learned(), 2);
        let get = |t: &str| Request::new("GET", "HTTP/1.1", t, vec![], None);
        assert!(decide(&p, &get("/a?id=3")).is_clean());
        assert!(decide(&p, &get("/b?id=4")).is_clean());

        let broken = [
            ("corrupt", "{\"version\":2,\"request\":{\"methods\":"),
            (
                "nonsense",
                "{\"version\":2,\"request\":{\"query\":{\"k\":{\"q\":{\"k\":\"lots\"}}}}}",
            ),
            ("old", "{\"version\":1}"),
            ("empty", ""),
        ];
        for (name, doc) in broken {
            std::fs::write(store.file(name).unwrap(), doc).unwrap();
        }
        let m = store.merged(Strictness::Lenient).unwrap();
        assert_eq!(m.profile.unwrap().requests_learned(), 2);
        let why: Vec<String> = m.skipped.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.contains("version 1 not supported (want 2)")),
            "{why:?}"
        );
        assert!(why.iter().all(|w| w.starts_with("profile ")), "{why:?}");
        let err = store.merged(Strictness::Strict).unwrap_err().to_string();
        assert!(err.contains(".profile.json: "), "names the file: {err}");
    }

    #[test]
    fn import_validates_and_prune_keeps_the_newest() {
        let state = tempfile::tempdir().unwrap();
        let store = ServiceProfiles::of(state.path(), "svc").unwrap();
        assert!(store.import("[1,2]").is_err());
        assert!(!store.dir.exists(), "nothing written for a bad document");
        let doc = crate::persist::export(&learned("/x")).unwrap();
        let path = store.import(&doc).unwrap();
        assert!(path.ends_with("svc/imported.profile.json"));
        for i in 0..KEPT_FILES + 3 {
            save(&learned("/y"), &store.file(&format!("pod{i}")).unwrap()).unwrap();
        }
        assert_eq!(store.prune().unwrap(), 4);
        assert_eq!(store.files().unwrap().len(), KEPT_FILES);
        assert!(ServiceProfiles::of(state.path(), "../etc").is_err());
    }
}
