//! Learned profiles through CRI: a palisade pod annotated `palisade.dev/profile: learn` has what
//! its container does (the capabilities it used too, where the node can observe them) recorded
//! into its workload's document in the shims' `[profile]
//! state_dir` with no event dropped, and the document exports a KubeArmorPolicy palisade accepts; a
//! malformed annotation refuses the pod. The enforced profile's check is `profile_enforce`.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use palisade_policy::Protocol;
use palisade_profile::persist::{self, Loaded};
use palisade_profile::{Recording, WorkloadId};

use super::{Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, poll, Ctx};

const PROFILE: &str = "palisade.dev/profile";
/// The port the learning container listens on and connects to.
const PORT: u16 = 8081;
/// How long the last merge may take after the pod is removed: a bound for a loaded machine.
const MERGE_WAIT: Duration = Duration::from_secs(30);

pub fn all() -> Vec<SecCheck> {
    let mut v = vec![
        sec_check!(
            "profile_learn_record_export",
            150,
            Scope::Only(PALISADE),
            profile_learn_record_export
        ),
        sec_check!(
            "profile_bad_annotation",
            60,
            Scope::Only(PALISADE),
            profile_bad_annotation
        ),
        sec_check!(
            "profile_enforce_refuses_departures",
            150,
            Scope::Only(PALISADE),
            super::profile_enforce::profile_enforce_refuses_departures
        ),
    ];
    v.extend(super::profile_canary::all());
    v
}

/// What the learning container does, each by a path the recording must show. The chown to
/// another owner needs CAP_CHOWN (in the default set), which the recording must show where the
/// node can observe capabilities.
const ACTIONS: &str = "cat /etc/hostname >/dev/null && mkdir -p /tmp/learn && echo x > /tmp/learn/out \
     && chown 1:1 /tmp/learn/out && (nc -l -p 8081 </dev/null >/dev/null 2>&1 &) && sleep 0.5 && echo hi | nc -w 2 127.0.0.1 8081; true";

/// Whether the recording holds every action of [`ACTIONS`] (and says which one it misses).
fn missing(r: &Recording) -> Option<String> {
    let wrote = r.files.iter().any(|(p, a)| {
        a.write && (p == "/tmp/learn/out" || "/tmp/learn/out".starts_with(p.as_str()))
    });
    let read_hostname = r.files.contains_key("/etc/hostname");
    let listens = r
        .listening
        .iter()
        .any(|p| p.port == PORT && p.protocol == Protocol::Tcp);
    let peer = r
        .peers
        .iter()
        .any(|p| p.port == PORT && p.net.addr() == std::net::IpAddr::from([127, 0, 0, 1]));
    let shell = r.executables.keys().any(|e| e.ends_with("/sh"));
    let calls = ["execve", "openat", "socket", "bind", "listen", "connect"]
        .iter()
        .find(|c| !r.syscalls.contains(**c));
    // Where the node has no capability hook the recording says so, and has none to show.
    let chown = !r.capabilities_observed() || r.capabilities.iter().any(|c| c.name == "chown");
    let checks = [
        (shell, "an exec of sh".to_string()),
        (chown, "the capability chown".into()),
        (read_hostname, "a read of /etc/hostname".into()),
        (wrote, "a write of /tmp/learn/out".into()),
        (listens, format!("tcp port {PORT} listening")),
        (peer, format!("the peer 127.0.0.1:{PORT}")),
        (
            calls.is_none(),
            format!("the system call {}", calls.copied().unwrap_or_default()),
        ),
    ];
    checks.into_iter().find(|(ok, _)| !ok).map(|(_, what)| what)
}

