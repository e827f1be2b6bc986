//! The profile of one service, shared by its gate and the shim.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::profile::Profile;

/// The profile of one service, shared by the gate (which learns and decides with it) and the
/// shim (which saves, merges and exports it).
#[derive(Clone, Debug, Default)]
pub struct SharedProfile(Arc<RwLock<Profile>>);

impl SharedProfile {
    /// Shares `profile`.
    pub fn new(profile: Profile) -> Self {
        SharedProfile(Arc::new(RwLock::new(profile)))
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
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Profile> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
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
        let clone = shared.clone();
        clone.replace(Profile::default());
        assert_eq!(
            shared.snapshot(),
            Profile::default(),
            "clones share one profile"
        );
    }
}
