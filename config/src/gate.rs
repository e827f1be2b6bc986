//! The `[gate]` table: where the pods' HTTP gates keep what they learn, and how long they learn.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The shim configuration's `[gate]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateSettings {
    /// Where learned profiles are kept, one directory per service.
    pub state_dir: PathBuf,
    /// A gate in `learn` switches to `alert` after this many requests ...
    pub learn_requests: u64,
    /// ... and at least this many seconds ...
    pub learn_seconds: u64,
    /// ... once nine in ten fields learned at least this many values, ...
    pub field_values: u32,
    /// ... and switches on to `block` after this many seconds in `alert` without an alert
    /// (0: never blocks on its own).
    pub quiet_seconds: u64,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            state_dir: PathBuf::from("/var/lib/palisade/gate"),
            learn_requests: 10_000,
            learn_seconds: 3600,
            field_values: 20,
            quiet_seconds: 3600,
        }
    }
}
