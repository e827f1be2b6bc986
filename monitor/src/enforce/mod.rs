//! A container's rules enforced in the kernel, one installer per rule kind ([`exec`],
//! [`connect`], [`egress`], [`sock`], [`file`]): each writes its keys into the node's maps, attaches the cgroup
//! programs it needs and says which enforcer each rule got. [`Installed`] is what they wrote,
//! to read the kernel's hit counters from and to take out again.

pub(crate) mod connect;
pub(crate) mod egress;
pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod sock;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::cgroup::find_cgroup_dir;
use crate::error::MonitorError;
use crate::raw::{self, bytes_of};
use crate::rules::{file_id_in, ContainerRef, ContainerRules, RuleError};
use crate::set::NodeMaps;
use crate::skel::monitor::types;

/// What an installer returns: per rule, the enforcer that holds it.
pub(crate) type Enforced = Result<Vec<crate::rules::RuleEnforcement>, MonitorError>;

/// The container an installer works for.
pub(crate) struct Target<'a> {
    pub maps: &'a NodeMaps,
    pub container: &'a ContainerRef,
    /// `namespace/pod/container`, for errors and logs.
    pub name: &'a str,
    /// The container's slot in the kernel maps.
    pub slot: u32,
}

impl Target<'_> {
    /// Writes one key of this container into `map` (named `what` in the error).
    fn insert(
        &self,
        map: &MapHandle,
        what: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), MonitorError> {
        map.update(key, value, MapFlags::ANY)
            .map_err(|source| MonitorError::Map {
                container: self.name.to_string(),
                what,
                source,
            })
    }

    /// The container's cgroup v2 directory: the one it was given, or found by its id.
    fn cgroup_dir(&self) -> Result<PathBuf, MonitorError> {
        match &self.container.cgroup_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(find_cgroup_dir(self.container.cgroup_id)?),
        }
    }
}

/// The `deny_exec` or `deny_connect` value of the rule at `index` (the kernel reports
/// `index + 1`), with the device and inode of the binary it names as its source, if any.
fn deny_value(
    index: usize,
    name: &str,
    source: Option<&Path>,
) -> Result<types::deny_value, RuleError> {
    let (src_dev, src_ino) = source_id(name, None, source)?;
    Ok(types::deny_value {
        rule: index as u32 + 1,
        src_dev,
        src_ino,
        hits: 0,
    })
}

/// The (kernel device, inode) of a rule's source binary `source` (inside `root` when given,
/// see [`crate::rules::FileRule::root`]); (0, 0), which no file has, for a rule without one.
fn source_id(
    name: &str,
    root: Option<&Path>,
    source: Option<&Path>,
) -> Result<(u32, u64), RuleError> {
    source.map_or(Ok((0, 0)), |path| file_id_in(name, root, path))
}

/// The hit counter of `key`'s value in `map`, a `V` whose counter `hits` reads; 0 when the
/// key is not there.
fn hits_in<V: Copy>(map: &MapHandle, key: &[u8], hits: impl Fn(&V) -> u64) -> u64 {
    raw::lookup::<V>(map, key).map(|v| hits(&v)).unwrap_or(0)
}

/// What the installers put into the kernel for one container.
#[derive(Default)]
pub(crate) struct Installed {
    pub exec_keys: Vec<types::exec_key>,
    /// Connect rule index and its trie key.
    pub net_keys: Vec<(usize, types::net_key)>,
    /// The egress allow-list's keys in the same trie.
    pub egress_keys: Vec<types::net_key>,
    /// The container has an egress allow-list (possibly empty: nothing allowed).
    pub egress: bool,
    pub sock_keys: Vec<types::sock_key>,
    /// File rule index and its `deny_file` key.
    pub file_keys: Vec<(usize, types::file_key)>,
    /// Glob rule index and its `deny_glob` key.
    pub glob_keys: Vec<(usize, types::glob_key)>,
    /// The container's slot in `glob_slots`, when it has globs.
    pub glob_slot: Option<u32>,
    /// The container's `cred_files` keys.
    pub cred_keys: Vec<types::cred_key>,
    /// The cgroup programs' links: dropping one detaches its program.
    pub links: Vec<OwnedFd>,
}

