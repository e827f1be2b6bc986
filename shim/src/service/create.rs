//! Create, up to `runc create`: the runtime record, the container's identity and policies, the
//! hardened spec, the gate's request, the compromise judge's admission, the root filesystem,
//! and the init launched; then the attach step, the table entry and `TaskCreate`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::protobuf::MessageField;

use super::table::{finish_exit, record_exit, watch_oom, Container, Process, ProcessId};
use super::TaskService;
use crate::bundle::{
    mount_rootfs, pid_file, read_config, read_pid, unmount, write_config, RuntimeRecord, PLAN_FILE,
};
use crate::config::{Config, RuntimeOptions};
use crate::cri::CriContainer;
use crate::error::ShimError;
use crate::report::runtime::runtime_event;
use crate::runc::ContainerRuntime;
use crate::stats::Cgroups;
use crate::stdio::{PendingIo, ProcessIo, StdioPaths};
use crate::sys::{self, PidFd};

impl TaskService {
    /// The labels of the pod a container belongs to, from containerd's sandbox record.
    async fn pod_labels(&self, cri: &CriContainer) -> crate::policy::PodLabels {
        use crate::policy::PodLabels;
        let id = &cri.id;
        let sandbox = (!cri.is_sandbox())
            .then(|| cri.sandbox_id.clone())
            .flatten();
        let Some(sandbox) = sandbox else {
            return PodLabels::Known(Default::default());
        };
        let Some(address) = &self.containerd else {
            return PodLabels::Unknown("the shim was not told containerd's address".into());
        };
        match crate::labels::pod_labels(address, &self.namespace, &sandbox).await {
            Ok(l) => PodLabels::Known(l),
            Err(e) => {
                tracing::warn!(container = %id, "pod labels: {e}");
                PodLabels::Unknown(e.to_string())
            }
        }
    }

