//! Finding the entrypoint the way runc does and replacing this process with it.

use crate::sys;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// runc's default when the process environment has no PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Why the entrypoint could not be run.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error("exec: empty command")]
    Empty,
    #[error("exec {}: not found in PATH", .0.to_string_lossy())]
    NotInPath(OsString),
    #[error("exec {}: permission denied", .0.display())]
    NotExecutable(PathBuf),
    #[error("exec {}: contains a nul byte", .0.to_string_lossy())]
    Nul(OsString),
    #[error("exec {}: {}", .path.display(), sys::reason(.source))]
    Execve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    /// Shell convention: 127 when there is nothing to run, 126 when it cannot be run.
    pub fn is_not_found(&self) -> bool {
        match self {
            ExecError::Empty | ExecError::NotInPath(_) => true,
            ExecError::Execve { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOTDIR)
            ),
            ExecError::NotExecutable(_) | ExecError::Nul(_) => false,
        }
    }
}

/// Resolves `argv[0]`: a name with a slash is used as is, a bare name is searched in `path`
/// (the process environment's PATH, or [`DEFAULT_PATH`] when it has none). A regular file
/// with an execute bit wins; a match without one is reported only if nothing better follows.
pub fn resolve(name: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, ExecError> {
    if name.is_empty() {
        return Err(ExecError::Empty);
    }
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = match path {
        Some(p) if !p.is_empty() => p,
        _ => OsStr::new(DEFAULT_PATH),
    };
    let mut not_executable = None;
    for dir in path.as_bytes().split(|b| *b == b':') {
        // An empty PATH entry means the current directory, as in POSIX shells and Go.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    match not_executable {
        Some(p) => Err(ExecError::NotExecutable(p)),
        None => Err(ExecError::NotInPath(name.to_owned())),
    }
}

fn cstring(s: &OsStr) -> Result<CString, ExecError> {
    CString::new(s.as_bytes()).map_err(|_| ExecError::Nul(s.to_owned()))
}

/// Resolves `argv[0]` and execs it with `argv` and this process's environment unchanged.
/// Returns only on failure.
pub fn exec(argv: &[OsString]) -> ExecError {
    let Some(first) = argv.first() else {
        return ExecError::Empty;
    };
    let path_var = std::env::var_os("PATH");
    let path = match resolve(first, path_var.as_deref()) {
        Ok(p) => p,
        Err(err) => return err,
    };
    let c_path = match cstring(path.as_os_str()) {
        Ok(c) => c,
        Err(err) => return err,
    };
    let c_args = match argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => v,
        Err(err) => return err,
    };
    let mut ptrs: Vec<*const libc::c_char> = c_args.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: path and argv are NUL-terminated and outlive the call; environ is the
    // process's own environment block, passed through untouched (no entries are
    // filtered or reordered, which std::env would do for entries without '=').
    unsafe { libc::execve(c_path.as_ptr(), ptrs.as_ptr(), environ) };
    ExecError::Execve {
        path,
        source: io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn script(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn names_with_a_slash_are_not_searched() {
        let got = resolve(OsStr::new("./x"), Some(OsStr::new("/nonexistent"))).unwrap();
        assert_eq!(got, Path::new("./x"));
        let got = resolve(OsStr::new("/no/such"), None).unwrap();
        assert_eq!(got, Path::new("/no/such"));
    }

    #[test]
    fn search_takes_first_executable_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        script(a.path(), "tool", 0o644);
        fs::create_dir(b.path().join("tool")).unwrap();
        let want = script(c.path(), "tool", 0o755);
        let path = format!(
            "{}:{}:{}",
            a.path().display(),
            b.path().display(),
            c.path().display()
        );
        assert_eq!(
            resolve(OsStr::new("tool"), Some(OsStr::new(&path))).unwrap(),
            want
        );
    }

    #[test]
    fn non_executable_match_is_permission_denied_and_nothing_is_not_found() {
        let a = tempfile::tempdir().unwrap();
        let p = script(a.path(), "tool", 0o644);
        let path = a.path().as_os_str();
        let err = resolve(OsStr::new("tool"), Some(path)).unwrap_err();
        assert!(
            matches!(&err, ExecError::NotExecutable(q) if *q == p),
            "{err}"
        );
        assert!(!err.is_not_found());
        let err = resolve(OsStr::new("nope"), Some(path)).unwrap_err();
        assert_eq!(err.to_string(), "exec nope: not found in PATH");
        assert!(err.is_not_found());
    }

    #[test]
    fn missing_path_falls_back_to_the_default() {
        assert_eq!(
            resolve(OsStr::new("sh"), None).unwrap(),
            Path::new("/usr/bin/sh")
        );
        assert_eq!(
            resolve(OsStr::new("sh"), Some(OsStr::new(""))).unwrap(),
            Path::new("/usr/bin/sh")
        );
    }
}
