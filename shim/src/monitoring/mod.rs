//! The eBPF monitor in the shim: the node's shared programs joined once per shim, one watch per
//! container, the sandbox's monitor-only rules turned into kernel rules, and events into the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_monitor::{
    cgroup_dir_of_pid, cgroup_id_of_pid, ContainerRef, ContainerRules, MonitorConfig, MonitorError,
    MonitorEvent, NodeMonitor, SyscallHook,
};

use crate::report::Reporter;

mod rules;

pub use rules::{audit_reported, rules_for};

pub use palisade_config::{HookSetting, MonitorSettings};

/// The monitor's hook for a `[monitor] syscall_hook` value (a function, not a `From`: neither
/// type is the shim's).
pub fn syscall_hook(h: HookSetting) -> SyscallHook {
    match h {
        HookSetting::Fexit => SyscallHook::Fexit,
        HookSetting::RawSysExit => SyscallHook::RawSysExit,
        HookSetting::ExitTracepoints => SyscallHook::ExitTracepoints,
    }
}

/// The monitor of one shim.
pub struct ShimMonitor {
    node: Arc<NodeMonitor>,
    /// The monitor refuses and kills (`[monitor] enforce`), or only reports.
    enforce: bool,
    /// The learning containers, fed from the reader before the reporter.
    pub(crate) recorders: crate::profile::Recorders,
    /// The containers with an applied learned profile, judged from the reader too.
    pub(crate) governors: crate::profile_govern::Governors,
}

impl std::fmt::Debug for ShimMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShimMonitor")
    }
}

impl ShimMonitor {
    /// Joins (or loads) the node's programs and forwards this shim's events to `reporter`.
    pub fn open(
        settings: &MonitorSettings,
        reporter: Reporter,
        node_name: String,
    ) -> Result<Self, MonitorError> {
        let started = std::time::Instant::now();
        let config = MonitorConfig {
            pin_root: settings.pin_root.clone(),
            enforce: settings.enforce,
            ring_size: settings.ring_bytes,
            syscall_hook: syscall_hook(settings.syscall_hook),
            keep_loaded: settings.keep_loaded,
            ..MonitorConfig::default()
        };
        // The reader thread hands the events to the learning containers' recorders and
        // straight to the reporter, which only queues them: no channel, no thread of our own.
        let recorders = crate::profile::Recorders::default();
        let tap = recorders.clone();
        let governors = crate::profile_govern::Governors::default();
        let judge = governors.clone();
        let node = NodeMonitor::open(config, move |ev: MonitorEvent| {
            tap.observe(&ev);
            judge.observe(&ev);
            for e in ev.to_events(&node_name) {
                reporter.report(e);
            }
            true
        })?;
        let opened = started.elapsed();
        // Loading (first holder) parses the kernel's BTF and the BPF object: megabytes of
        // short-lived heap that glibc would otherwise keep for the shim's whole life.
        crate::sys::trim_heap();
        tracing::info!(
            features = ?node.features(),
            open_ms = crate::sys::ms(opened),
            trim_ms = crate::sys::ms(started.elapsed() - opened),
            "monitor joined"
        );
        Ok(ShimMonitor {
            node: Arc::new(node),
            enforce: settings.enforce,
            recorders,
            governors,
        })
    }

    /// Whether BPF-LSM is in force in the node's programs and this monitor enforces: file
    /// Block rules are then refused in the kernel (an audit-only monitor would only report
    /// them, so they keep their masks).
    pub fn bpf_lsm(&self) -> bool {
        self.enforce && self.node.features().bpf_lsm
    }

    /// Watches a created container (its init waits for `start`).
    pub fn watch(
        &self,
        init_pid: i32,
        who: ContainerRef,
        rules: ContainerRules,
    ) -> Result<Watched, MonitorError> {
        let pid = u32::try_from(init_pid).unwrap_or(0);
        let who = ContainerRef {
            cgroup_id: cgroup_id_of_pid(pid)?,
            cgroup_dir: Some(cgroup_dir_of_pid(pid)?),
            ..who
        };
        self.node.watch(who, rules).map(|w| Watched(w, None, None))
    }
}

/// The monitor's hold on one container (with its recording when it learns).
pub use crate::profile::Watched;

