//! The node's learning programs (`bpf/learn.h`): one attachment for the whole node, made by the
//! first learning container of any holder and removed with the node's last one. Their links
//! are pinned under the set's `links/` like the loader's; the learning containers are counted
//! by their tables in `learn_syscalls`, each naming its holder, so that the tables of a holder
//! that died go with its ring ([`release_tables`]). Every function here runs under the root
//! lock.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use libbpf_rs::{MapCore, MapFlags};
use tracing::{info, warn};

use super::pin::{pin_fd, LEARN_PROG};
use super::NodeMaps;
use crate::error::PinError;
use crate::raw::{bytes_of, lookup};
use crate::skel::monitor::types;

/// Why a container could not start learning.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LearnError {
    #[error("learn_syscalls: {0}")]
    Table(#[source] libbpf_rs::Error),
    #[error("attach {program}: {source}")]
    Attach {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// The pinned link of the learning program `name`.
fn link_path(maps: &NodeMaps, name: &str) -> PathBuf {
    maps.dir.join("links").join(name)
}

/// Whether the node's system call learning program is attached.
pub(crate) fn attached(maps: &NodeMaps) -> bool {
    link_path(maps, LEARN_PROG).exists()
}

/// Whether the node's capability learning program is attached (the set has one, and it
/// attached: see [`attach_all`]).
pub(crate) fn capabilities_attached(maps: &NodeMaps) -> bool {
    maps.learn_cap
        .as_ref()
        .is_some_and(|(hook, _)| link_path(maps, hook.program()).exists())
}

/// Gives cgroup `cgroup_id` (a container of holder `ring`) an empty table and makes sure the
/// learning programs run; nothing is left behind on failure.
pub(crate) fn start(maps: &NodeMaps, ring: u32, cgroup_id: u64) -> Result<(), LearnError> {
    // SAFETY: the skeleton's table is plain integers, for which all zeroes is a valid value.
    let mut table: types::learn_table = unsafe { std::mem::zeroed() };
    table.ring = ring;
    maps.learn_syscalls
        .update(
            &cgroup_id.to_ne_bytes(),
            bytes_of(&table),
            MapFlags::NO_EXIST,
        )
        .map_err(LearnError::Table)?;
    if let Err(e) = attach_all(maps) {
        stop(maps, cgroup_id);
        return Err(e);
    }
    Ok(())
}

/// Takes cgroup `cgroup_id`'s table out; with the node's last one, the programs are detached.
pub(crate) fn stop(maps: &NodeMaps, cgroup_id: u64) {
    let _ = maps.learn_syscalls.delete(&cgroup_id.to_ne_bytes());
    detach_when_idle(maps);
}

/// Takes out the tables of holder `ring`'s containers (a holder gone), and detaches the
/// programs when no other learns.
pub(crate) fn release_tables(maps: &NodeMaps, ring: u32) {
    for key in maps.learn_syscalls.keys().collect::<Vec<_>>() {
        let owner = lookup::<types::learn_table>(&maps.learn_syscalls, &key).map(|t| t.ring);
        if owner == Some(ring) {
            let _ = maps.learn_syscalls.delete(&key);
        }
    }
    detach_when_idle(maps);
}

/// Attaches the learning programs that are not attached yet and pins their links. The system
/// call program must attach. The capability program may not: a trampoline program attached
/// and detached before, in a set parked and attached again before 5.13, is refused
/// (ENOENT); the containers then learn without it, and their capabilities read as not
/// observed ([`capabilities_attached`]), never as an empty set.
fn attach_all(maps: &NodeMaps) -> Result<(), LearnError> {
    let prog = maps.learn_prog.as_ref().ok_or_else(|| LearnError::Attach {
        program: LEARN_PROG,
        source: io::Error::from(io::ErrorKind::NotFound),
    })?;
    attach_one(maps, LEARN_PROG, prog)?;
    if let Some((hook, prog)) = &maps.learn_cap {
        if let Err(e) = attach_one(maps, hook.program(), prog) {
            warn!(error = %e, "capabilities of learning containers not recorded");
        }
    }
    Ok(())
}

/// Attaches program `name` and pins its link, unless its link is pinned already.
fn attach_one(maps: &NodeMaps, name: &'static str, prog: &OwnedFd) -> Result<(), LearnError> {
    let path = link_path(maps, name);
    if path.exists() {
        return Ok(());
    }
    // SAFETY: a valid program fd and a null name: the BTF-typed tracepoint and fexit programs
    // name their attach point themselves.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), prog.as_raw_fd())
    };
    if fd < 0 {
        return Err(LearnError::Attach {
            program: name,
            source: io::Error::from_raw_os_error(-fd),
        });
    }
    // SAFETY: the kernel just returned this link fd, owned by nobody else.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    pin_fd(link.as_fd(), &path)?;
    info!(program = name, "learning program attached for the node");
    Ok(())
}

/// Detaches the learning programs when no table is left (no container of the node learns).
/// A capability program that attaches once only ([`crate::CapabilityHook::attaches_once`])
/// stays until the set goes.
fn detach_when_idle(maps: &NodeMaps) {
    if maps.learn_syscalls.keys().next().is_some() {
        return;
    }
    let mut names = vec![LEARN_PROG];
    if let Some((hook, _)) = &maps.learn_cap {
        if !hook.attaches_once() {
            names.push(hook.program());
        }
    }
    for name in names {
        let path = link_path(maps, name);
        match fs::remove_file(&path) {
            Ok(()) => info!(
                program = name,
                "learning program detached: no learning container left on the node"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "learning program not detached"),
        }
    }
}
