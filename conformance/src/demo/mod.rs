//! `palisade-conformance demo`: what palisade does that runc does not, in about a minute of output.
//!
//! Five steps, each opened by one plain line: the same pod under runc and under palisade; the
//! same attack attempts in both, side by side; what palisade reported, as `palisade events`
//! prints it; a container judged compromised and killed (exit code 173 and its termination
//! message); the HTTP gate learning a service and then refusing an injection while forwarding
//! an ordinary request. Every palisade outcome is checked, not only shown: the demo fails when
//! palisade let an attempt through, reported nothing, or did not kill.

mod gate;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cri::{self, Cri, SLEEPER};
use crate::host;
use crate::security::attacks::PROBE;
use crate::security::eventlog::{field, EventLog};
use crate::security::policies::policy_pod_with;
use crate::security::{PALISADE, RUNC};
use crate::suite::{poll, stdout_of, Ctx, Settings};

/// The package-manager policy of the KubeArmor use cases, given to both pods (runc ignores it).
const PACKAGE_MANAGERS: &str =
    include_str!("../../../policy/tests/fixtures/block-package-managers.yaml");

/// One attempt: what the user reads, and the command run in each pod.
struct Attempt {
    what: &'static str,
    cmd: &'static [&'static str],
}

const ATTEMPTS: &[Attempt] = &[
    Attempt {
        what: "create a user namespace (unshare -U)",
        cmd: &["unshare", "-U", "true"],
    },
    Attempt {
        what: "open a raw socket (packet forging)",
        cmd: &[PROBE, "rawsock"],
    },
    Attempt {
        what: "use the kernel keyring (keyctl)",
        cmd: &[PROBE, "keyctl"],
    },
    Attempt {
        what: "trace another process (ptrace pid 1)",
        cmd: &[PROBE, "ptrace", "1"],
    },
    Attempt {
        what: "a 32-bit system call (int 0x80)",
        cmd: &[PROBE, "compat32"],
    },
    Attempt {
        what: "run a package manager (apt-get)",
        cmd: &["/usr/bin/apt-get", "tcpsock"],
    },
];

/// Runs the demo against the harness's containerd and removes its pods again.
pub async fn run(settings: &Settings) -> Result<()> {
    let cri = Cri::connect(&settings.cri_socket).await?;
    let tag = format!("d{}", std::process::id());
    let ctx_of = |handler: &str| {
        let dir = settings.work_dir.join(format!("demo-{handler}"));
        Ctx::new(&cri, settings, handler, "demo", dir, &tag)
    };
    let (runc, palisade) = (ctx_of(RUNC), ctx_of(PALISADE));
    for c in [&runc, &palisade] {
        std::fs::create_dir_all(&c.dir).with_context(|| format!("create {}", c.dir.display()))?;
    }
    let result = steps(&runc, &palisade).await;
    println!("\nRemoving the demo's pods.");
    let cleaned = (runc.cleanup().await, palisade.cleanup().await);
    result?;
    cleaned.0?;
    cleaned.1
}

async fn steps(runc: &Ctx, palisade: &Ctx) -> Result<()> {
    println!(
        "1/5  The same pod twice, from the same busybox image and the same pod spec: one with \
         runtime handler runc, one with palisade. Both carry a KubeArmor policy that blocks \
         apt and apt-get (runc ignores it)."
    );
    let r = attack_pod(runc).await?;
    let p = attack_pod(palisade).await?;
    for (ctx, (c, name)) in [(runc, &r), (palisade, &p)] {
        let pid = ctx.cri.container_pid(c).await?;
        let (_, exe, _) = host::expect_shim(pid, &ctx.handler)?;
        let shim = exe.file_name().map(|f| f.to_string_lossy().into_owned());
        println!(
            "     {:<9} pod {name}, container pid {pid}, shim {}",
            ctx.handler,
            shim.unwrap_or_default()
        );
    }
    let log = EventLog::mark(palisade)?;

    println!(
        "\n2/5  The same attack attempts in both pods: what an intruder with a shell in the \
         container tries first."
    );
    println!("     {:<38} {:<26} palisade", "attempt", "runc");
    for a in ATTEMPTS {
        let (_, rtext) = outcome(runc, &r.0, a.cmd).await?;
        let (pc, ptext) = outcome(palisade, &p.0, a.cmd).await?;
        println!("     {:<38} {rtext:<26} {ptext}", a.what);
        if pc == 0 {
            bail!("palisade let `{}` through: {ptext}", a.cmd.join(" "));
        }
    }

    println!(
        "\n3/5  What palisade reported for that pod: `palisade events --pod {}` (time, \
         severity, namespace/pod/container, rule, action, detail).",
        p.1
    );
    show_events(palisade, &log, &p.1).await?;

    println!(
        "\n4/5  A container palisade judges compromised is killed. This pod's annotation \
         palisade.dev/compromise makes one escape attempt (a new namespace) decisive."
    );
    compromise(palisade).await?;

    println!(
        "\n5/5  The HTTP gate (annotation palisade.dev/gate) in front of a busybox httpd: it \
         learns the service's ordinary requests, then blocks what breaks them."
    );
    gate::show(palisade).await
}

