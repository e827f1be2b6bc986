//! Recall through CRI, as the kubelet drives it: an attempt the hardening refused is still
//! reported (a `block` naming what refused it), a package manager copied under another name is
//! still one (judged by its content), and a credential file read is reported.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::eventlog::{field, summary, EventLog};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub fn all() -> Vec<SecCheck> {
    vec![sec_check!(
        monitor_refused_renamed_and_credentials,
        90,
        Scope::Only(PALISADE)
    )]
}

/// Enforcers that refuse a raw socket: the dropped `CAP_NET_RAW` (the kernel's permission
/// check) or the seccomp filter.
const RAW_SOCKET_ENFORCERS: &[&str] = &["capabilities", "seccomp"];

fn tags(e: &Value) -> Vec<&str> {
    e.pointer("/rule/tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The first `rule` event that `ours` (the watched container's) finds in `log` within 5 s, or
/// an error saying `what` was not reported, with the pod's events.
async fn reported(
    log: &EventLog,
    ours: impl Fn(&Value) -> bool,
    pod_name: &str,
    rule: &str,
    what: &str,
) -> Result<Value> {
    log.expect(
        Duration::from_secs(5),
        pod_name,
        |e| ours(e) && field(e, "/rule/name") == rule,
        || format!("{what} was not reported"),
    )
    .await
}

async fn exec(ctx: &Ctx, c: &str, cmd: &[&str]) -> Result<(i32, String)> {
    let (out, err, code) = ctx.cri.exec_sync(c, cmd, 20).await?;
    Ok((code, format!("{out}{err}")))
}

/// In one container of the test image: a raw socket (refused, since palisade drops
/// `CAP_NET_RAW`) must arrive as a `raw-socket` event with action `block`, the tag `blocked`
/// and the enforcer that refused it; apt-get copied to `/tmp/x` and run must arrive as a
/// `package-manager-in-container` naming `/tmp/x` and the content of apt-get, ncat copied to
/// `/tmp/n` and run a `network-tool-in-container` naming `/tmp/n` and the content of ncat, while
/// a copy of `palisade-probe` (also the content of `/usr/bin/apt` in this image, so no content
/// is named) raises nothing; `cat /etc/shadow` must arrive as a `credential-file-read`, `cat
/// /etc/passwd` must not.
pub async fn monitor_refused_renamed_and_credentials(ctx: &Ctx) -> Result<Observed> {
    let (_pod, c, cfg) = ctx.pod_with_sleeper().await?;
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let ours = |e: &Value| {
        field(e, "/source") == "monitor"
            && field(e, "/workload/pod") == pod_name
            && field(e, "/workload/container_id") == c
    };
    let mut seen = Vec::new();

    // A refused raw socket.
    let log = EventLog::mark(ctx)?;
    let (code, out) = exec(ctx, &c, &["/usr/bin/palisade-probe", "rawsock"]).await?;
    ensure(code != 0 && out.contains("denied"), || {
        format!("the raw socket was not refused: exit {code}, {out:?}")
    })?;
    let what = format!("the refused raw socket ({})", out.trim());
    let ev = reported(&log, ours, &pod_name, "raw-socket", &what).await?;
    let (action, enforcer) = (field(&ev, "/action"), field(&ev, "/enforcer"));
    ensure(
        action == "block"
            && RAW_SOCKET_ENFORCERS.contains(&enforcer)
            && tags(&ev).contains(&"blocked"),
        || {
            format!(
                "raw-socket event with action {action:?}, enforcer {enforcer:?}, tags {:?}; want \
                 block by one of {RAW_SOCKET_ENFORCERS:?}, tagged blocked",
                tags(&ev)
            )
        },
    )?;
    seen.push(format!(
        "raw socket refused ({}): block by {enforcer}",
        out.trim()
    ));

    // A renamed package manager, and a renamed ordinary program.
    let log = EventLog::mark(ctx)?;
    for cmd in [
        &["cp", "/usr/bin/palisade-probe", "/tmp/y"][..],
        &["/tmp/y", "tcpsock"],
        &["cp", "/usr/bin/apt-get", "/tmp/x"],
        &["/tmp/x", "tcpsock"],
        &["cp", "/usr/bin/ncat", "/tmp/n"],
        &["/tmp/n", "tcpsock"],
    ] {
        let (code, out) = exec(ctx, &c, cmd).await?;
        ensure(code == 0, || format!("{cmd:?} exited {code}: {out:?}"))?;
    }
    for (rule, copy, of, kind) in [
        (
            "package-manager-in-container",
            "/tmp/x",
            "apt-get",
            "package manager",
        ),
        (
            "network-tool-in-container",
            "/tmp/n",
            "ncat",
            "network tool",
        ),
    ] {
        let what = format!("the copy of {of} at {copy} ran and");
        let ev = reported(&log, ours, &pod_name, rule, &what).await?;
        let (path, message) = (field(&ev, "/evidence/path"), field(&ev, "/rule/message"));
        ensure(
            path == copy && message.contains(&format!("the content of {of}")),
            || format!("{kind} event for {path:?}: {message:?}"),
        )?;
        seen.push(format!("{path} reported as {message:?}"));
    }
    let pm = |e: &Value| ours(e) && field(e, "/rule/name") == "package-manager-in-container";
    let all_pm = log.matching(pm)?;
    ensure(all_pm.len() == 1, || {
        format!(
            "package manager events (the copy of palisade-probe is none): {}",
            summary(&all_pm)
        )
    })?;

    // A credential file read, and its twin.
    let log = EventLog::mark(ctx)?;
    for file in ["/etc/passwd", "/etc/shadow"] {
        let (code, out) = exec(ctx, &c, &["cat", file]).await?;
        ensure(code == 0, || format!("cat {file} exited {code}: {out:?}"))?;
    }
    let ev = reported(
        &log,
        ours,
        &pod_name,
        "credential-file-read",
        "cat /etc/shadow",
    )
    .await?;
    let path = field(&ev, "/evidence/path");
    ensure(path == "/etc/shadow", || {
        format!("credential-file-read for {path:?}")
    })?;
    let others = log.matching(|e| ours(e) && field(e, "/rule/name") != "credential-file-read")?;
    ensure(others.is_empty(), || {
        format!("events besides the shadow read: {}", summary(&others))
    })?;
    seen.push("cat /etc/shadow reported, cat /etc/passwd not".into());
    Ok(Observed::blocked(seen.join("; ")))
}