/// Learn: one container execs a shell that reads a file, writes one, listens and connects;
/// after the pod goes, its workload's document holds each of those, no dropped event and
/// nothing over a cap, and exports a KubeArmorPolicy that palisade's parser and validator
/// accept, without `sys_admin` (runc's init's, which the container does not hold).
pub async fn profile_learn_record_export(ctx: &Ctx) -> Result<Observed> {
    let Some(state) = ctx.settings.profile_state_dir.clone() else {
        bail!("the suite was not given --profile-state-dir (the shims' [profile] state_dir)");
    };
    let mut cfg = ctx.pod_config();
    cfg.annotations.insert(PROFILE.into(), "learn".into());
    let meta = cfg.metadata.clone().unwrap_or_default();
    let workload = WorkloadId::from_pod(&meta.namespace, &meta.name)?;
    let path = persist::path_in(&state, &workload);
    // A document of an earlier run of this check in the same state directory.
    let _ = std::fs::remove_file(&path);
    let pod = ctx.run_pod(&cfg).await?;
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("learner", crate::cri::SLEEPER), &cfg)
        .await?;
    let (out, err, code) = ctx.cri.exec_sync(&c, &["sh", "-c", ACTIONS], 20).await?;
    ensure(code == 0, || format!("actions exited {code}: {out}{err}"))?;
    // Removing the pod detaches the container: its last observations and the kernel's drop
    // count are merged then.
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    let mut last = String::from("no document");
    let found = poll(MERGE_WAIT, || {
        Ok(match persist::load(&state, &workload) {
            Loaded::Present(doc) => match missing(&doc.recording) {
                None => Some(doc),
                Some(what) => {
                    last = format!("the recording lacks {what}");
                    None
                }
            },
            Loaded::Absent => None,
            Loaded::Unusable(e) => {
                last = e.to_string();
                None
            }
        })
    })
    .await?;
    let Some(doc) = found else {
        bail!(
            "learned profile of {workload} ({}): {last} after {MERGE_WAIT:?}",
            path.display()
        );
    };
    let r = &doc.recording;
    ensure(r.drops == 0, || format!("{} events dropped", r.drops))?;
    // Nothing kept was over a cap. Observations the recording could not express (a socket of
    // a process gone before its executable was read, say) are counted and shown: they block
    // promotion, which `palisade profile promote` then says.
    let over: Vec<_> = r
        .overflow
        .iter()
        .filter(|(c, n)| **n > 0 && c.cap().is_some())
        .collect();
    ensure(over.is_empty(), || {
        format!("observations over a cap: {over:?}")
    })?;
    let unrecognized = r
        .overflow
        .get(&palisade_profile::Category::Unrecognized)
        .copied()
        .unwrap_or(0);
    let selector = [("app".to_string(), workload.name.clone())].into();
    let export =
        palisade_profile::export::kubearmor(r, &format!("{}-learned", workload.name), &selector)
            .context("KubeArmor export")?;
    let parsed = palisade_policy::parse_policies(export.text.as_bytes())
        .map_err(|d| anyhow::anyhow!("the exported policy does not parse: {d}"))?;
    ensure(!parsed.policies.is_empty(), || {
        "the export holds no policy".into()
    })?;
    let capabilities = if r.capabilities_observed() {
        let names: Vec<&str> = r.capabilities.iter().map(|c| c.name).collect();
        ensure(export.text.contains("matchCapabilities"), || {
            "capabilities recorded, the export has no matchCapabilities".into()
        })?;
        // runc's init holds every capability until it applies the container's sets: what it
        // used outside them is the runtime's, never the workload's to export.
        ensure(
            !names.contains(&"sys_admin") && !export.text.contains("sys_admin"),
            || {
                format!("sys_admin, which this container does not hold, is the workload's: capabilities {names:?}")
            },
        )?;
        let runtime: Vec<&str> = r.runtime_capabilities.iter().map(|c| c.name).collect();
        format!(
            "capabilities {} (the runtime's: {})",
            names.join(","),
            runtime.join(",")
        )
    } else {
        "capabilities not observable on this kernel".to_string()
    };
    Ok(Observed::blocked(format!(
        "{} observations, 0 dropped, {unrecognized} unrecognized {:?}: {} executables, {} files, {} peers, {} calls, {capabilities}; export {} lines",
        r.observations,
        r.unrecognized,
        r.executables.len(),
        r.files.len(),
        r.peers.len(),
        r.syscalls.len(),
        export.text.lines().count()
    )))
}

/// A pod whose `palisade.dev/profile` says something else than learn or off is refused, with
/// the annotation named.
pub async fn profile_bad_annotation(ctx: &Ctx) -> Result<Observed> {
    let mut cfg = ctx.pod_config();
    cfg.annotations.insert(PROFILE.into(), "enforce".into());
    match ctx.run_pod(&cfg).await {
        Ok(pod) => bail!("pod {pod} with {PROFILE}=enforce started"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure(msg.contains(PROFILE) && msg.contains("enforce"), || {
                format!("RunPodSandbox failed without naming {PROFILE}: {msg}")
            })?;
            Ok(Observed::blocked(format!(
                "refused: {:.90}",
                msg.find("pod annotation")
                    .map_or(msg.as_str(), |i| &msg[i..])
            )))
        }
    }
}