/// A pod with the package-manager policy and compromise restarts off (so that the attempts
/// are refused and reported, not cut short by a kill), and its sleeper: (container, pod name).
async fn attack_pod(ctx: &Ctx) -> Result<(String, String)> {
    let (pod, cfg) =
        policy_pod_with(ctx, PACKAGE_MANAGERS, &[("palisade.dev/compromise", "off")]).await?;
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("app", SLEEPER), &cfg)
        .await?;
    Ok((c, crate::cri::pod_name(&cfg).to_string()))
}

/// Runs `cmd` in `c`: its exit code and a short text of what happened.
async fn outcome(ctx: &Ctx, c: &str, cmd: &[&str]) -> Result<(i32, String)> {
    let (out, err, code) = ctx.cri.exec_sync(c, cmd, 20).await?;
    let last = err
        .lines()
        .chain(out.lines())
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let text = match code {
        0 => "allowed".to_string(),
        137 => "killed (SIGKILL)".to_string(),
        159 => "killed (SIGSYS)".to_string(),
        _ => format!("refused: {}", reason(last)),
    };
    Ok((code, text))
}

/// The error of a failed command's last line: `unshare: unshare(0x10000000): Operation not
/// permitted` gives `Operation not permitted`, the probe's `denied errno=1 EPERM` gives `EPERM`.
fn reason(line: &str) -> &str {
    if line.contains("denied errno=") {
        return line.rsplit(' ').next().unwrap_or(line);
    }
    line.rsplit(": ").next().unwrap_or(line)
}

/// Waits for the monitor's report of the package manager, then prints `palisade events`.
async fn show_events(ctx: &Ctx, log: &EventLog, pod: &str) -> Result<()> {
    let reported = log
        .wait_for(Duration::from_secs(15), |e| {
            field(e, "/workload/pod") == pod && field(e, "/rule/name").contains("package-manager")
        })
        .await?;
    if reported.is_none() {
        bail!("palisade reported no package manager for pod {pod}");
    }
    let cli = ctx
        .settings
        .cli
        .as_deref()
        .context("no --cli: the palisade CLI's path is unknown")?;
    let dir = ctx
        .settings
        .events_dir
        .as_deref()
        .context("no --events-dir: the event log's directory is unknown")?;
    let lines = palisade_events(cli, dir, pod)?;
    for l in &lines {
        println!("     {l}");
    }
    if lines.is_empty() {
        bail!("`palisade events --pod {pod}` printed nothing");
    }
    Ok(())
}

fn palisade_events(cli: &Path, dir: &Path, pod: &str) -> Result<Vec<String>> {
    let mut cmd = std::process::Command::new(cli);
    cmd.arg("events")
        .arg("--log-dir")
        .arg(dir)
        .args(["--pod", pod]);
    let out = stdout_of(&mut cmd, &format!("{} events", cli.display()))?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect())
}

/// A pod whose compromise policy makes `namespace-change` decisive; one attempt gets its
/// container killed with exit code 173 and palisade's termination message.
async fn compromise(ctx: &Ctx) -> Result<()> {
    let mut cfg = ctx.pod_config();
    cfg.annotations.insert(
        "palisade.dev/compromise".into(),
        "rules=namespace-change,backoff=60s".into(),
    );
    let pod = ctx.run_pod(&cfg).await?;
    let termination = ctx.dir.join("termination-log");
    std::fs::write(&termination, "").context("create the termination message file")?;
    let mut cc = ctx.container("web", SLEEPER);
    cc.mounts = vec![cri::bind_mount("/dev/termination-log", &termination, false)];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    println!("     in container web: {PROBE} unshare (a new namespace)");
    let _ = ctx.cri.exec_sync(&c, &[PROBE, "unshare"], 20).await;
    let st = ctx
        .cri
        .wait_exited(&c, Duration::from_secs(15))
        .await
        .context("the compromised container was not killed")?;
    let message = poll(Duration::from_secs(5), || {
        let m = std::fs::read_to_string(&termination).context("read termination message")?;
        Ok((!m.trim().is_empty()).then_some(m))
    })
    .await?
    .unwrap_or_default();
    println!(
        "     container web: {}, exit code {}",
        crate::cri::state_name(st.state),
        st.exit_code
    );
    println!("     termination message (what kubectl describe pod shows):");
    for line in message.trim().lines() {
        println!("       {line}");
    }
    if st.exit_code != 173 {
        bail!("the compromised container exited {}, not 173", st.exit_code);
    }
    Ok(())
}
