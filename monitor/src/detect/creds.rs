//! The ids each of a container's processes holds, followed from its exec, its forks and its
//! successful set*id calls, so that a privilege change is judged against what the process had
//! before: `setgid(0)` by a process whose group already is 0 gains nothing.

use std::collections::HashMap;

use crate::event::Syscall;
use crate::rules::IdMaps;

/// Processes whose ids are followed per container; past this, new ones are not followed (their
/// set*id calls go unjudged, never falsely flagged).
const MAX_FOLLOWED: usize = 65_536;

/// The real, effective and saved user and group ids of a process, as the container sees them
/// (inside its user namespace, like the set*id arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub uid: [u32; 3],
    pub gid: [u32; 3],
}

impl Ids {
    fn all(uid: u32, gid: u32) -> Self {
        Ids {
            uid: [uid; 3],
            gid: [gid; 3],
        }
    }

    fn root_uid(&self) -> bool {
        self.uid.contains(&0)
    }

    fn root_gid(&self) -> bool {
        self.gid.contains(&0)
    }
}

/// What a successful set*id call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub before: Ids,
    pub after: Ids,
}

impl Change {
    /// Whether the process now holds root's uid, or root's gid, that it did not hold before.
    /// A process that already held uid 0 gains nothing by taking gid 0 too.
    pub fn gains_root(&self) -> bool {
        (self.after.root_uid() && !self.before.root_uid())
            || (self.after.root_gid() && !self.before.root_gid() && !self.before.root_uid())
    }
}

/// The ids of a container's processes, by pid.
#[derive(Debug, Default)]
pub(crate) struct Creds {
    by_pid: HashMap<u32, Ids>,
}

impl Creds {
    /// An exec: the kernel reported the process's real ids (host view) after it, and they are
    /// taken for all three. (An effective id that differs from the real one across an exec,
    /// kept by the kernel, is not seen: the process is then judged as holding only its real
    /// ids, and a later set*id call to root as a gain.)
    pub fn exec(&mut self, maps: &IdMaps, pid: u32, host_uid: u32, host_gid: u32) {
        let ids = Ids::all(maps.uid_inside(host_uid), maps.gid_inside(host_gid));
        self.insert(pid, ids);
    }

    /// A fork: the child holds its parent's ids; a parent not followed is taken at its real
    /// ids (host view, as the kernel reported them).
    pub fn fork(&mut self, maps: &IdMaps, parent: u32, child: u32, host_uid: u32, host_gid: u32) {
        let ids = self
            .by_pid
            .get(&parent)
            .copied()
            .unwrap_or_else(|| Ids::all(maps.uid_inside(host_uid), maps.gid_inside(host_gid)));
        self.insert(child, ids);
    }

