//! no_new_privs: after it, execve can no longer grant privileges (setuid bits, file capabilities).

use crate::sys;
use thiserror::Error;

/// Failure to set or confirm no_new_privs.
#[derive(Debug, Error)]
pub enum NnpError {
    #[error("no_new_privs: {}", sys::reason(.0))]
    Set(#[source] std::io::Error),
    #[error("no_new_privs: still unset after prctl")]
    NotSet,
}

/// Sets no_new_privs on the calling thread and checks that the kernel kept it.
pub fn set() -> Result<(), NnpError> {
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(NnpError::Set)?;
    // Reading it back guards against a seccomp filter that fakes success for prctl.
    match sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0) {
        Ok(1) => Ok(()),
        Ok(_) => Err(NnpError::NotSet),
        Err(err) => Err(NnpError::Set(err)),
    }
}
