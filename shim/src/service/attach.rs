//! After `runc create` and before start: the container joins the node's eBPF monitor with the
//! rules only the monitor can carry, and a pod's sandbox starts its HTTP gate. A rule that
//! needs the monitor and cannot get it refuses the container.

use std::path::{Path, PathBuf};

use super::create::Hardened;
use super::{reporter_of, TaskService};
use crate::config::Config;
use crate::cri::CriContainer;
use crate::error::ShimError;
use crate::gate::RunningGate;
use crate::report::runtime::runtime_event;
use crate::sys;

impl TaskService {
    /// After `runc create`, before start: the monitor's watch and the pod's gate. A rule that
    /// needs the monitor and cannot get it refuses the container.
    pub(super) async fn attach(
        &self,
        cri: &CriContainer,
        pid: i32,
        bundle: &Path,
        hardened: &Hardened,
        gate_request: Option<crate::gate::GateRequest>,
        config: &Config,
    ) -> Result<(Option<crate::monitoring::Watched>, Option<RunningGate>), ShimError> {
        let id = cri.id.as_str();
        // An enforced profile's learned writes of paths absent now (files the workload
        // creates) are granted on their nearest existing directory, before palisade-init reads
        // the plan at start.
        if let Some(t) = hardened
            .govern
            .as_ref()
            .filter(|t| hardened.wrapped && t.mode == palisade_profile::Mode::Enforce)
        {
            let notes = crate::profile_landlock::grant_creations(
                id,
                &bundle.join(crate::bundle::PLAN_FILE),
                Path::new(&format!("/proc/{pid}/root")),
                &t.recording,
            )?;
            if !notes.is_empty() {
                self.reporter(config).report(
                    runtime_event(
                        &config.node_name,
                        cri,
                        "profile-creations",
                        &format!(
                            "learned profile of {}: writes of paths absent at Create: {}",
                            t.workload,
                            notes.join("; ")
                        ),
                    )
                    .with_evidence("notes", serde_json::json!(notes)),
                );
            }
        }
        let watch = self.watch(cri, pid, bundle, hardened, config)?;
        let mut record = crate::monitoring::enforcement_record(
            &hardened.rules,
            watch.as_ref().map(|w| w.0.enforcement()),
            hardened.landlock_abi,
        );
        // The monitor's own rules no policy names (a learned profile's egress allow-list).
        if let Some(w) = &watch {
            record.extend(crate::monitoring::monitor_only_record(
                &hardened.rules,
                w.0.enforcement(),
            ));
        }
        record.extend(hardened.exec_guard.as_ref().map(|g| g.record()));
        // For `palisade status`: the record of every container the shim serves, rules or not.
        if let Err(e) = crate::bundle::write_enforcement(cri, bundle, &record) {
            tracing::warn!(container = %id, "{e}");
        }
        if !hardened.rules.is_empty() {
            self.reporter(config).report(
                runtime_event(
                    &config.node_name,
                    cri,
                    "enforcement-record",
                    &format!(
                        "{} policy rules, each with the enforcer in force",
                        record.len()
                    ),
                )
                .with_evidence("rules", serde_json::Value::Array(record)),
            );
        }
        let gate = match gate_request {
            None => None,
            Some(mut r) => Some(
                RunningGate::start(
                    id,
                    &hardened.spec,
                    {
                        if config.audit() && r.mode == palisade_gate::Mode::Block {
                            tracing::info!(pod = %id, "audit mode: gate blocks nothing, it alerts");
                            r.mode = palisade_gate::Mode::Alert;
                        }
                        r
                    },
                    &config.gate,
                    &config.node_name,
                    self.reporter(config),
                )
                .await?,
            ),
        };
        Ok((watch, gate))
    }

