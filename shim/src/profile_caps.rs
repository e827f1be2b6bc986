//! The capabilities a learning container's kernel table holds, told apart: the workload's
//! (learned and exported) and the runtime's (recorded as such, shown, never exported).
//!
//! The kernel's table (`palisade_monitor::CapabilitiesSeen`) already keeps the checks granted
//! to a task carrying the runtime's name (runc's init, `runc:[...`, and `palisade-init`: a
//! process that has not executed the workload's program yet, for the container's first
//! process and for every CRI exec) apart from the others: runc's init holds every capability
//! of the container's sets while it sets the process up, and its set*id calls and the bounding
//! set's cut are checked then (`setuid`, `setgid`, `setpcap`). A capability granted outside the
//! container's own sets cannot have been the workload's either (no exec gains one beyond the
//! bounding set: `floor::runtime_capability`), whoever the kernel saw use it. What both used
//! is the workload's: a profile never lacks what the workload does.

use std::collections::BTreeSet;

use palisade_monitor::CapabilitiesSeen;
use palisade_policy::Capability;
use palisade_profile::floor;

/// The capability of bit `nr` (`linux/capability.h`'s numbering), when this build knows it.
pub(crate) fn capability(nr: u8) -> Option<Capability> {
    Capability::all().nth(usize::from(nr))
}

/// `seen` split into the workload's capabilities and the runtime's (masks, bit N is
/// capability N), given `held`, the capabilities the container's own sets hold. A bit this
/// build does not name is neither's (it could be in no policy).
pub(crate) fn split(seen: &CapabilitiesSeen, held: &BTreeSet<Capability>) -> (u64, u64) {
    let mut workload = 0u64;
    let mut runtime = 0u64;
    for nr in CapabilitiesSeen::numbers(seen.granted | seen.runtime) {
        let Some(cap) = capability(nr) else {
            continue;
        };
        let bit = 1u64 << nr;
        if seen.granted & bit != 0 && !floor::runtime_capability(cap, held) {
            workload |= bit;
        } else {
            runtime |= bit;
        }
    }
    (workload, runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(name: &str) -> Capability {
        Capability::parse(name).unwrap()
    }

    fn mask(names: &[&str]) -> u64 {
        names.iter().fold(0, |m, n| {
            let nr = Capability::all().position(|c| c == cap(n)).unwrap();
            m | (1u64 << nr)
        })
    }

    /// Part of a CRI container's default set: what these tests need.
    fn held() -> BTreeSet<Capability> {
        [
            "chown",
            "dac_override",
            "setgid",
            "setuid",
            "setpcap",
            "net_raw",
        ]
        .map(cap)
        .into()
    }

    #[test]
    fn what_only_the_runtime_used_is_the_runtimes() {
        // runc's init of a CRI exec: set*id and the bounding set's cut, and a look-up the
        // container's sets do not cover; the workload itself wrote a file of another owner.
        let seen = CapabilitiesSeen {
            granted: mask(&["dac_override"]),
            refused: mask(&["sys_admin"]),
            runtime: mask(&["setuid", "setgid", "setpcap", "dac_read_search"]),
        };
        let (workload, runtime) = split(&seen, &held());
        assert_eq!(workload, mask(&["dac_override"]));
        assert_eq!(
            runtime,
            mask(&["setuid", "setgid", "setpcap", "dac_read_search"])
        );
    }

    #[test]
    fn what_both_used_is_the_workloads() {
        let seen = CapabilitiesSeen {
            granted: mask(&["setuid", "chown"]),
            refused: 0,
            runtime: mask(&["setuid", "setgid"]),
        };
        let (workload, runtime) = split(&seen, &held());
        assert_eq!(workload, mask(&["setuid", "chown"]));
        assert_eq!(runtime, mask(&["setgid"]));
    }

    #[test]
    fn a_capability_outside_the_containers_sets_is_never_the_workloads() {
        // The kernel saw a task without the runtime's name use it (runc's init before it
        // named itself, or a process the name check missed): still not exportable.
        let seen = CapabilitiesSeen {
            granted: mask(&["sys_admin", "net_raw"]),
            refused: 0,
            runtime: 0,
        };
        let (workload, runtime) = split(&seen, &held());
        assert_eq!(workload, mask(&["net_raw"]));
        assert_eq!(runtime, mask(&["sys_admin"]));
    }

    #[test]
    fn refused_checks_and_unknown_bits_are_no_ones() {
        let seen = CapabilitiesSeen {
            granted: 1u64 << 63,
            refused: mask(&["sys_nice"]),
            runtime: 1u64 << 62,
        };
        assert_eq!(split(&seen, &held()), (0, 0));
    }
}