    pub async fn create(&self, req: CreateTaskRequest) -> Result<u32, ShimError> {
        let started = std::time::Instant::now();
        let id = req.id.clone();
        if self.table.lock().await.containers.contains_key(&id) {
            return Err(ShimError::ContainerExists(id));
        }
        let options = match req.options.as_ref() {
            Some(any) if !any.type_url.is_empty() => RuntimeOptions::from_any(any)?,
            _ => self.start_options.clone(),
        };
        let config: Config = options.load_config()?;
        let runc = (self.runtime_for)(&config);
        let bundle = PathBuf::from(&req.bundle);
        let record = RuntimeRecord {
            runc_binary: config.runc_binary.clone(),
            runc_root: config.runc_root.clone(),
            systemd_cgroup: config.systemd_cgroup,
        };
        record.write(&id, &bundle)?;

        let spec = read_config(&id, &bundle)?;
        // Who the container is, read once: policies, events, the monitor and the judge take it.
        let cri = CriContainer::of(&id, &spec);
        let candidates = crate::policy::candidates_for(&cri, &spec, config.policy_dir.as_deref())?;
        // A container governed by its workload's learned profile learns, or gets the profile
        // in the mode its workload's stage gives its pod.
        let governed = match crate::profile::requested(&id, &spec, &cri, &config.profile)? {
            Some(w) => Some(crate::profile_stage::governed(
                &config.profile.state_dir,
                w,
                &cri,
                crate::profile_stage::epoch_now(),
                &crate::profile_stage::rule_of(&config.profile),
            )?),
            None => None,
        };
        let (learn, applied) = match governed {
            Some(crate::profile_stage::Governed::Learn(w)) => (Some(w), None),
            Some(crate::profile_stage::Governed::Apply(a)) => (None, Some(a)),
            None => (None, None),
        };
        let candidates = match &applied {
            Some(a) => crate::policy::with_learned(
                candidates,
                &cri,
                crate::policy::LearnedPolicies {
                    policies: a.policies.clone(),
                    audit: a.mode != palisade_profile::Mode::Enforce,
                },
            ),
            None => candidates,
        };
        // A lookup over containerd's API on every Create otherwise: only a policy that selects
        // by labels needs them.
        let labels = match &candidates {
            Some(c) if c.need_labels() => self.pod_labels(&cri).await,
            _ => crate::policy::PodLabels::Unknown("not read: no policy selects by labels".into()),
        };
        let labelled = started.elapsed();
        let hardened = harden_bundle(
            &cri,
            &bundle,
            spec,
            &config,
            Selection {
                candidates,
                labels: &labels,
                governance: Governance { learn, applied },
            },
            NodeSide {
                reporter: &self.reporter(&config),
                bpf_lsm: || {
                    super::attach::join_monitor(&self.monitor, &self.reporter, &config)
                        .is_some_and(|m| m.bpf_lsm())
                },
            },
        )?;
        let (spec, wrapped) = (&hardened.spec, hardened.wrapped);
        // A pod's gate is set up with its sandbox container; bad annotations stop the pod here.
        let gate_request = if cri.is_sandbox() {
            crate::gate::requested(spec)?
        } else {
            None
        };
        let gate_container = gate_request.as_ref().and_then(|r| r.container.clone());
        // A container killed as compromised comes back only after its backoff (its create
        // waits for it when it is short), and not at all once quarantined.
        self.judge
            .hold(&cri, spec, &config, &self.reporter(&config))
            .await?;
        let admitted = self
            .judge
            .admit(&cri, spec, &config, &self.reporter(&config))?;
        let rootfs = mount_rootfs(&id, &bundle, &req.rootfs).await?;
        let prepared = started.elapsed();
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut runc_created = prepared;
        let launched = match self.launch_init(&id, &bundle, runc.as_ref(), &stdio).await {
            Ok((pid, io)) => {
                runc_created = started.elapsed();
                match self
                    .attach(&cri, pid, &bundle, &hardened, gate_request, &config)
                    .await
                {
                    Ok((watch, gate)) => Ok((pid, io, watch, gate)),
                    Err(e) => {
                        let _ = runc.delete(&id, true).await;
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let attached = started.elapsed();
        match launched {
            Ok((pid, io, watch, gate)) => {
                let cgroups = Cgroups::of_pid(pid)
                    .map_err(|e| tracing::warn!(container = %id, "cgroups not found, no stats or oom events: {e}"))
                    .ok();
                let mut init = Process::new(stdio.clone(), None);
                init.pid = pid;
                init.io = Some(io);
                let oom_watch = cgroups
                    .clone()
                    .map(|c| tokio::spawn(watch_oom(id.clone(), c, self.events.clone())));
                let init_pidfd = runc
                    .signals_init_directly()
                    .then(|| PidFd::open(pid))
                    .flatten();
                let container = Container {
                    id: id.clone(),
                    bundle: bundle.clone(),
                    rootfs,
                    runc,
                    processes: HashMap::from([(ProcessId::Init, init)]),
                    cgroups,
                    oom_watch,
                    gate,
                    wrapped,
                    watch,
                    judge: admitted.map(|a| {
                        a.announce(&self.reporter(&config));
                        a.judged
                    }),
                    gate_container,
                    init_pidfd,
                    exec_guard: hardened.exec_guard.clone(),
                };
                let early_exit = {
                    let mut table = self.table.lock().await;
                    table.containers.insert(id.clone(), container);
                    // Killed from outside between runc create and now: the reaper saw it first.
                    table.unknown_exits.remove(&pid).map(|(exit, _)| exit)
                };
                // Where a Create's time went, for docs/benchmarks.md.
                tracing::info!(
                    container = %id,
                    pid,
                    labels_ms = sys::ms(labelled),
                    prepare_ms = sys::ms(prepared - labelled),
                    runc_create_ms = sys::ms(runc_created - prepared),
                    attach_ms = sys::ms(attached - runc_created),
                    "container created"
                );
                let id_for_exit = id.clone();
                self.events
                    .send(TaskCreate {
                        container_id: id,
                        bundle: req.bundle,
                        rootfs: req.rootfs,
                        io: MessageField::some(TaskIO {
                            stdin: stdio.stdin,
                            stdout: stdio.stdout,
                            stderr: stdio.stderr,
                            terminal: stdio.terminal,
                            ..Default::default()
                        }),
                        checkpoint: req.checkpoint,
                        pid: pid as u32,
                        ..Default::default()
                    })
                    .await;
                if let Some(exit) = early_exit {
                    if let Some(work) =
                        record_exit(&self.table, &id_for_exit, &ProcessId::Init, exit).await
                    {
                        finish_exit(work, &self.events).await;
                    }
                }
                Ok(pid as u32)
            }
            Err(e) => {
                if let Some(r) = &rootfs {
                    unmount(r);
                }
                Err(e)
            }
        }
    }

    async fn launch_init(
        &self,
        id: &str,
        bundle: &Path,
        runc: &dyn ContainerRuntime,
        stdio: &StdioPaths,
    ) -> Result<(i32, ProcessIo), ShimError> {
        let mut pending = PendingIo::prepare(stdio).await?;
        let pid_path = pid_file(bundle, "init");
        let log = bundle.join("log.json");
        if let Err(e) = runc
            .create(id, bundle, pending.launch_opts(&pid_path, &log))
            .await
        {
            pending.abandon();
            let _ = runc.delete(id, true).await;
            return Err(e.into());
        }
        let io = match pending.finish().await {
            Ok(io) => io,
            Err(e) => {
                let _ = runc.delete(id, true).await;
                return Err(e.into());
            }
        };
        let pid = read_pid(&pid_path)?;
        Ok((pid, io))
    }
}

/// The spec runc runs, and whether palisade-init stands in front of its processes.
pub(super) struct Hardened {
    pub(super) spec: serde_json::Value,
    pub(super) wrapped: bool,
    /// What only the eBPF monitor can carry.
    pub(super) monitor: palisade_sandbox::MonitorRules,
    /// The configuration lets protection the node cannot give be reported instead.
    pub(super) degrade: bool,
    /// Per policy rule, the mechanism the sandbox chose (the monitor's own choice replaces
    /// its share once the container is watched: `monitoring::enforcement_record`).
    pub(super) rules: Vec<palisade_sandbox::RuleEnforcement>,
    /// The landlock ABI of this kernel, for the record.
    pub(super) landlock_abi: Option<u32>,
    /// palisade-init applies a landlock ruleset that handles the execute right: the monitor
    /// names landlock as the enforcer of an exec refused with EACCES.
    pub(super) landlock_exec: bool,
    /// The workload the container learns into, when it learns.
    pub(super) learn: Option<palisade_profile::WorkloadId>,
    /// The learned profile applied to the container, to judge its departures against.
    pub(super) govern: Option<crate::profile_govern::Target>,
    /// The learned profile's check of the container's CRI execs.
    pub(super) exec_guard: Option<std::sync::Arc<crate::profile_exec::ExecGuard>>,
}

/// The container's candidate policies, its pod's labels and its learned profile.
struct Selection<'a> {
    candidates: Option<crate::policy::Candidates>,
    labels: &'a crate::policy::PodLabels,
    governance: Governance,
}

/// What the container's workload's learned profile asks of it (`crate::profile_stage`).
struct Governance {
    learn: Option<palisade_profile::WorkloadId>,
    applied: Option<Box<crate::profile_stage::Applied>>,
}

/// What the node offers a container being hardened: where its events go, and whether the
/// node's monitor has BPF-LSM in force (asked only when a policy has file Block rules: the
/// answer waits for the monitor to be joined).
struct NodeSide<'a, F: FnOnce() -> bool> {
    reporter: &'a crate::report::Reporter,
    bpf_lsm: F,
}

/// Rewrites the bundle's config.json with palisade's default hardening and the container's
/// policies (`spec` is the file as read), or refuses the container.
fn harden_bundle(
    cri: &CriContainer,
    bundle: &Path,
    mut spec: serde_json::Value,
    config: &Config,
    selection: Selection<'_>,
    node: NodeSide<'_, impl FnOnce() -> bool>,
) -> Result<Hardened, ShimError> {
    let Selection {
        candidates,
        labels,
        governance,
    } = selection;
    let NodeSide { reporter, bpf_lsm } = node;
    let id = cri.id.as_str();
    let report = match palisade_sandbox::harden_spec(id, &mut spec, &config.hardening) {
        Ok(report) => report,
        Err(e) => {
            if let Some(event) = crate::contract::refusal_event(&config.node_name, id, &spec, &e) {
                reporter.report(event);
            }
            return Err(e.into());
        }
    };
    let compiled = match candidates {
        Some(c) => c.select(labels, config.audit())?,
        None => None,
    };
    let mut kernel =
        palisade_sandbox::KernelFeatures::probe().map_err(|e| ShimError::Unenforced {
            container: id.to_string(),
            reason: format!("kernel features: {e}"),
        })?;
    // Only a policy with file Block rules waits for the node's monitor to tell.
    let file_blocks = compiled.as_ref().is_some_and(|c| {
        c.file
            .iter()
            .any(|r| r.rule.meta.action == palisade_policy::Action::Block)
    });
    kernel.bpf_lsm = file_blocks && bpf_lsm();
    // Enforced, the learned system calls narrow the hardened filter (a call the workload
    // never made while learning gets EPERM) before the policies' rules go in, so that
    // `enforce` plans on the final filter: on landlock abi < 3 it leaves truncate to a filter
    // that refuses truncate(2).
    let narrowed = match &governance.applied {
        Some(applied) => crate::profile_stage::narrow_seccomp(id, applied, &mut spec)?,
        None => None,
    };
    let enforcement = palisade_sandbox::enforce(
        id,
        &mut spec,
        compiled.as_ref(),
        config.strict.as_ref(),
        &kernel,
    )?;
    let mut exec_guard = None;
    if let Some(applied) = &governance.applied {
        for e in &applied.events {
            reporter.report(
                runtime_event(
                    &config.node_name,
                    cri,
                    "profile-stage",
                    &crate::profile_stage::event_line(&applied.workload, e),
                )
                .with_evidence("transition", serde_json::json!(e)),
            );
        }
        let guard = crate::profile_exec::ExecGuard::new(
            cri,
            applied,
            reporter.clone(),
            config.node_name.clone(),
        );
        let mut message = applied.describe();
        message.push_str(&guard.describe());
        if let Some(n) = &narrowed {
            message.push_str(&format!(
                "; seccomp narrowed to {} system calls, {} more refused with EPERM",
                n.allowed.len(),
                n.refused.len()
            ));
        }
        // The egress allow-list's enforcer: the monitor's sock_addr hooks when it enforces;
        // attach refuses the container if the monitor cannot give it that.
        let egress = crate::profile_stage::egress_list(
            &applied.workload,
            applied.mode,
            &applied.recording,
        )
        .map(|(list, _)| {
            serde_json::json!({
                "rule": list.name,
                "peers": list.peers.len(),
                "enforcer": if config.monitor.enforce { "bpf-sock-addr" } else { "audit-only" },
            })
        });
        reporter.report(
            runtime_event(&config.node_name, cri, "profile-applied", &message)
                .with_evidence("notes", serde_json::json!(applied.notes))
                .with_evidence("egress", serde_json::json!(egress))
                .with_evidence(
                    "seccomp_refused",
                    serde_json::json!(narrowed.as_ref().map(|n| &n.refused)),
                ),
        );
        tracing::info!(container = %id, workload = %applied.workload, mode = ?applied.mode, "learned profile applied");
        exec_guard = Some(std::sync::Arc::new(guard));
    }
    let wrapped = match &enforcement.plan {
        Some(plan) => {
            let plan_path = bundle.join(PLAN_FILE);
            let plan_json = serde_json::to_vec(plan).map_err(|source| ShimError::Json {
                context: format!("container {id}: landlock plan"),
                source,
            })?;
            std::fs::write(&plan_path, plan_json).map_err(ShimError::io(format!(
                "container {id}: write landlock plan"
            )))?;
            palisade_sandbox::install::install_init(
                id,
                &mut spec,
                &config.init_binary_path(),
                &plan_path,
            )?;
            true
        }
        None => false,
    };
    for r in &enforcement.rules {
        tracing::info!(container = %id, rule = %r.rule, target = %r.target, enforcer = ?r.enforcer, note = ?r.note, "policy rule");
    }
    for line in &enforcement.applied {
        tracing::debug!(container = %id, "enforcement: {line}");
    }
    for line in &enforcement.warnings {
        reporter.report(runtime_event(
            &config.node_name,
            cri,
            "enforcement-degraded",
            line,
        ));
    }
    for line in &report.applied {
        tracing::debug!(container = %id, "hardening: {line}");
    }
    for event in crate::contract::decision_events(&config.node_name, id, &spec, &report) {
        reporter.report(event);
    }
    write_config(id, bundle, &spec)?;
    tracing::info!(container = %id, applied = report.applied.len(), relaxed = report.relaxed.len(), wrapped, "hardened");
    let degrade = config.strict.as_ref().is_some_and(|s| s.allow_degraded);
    Ok(Hardened {
        spec,
        wrapped,
        monitor: enforcement.monitor,
        degrade,
        rules: enforcement.rules,
        landlock_abi: kernel.landlock_abi,
        landlock_exec: wrapped
            && crate::monitoring::landlock_execute(enforcement.plan.as_ref(), kernel.landlock_abi),
        learn: governance.learn,
        exec_guard,
        govern: governance.applied.map(|a| crate::profile_govern::Target {
            workload: a.workload,
            mode: a.mode,
            recording: a.recording,
            state_dir: config.profile.state_dir.clone(),
            rule: crate::profile_stage::rule_of(&config.profile),
        }),
    })
}