/// The enforcer really in force for each policy rule of a container, for its start's
/// `enforcement-record` event: the sandbox's choice, with the monitor's own answer in place of
/// the sandbox's plan for the rules the monitor carries (BPF-LSM or the kill at exec, say),
/// and `none: not watched` when the monitor did not take them. Landlock names its ABI.
pub fn enforcement_record(
    rules: &[palisade_sandbox::RuleEnforcement],
    watched: Option<&[palisade_monitor::RuleEnforcement]>,
    landlock_abi: Option<u32>,
) -> Vec<serde_json::Value> {
    rules
        .iter()
        .map(|r| {
            let planned = r.enforcer.to_string();
            let (enforcer, note) = if planned.starts_with("monitor-") {
                let found: Vec<&palisade_monitor::RuleEnforcement> = watched
                    .unwrap_or_default()
                    .iter()
                    .filter(|m| m.rule == r.rule)
                    .collect();
                match (watched, found.first()) {
                    (None, _) => ("none: not watched by the monitor".to_string(), None),
                    (Some(_), Some(m)) => (m.enforcer.as_str().to_string(), m.note.clone()),
                    // An Audit rule the monitor matches in user space.
                    (Some(_), None) => (planned, r.note.clone()),
                }
            } else if planned == "landlock" {
                match landlock_abi {
                    Some(abi) => (format!("landlock (ABI {abi})"), r.note.clone()),
                    None => (planned, r.note.clone()),
                }
            } else {
                (planned, r.note.clone())
            };
            serde_json::json!({
                "rule": r.rule,
                "kind": r.kind.to_string(),
                "target": r.target,
                "action": format!("{:?}", r.action),
                "enforcer": enforcer,
                "note": note,
            })
        })
        .collect()
}

/// The enforcement record of the monitor's rules that no policy rule names (a learned
/// profile's egress allow-list), in the form of [`enforcement_record`]'s entries.
pub fn monitor_only_record(
    rules: &[palisade_sandbox::RuleEnforcement],
    watched: &[palisade_monitor::RuleEnforcement],
) -> Vec<serde_json::Value> {
    watched
        .iter()
        .filter(|m| !rules.iter().any(|r| r.rule == m.rule))
        .filter(|m| m.rule.ends_with(": egress"))
        .map(|m| {
            serde_json::json!({
                "rule": m.rule,
                "kind": "network",
                "target": "egress allow-list",
                "action": "Allow",
                "enforcer": m.enforcer.as_str(),
                "note": m.note,
            })
        })
        .collect()
}

/// Whether the landlock ruleset of `plan` limits execution (it handles the execute right:
/// an execute allow-list) on a kernel with landlock (`landlock_abi`): the monitor then names
/// landlock as what refused an exec with EACCES ([`ContainerRules::landlock_exec`]).
pub fn landlock_execute(
    plan: Option<&palisade_init::plan::Plan>,
    landlock_abi: Option<u32>,
) -> bool {
    use palisade_init::plan::FsAccess;
    landlock_abi.is_some()
        && plan.and_then(|p| p.landlock.as_ref()).is_some_and(|l| {
            l.handled_fs
                .as_ref()
                .is_none_or(|h| h.contains(&FsAccess::Execute))
        })
}

/// Where Kubernetes mounts secrets in a container (the service account token volume, and
/// secret volumes by convention).
const SECRET_DIRS: [&str; 2] = ["/var/run/secrets", "/run/secrets"];

