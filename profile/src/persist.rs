//! Learned profiles on disk: one versioned JSON document per workload in the node's state
//! directory, written atomically, and refused (treated as absent) when it is not one this
//! version wrote.
//!
//! A document that is corrupt, from another version, for another workload, over the size
//! limit, or claiming a stage above learn for a recording that cannot be promoted is never
//! loaded as a profile: [`load`] returns [`Loaded::Unusable`] with the reason, and the caller
//! starts that workload from learn, so a bad file can never become an empty enforced profile.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{Recording, WorkloadId};
use crate::stage::{Stage, StageState, MAX_DEPARTURES, MAX_RECENT, MAX_SEEN};

/// The document format this version reads and writes.
pub const DOCUMENT_VERSION: u32 = 1;

/// Larger files are refused unread: a bounded recording stays far below this.
pub const MAX_DOCUMENT_BYTES: u64 = 8 << 20;

/// The suffix of the documents in the state directory.
pub const SUFFIX: &str = ".learned.json";

/// Failures to read, write or accept a learned-profile document.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("learned profile {path}: read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("learned profile {path}: write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("learned profile {path}: {size} bytes is over the limit of {MAX_DOCUMENT_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("learned profile {path}: not a learned-profile document: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("learned profile {path}: version {found:?} is not supported (this version reads {DOCUMENT_VERSION})")]
    Version { path: PathBuf, found: Option<u64> },
    #[error("learned profile {path}: holds workload {found}, expected {expected}")]
    Workload {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("learned profile {path}: stage {stage:?} with a recording that cannot be promoted: {reasons}")]
    Stage {
        path: PathBuf,
        stage: Stage,
        reasons: String,
    },
    #[error("learned profile of {0}: serialize: {1}")]
    Serialize(String, #[source] serde_json::Error),
}

/// Everything kept for one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub version: u32,
    pub recording: Recording,
    pub stage: StageState,
}

impl Document {
    pub fn new(recording: Recording, stage: StageState) -> Self {
        Self {
            version: DOCUMENT_VERSION,
            recording,
            stage,
        }
    }
}

/// What the state directory holds for a workload.
#[derive(Debug)]
pub enum Loaded {
    /// No document: the workload has not been learned.
    Absent,
    Present(Box<Document>),
    /// A document that cannot be used (the error says why): treat the workload as absent.
    Unusable(PersistError),
}

/// The document's file for `workload` in `state_dir` (`namespace_name.learned.json`).
pub fn path_in(state_dir: &Path, workload: &WorkloadId) -> PathBuf {
    state_dir.join(format!("{}{SUFFIX}", workload.file_stem()))
}

/// Parses and checks a document read from `path` for `workload`; every bound and folding rule
/// is re-imposed, since the file may have been edited by hand.
pub fn parse(path: &Path, text: &[u8], workload: &WorkloadId) -> Result<Document, PersistError> {
    let parse_err = |source| PersistError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(text).map_err(parse_err)?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(DOCUMENT_VERSION)) {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let mut doc: Document = serde_json::from_value(value).map_err(parse_err)?;
    if &doc.recording.workload != workload {
        return Err(PersistError::Workload {
            path: path.to_path_buf(),
            found: doc.recording.workload.to_string(),
            expected: workload.to_string(),
        });
    }
    doc.recording.canonicalize();
    if doc.stage.stage != Stage::Learn {
        let reasons = match doc.recording.promotable() {
            Err(reasons) => Some(reasons.join("; ")),
            Ok(()) if doc.recording.observations == 0 => Some("it is empty".to_string()),
            Ok(()) => None,
        };
        if let Some(reasons) = reasons {
            return Err(PersistError::Stage {
                path: path.to_path_buf(),
                stage: doc.stage.stage,
                reasons,
            });
        }
    }
    let s = &mut doc.stage;
    s.departures.truncate(MAX_DEPARTURES);
    for times in [&mut s.recent_departures, &mut s.recent_restarts] {
        times.sort_unstable();
        let excess = times.len().saturating_sub(MAX_RECENT);
        times.drain(..excess);
    }
    let excess = s.seen.len().saturating_sub(MAX_SEEN);
    s.seen.drain(..excess);
    Ok(doc)
}