impl Installed {
    /// How many times the kernel matched each exec, connect and socket rule, by rule name.
    pub fn hits(&self, maps: &NodeMaps, rules: &ContainerRules) -> Vec<(String, u64)> {
        let hits = |map: &MapHandle, key: &[u8]| hits_in(map, key, |v: &types::deny_value| v.hits);
        let mut out = Vec::new();
        for (rule, key) in rules.deny_exec.iter().zip(&self.exec_keys) {
            out.push((rule.name.clone(), hits(&maps.deny_exec, bytes_of(key))));
        }
        for (i, key) in &self.net_keys {
            if let Some(rule) = rules.deny_connect.get(*i) {
                out.push((rule.name.clone(), hits(&maps.deny_connect, bytes_of(key))));
            }
        }
        for (rule, key) in rules.sock_create.iter().zip(&self.sock_keys) {
            let n = hits_in(&maps.sock_rules, bytes_of(key), |v: &types::sock_rule| {
                v.hits
            });
            out.push((rule.name.clone(), n));
        }
        let file_hits = self.file_keys.iter().map(|(i, key)| {
            let n = hits_in(&maps.deny_file, bytes_of(key), |v: &types::file_rule| {
                v.hits
            });
            (*i, n)
        });
        let glob_hits = self.glob_keys.iter().map(|(i, key)| {
            let n = hits_in(&maps.deny_glob, bytes_of(key), |v: &types::glob_rule| {
                v.r.hits
            });
            (*i, n)
        });
        for (i, n) in file_hits.chain(glob_hits) {
            if let Some(rule) = rules.deny_file.get(i) {
                out.push((rule.name.clone(), n));
            }
        }
        out
    }

    /// Takes every key out of the maps and detaches the cgroup programs.
    pub fn remove(&mut self, maps: &NodeMaps) {
        for key in &self.exec_keys {
            let _ = maps.deny_exec.delete(bytes_of(key));
        }
        for key in self
            .net_keys
            .iter()
            .map(|(_, k)| k)
            .chain(&self.egress_keys)
        {
            let _ = maps.deny_connect.delete(bytes_of(key));
        }
        for key in &self.sock_keys {
            let _ = maps.sock_rules.delete(bytes_of(key));
        }
        for (_, key) in &self.file_keys {
            let _ = maps.deny_file.delete(bytes_of(key));
        }
        for (_, key) in &self.glob_keys {
            let _ = maps.deny_glob.delete(bytes_of(key));
        }
        if let Some(slot) = self.glob_slot.take() {
            let _ = maps.glob_slots.delete(bytes_of(&slot));
        }
        for key in &self.cred_keys {
            let _ = maps.cred_files.delete(bytes_of(key));
        }
        self.links.clear();
    }
}

/// Attaches `progs` to the cgroup v2 directory `dir`; returns the links.
pub(crate) fn attach_cgroup(
    container: &str,
    dir: &Path,
    progs: &[(
        &'static str,
        libbpf_rs::libbpf_sys::bpf_attach_type,
        OwnedFd,
    )],
) -> Result<Vec<OwnedFd>, MonitorError> {
    let err = |program, source| MonitorError::Attach {
        container: container.to_string(),
        program,
        path: dir.to_path_buf(),
        source,
    };
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| err("cgroup", io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: valid NUL-terminated path; the fd is checked.
    let cg = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if cg < 0 {
        return Err(err("cgroup", io::Error::last_os_error()));
    }
    // SAFETY: freshly opened fd, owned here.
    let cg = unsafe { OwnedFd::from_raw_fd(cg) };
    let mut links = Vec::new();
    for (name, attach, prog) in progs {
        // SAFETY: both fds are valid; a null opts pointer means defaults.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_link_create(
                prog.as_raw_fd(),
                cg.as_raw_fd(),
                *attach,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(err(name, io::Error::from_raw_os_error(-fd)));
        }
        // SAFETY: bpf_link_create returned a new fd we own.
        links.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(links)
}
