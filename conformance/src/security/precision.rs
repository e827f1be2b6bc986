//! Ordinary pods through CRI, as the kubelet sends them: nothing is raised for them and nothing
//! kills them. A busybox container as uid 1000 with group 0 (no `runAsGroup`: busybox calls
//! `setgid(0)` at every start), `ip addr` (netlink `SOCK_RAW` sockets) and a server writing its
//! pid file in its own tree below `/usr/local`, the way Apache httpd does.

use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::Int64Value;

use super::eventlog::{field, summary, EventLog};
use super::{security, Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub fn all() -> Vec<SecCheck> {
    vec![
        sec_check!(
            precision_ordinary_pod_raises_nothing,
            90,
            Scope::CompareWith(PALISADE)
        ),
        sec_check!(precision_detection_annotation, 60, Scope::Only(PALISADE)),
    ]
}

/// What each container runs at start before it sleeps: busybox applets that set ids
/// (`id`, `top`) and list interfaces (`ip addr`).
const USER_START: &str = "id >/dev/null; top -bn1 >/dev/null; ip addr >/dev/null 2>&1; \
                          trap 'exit 0' TERM; sleep 3600 & wait";
/// A server's start as root: its pid file in its own tree below /usr/local, then its
/// interfaces.
const SERVER_START: &str = "mkdir -p /usr/local/apache2/logs && \
                            echo $$ > /usr/local/apache2/logs/httpd.pid && \
                            ip addr >/dev/null 2>&1; trap 'exit 0' TERM; sleep 3600 & wait";

/// How long the pod is watched after its containers run: the default compromise policy's
/// counting needs three counted detections within 60 s, the busybox kill of the issue came
/// within a second of the start.
const WATCHED_FOR: Duration = Duration::from_secs(5);

/// A pod with a uid 1000 busybox container (group 0) and a root "server" writing its pid file
/// below `/usr/local`: under palisade no event of any source names the pod, and both
/// containers still run after `WATCHED_FOR`.
pub async fn precision_ordinary_pod_raises_nothing(ctx: &Ctx) -> Result<Observed> {
    let log = EventLog::mark(ctx)?;
    let (pod, cfg) = ctx.pod().await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let mut user = ctx.container("user", &["sh", "-c", USER_START]);
    security(&mut user).run_as_user = Some(Int64Value { value: 1000 });
    let user = ctx.cri.run_container(&pod, &user, &cfg).await?;
    let server = ctx.container("server", &["sh", "-c", SERVER_START]);
    let server = ctx.cri.run_container(&pod, &server, &cfg).await?;
    // `cat`, not a shell: a shell exec'd into a container is a detection of its own
    let mut pid_file = String::new();
    for _ in 0..20 {
        let (out, _, code) = ctx
            .cri
            .exec_sync(&server, &["cat", "/usr/local/apache2/logs/httpd.pid"], 10)
            .await?;
        if code == 0 && !out.trim().is_empty() {
            pid_file = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure(!pid_file.is_empty(), || {
        "the server wrote no pid file within 5 s".to_string()
    })?;
    tokio::time::sleep(WATCHED_FOR).await;
    for (name, id) in [("user", &user), ("server", &server)] {
        let st = ctx.cri.container_status(id).await?;
        ensure(crate::cri::state_name(st.state) == "RUNNING", || {
            format!(
                "container {name} is {} (exit code {}, reason {:?}, message {:?})",
                crate::cri::state_name(st.state),
                st.exit_code,
                st.reason,
                st.message
            )
        })?;
    }
    if ctx.handler != PALISADE {
        return Ok(Observed::allowed("both containers run"));
    }
    let raised = log.matching(|e| field(e, "/workload/pod") == pod_name)?;
    ensure(raised.is_empty(), || {
        format!(
            "{} events for an ordinary pod: {}",
            raised.len(),
            summary(&raised)
        )
    })?;
    Ok(Observed::blocked(format!(
        "(no event, no kill within {}s: busybox as uid 1000/gid 0, ip addr, a pid file below /usr/local)",
        WATCHED_FOR.as_secs()
    )))
}

/// The pod annotation `palisade.dev/detection`: a valid one lets the container run, a
/// malformed one refuses it with the annotation and the reason.
pub async fn precision_detection_annotation(ctx: &Ctx) -> Result<Observed> {
    const ANNOTATION: &str = "palisade.dev/detection";
    let mut good = ctx.pod_config();
    good.annotations
        .insert(ANNOTATION.into(), "learning-window=120s".into());
    let pod = ctx.run_pod(&good).await?;
    ctx.cri
        .run_container(&pod, &ctx.container("web", crate::cri::SLEEPER), &good)
        .await?;
    let mut bad = ctx.pod_config();
    bad.annotations
        .insert(ANNOTATION.into(), "learning-window=5m".into());
    // The pod's sandbox container carries the annotation too: the pod stops there, or at
    // its container.
    let err = match ctx.run_pod(&bad).await {
        Err(e) => format!("{e:#}"),
        Ok(pod) => match ctx
            .cri
            .run_container(&pod, &ctx.container("web", crate::cri::SLEEPER), &bad)
            .await
        {
            Ok(c) => anyhow::bail!("container {c} ran with a malformed {ANNOTATION}"),
            Err(e) => format!("{e:#}"),
        },
    };
    ensure(
        err.contains(ANNOTATION)
            && err.contains("5m")
            && err.contains("is not a number of seconds"),
        || format!("refused without naming the annotation and the value: {err}"),
    )?;
    Ok(Observed::blocked(
        "(learning-window=120s runs; learning-window=5m refused at RunPodSandbox or StartContainer, naming it)",
    ))
}