    fn watch(
        &self,
        cri: &CriContainer,
        pid: i32,
        bundle: &Path,
        hardened: &Hardened,
        config: &Config,
    ) -> Result<Option<crate::monitoring::Watched>, ShimError> {
        let id = cri.id.as_str();
        let detection =
            crate::cri::detection_settings(&hardened.spec, &config.detection).map_err(|e| {
                ShimError::InvalidArgument {
                    what: format!("container {id}"),
                    reason: e.to_string(),
                }
            })?;
        let learn = hardened.learn.clone();
        let m = &hardened.monitor;
        // An enforced learned profile's peers: only the monitor can refuse the others.
        let egress = hardened.govern.as_ref().and_then(|t| {
            crate::profile_stage::egress_list(&t.workload, t.mode, &t.recording).map(|e| e.0)
        });
        let needed = !m.deny_exec.is_empty()
            || !m.deny_file.is_empty()
            || !m.allow_exec.is_empty()
            || !m.network.is_empty()
            || egress.is_some();
        let reporter = self.reporter(config);
        let degraded = |what: &str| {
            reporter.report(runtime_event(
                &config.node_name,
                cri,
                "enforcement-degraded",
                what,
            ))
        };
        let waiting = std::time::Instant::now();
        let joined = self.monitor(config);
        let waited = waiting.elapsed();
        let Some(monitor) = joined else {
            if let Some(w) = &learn {
                degraded(&format!(
                    "learned profile of {w}: not recorded: the eBPF monitor is not running"
                ));
            }
            if needed && !hardened.degrade {
                return Err(ShimError::Unenforced {
                    container: id.into(),
                    reason: "policy rules need the eBPF monitor, which is not running in this shim"
                        .into(),
                });
            }
            if needed {
                degraded("policy rules that need the eBPF monitor run unenforced: the monitor is not running");
            }
            return Ok(None);
        };
        let rootfs = match hardened.spec["root"]["path"].as_str() {
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) => bundle.join(p),
            None => bundle.join("rootfs"),
        };
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let (mut rules, cannot) = crate::monitoring::rules_for(&rootfs, &root, m);
        crate::cri::apply_detection(&mut rules, &detection);
        rules.rootfs = Some(rootfs.clone());
        rules.process_root = Some(root.clone());
        rules.secret_mounts = crate::monitoring::secret_mounts(&hardened.spec);
        rules.id_maps = crate::cri::id_maps(&hardened.spec);
        rules.seccomp_refused =
            palisade_monitor::seccomp_refused(&hardened.spec["linux"]["seccomp"]);
        rules.landlock_exec = hardened.landlock_exec;
        let egress_rule = egress.as_ref().map(|e| e.name.clone());
        rules.egress = egress;
        if !cannot.is_empty() && !hardened.degrade {
            return Err(ShimError::Unenforced {
                container: id.into(),
                reason: cannot.join("; "),
            });
        }
        for c in &cannot {
            degraded(c);
        }
        for a in &m.audit {
            if !crate::monitoring::audit_reported(a) {
                tracing::info!(container = %id, rule = %a.rule, "audit rule: not reported by the monitor (only through its built-in detections)");
            }
        }
        // A learning container's every open is recorded, not only writes and secret reads.
        rules.report_all_opens |= learn.is_some() || hardened.govern.is_some();
        // And every system call it makes, through the learning program's table.
        rules.record_syscalls = learn.is_some();
        // And every destination it connects or sends to, unconnected UDP included, once each.
        rules.learn_egress = learn.is_some() && rules.egress.is_none();
        let learning = match learn {
            Some(w) => {
                let promotion = crate::profile::Promotion {
                    rule: crate::profile_stage::rule_of(&config.profile),
                    report: crate::profile_govern::stage_reporter(
                        cri,
                        &w,
                        reporter.clone(),
                        config.node_name.clone(),
                    ),
                };
                Some(monitor.recorders.start(
                    id,
                    &cri.pod,
                    w,
                    &config.profile.state_dir,
                    promotion,
                )?)
            }
            None => None,
        };
        let who = palisade_monitor::ContainerRef::from(cri);
        let watching = std::time::Instant::now();
        match monitor.watch(pid, who, rules) {
            Ok(mut watch) => {
                if let Some(l) = &learning {
                    l.attach_kernel(
                        watch.0.reader(),
                        crate::profile::held_capabilities(&hardened.spec),
                        watch.0.sends_observed(),
                    );
                    if !watch.0.sends_observed() {
                        degraded(
                            "learned profile: connects and sends not observed (the sock_addr hooks could not be attached): its recording cannot be promoted",
                        );
                    }
                }
                watch.1 = learning;
                watch.2 = hardened.govern.as_ref().map(|t| {
                    let governing = monitor.governors.start(
                        cri,
                        t.clone(),
                        reporter.clone(),
                        config.node_name.clone(),
                    );
                    // Rolled back while it enforces: stopped, to be created again in audit.
                    governing.on_demotion(crate::profile_govern::stop_on_demotion(
                        cri,
                        (self.runtime_for)(config),
                        reporter.clone(),
                        config.node_name.clone(),
                    ));
                    governing
                });
                tracing::info!(
                    container = %id,
                    join_wait_ms = sys::ms(waited),
                    watch_ms = sys::ms(watching.elapsed()),
                    "container watched"
                );
                // The profile-applied event named the sock_addr hooks as the egress list's
                // enforcer when the monitor enforces: a container that did not get them
                // does not start.
                let egress_weak = watch.0.enforcement().iter().find(|r| {
                    Some(&r.rule) == egress_rule.as_ref()
                        && config.monitor.enforce
                        && r.enforcer != palisade_monitor::Enforcer::BpfSockAddr
                });
                if let Some(r) = egress_weak {
                    return Err(ShimError::Unenforced {
                        container: id.into(),
                        reason: format!(
                            "{}: the monitor gave it {}, not the sock_addr hooks",
                            r.rule, r.enforcer
                        ),
                    });
                }
                for r in watch.0.enforcement() {
                    tracing::info!(container = %id, rule = %r.rule, enforcer = r.enforcer.as_str(), note = ?r.note, "monitor rule");
                    if r.enforcer == palisade_monitor::Enforcer::AuditOnly {
                        degraded(&format!(
                            "{}: reported only: {}",
                            r.rule,
                            r.note.as_deref().unwrap_or("no enforcer")
                        ));
                    }
                }
                Ok(Some(watch))
            }
            Err(e) if needed && !hardened.degrade => Err(ShimError::Unenforced {
                container: id.into(),
                reason: format!("monitor: {e}"),
            }),
            Err(e) => {
                degraded(&format!("container not monitored: {e}"));
                Ok(None)
            }
        }
    }

    /// The shim's monitor, joined with the first container's configuration; `None` when it is
    /// disabled or could not start (reported once).
    fn monitor(&self, config: &Config) -> Option<&crate::monitoring::ShimMonitor> {
        join_monitor(&self.monitor, &self.reporter, config)
    }
}

/// The shim's monitor, joined once; `None` when disabled or unavailable (logged once).
pub(super) fn join_monitor<'a>(
    cell: &'a std::sync::OnceLock<Option<crate::monitoring::ShimMonitor>>,
    reporter: &crate::report::ReporterCell,
    config: &Config,
) -> Option<&'a crate::monitoring::ShimMonitor> {
    cell.get_or_init(|| {
        if !config.monitor.enabled {
            return None;
        }
        match crate::monitoring::ShimMonitor::open(
            &config.monitor,
            reporter_of(reporter, config),
            config.node_name.clone(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("monitor unavailable: {e}");
                None
            }
        }
    })
    .as_ref()
}
