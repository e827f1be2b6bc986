//! The conformance checks, grouped by area; [`all`] lists them in run order.

pub mod config;
pub mod contract;
pub mod exec;
pub mod lifecycle;
pub mod logs;
pub mod namespaces;
pub mod reliability;
pub mod resources;

use crate::check;
use crate::suite::Check;

/// Every check, in the order they run (the smoke check first).
pub fn all() -> Vec<Check> {
    vec![
        check!(lifecycle::pod_sandbox_lifecycle, 60),
        check!(lifecycle::container_lifecycle, 60),
        check!(lifecycle::exit_codes, 60),
        check!(lifecycle::container_restart_in_pod, 60),
        check!(lifecycle::many_containers, 90),
        check!(exec::exec_sync, 60),
        check!(exec::exec_stream, 60),
        check!(exec::exec_stream_tty, 60),
        check!(exec::attach, 60),
        check!(exec::attach_tty, 60),
        check!(logs::container_logs, 60),
        check!(config::env_args_workdir, 60),
        check!(config::user_group, 60),
        check!(config::hostname, 60),
        check!(config::readonly_rootfs, 60),
        check!(config::bind_mounts, 60),
        check!(config::capabilities, 60),
        check!(config::sysctls, 60),
        check!(resources::oom_killed, 90),
        check!(resources::update_resources, 60),
        check!(resources::container_stats, 60),
        check!(namespaces::host_namespaces, 60),
        check!(namespaces::user_namespace, 60)
            .unsupported_on(namespaces::user_namespace_unsupported),
        check!("contract_" + contract::privileged, 60),
        check!("contract_" + contract::added_capability, 60),
        check!(
            "contract_all_capabilities",
            60,
            contract::all_capabilities_added
        ),
        check!("contract_" + contract::seccomp_unconfined, 60),
        check!("contract_" + contract::seccomp_unset, 60),
        check!("contract_" + contract::seccomp_localhost, 60),
        check!("contract_" + contract::no_new_privs_false, 60),
        check!("contract_" + contract::propagation_private, 60),
        check!("contract_" + contract::propagation_rslave, 60),
        check!("contract_" + contract::propagation_rshared, 60),
        check!(reliability::containerd_restart, 120),
        check!(reliability::shim_killed, 90),
        check!(reliability::pod_churn, 240),
    ]
}
