//! Byte views of the records shared with the BPF programs (layouts from the generated skeleton),
//! and a map value read as one.

use std::mem::size_of;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::skel::monitor::types;

/// The bytes of a plain record. Only used on the skeleton's `repr(C)` integer-only types, whose
/// sizes are checked below to have no implicit padding.
pub(crate) fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `v` is a valid reference to a `Copy`, `repr(C)` value of integers and integer
    // arrays; every byte of it is initialised because the types have no padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Reads a record from the front of a byte buffer (ring buffer samples are 8-byte aligned, map
/// values may not be; read unaligned).
pub(crate) fn read<T: Copy>(data: &[u8]) -> Option<T> {
    if data.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the buffer holds at least size_of::<T>() bytes and every bit pattern is a valid
    // value of the skeleton's integer-only record types.
    Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// The value under `key` in `map` as a record; `None` when it is absent, unreadable or short.
pub(crate) fn lookup<T: Copy>(map: &MapHandle, key: &[u8]) -> Option<T> {
    map.lookup(key, MapFlags::ANY)
        .ok()
        .flatten()
        .and_then(|v| read::<T>(&v))
}

/// Kinds of records in the ring buffer (enum event_kind in events.h).
pub(crate) const EV_EXEC: u32 = 1;
pub(crate) const EV_EXIT: u32 = 2;
pub(crate) const EV_FORK: u32 = 3;
pub(crate) const EV_SYSCALL: u32 = 4;
pub(crate) const EV_SOCK: u32 = 5;
/// A file open a file deny rule matched (lsm_files.h).
pub(crate) const EV_FILE: u32 = 6;
/// A destination an egress allow-list did not name (egress.h).
pub(crate) const EV_EGRESS: u32 = 7;

/// container_info.flags (events.h).
pub(crate) const CF_ALL_OPENS: u32 = 1;
/// container_info.flags (creds.h).
pub(crate) const CF_CREDENTIALS: u32 = 2;
/// container_info.flags (events.h): the container has file deny rules.
pub(crate) const CF_FILE_RULES: u32 = 4;
/// container_info.flags (egress.h): the container has an egress allow-list, in audit with
/// the second flag.
pub(crate) const CF_EGRESS: u32 = 8;
pub(crate) const CF_EGRESS_AUDIT: u32 = 16;
/// container_info.flags (egress.h): the container learns its peers: each destination is
/// reported once, none refused.
pub(crate) const CF_EGRESS_LEARN: u32 = 32;
/// egress_event.flags (egress.h).
pub(crate) const EGRESS_REFUSED: u32 = 1;
pub(crate) const EGRESS_SENDMSG: u32 = 2;
/// syscall_event.flags (events.h).
pub(crate) const SE_SECRET: u32 = 1;
pub(crate) const SE_SYSTEM_DIR: u32 = 2;
/// syscall_event.flags (creds.h).
pub(crate) const SE_CREDENTIAL: u32 = 4;
/// exec_event.flags (events.h).
pub(crate) const EXEC_KILLED: u32 = 1;
/// The exec's parent binary was read from the parent's own exec (`procs`), not guessed from
/// its executable's file name.
pub(crate) const EXEC_PARENT_FROM_EXEC: u32 = 2;
pub(crate) const EXEC_REFUSED: u32 = 4;
/// sock_event.flags (events.h).
pub(crate) const SOCK_REFUSED: u32 = 1;
/// file_rule.flags and file_event.flags (lsm_files.h).
pub(crate) const FR_WRITE_ONLY: u32 = 1;
pub(crate) const FR_OWNER_ONLY: u32 = 2;
pub(crate) const FR_DIR: u32 = 4;
pub(crate) const FR_RECURSIVE: u32 = 8;
pub(crate) const FILE_REFUSED: u32 = 1;

/// One decoded ring buffer record.
pub(crate) enum Record {
    Exec(Box<types::exec_event>),
    Exit(types::exit_event),
    Fork(types::fork_event),
    Syscall(Box<types::syscall_event>),
    Sock(types::sock_event),
    File(Box<types::file_event>),
    Egress(types::egress_event),
}

pub(crate) fn decode(data: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(data.get(0..4)?.try_into().ok()?);
    match kind {
        EV_EXEC => read(data).map(|e| Record::Exec(Box::new(e))),
        EV_EXIT => read(data).map(Record::Exit),
        EV_FORK => read(data).map(Record::Fork),
        EV_SYSCALL => read(data).map(|e| Record::Syscall(Box::new(e))),
        EV_SOCK => read(data).map(Record::Sock),
        EV_FILE => read(data).map(|e| Record::File(Box::new(e))),
        EV_EGRESS => read(data).map(Record::Egress),
        _ => None,
    }
}

/// A NUL-terminated C string field as text.
pub(crate) fn cstr(field: &[i8]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The generated types must match events.h as the BPF object sees it; these sizes are the
    /// C layout (see events.h) and would change if a field were added on one side only.
    #[test]
    fn record_layouts_have_the_c_sizes_and_no_padding() {
        assert_eq!(size_of::<types::event_header>(), 64);
        assert_eq!(offset_of!(types::event_header, comm), 48);
        assert_eq!(size_of::<types::exec_event>(), 64 + 24 + 3 * 256);
        assert_eq!(offset_of!(types::exec_event, filename), 88);
        assert_eq!(size_of::<types::exit_event>(), 72);
        assert_eq!(size_of::<types::fork_event>(), 72);
        assert_eq!(size_of::<types::syscall_event>(), 64 + 16 + 48 + 32 + 256);
        assert_eq!(offset_of!(types::syscall_event, path), 64 + 16 + 48 + 32);
        assert_eq!(size_of::<types::container_info>(), 32 + 4 * 16);
        assert_eq!(size_of::<types::exec_key>(), 16);
        assert_eq!(size_of::<types::net_key>(), 28);
        assert_eq!(size_of::<types::deny_value>(), 24);
        assert_eq!(size_of::<types::holder>(), 16);
        assert_eq!(size_of::<types::learn_table>(), 512 + 3 * 64 + 8);
        assert_eq!(size_of::<types::sock_key>(), 8);
        assert_eq!(size_of::<types::sock_source>(), 16);
        assert_eq!(size_of::<types::sock_rule>(), 24 + 4 * 16);
        assert_eq!(offset_of!(types::sock_rule, allow), 24);
        assert_eq!(size_of::<types::sock_event>(), 64 + 40);
        assert_eq!(offset_of!(types::sock_event, ino), 96);
        assert_eq!(size_of::<types::egress_event>(), 64 + 32);
        assert_eq!(offset_of!(types::egress_event, port), 80);
        assert_eq!(
            types::sock_rule::default().allow.len(),
            crate::rules::MAX_SOCK_SOURCES,
            "SOCK_MAX_SOURCES in events.h"
        );
    }

    #[test]
    fn decodes_by_kind_and_refuses_short_records() {
        let mut e = types::fork_event::default();
        e.h.kind = EV_FORK;
        e.child_pid = 42;
        match decode(bytes_of(&e)) {
            Some(Record::Fork(f)) => assert_eq!(f.child_pid, 42),
            _ => panic!("fork record not decoded"),
        }
        assert!(decode(&bytes_of(&e)[..10]).is_none());
        let mut x = types::exit_event::default();
        x.h.kind = 99;
        assert!(decode(bytes_of(&x)).is_none());
    }

    #[test]
    fn cstr_stops_at_nul() {
        let mut f = [0i8; 8];
        for (i, b) in b"sh\0xx".iter().enumerate() {
            f[i] = *b as i8;
        }
        assert_eq!(cstr(&f), "sh");
    }
}