/// The host directories bind-mounted at or below [`SECRET_DIRS`] in a container's spec: the
/// monitor reports every open of a file on those mounts, however its path is spelled.
pub fn secret_mounts(spec: &serde_json::Value) -> Vec<PathBuf> {
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter(|m| {
            let dest = m["destination"].as_str().unwrap_or_default();
            let dest = dest.trim_end_matches('/');
            SECRET_DIRS.iter().any(|d| {
                dest == *d
                    || dest
                        .strip_prefix(d)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .filter_map(|m| m["source"].as_str())
        .filter(|s| Path::new(s).is_absolute())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Action;
    use palisade_sandbox::RuleKind;

    #[test]
    fn the_egress_allow_list_is_recorded_with_the_monitors_enforcer() {
        let watched = [
            palisade_monitor::RuleEnforcement {
                rule: "ns/palisade-learned-web: egress".into(),
                enforcer: palisade_monitor::Enforcer::BpfSockAddr,
                note: Some("2 peers".into()),
            },
            palisade_monitor::RuleEnforcement {
                rule: "ns/p: exec".into(),
                enforcer: palisade_monitor::Enforcer::BpfExecKill,
                note: None,
            },
        ];
        let got = monitor_only_record(&[], &watched);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["rule"], "ns/palisade-learned-web: egress");
        assert_eq!(got[0]["enforcer"], "bpf-sock-addr");
        assert_eq!(got[0]["kind"], "network");
    }

    #[test]
    fn the_record_names_the_monitors_own_choice_and_never_claims_an_unwatched_rule() {
        use palisade_sandbox::{Enforcer as Planned, RuleEnforcement as Plan};
        let plan = |rule: &str, enforcer| Plan {
            rule: rule.into(),
            kind: RuleKind::File,
            target: "/etc/shadow".into(),
            action: Action::Block,
            enforcer,
            note: None,
        };
        let rules = [
            plan("ns/p: file", Planned::MonitorBpfLsm),
            plan("ns/p: exec", Planned::MonitorExecKill),
            plan("ns/p: fs", Planned::Landlock),
        ];
        let watched = [
            palisade_monitor::RuleEnforcement {
                rule: "ns/p: file".into(),
                enforcer: palisade_monitor::Enforcer::BpfLsm,
                note: None,
            },
            palisade_monitor::RuleEnforcement {
                rule: "ns/p: exec".into(),
                enforcer: palisade_monitor::Enforcer::BpfExecKill,
                note: None,
            },
        ];
        let got = enforcement_record(&rules, Some(&watched), Some(4));
        let enforcers: Vec<&str> = got
            .iter()
            .map(|r| r["enforcer"].as_str().unwrap())
            .collect();
        assert_eq!(enforcers, ["bpf-lsm", "bpf-exec-kill", "landlock (ABI 4)"]);
        let unwatched = enforcement_record(&rules, None, None);
        assert_eq!(unwatched[0]["enforcer"], "none: not watched by the monitor");
        assert_eq!(unwatched[2]["enforcer"], "landlock");
    }

    #[test]
    fn landlock_limits_execution_only_where_its_ruleset_handles_execute() {
        let plan = |landlock: serde_json::Value| -> palisade_init::plan::Plan {
            serde_json::from_value(serde_json::json!({
                "version": 1, "no_new_privs": true, "landlock": landlock
            }))
            .unwrap()
        };
        let every_right = plan(serde_json::json!({"required_abi": 1}));
        let executes = plan(serde_json::json!({
            "required_abi": 1, "handled_fs": ["execute", "read_file"]
        }));
        let writes_only = plan(serde_json::json!({
            "required_abi": 1, "handled_fs": ["write_file"]
        }));
        let none: palisade_init::plan::Plan =
            serde_json::from_value(serde_json::json!({"version": 1, "no_new_privs": true}))
                .unwrap();
        assert!(landlock_execute(Some(&every_right), Some(4)));
        assert!(landlock_execute(Some(&executes), Some(1)));
        assert!(!landlock_execute(Some(&writes_only), Some(4)));
        assert!(!landlock_execute(Some(&none), Some(4)));
        assert!(!landlock_execute(None, Some(4)));
        assert!(
            !landlock_execute(Some(&executes), None),
            "no landlock in this kernel: nothing applies the ruleset"
        );
    }

    #[test]
    fn secret_mounts_are_the_binds_at_or_below_the_secret_dirs() {
        let spec = serde_json::json!({"mounts": [
            {"destination": "/var/run/secrets/kubernetes.io/serviceaccount",
             "source": "/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x",
             "type": "bind"},
            {"destination": "/run/secrets/", "source": "/host/run-secrets", "type": "bind"},
            {"destination": "/var/run/secretsx", "source": "/host/lookalike", "type": "bind"},
            {"destination": "/etc/hosts", "source": "/host/hosts", "type": "bind"},
            {"destination": "/run/secrets/tmp", "source": "tmpfs", "type": "tmpfs"},
            {"destination": "/proc", "source": "proc", "type": "proc"}
        ]});
        assert_eq!(
            secret_mounts(&spec),
            [
                PathBuf::from(
                    "/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x"
                ),
                PathBuf::from("/host/run-secrets"),
            ]
        );
        assert!(secret_mounts(&serde_json::json!({})).is_empty());
    }
}
