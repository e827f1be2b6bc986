//! The holders of a set: each shim's slot in the pinned `holders` map (pid and start time),
//! its ring in `rings`, and the release of the slots of holders that died.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
use tracing::info;

use super::NodeMaps;
use crate::error::{MonitorError, PinError};
use crate::raw::{bytes_of, lookup, read};
use crate::skel::monitor::types;

pub(crate) const MAX_RINGS: u32 = 256;

/// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat): with the
/// pid, it names one process even after the pid is reused.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn holder_alive(h: &types::holder) -> bool {
    h.pid != 0 && start_time(h.pid) == Some(h.start_time)
}

pub(crate) fn read_holder(maps: &NodeMaps, idx: u32) -> types::holder {
    holder_at(&maps.holders, idx)
}

fn holder_at(holders: &MapHandle, idx: u32) -> types::holder {
    lookup::<types::holder>(holders, &idx.to_ne_bytes()).unwrap_or_default()
}

/// Frees a ring index: its ring, its containers and their deny entries and learning tables
/// (the learning programs go with the node's last table), its holder entry.
pub(crate) fn release_index(maps: &NodeMaps, idx: u32) {
    let _ = maps.rings.delete(&idx.to_ne_bytes());
    let owned = |slot: u32| slot >> 16 == idx;
    for key in maps.containers.keys().collect::<Vec<_>>() {
        let info = lookup::<types::container_info>(&maps.containers, &key);
        if info.is_some_and(|i| i.ring == idx) {
            let _ = maps.containers.delete(&key);
        }
    }
    for key in maps.deny_exec.keys().collect::<Vec<_>>() {
        if read::<types::exec_key>(&key).is_some_and(|k| owned(k.slot)) {
            let _ = maps.deny_exec.delete(&key);
        }
    }
    for key in maps.deny_connect.keys().collect::<Vec<_>>() {
        let slot = key
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        if slot.is_some_and(owned) {
            let _ = maps.deny_connect.delete(&key);
        }
    }
    for key in maps.sock_rules.keys().collect::<Vec<_>>() {
        if read::<types::sock_key>(&key).is_some_and(|k| owned(k.slot)) {
            let _ = maps.sock_rules.delete(&key);
        }
    }
    super::learn::release_tables(maps, idx);
    let empty = types::holder::default();
    let _ = maps
        .holders
        .update(&idx.to_ne_bytes(), bytes_of(&empty), MapFlags::ANY);
}

/// Releases the indices of dead holders; returns how many holders are alive.
pub(crate) fn reap(maps: &NodeMaps) -> u32 {
    let mut alive = 0;
    for idx in 0..MAX_RINGS {
        let h = read_holder(maps, idx);
        if h.pid == 0 {
            continue;
        }
        if holder_alive(&h) {
            alive += 1;
        } else {
            info!(
                pid = h.pid,
                index = idx,
                "releasing the ring of a dead holder"
            );
            release_index(maps, idx);
        }
    }
    alive
}

/// Claims a free holder index for the calling process.
pub(crate) fn claim(holders: &MapHandle) -> Result<u32, PinError> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    for idx in 0..MAX_RINGS {
        if holder_at(holders, idx).pid == 0 {
            let h = types::holder {
                pid,
                pad: 0,
                start_time: start,
            };
            holders
                .update(&idx.to_ne_bytes(), bytes_of(&h), MapFlags::ANY)
                .map_err(|source| PinError::Pin {
                    path: PathBuf::from("holders"),
                    source,
                })?;
            return Ok(idx);
        }
    }
    Err(PinError::Full(MAX_RINGS))
}

/// How long a holder's ring set-up took, and the insertion into `rings` within it (a
/// map-in-map update from user space waits for an RCU grace period).
pub(crate) struct RingTime {
    pub total: Duration,
    pub insert: Duration,
}

/// A holder's index, claimed in `holders`, and its ring or why the ring could not be set up
/// (the caller then releases the index).
pub(crate) struct Claimed {
    pub index: u32,
    pub ring: Result<(MapHandle, RingTime), MonitorError>,
}

/// Claims a holder's index and creates and inserts its ring into `rings`.
pub(crate) fn claim_ring(
    holders: &MapHandle,
    rings: &MapHandle,
    size: u32,
) -> Result<Claimed, PinError> {
    let started = Instant::now();
    let index = claim(holders)?;
    let ring = create_ring(rings, index, size).map(|(ring, insert)| {
        (
            ring,
            RingTime {
                total: started.elapsed(),
                insert,
            },
        )
    });
    Ok(Claimed { index, ring })
}

fn create_ring(
    rings: &MapHandle,
    index: u32,
    size: u32,
) -> Result<(MapHandle, Duration), MonitorError> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let ring = MapHandle::create(MapType::RingBuf, Some("palisade_ring"), 0, 0, size, &opts)
        .map_err(|source| MonitorError::Ring { size, source })?;
    let fd = ring.as_fd().as_raw_fd() as u32;
    let inserting = Instant::now();
    rings
        .update(&index.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        .map_err(|source| MonitorError::Ring { size, source })?;
    Ok((ring, inserting.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_this_process_and_not_a_dead_pid() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me > 0);
        let h = types::holder {
            pid: std::process::id(),
            pad: 0,
            start_time: me,
        };
        assert!(holder_alive(&h));
        let reused = types::holder {
            start_time: me + 1,
            ..h
        };
        assert!(!holder_alive(&reused), "same pid, other start time");
        assert!(!holder_alive(&types::holder::default()));
    }
}