    pub fn exit(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// A successful set*id call of `pid` with its arguments: the ids before and after, when the
    /// process is followed. The kernel's rules decide which ids change; a process is taken as
    /// privileged (CAP_SETUID/CAP_SETGID) when its effective uid is 0.
    pub fn set_ids(&mut self, pid: u32, call: Syscall, args: &[u64; 6]) -> Option<Change> {
        let before = *self.by_pid.get(&pid)?;
        let arg = |i: usize| args[i] as u32;
        let privileged = before.uid[1] == 0;
        let mut after = before;
        match call {
            Syscall::Setuid => set_one(&mut after.uid, arg(0), privileged),
            Syscall::Setgid => set_one(&mut after.gid, arg(0), privileged),
            Syscall::Setreuid => set_re(&mut after.uid, arg(0), arg(1)),
            Syscall::Setregid => set_re(&mut after.gid, arg(0), arg(1)),
            Syscall::Setresuid => set_res(&mut after.uid, [arg(0), arg(1), arg(2)]),
            Syscall::Setresgid => set_res(&mut after.gid, [arg(0), arg(1), arg(2)]),
            _ => return None,
        }
        self.by_pid.insert(pid, after);
        Some(Change { before, after })
    }

    fn insert(&mut self, pid: u32, ids: Ids) {
        if self.by_pid.len() < MAX_FOLLOWED || self.by_pid.contains_key(&pid) {
            self.by_pid.insert(pid, ids);
        }
    }
}

/// `-1` as a set*id argument: leave this id as it is.
const UNCHANGED: u32 = u32::MAX;

/// setuid/setgid: every id when privileged, else the effective one.
fn set_one(ids: &mut [u32; 3], id: u32, privileged: bool) {
    if privileged {
        *ids = [id; 3];
    } else {
        ids[1] = id;
    }
}

/// setreuid/setregid: the saved id follows the effective one when the real one is set or the
/// effective one leaves the previous real id.
fn set_re(ids: &mut [u32; 3], real: u32, effective: u32) {
    let old_real = ids[0];
    if real != UNCHANGED {
        ids[0] = real;
    }
    if effective != UNCHANGED {
        ids[1] = effective;
    }
    if real != UNCHANGED || (effective != UNCHANGED && effective != old_real) {
        ids[2] = ids[1];
    }
}

/// setresuid/setresgid: each id given.
fn set_res(ids: &mut [u32; 3], new: [u32; 3]) {
    for (id, n) in ids.iter_mut().zip(new) {
        if n != UNCHANGED {
            *id = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IdRange;

    fn args(a: &[u32]) -> [u64; 6] {
        let mut out = [u64::MAX; 6];
        for (o, v) in out.iter_mut().zip(a) {
            *o = u64::from(*v);
        }
        out
    }

    /// The credentials of a followed process `pid` that exec'd with host ids `uid`, `gid`.
    fn execed(maps: &IdMaps, pid: u32, uid: u32, gid: u32) -> Creds {
        let mut c = Creds::default();
        c.exec(maps, pid, uid, gid);
        c
    }

    #[test]
    fn setgid_to_a_group_already_held_gains_nothing() {
        let maps = IdMaps::default();
        let mut c = execed(&maps, 7, 1000, 0);
        let ch = c.set_ids(7, Syscall::Setgid, &args(&[0])).unwrap();
        assert!(!ch.gains_root(), "{ch:?}");
        assert_eq!(ch.after, ch.before);
    }

    #[test]
    fn setuid_to_root_from_an_unprivileged_uid_is_a_gain() {
        let maps = IdMaps::default();
        let mut c = execed(&maps, 7, 1000, 1000);
        let ch = c.set_ids(7, Syscall::Setuid, &args(&[0])).unwrap();
        assert!(ch.gains_root());
        // Root dropping to a service user, then back through its saved uid: it had uid 0.
        let mut c = execed(&maps, 8, 0, 0);
        let drop = c
            .set_ids(8, Syscall::Setresuid, &args(&[33, 33, 0]))
            .unwrap();
        assert!(!drop.gains_root());
        assert_eq!(drop.after.uid, [33, 33, 0]);
        let back = c.set_ids(8, Syscall::Setuid, &args(&[0])).unwrap();
        assert!(!back.gains_root(), "the saved uid was 0");
        assert_eq!(
            back.after.uid,
            [33, 0, 0],
            "unprivileged setuid sets the effective uid"
        );
        // A root process taking gid 0 gains nothing new.
        let mut c = execed(&maps, 9, 0, 1000);
        assert!(!c
            .set_ids(9, Syscall::Setgid, &args(&[0]))
            .unwrap()
            .gains_root());
    }

    #[test]
    fn forks_inherit_and_unfollowed_processes_are_not_judged() {
        let maps = IdMaps::default();
        let mut c = execed(&maps, 7, 1000, 1000);
        c.fork(&maps, 7, 8, 1000, 1000);
        assert!(c
            .set_ids(8, Syscall::Setreuid, &args(&[0, 0]))
            .unwrap()
            .gains_root());
        c.exit(8);
        assert_eq!(c.set_ids(8, Syscall::Setuid, &args(&[0])), None);
    }

    #[test]
    fn host_ids_are_read_through_the_containers_user_namespace() {
        let maps = IdMaps {
            uid: vec![IdRange {
                inside: 0,
                outside: 100_000,
                count: 65_536,
            }],
            gid: vec![IdRange {
                inside: 0,
                outside: 100_000,
                count: 65_536,
            }],
        };
        let mut c = execed(&maps, 7, 101_000, 100_000);
        let ch = c.set_ids(7, Syscall::Setgid, &args(&[0])).unwrap();
        assert!(!ch.gains_root(), "group 0 inside is host gid 100000");
        assert!(c
            .set_ids(7, Syscall::Setresuid, &args(&[0, 0, 0]))
            .unwrap()
            .gains_root());
    }
}
