//! Which writes are writes to the system: below the directories that hold the system's
//! programs, libraries and configuration, not an application's own tree that happens to sit
//! below `/usr` (`/usr/local/apache2/logs/httpd.pid`).

/// Where the system's programs, libraries and configuration live. An application installed
/// under `/usr/local/<name>` or data under `/usr/share` keeps its own state there (pid files,
/// logs, caches): writing it is the application's business, not tampering.
const SYSTEM_TREES: &[&str] = &[
    "/etc/",
    "/bin/",
    "/sbin/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/libx32/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/",
    "/usr/lib32/",
    "/usr/lib64/",
    "/usr/libx32/",
    "/usr/libexec/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/usr/local/lib/",
    "/usr/local/etc/",
];

/// Whether a write open of `path` (as the process spelled it) is a write to the system.
/// `kernel_says` is the kernel's answer on the file itself: below `/etc`, `/bin`, `/sbin` or
/// `/usr` of the process's root filesystem, whatever the spelling.
///
/// An absolute path is judged by its place once `.` and `..` are folded: inside a system
/// tree, yes (also when the file is bind-mounted there, like `/etc/hosts`, which the kernel's
/// answer leaves out); elsewhere below `/usr`, no. When the kernel places the file below a
/// system directory but the path is spelled elsewhere (a symbolic link into `/etc`) or is
/// relative (to a directory descriptor the event does not name), it is a write to the system.
pub(super) fn system_write(path: &str, kernel_says: bool) -> bool {
    if !path.starts_with('/') {
        return kernel_says;
    }
    let path = normalize(path);
    if SYSTEM_TREES.iter().any(|t| path.starts_with(t)) {
        return true;
    }
    kernel_says && !path.starts_with("/usr/")
}

/// `path` with empty and `.` components dropped and `..` folded (lexically: links are the
/// kernel's answer's business), always absolute.
pub fn normalize(path: &str) -> String {
    let parts = path.split('/').fold(Vec::new(), |mut parts, c| {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
        parts
    });
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applications_own_tree_below_usr_is_not_the_system() {
        assert!(!system_write("/usr/local/apache2/logs/httpd.pid", true));
        assert!(!system_write("/usr/share/nginx/html/upload.png", true));
        assert!(system_write("/usr/bin/evil", true));
        assert!(system_write("/usr/local/bin/evil", false));
        assert!(system_write("/usr/local/apache2/../bin/evil", true));
        assert!(system_write("/etc//passwd", false), "bind mounts too");
        assert!(system_write("/lib/x86_64-linux-gnu/libc.so.6", true));
        assert!(!system_write("/var/run/nginx.pid", false));
        assert!(!system_write("/etcetera", false));
    }

    #[test]
    fn the_kernels_answer_decides_for_other_spellings() {
        assert!(system_write("passwd", true), "relative, placed below /etc");
        assert!(!system_write("httpd.pid", false));
        assert!(
            system_write("/tmp/link-to-etc/passwd", true),
            "through a link"
        );
        assert!(!system_write("/tmp/x", false));
    }
}
