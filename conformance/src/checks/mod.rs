//! The conformance checks, grouped by area; [`all`] lists them in run order.

pub mod lifecycle;

use crate::check;
use crate::suite::Check;

/// Every check, in the order they run (the smoke check first).
pub fn all() -> Vec<Check> {
    vec![
        check!(
            "pod_sandbox_lifecycle",
            60,
            lifecycle::pod_sandbox_lifecycle
        ),
        check!("container_lifecycle", 60, lifecycle::container_lifecycle),
        check!("exit_codes", 60, lifecycle::exit_codes),
        check!(
            "container_restart_in_pod",
            60,
            lifecycle::container_restart_in_pod
        ),
        check!("many_containers", 90, lifecycle::many_containers),
    ]
}
