//! What the suites on CRI-shaped specs (`harden.rs`, `contract.rs`) share: the container spec
//! containerd's CRI plugin writes, and the hardening report's override of one field.

use palisade_sandbox::{HardeningReport, Override};
use serde_json::Value;

/// The spec containerd 1.6's CRI plugin writes for an ordinary container.
pub const CONTAINER: &str = include_str!("../fixtures/cri-container.json");
pub const ID: &str = "3c1d2e4f5a6b";

/// A fixture's JSON.
pub fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture does not parse: {e}"))
}

/// The report's override of `field` (`securityContext.procMount`, ...), if there is one.
pub fn overridden<'a>(report: &'a HardeningReport, field: &str) -> Option<&'a Override> {
    report.overridden.iter().find(|o| o.field == field)
}
