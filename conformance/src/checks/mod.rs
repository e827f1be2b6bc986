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
        check!("exec_sync", 60, exec::exec_sync),
        check!("exec_stream", 60, exec::exec_stream),
        check!("exec_stream_tty", 60, exec::exec_stream_tty),
        check!("attach", 60, exec::attach),
        check!("attach_tty", 60, exec::attach_tty),
        check!("container_logs", 60, logs::container_logs),
        check!("env_args_workdir", 60, config::env_args_workdir),
        check!("user_group", 60, config::user_group),
        check!("hostname", 60, config::hostname),
        check!("readonly_rootfs", 60, config::readonly_rootfs),
        check!("bind_mounts", 60, config::bind_mounts),
        check!("capabilities", 60, config::capabilities),
        check!("sysctls", 60, config::sysctls),
        check!("oom_killed", 90, resources::oom_killed),
        check!("update_resources", 60, resources::update_resources),
        check!("container_stats", 60, resources::container_stats),
        check!("host_namespaces", 60, namespaces::host_namespaces),
        check!("user_namespace", 60, namespaces::user_namespace)
            .unsupported_on(namespaces::user_namespace_unsupported),
        check!("contract_privileged", 60, contract::privileged),
        check!("contract_added_capability", 60, contract::added_capability),
        check!(
            "contract_all_capabilities",
            60,
            contract::all_capabilities_added
        ),
        check!(
            "contract_seccomp_unconfined",
            60,
            contract::seccomp_unconfined
        ),
        check!("contract_seccomp_unset", 60, contract::seccomp_unset),
        check!(
            "contract_seccomp_localhost",
            60,
            contract::seccomp_localhost
        ),
        check!(
            "contract_no_new_privs_false",
            60,
            contract::no_new_privs_false
        ),
        check!(
            "contract_propagation_private",
            60,
            contract::propagation_private
        ),
        check!(
            "contract_propagation_rslave",
            60,
            contract::propagation_rslave
        ),
        check!(
            "contract_propagation_rshared",
            60,
            contract::propagation_rshared
        ),
        check!("containerd_restart", 120, reliability::containerd_restart),
        check!("shim_killed", 90, reliability::shim_killed),
        check!("pod_churn", 240, reliability::pod_churn),
    ]
}
