//! Idmapped root filesystems: the overlay mounts containerd 2.x hands a user-namespaced pod,
//! whose lower layers must be seen through the pod's uid/gid mapping.
//!
//! containerd marks such a mount with `uidmap=` and `gidmap=` options, which mount(2) does not
//! know. Each lower layer is cloned into an idmapped mount (`open_tree`, `mount_setattr` with
//! `MOUNT_ATTR_IDMAP` and a user namespace holding the mapping, `move_mount`) under a scratch
//! directory, overlay is mounted over those, and the scratch mounts are detached again: the
//! overlay keeps its own references to its layers.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IdmapError {
    #[error("mount option {option}: {reason}")]
    Option {
        option: String,
        reason: &'static str,
    },
    #[error("mount overlay over the idmapped layers: {0}")]
    Mount(#[source] containerd_shim::Error),
    #[error("idmapped overlay: {what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IdmapError {
    let what = what.into();
    move |source| IdmapError::Sys { what, source }
}

/// One range of a mapping: `container` ids from `host`, `len` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// Parses containerd's `0:327680:65536[,c:h:l...]`.
pub fn parse_ranges(option: &str, value: &str) -> Result<Vec<IdRange>, IdmapError> {
    let bad = |reason| IdmapError::Option {
        option: option.to_string(),
        reason,
    };
    let ranges = value
        .split(',')
        .map(|r| {
            let n: Vec<u32> = r
                .split(':')
                .map(|x| x.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad("want container:host:length numbers"))?;
            match n.as_slice() {
                [c, h, l] if *l > 0 => Ok(IdRange {
                    container: *c,
                    host: *h,
                    len: *l,
                }),
                _ => Err(bad("want container:host:length with a length above 0")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ranges)
}

/// Whether containerd asks for this mount to be idmapped.
pub fn is_idmap_option(option: &str) -> bool {
    option.starts_with("uidmap=") || option.starts_with("gidmap=")
}

/// An overlay mount with idmap options, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct IdmappedOverlay {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub lowers: Vec<String>,
    /// Every other option, in order, without `lowerdir=`.
    pub rest: Vec<String>,
}

impl IdmappedOverlay {
    /// `None` when the mount asks for no idmapping.
    pub fn parse(m: &Mount) -> Result<Option<Self>, IdmapError> {
        if !m.options.iter().any(|o| is_idmap_option(o)) {
            return Ok(None);
        }
        if m.type_ != "overlay" {
            return Err(IdmapError::Option {
                option: format!("{} mount", m.type_),
                reason: "only overlay root filesystems can be idmapped by palisade",
            });
        }
        let (mut uids, mut gids, mut lowers, mut rest) = (None, None, None, Vec::new());
        for o in &m.options {
            if let Some(v) = o.strip_prefix("uidmap=") {
                uids = Some(parse_ranges(o, v)?);
            } else if let Some(v) = o.strip_prefix("gidmap=") {
                gids = Some(parse_ranges(o, v)?);
            } else if let Some(v) = o.strip_prefix("lowerdir=") {
                lowers = Some(v.split(':').map(str::to_string).collect::<Vec<_>>());
            } else {
                rest.push(o.clone());
            }
        }
        let missing = |what: &str, reason| IdmapError::Option {
            option: what.to_string(),
            reason,
        };
        Ok(Some(IdmappedOverlay {
            uids: uids.ok_or_else(|| missing("uidmap", "gidmap given without uidmap"))?,
            gids: gids.ok_or_else(|| missing("gidmap", "uidmap given without gidmap"))?,
            lowers: lowers
                .filter(|l| l.iter().all(|d| !d.is_empty()))
                .ok_or_else(|| missing("lowerdir", "an idmapped overlay needs lower layers"))?,
            rest,
        }))
    }

    /// Mounts the overlay at `target`, its lower layers idmapped through scratch mounts under
    /// `scratch` (created, and emptied again before returning).
    pub async fn mount(&self, m: &Mount, scratch: &Path, target: &Path) -> Result<(), IdmapError> {
        let userns = user_namespace(&self.uids, &self.gids)?;
        std::fs::create_dir_all(scratch).map_err(sys(format!("create {}", scratch.display())))?;
        let mut layers = Vec::new();
        let result = async {
            for (i, lower) in self.lowers.iter().enumerate() {
                let dir = scratch.join(i.to_string());
                std::fs::create_dir_all(&dir).map_err(sys(format!("create {}", dir.display())))?;
                layers.push(dir.clone());
                idmapped_clone(Path::new(lower), &userns, &dir)?;
            }
            let lowerdir = layers
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let mut options = vec![format!("lowerdir={lowerdir}")];
            options.extend(self.rest.iter().cloned());
            let mapped = Mount {
                type_: m.type_.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options,
                ..Default::default()
            };
            containerd_shim::util::mount_rootfs(&mapped, target)
                .await
                .map_err(IdmapError::Mount)
        }
        .await;
        // a directory whose clone failed is not a mount point: detaching it fails harmlessly
        for dir in &layers {
            detach(dir);
        }
        for dir in &layers {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(scratch);
        result
    }
}

fn detach(dir: &Path) {
    if let Ok(c) = CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; MNT_DETACH only unhooks the mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Clones the mount of `source` as a detached tree, idmaps it through `userns` and attaches
/// it at `target`.
fn idmapped_clone(source: &Path, userns: &OwnedFd, target: &Path) -> Result<(), IdmapError> {
    let src = CString::new(source.as_os_str().as_bytes()).map_err(|_| IdmapError::Option {
        option: format!("lowerdir {}", source.display()),
        reason: "path holds a NUL byte",
    })?;
    let dst = CString::new(target.as_os_str().as_bytes()).map_err(|_| IdmapError::Option {
        option: format!("scratch {}", target.display()),
        reason: "path holds a NUL byte",
    })?;
    let empty = c"";
    // SAFETY: open_tree with a valid path; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(sys(format!("open_tree {}", source.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by open_tree and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a valid detached-tree fd, an empty path with AT_EMPTY_PATH, and a mount_attr of
    // the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(sys(format!("idmap {}", source.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the tree fd and a valid target path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(sys(format!("attach {}", target.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
        .collect()
}

/// A user namespace holding the mapping, as an fd: a forked child enters a new user namespace
/// and waits while its maps are written and its namespace is opened, then exits.
fn user_namespace(uids: &[IdRange], gids: &[IdRange]) -> Result<OwnedFd, IdmapError> {
    // Close-on-exec, so that nothing the shim runs later holds them. A child forked at the same
    // time by another thread still inherits copies of these ends, so neither side may wait for
    // an end of file: each waits for the one byte the other writes.
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe")(e.into()));
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only makes raw system calls (unshare, write, read, _exit) before it
    // exits, which is what a child of a multi-threaded process may do.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on fds this process holds; never returns.
        unsafe {
            // the parent's ends
            libc::close(go_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let b = [u8::from(ok)];
            libc::write(ready_w.as_raw_fd(), b.as_ptr().cast(), 1);
            let mut x = [0u8; 1];
            libc::read(go_r.as_raw_fd(), x.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut b = [0u8; 1];
        File::from(ready_r)
            .read_exact(&mut b)
            .map_err(sys("wait for the user namespace child"))?;
        if b[0] != 1 {
            return Err(sys("unshare a user namespace")(std::io::Error::from(
                std::io::ErrorKind::PermissionDenied,
            )));
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        for (file, text) in [("uid_map", map_text(uids)), ("gid_map", map_text(gids))] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(proc.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(sys(format!("write {file} {}", text.trim())))?;
        }
        File::open(proc.join("ns/user"))
            .map(OwnedFd::from)
            .map_err(sys("open the user namespace"))
    })();
    // The byte the child waits for, whatever the result: an end of file would never come while
    // a sibling forked by another thread holds a copy of this end.
    // SAFETY: a one-byte write to the pipe this process created above.
    unsafe { libc::write(go_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    drop(go_w);
    // The shim reaps its children elsewhere too; ECHILD then is fine.
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(options: &[&str]) -> Mount {
        Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Many threads making user namespaces at once, as a shim starting several containers does:
    /// each child inherits the others' pipe ends, which once deadlocked parent and children.
    #[test]
    fn concurrent_user_namespaces_do_not_deadlock() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    std::thread::spawn(|| {
                        let range = IdRange {
                            container: 0,
                            host: 327_680,
                            len: 65_536,
                        };
                        (0..25)
                            .map(|_| user_namespace(&[range], &[range]).is_ok())
                            .filter(|ok| *ok)
                            .count()
                    })
                })
                .collect();
            let made: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
            let _ = tx.send(made);
        });
        // Not a timing check: 200 namespaces take well under a second; a deadlock never ends.
        let made = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("user_namespace deadlocked under concurrent calls");
        assert_eq!(made, 200, "every call made its namespace");
    }

    #[test]
    fn plain_mounts_are_not_idmapped() {
        let m = mount(&["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]);
        assert_eq!(IdmappedOverlay::parse(&m).unwrap(), None);
    }

    #[test]
    fn options_of_containerd_2_are_taken_apart() {
        let m = mount(&[
            "index=off",
            "lowerdir=/l1:/l2",
            "upperdir=/u",
            "workdir=/w",
            "uidmap=0:327680:65536",
            "gidmap=0:327680:65536,70000:1000:1",
        ]);
        let o = IdmappedOverlay::parse(&m).unwrap().unwrap();
        assert_eq!(o.lowers, ["/l1", "/l2"]);
        assert_eq!(o.rest, ["index=off", "upperdir=/u", "workdir=/w"]);
        assert_eq!(
            o.uids,
            [IdRange {
                container: 0,
                host: 327680,
                len: 65536
            }]
        );
        assert_eq!(o.gids.len(), 2);
        assert_eq!(map_text(&o.gids), "0 327680 65536\n70000 1000 1\n");
    }

    #[test]
    fn malformed_idmap_options_are_named() {
        for (opts, want) in [
            (
                vec!["lowerdir=/a", "uidmap=0:1", "gidmap=0:1:1"],
                "uidmap=0:1",
            ),
            (
                vec!["lowerdir=/a", "uidmap=0:1:0", "gidmap=0:1:1"],
                "uidmap=0:1:0",
            ),
            (
                vec!["lowerdir=/a", "uidmap=x:1:1", "gidmap=0:1:1"],
                "uidmap=x:1:1",
            ),
            (vec!["lowerdir=/a", "uidmap=0:1:1"], "gidmap"),
            (
                vec!["upperdir=/u", "uidmap=0:1:1", "gidmap=0:1:1"],
                "lowerdir",
            ),
        ] {
            let err = IdmappedOverlay::parse(&mount(&opts))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{opts:?}: {err}");
        }
        let mut bind = mount(&["uidmap=0:1:1", "gidmap=0:1:1"]);
        bind.type_ = "bind".into();
        let err = IdmappedOverlay::parse(&bind).unwrap_err().to_string();
        assert!(err.contains("only overlay"), "{err}");
    }
}
