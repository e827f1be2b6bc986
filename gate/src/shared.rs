//! The profile of one service, shared by its gate and the shim.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::profile::Profile;

/// The profile of one service, shared by the gate (which learns and decides with it) and the
/// shim (which saves, merges and exports it).
#[derive(Clone, Debug, Default)]
pub struct SharedProfile(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    profile: RwLock<Profile>,
    /// Counts the times the profile was taken for writing: while it stays the same, the
    /// profile has not changed, and a decision made with it still holds.
    generation: AtomicU64,
}

impl SharedProfile {
    /// Shares `profile`.
    pub fn new(profile: Profile) -> Self {
        SharedProfile(Arc::new(Shared {
            profile: RwLock::new(profile),
            generation: AtomicU64::new(0),
        }))
    }

    /// A copy of the profile as it is now, to save or export.
    pub fn snapshot(&self) -> Profile {
        self.read().clone()
    }

    /// Merges the profile of another pod of the service into this one.
    pub fn merge(&self, other: &Profile) {
        self.write().merge(other);
    }

    /// Replaces the profile (an import).
    pub fn replace(&self, profile: Profile) {
        *self.write() = profile;
    }

    // A panic while holding the lock cannot leave a profile half-updated in a way that
    // matters (learning only widens rules), so a poisoned lock is used as it is.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Profile> {
        self.0
            .profile
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The profile for reading, with its generation: the same generation later means the
    /// same profile.
    pub(crate) fn read_with_generation(&self) -> (RwLockReadGuard<'_, Profile>, u64) {
        let profile = self.read();
        // Writers change the count while they hold the lock: under the read lock it is stable.
        let generation = self.0.generation.load(Ordering::Relaxed);
        (profile, generation)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Profile> {
        let profile = self
            .0
            .profile
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.0.generation.fetch_add(1, Ordering::Relaxed);
        profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    #[test]
    fn shared_profile_merges_replaces_and_snapshots() {
        let shared = SharedProfile::default();
        let mut pod = Profile::default();
        pod.learn(&Request::new("GET", "HTTP/1.1", "/a?x=1", vec![], None));
        shared.merge(&pod);
        shared.merge(&pod);
        assert_eq!(shared.snapshot().requests_learned(), 2);
        let before = shared.read_with_generation().1;
        let again = shared.read_with_generation().1;
        assert_eq!(before, again, "reading changes nothing");
        shared.merge(&pod);
        assert_ne!(
            shared.read_with_generation().1,
            before,
            "a merge is a new profile"
        );
        let clone = shared.clone();
        clone.replace(Profile::default());
        assert_eq!(
            shared.snapshot(),
            Profile::default(),
            "clones share one profile"
        );
    }
}
