//! Thin wrappers over the raw syscalls the helper needs, and errno text for messages.

use std::io;

/// Renders an OS error the way the helper's messages want it: lowercase, without the
/// "(os error N)" suffix std appends, so the whole message stays one readable line.
pub fn reason(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Turns a C-style `-1 and errno` return into a `Result`.
pub fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `prctl` with the unused arguments zeroed, as the kernel requires for most options.
pub fn prctl(
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let ret = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(libc::c_long::from(ret)).map(|_| ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_lowercase_without_errno_suffix() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(reason(&err), "no such file or directory");
        let err = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(reason(&err), "permission denied");
    }

    #[test]
    fn reason_keeps_custom_messages() {
        let err = io::Error::other("Plan too large");
        assert_eq!(reason(&err), "plan too large");
    }
}
