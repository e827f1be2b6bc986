//! Capability bounding-set cut, with the inheritable and ambient sets trimmed to match.
//!
//! Cutting only the bounding set is not enough for a root process: after execve the
//! permitted set is `(inheritable & file inheritable) | (file permitted & bounding) | ambient`,
//! and for uid 0 both file sets count as full, so a capability left in the inheritable
//! or ambient set would come back. All three are trimmed to the kept list.

use crate::sys;
use std::io;
use thiserror::Error;

/// Capability names in kernel numbering order, as OCI specs spell them.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Capability sets are 64 bits wide in the v3 capget/capset interface.
const MAX_CAPS: u32 = 64;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Failure while cutting the capability sets.
#[derive(Debug, Error)]
pub enum CapsError {
    #[error("capabilities: unknown capability {0:?}")]
    UnknownName(String),
    #[error("capabilities: drop {} from bounding set: {}", name(*.cap), sys::reason(.source))]
    DropBounding {
        cap: u32,
        #[source]
        source: io::Error,
    },
    #[error("capabilities: {} still in bounding set after drop", name(*.0))]
    StillBounded(u32),
    #[error("capabilities: read bounding set: {}", sys::reason(.0))]
    ReadBounding(#[source] io::Error),
    #[error("capabilities: capget: {}", sys::reason(.0))]
    Get(#[source] io::Error),
    #[error("capabilities: capset inheritable: {}", sys::reason(.0))]
    SetInheritable(#[source] io::Error),
    #[error("capabilities: lower ambient {}: {}", name(*.cap), sys::reason(.source))]
    LowerAmbient {
        cap: u32,
        #[source]
        source: io::Error,
    },
}

/// The kernel number of a capability named like `CAP_NET_BIND_SERVICE`.
pub fn from_name(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// The lowercase name of a capability number, for messages.
pub fn name(cap: u32) -> String {
    match usize::try_from(cap).ok().and_then(|i| NAMES.get(i)) {
        Some(n) => n.to_lowercase(),
        None => format!("cap {cap}"),
    }
}

/// A set of capabilities as a bit mask, bit `n` for capability `n`.
pub fn mask_of<S: AsRef<str>>(names: &[S]) -> Result<u64, CapsError> {
    names.iter().try_fold(0u64, |mask, n| {
        let cap =
            from_name(n.as_ref()).ok_or_else(|| CapsError::UnknownName(n.as_ref().to_owned()))?;
        Ok(mask | (1u64 << cap))
    })
}

/// Capabilities to drop from the bounding set: those present and not kept.
pub fn to_drop(present: u64, keep: u64) -> Vec<u32> {
    (0..MAX_CAPS)
        .filter(|cap| present & !keep & (1u64 << cap) != 0)
        .collect()
}

/// Whether `cap` is in the calling thread's bounding set; `None` once past the
/// kernel's last capability, which is how the kernel's range is probed without /proc.
fn bounding_has(cap: u32) -> Result<Option<bool>, CapsError> {
    match sys::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0) {
        Ok(v) => Ok(Some(v == 1)),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(err) => Err(CapsError::ReadBounding(err)),
    }
}

/// The calling thread's bounding set as a mask.
pub fn bounding_set() -> Result<u64, CapsError> {
    let mut mask = 0u64;
    for cap in 0..MAX_CAPS {
        match bounding_has(cap)? {
            Some(true) => mask |= 1u64 << cap,
            Some(false) => {}
            None => break,
        }
    }
    Ok(mask)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> Result<[CapData; 2], CapsError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as the v3 interface expects.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    sys::check(ret).map_err(CapsError::Get)?;
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and a two-element data array, as the v3 interface expects.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    sys::check(ret).map(|_| ())
}

/// Leaves only `keep` in the bounding, inheritable and ambient sets of the calling thread.
///
/// Dropping from the bounding set needs CAP_SETPCAP; when nothing outside `keep` is
/// bounded (runc already applied the spec) no privilege is needed at all.
pub fn restrict(keep: u64) -> Result<(), CapsError> {
    let present = bounding_set()?;
    for cap in to_drop(present, keep) {
        sys::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0)
            .map_err(|source| CapsError::DropBounding { cap, source })?;
    }
    if let Some(cap) = to_drop(bounding_set()?, keep).first() {
        return Err(CapsError::StillBounded(*cap));
    }

    let mut data = capget()?;
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    if data[0].inheritable & !low != 0 || data[1].inheritable & !high != 0 {
        data[0].inheritable &= low;
        data[1].inheritable &= high;
        capset(&data).map_err(CapsError::SetInheritable)?;
    }

    for cap in to_drop(u64::MAX, keep) {
        if ambient(libc::PR_CAP_AMBIENT_IS_SET, cap) == 1 {
            let ret = ambient(libc::PR_CAP_AMBIENT_LOWER, cap);
            sys::check(libc::c_long::from(ret))
                .map_err(|source| CapsError::LowerAmbient { cap, source })?;
        }
    }
    Ok(())
}

/// `prctl(PR_CAP_AMBIENT, op, cap, 0, 0)`: the kernel's answer, or -1 with errno set.
fn ambient(op: libc::c_int, cap: u32) -> libc::c_int {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            op as libc::c_ulong,
            libc::c_ulong::from(cap),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kernel_numbering() {
        assert_eq!(from_name("CAP_CHOWN"), Some(0));
        assert_eq!(from_name("CAP_SETPCAP"), Some(8));
        assert_eq!(from_name("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(from_name("CAP_AUDIT_READ"), Some(37));
        assert_eq!(from_name("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(from_name("cap_chown"), None);
        assert_eq!(from_name("CAP_NOPE"), None);
        assert_eq!(name(21), "cap_sys_admin");
        assert_eq!(name(63), "cap 63");
    }

    #[test]
    fn mask_of_sets_one_bit_per_name_and_rejects_unknown() {
        let mask = mask_of(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_BPF"]).unwrap();
        assert_eq!(mask, 1 | (1 << 10) | (1 << 39));
        let err = mask_of(&["CAP_CHOWN", "CAP_FLY"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capabilities: unknown capability \"CAP_FLY\""
        );
    }

    #[test]
    fn to_drop_lists_present_and_not_kept() {
        assert_eq!(to_drop(0b1111, 0b0101), vec![1, 3]);
        assert_eq!(to_drop(0b0101, 0b1111), Vec::<u32>::new());
        assert_eq!(to_drop(1 << 40, 0), vec![40]);
    }

    #[test]
    fn bounding_set_matches_proc_status() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
        let expected = u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).unwrap();
        assert_eq!(bounding_set().unwrap(), expected);
    }
}