/// Loads the document of `workload` from `state_dir`.
pub fn load(state_dir: &Path, workload: &WorkloadId) -> Loaded {
    let path = path_in(state_dir, workload);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Absent,
        Err(source) => return Loaded::Unusable(PersistError::Read { path, source }),
    };
    let mut text = Vec::new();
    if let Err(source) = file.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut text) {
        return Loaded::Unusable(PersistError::Read { path, source });
    }
    if text.len() as u64 > MAX_DOCUMENT_BYTES {
        let size = text.len() as u64;
        return Loaded::Unusable(PersistError::TooLarge { path, size });
    }
    match parse(&path, &text, workload) {
        Ok(doc) => Loaded::Present(Box::new(doc)),
        Err(e) => Loaded::Unusable(e),
    }
}

/// Saves `doc` in `state_dir`: written to a temporary file created exclusively in the same
/// directory, synced, renamed over the document, and the directory synced, so a crash leaves
/// either the old document or the new one; the temporary file is removed on failure.
pub fn save(state_dir: &Path, doc: &Document) -> Result<PathBuf, PersistError> {
    let workload = &doc.recording.workload;
    let path = path_in(state_dir, workload);
    let text =
        serde_json::to_vec(doc).map_err(|e| PersistError::Serialize(workload.to_string(), e))?;
    let write_err = |source| PersistError::Write {
        path: path.clone(),
        source,
    };
    let tmp = create_temporary(state_dir, workload).map_err(write_err)?;
    let (file, tmp) = tmp;
    let result = write_all(file, &text).and_then(|()| fs::rename(&tmp, &path));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(source));
    }
    fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PersistError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Creates a temporary file beside the document, exclusively: concurrent saves (other
/// threads, other processes) each get their own, never a shared or pre-planted one.
fn create_temporary(
    state_dir: &Path,
    workload: &WorkloadId,
) -> std::io::Result<(fs::File, PathBuf)> {
    let mut last = None;
    for n in 0..64u32 {
        let tmp = state_dir.join(format!(
            ".{}.{}.{n}.tmp",
            workload.file_stem(),
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary file name left")))
}

fn write_all(mut f: fs::File, text: &[u8]) -> std::io::Result<()> {
    f.write_all(text)?;
    f.sync_all()
}

/// The suffix an unusable document is renamed to by [`update`], kept for the operator.
pub const UNUSABLE_SUFFIX: &str = ".unusable";

/// What [`update`] did.
#[derive(Debug)]
pub struct Updated {
    pub document: Document,
    pub path: PathBuf,
    /// The reason the previous document was unusable; it was renamed to `...learned.json.unusable`
    /// (replacing an older one) and the workload started again from learn.
    pub replaced_unusable: Option<PersistError>,
}

/// Loads the document of `workload` (a new one in learn at `now` when there is none), applies
/// `change`, and saves it, holding the workload's lock (other processes' updates wait). An
/// unusable document is set aside, never merged into or overwritten
/// unseen: it is renamed with [`UNUSABLE_SUFFIX`] and the workload starts from learn.
pub fn update(
    state_dir: &Path,
    workload: &WorkloadId,
    now: u64,
    change: impl FnOnce(&mut Document),
) -> Result<Updated, PersistError> {
    // Shims of several pods and the operator's commands update one document: one at a time.
    let _lock = lock(state_dir, workload)?;
    let fresh = || Document::new(Recording::new(workload.clone()), StageState::new(now));
    let (mut document, replaced_unusable) = match load(state_dir, workload) {
        Loaded::Absent => (fresh(), None),
        Loaded::Present(doc) => (*doc, None),
        Loaded::Unusable(e) => {
            let path = path_in(state_dir, workload);
            let mut aside = path.clone().into_os_string();
            aside.push(UNUSABLE_SUFFIX);
            // A read error leaves nothing to rename; any other failure to set it aside stops
            // here rather than overwrite it.
            match fs::rename(&path, &aside) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PersistError::Write { path, source }),
            }
            (fresh(), Some(e))
        }
    };
    change(&mut document);
    let path = save(state_dir, &document)?;
    Ok(Updated {
        document,
        path,
        replaced_unusable,
    })
}

/// An exclusive lock on `workload`'s document across processes (`flock` on a lock file beside
/// it, `.namespace_name.lock`), held until the file is dropped.
fn lock(state_dir: &Path, workload: &WorkloadId) -> Result<fs::File, PersistError> {
    use std::os::fd::AsRawFd;
    let path = state_dir.join(format!(".{}.lock", workload.file_stem()));
    let err = |source| PersistError::Write {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(file)
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
