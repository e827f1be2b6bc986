//! KubeArmor use cases through CRI: the policy goes into the pod annotation `palisade.dev/policy`
//! as users write it (the fixtures' YAML, put in the test pod's namespace).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::PodSandboxConfig;

use super::attacks::{probe, PROBE};
use super::eventlog::{field, summary, EventLog};
use super::{events_log, Observed, Scope, SecCheck, PALISADE};
use crate::cri::{self, SLEEPER};
use crate::sec_check;
use crate::suite::{ensure, Ctx};

pub const POLICY_ANNOTATION: &str = "palisade.dev/policy";

/// A copy of the probe at another path (another inode): the binary a fromSource rule does not
/// name.
const OTHER: &str = "/usr/bin/apt";

const SERVICE_ACCOUNT: &str =
    include_str!("../../../policy/tests/fixtures/block-service-account-token.yaml");
const FILE_INTEGRITY: &str =
    include_str!("../../../policy/tests/fixtures/file-integrity-system-paths.yaml");
const PACKAGE_MANAGERS: &str =
    include_str!("../../../policy/tests/fixtures/block-package-managers.yaml");
const NETWORK_FROM_SOURCE: &str =
    include_str!("../../../policy/tests/fixtures/network-specific-processes.yaml");

/// The process allow-list use case, in the form of the `process-allow-list.yaml` fixture, for
/// the binaries of the test image: the shell (busybox) and the probe; nothing else runs.
const PROCESS_ALLOW_LIST: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: allow-specific-process
  namespace: dvwa
spec:
  action: Allow
  file:
    matchDirectories:
    - dir: /
      recursive: true
  process:
    matchPaths:
    - path: /bin/sh
    - path: /usr/bin/palisade-probe
  severity: 1
";

/// Raw sockets refused for every process (the part of the network fixture palisade carries).
const RAW_BLOCK: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-block-raw
  namespace: shop
spec:
  severity: 6
  network:
    matchProtocols:
    - protocol: raw
  action: Block
";

pub fn all() -> Vec<SecCheck> {
    let only = Scope::Only(PALISADE);
    vec![
        sec_check!("policy_" + service_account_token, 60, only),
        sec_check!("policy_" + file_integrity, 60, only),
        sec_check!("policy_" + process_allow_list, 60, only),
        sec_check!("policy_" + block_apt, 60, only),
        sec_check!("policy_" + raw_socket_block, 60, only),
        sec_check!("policy_" + sockets_from_source, 60, only),
        sec_check!("policy_" + selects_by_pod_labels, 60, only),
    ]
}

/// Blocks reading /etc/hostname in pods labelled `app: web, tier in (front)`.
const BY_LABELS: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: web-no-hostname
spec:
  selector:
    matchLabels:
      app: web
    matchExpressions:
    - key: tier
      operator: In
      values: [front]
  file:
    matchPaths:
    - path: /etc/hostname
  action: Block
";

/// The policy selects by the pod's labels, which the shim reads from containerd's sandbox
/// record: the labelled pod is denied, a pod with another label runs unhindered.
async fn selects_by_pod_labels(ctx: &Ctx) -> Result<Observed> {
    let mut outcomes = Vec::new();
    for (app, denied) in [("web", true), ("db", false)] {
        let mut cfg = ctx.pod_config();
        let ns = namespace(&cfg);
        cfg.labels.insert("app".into(), app.into());
        cfg.labels.insert("tier".into(), "front".into());
        cfg.annotations.insert(
            POLICY_ANNOTATION.into(),
            BY_LABELS.replace(
                "name: web-no-hostname",
                &format!("name: web-no-hostname\n  namespace: {ns}"),
            ),
        );
        let (_, c) = ctx.run_sleeper_pod(&cfg, "app").await?;
        let (out, err, code) = sh(ctx, &c, "cat /etc/hostname").await?;
        // A Block on one file masks it: the read finds nothing (or fails).
        let refused = code != 0 || out.trim().is_empty();
        ensure(refused == denied, || {
            format!("app={app}: cat /etc/hostname exited {code} ({out:?} {err:?}), denied expected: {denied}")
        })?;
        outcomes.push(format!(
            "app={app}: {}",
            if refused {
                "hostname hidden"
            } else {
                "hostname read"
            }
        ));
    }
    Ok(Observed::blocked(outcomes.join(", ")))
}

/// A fixture made to select the test pod: its namespace becomes the pod's, and its label
/// selector goes (it names the labels of KubeArmor's demo apps; `policy_selects_by_pod_labels`
/// shows selection by the pod's own labels).
pub fn adapt(yaml: &str, namespace: &str) -> String {
    let mut out = String::new();
    let mut in_selector: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = in_selector {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            in_selector = None;
        }
        let t = line.trim_start();
        if t.starts_with("selector:") {
            in_selector = Some(indent);
            continue;
        }
        if indent == 2 && t.starts_with("namespace:") {
            out += &format!("  namespace: {namespace}\n");
            continue;
        }
        out += line;
        out.push('\n');
    }
    out
}

/// A pod carrying `policy` (adapted to its namespace) in its annotation.
pub async fn policy_pod(ctx: &Ctx, policy: &str) -> Result<(String, PodSandboxConfig)> {
    policy_pod_with(ctx, policy, &[]).await
}

/// The namespace the pod of `cfg` is created in.
fn namespace(cfg: &PodSandboxConfig) -> String {
    cfg.metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default()
}

/// As [`policy_pod`], with more pod annotations.
pub async fn policy_pod_with(
    ctx: &Ctx,
    policy: &str,
    annotations: &[(&str, &str)],
) -> Result<(String, PodSandboxConfig)> {
    let mut cfg = ctx.pod_config();
    let ns = namespace(&cfg);
    cfg.annotations
        .insert(POLICY_ANNOTATION.into(), adapt(policy, &ns));
    for (k, v) in annotations {
        cfg.annotations.insert((*k).into(), (*v).into());
    }
    let id = ctx.run_pod(&cfg).await?;
    Ok((id, cfg))
}

/// A pod carrying `policy` with the sleeper running as its container `app`: the container's
/// id and the pod's name.
pub async fn policy_sleeper(ctx: &Ctx, policy: &str) -> Result<(String, String)> {
    let (pod, cfg) = policy_pod(ctx, policy).await?;
    let c = ctx
        .cri
        .run_container(&pod, &ctx.container("app", SLEEPER), &cfg)
        .await?;
    Ok((c, crate::cri::pod_name(&cfg).to_string()))
}

/// Runs a shell snippet, returning (stdout, stderr, exit code).
async fn sh(ctx: &Ctx, c: &str, script: &str) -> Result<(String, String, i32)> {
    ctx.cri.exec_sync(c, &["sh", "-c", script], 20).await
}

async fn service_account_token(ctx: &Ctx) -> Result<Observed> {
    let src = ctx.dir.join("serviceaccount");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    std::fs::write(src.join("token"), "eyJhbGciOiJSUzI1NiJ9.secret-token\n")?;
    std::fs::write(src.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n")?;
    let log = EventLog::mark(ctx)?;
    let (pod, cfg) = policy_pod(ctx, SERVICE_ACCOUNT).await?;
    let mut cc = ctx.container("app", SLEEPER);
    cc.mounts = vec![cri::bind_mount(
        "/run/secrets/kubernetes.io/serviceaccount",
        &src,
        true,
    )];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let dir = "/run/secrets/kubernetes.io/serviceaccount";
    let (out, err, code) = sh(ctx, &c, &format!("cat {dir}/token")).await?;
    ensure(!out.contains("secret-token"), || {
        format!("token readable: {out:?}")
    })?;
    let (listing, _, _) = sh(ctx, &c, &format!("ls -A {dir}")).await?;
    ensure(listing.trim().is_empty(), || {
        format!("{dir} lists {listing:?}, want an empty (masked) directory")
    })?;
    // The rest of the container is untouched.
    let passwd = ctx.cri.sh(&c, "cat /etc/passwd").await?;
    ensure(passwd.starts_with("root:"), || {
        format!("/etc/passwd reads {passwd:?}")
    })?;
    let how = if code == 0 {
        "reads empty".to_string()
    } else {
        format!("exit {code}: {}", err.trim())
    };
    // The container's start recorded the enforcer in force: BPF-LSM where the kernel lists
    // it among its LSMs (the open then fails with EACCES), the mask elsewhere.
    let bpf_lsm = palisade_host::bpf_lsm_listed();
    let want = if bpf_lsm {
        "bpf-lsm"
    } else {
        "bind-mount-mask"
    };
    let pod_name = cfg
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let record = log
        .expect(
            Duration::from_secs(10),
            &pod_name,
            |e| {
                field(e, "/workload/pod") == pod_name
                    && field(e, "/rule/name") == "enforcement-record"
            },
            || format!("no enforcement-record event for pod {pod_name}"),
        )
        .await?;
    let got = field(&record, "/evidence/rules/0/enforcer");
    ensure(got == want, || {
        format!("enforcement-record says {got:?} for the token rule, want {want:?}")
    })?;
    if bpf_lsm {
        ensure(code != 0 && err.contains("Permission denied"), || {
            format!("cat token under bpf-lsm: exit {code}, {err:?}, want Permission denied")
        })?;
    }
    let dir_state = if bpf_lsm { "refused" } else { "masked" };
    Ok(Observed::blocked(format!(
        "(token {how}, directory {dir_state}; /etc/passwd readable; recorded enforcer {got})"
    )))
}

async fn file_integrity(ctx: &Ctx) -> Result<Observed> {
    let (c, _) = policy_sleeper(ctx, FILE_INTEGRITY).await?;
    // The read-only bind mount refuses a write with EROFS. Where BPF-LSM is in force, the
    // kernel may refuse it first with EACCES (BPF-LSM or landlock, depending on the kernel's
    // order of checks): either is a refusal, anything else is not.
    let bpf_lsm = palisade_host::bpf_lsm_listed();
    let errno = if bpf_lsm { "EROFS or EACCES" } else { "EROFS" };
    let mut denied = Vec::new();
    for target in ["/bin/evil", "/usr/bin/evil", "/usr/bin/apt"] {
        let (_, err, code) = sh(ctx, &c, &format!("echo x >> {target}")).await?;
        ensure(code != 0, || format!("write to {target} succeeded"))?;
        let refused =
            err.contains("Read-only file system") || (bpf_lsm && err.contains("Permission denied"));
        ensure(refused, || {
            format!("write to {target}: {err:?}, want {errno}")
        })?;
        denied.push(target);
    }
    let (_, _, code) = sh(ctx, &c, "rm -f /bin/ls").await?;
    let (ls, _, _) = sh(ctx, &c, "ls /bin/ls").await?;
    ensure(code != 0 && ls.trim() == "/bin/ls", || {
        format!("rm /bin/ls: exit {code}, ls after: {ls:?}")
    })?;
    // Executing from the protected directories and writing elsewhere still work.
    let out = ctx.cri.sh(&c, "/bin/echo exec-ok").await?;
    ensure(out == "exec-ok\n", || format!("/bin/echo: {out:?}"))?;
    let p = probe(ctx, &c, PROBE, &["tcpsock"]).await?;
    ensure(!p.blocked, || format!("{PROBE} tcpsock: {}", p.detail))?;
    let out = ctx.cri.sh(&c, "echo ok > /tmp/f && cat /tmp/f").await?;
    ensure(out == "ok\n", || format!("write in /tmp: {out:?}"))?;
    Ok(Observed::blocked(format!(
        "(writes refused, {errno}: {}; exec and /tmp work)",
        denied.join(" ")
    )))
}

async fn process_allow_list(ctx: &Ctx) -> Result<Observed> {
    let (c, _) = policy_sleeper(ctx, PROCESS_ALLOW_LIST).await?;
    // Listed: the shell and the probe.
    let out = ctx.cri.sh(&c, "echo shell-ok").await?;
    ensure(out == "shell-ok\n", || format!("sh: {out:?}"))?;
    let p = probe(ctx, &c, PROBE, &["tcpsock"]).await?;
    ensure(!p.blocked, || format!("listed {PROBE}: {}", p.detail))?;
    // A copy of the same program under a name not listed does not run.
    let (out, err, code) = sh(ctx, &c, "/usr/bin/apt tcpsock").await?;
    ensure(code == 126 && err.contains("Permission denied"), || {
        format!("unlisted /usr/bin/apt: exit {code} stdout {out:?} stderr {err:?}, want 126 EACCES")
    })?;
    // Busybox applets are links to the listed shell's file: landlock's execute right is on
    // the inode, so they run too.
    let out = ctx.cri.sh(&c, "/bin/ls -d /").await?;
    ensure(out == "/\n", || format!("/bin/ls (busybox): {out:?}"))?;
    Ok(Observed::blocked(
        "(unlisted /usr/bin/apt EACCES; sh, its busybox applets and the probe run)",
    ))
}

/// Event lines of the violation log that name `pod` and `binary` with action `kill` or
/// `block` (the exec stopped by the monitor).
fn stop_events(log: &std::path::Path, pod: &str, binary: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            (e["action"] == "kill" || e["action"] == "block")
                && e["workload"]["pod"] == pod
                && e.to_string().contains(binary)
        })
        .collect()
}

async fn block_apt(ctx: &Ctx) -> Result<Observed> {
    let log = events_log(ctx)?;
    let (c, pod_name) = policy_sleeper(ctx, PACKAGE_MANAGERS).await?;
    let mut codes = Vec::new();
    for bin in ["/usr/bin/apt", "/usr/bin/apt-get"] {
        let (out, err, code) = ctx.cri.exec_sync(&c, &[bin, "tcpsock"], 20).await?;
        ensure(code != 0 && !out.contains("allowed"), || {
            format!("{bin}: exit {code} stdout {out:?} stderr {err:?}, want it stopped")
        })?;
        codes.push((bin, code, format!("{out}{err}")));
    }
    // The same program under its own name still runs.
    let p = probe(ctx, &c, PROBE, &["tcpsock"]).await?;
    ensure(!p.blocked, || format!("{PROBE}: {}", p.detail))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let apt = stop_events(&log, &pod_name, "/usr/bin/apt\"");
        let apt_get = stop_events(&log, &pod_name, "/usr/bin/apt-get");
        if !apt.is_empty() && !apt_get.is_empty() {
            break [apt, apt_get];
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no kill or block events for /usr/bin/apt and /usr/bin/apt-get of pod {pod_name} in {} (apt: {}, apt-get: {})",
                log.display(),
                apt.len(),
                apt_get.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Refused with EPERM where BPF-LSM runs (event action=block enforcer=bpf-lsm), else killed
    // at exec (137, action=kill enforcer=bpf-exec-kill): each exit must match its event.
    let mut seen = Vec::new();
    for ((bin, code, output), events) in codes.iter().zip(&found) {
        let e = &events[0];
        let action = e["action"].as_str().unwrap_or("?");
        let enforcer = e["enforcer"].as_str().unwrap_or("?");
        let held = match (action, enforcer) {
            ("kill", "bpf-exec-kill") => *code == 137,
            ("block", "bpf-lsm") => *code != 137,
            _ => false,
        };
        ensure(held, || {
            format!(
                "{bin}: exit {code} ({output:?}) with event action={action} enforcer={enforcer}; \
                 want 137 with kill/bpf-exec-kill, or a failed exec with block/bpf-lsm"
            )
        })?;
        seen.push(format!(
            "{bin} exit {code}, action={action} enforcer={enforcer}"
        ));
    }
    Ok(Observed::blocked(format!("({})", seen.join("; "))))
}

async fn raw_socket_block(ctx: &Ctx) -> Result<Observed> {
    let (c, _) = policy_sleeper(ctx, RAW_BLOCK).await?;
    let raw = probe(ctx, &c, PROBE, &["rawsock"]).await?;
    ensure(raw.blocked, || format!("raw socket: {}", raw.detail))?;
    let tcp = probe(ctx, &c, PROBE, &["tcpsock"]).await?;
    ensure(!tcp.blocked, || format!("tcp socket: {}", tcp.detail))?;
    Ok(Observed::blocked(format!(
        "(raw socket {}; tcp socket allowed)",
        raw.detail
    )))
}

/// KubeArmor's "limit TCP/UDP/raw sockets to named binaries": the fixture as written, with the
/// probe in nginx's place (the test image has no nginx). The probe opens TCP and UDP sockets; a
/// copy of it at another path (`/usr/bin/apt`, another inode) is refused both at socket
/// creation, with the refusals in the violation log; nobody opens a raw socket.
async fn sockets_from_source(ctx: &Ctx) -> Result<Observed> {
    let log = EventLog::mark(ctx)?;
    let policy = NETWORK_FROM_SOURCE.replace("/usr/sbin/nginx", PROBE);
    let (c, pod_name) = policy_sleeper(ctx, &policy).await?;
    for op in ["tcpsock", "udpsock"] {
        let p = probe(ctx, &c, PROBE, &[op]).await?;
        ensure(!p.blocked, || format!("listed {PROBE} {op}: {}", p.detail))?;
        let p = probe(ctx, &c, OTHER, &[op]).await?;
        ensure(p.blocked && p.detail.contains("EPERM"), || {
            format!("unlisted {OTHER} {op}: {}, want EPERM", p.detail)
        })?;
    }
    for bin in [PROBE, OTHER] {
        let p = probe(ctx, &c, bin, &["rawsock"]).await?;
        ensure(p.blocked, || format!("{bin} rawsock: {}", p.detail))?;
    }
    let refusal = |class: &'static str| {
        let pod_name = pod_name.clone();
        move |e: &serde_json::Value| {
            field(e, "/workload/pod") == pod_name
                && field(e, "/action") == "block"
                && field(e, "/enforcer") == "bpf-sock-create"
                && field(e, "/rule/name").contains("ksp-nginx-network-only")
                && field(e, "/process/binary") == OTHER
                && field(e, "/evidence/class") == class
        }
    };
    for class in ["tcp", "udp"] {
        log.expect(Duration::from_secs(10), &pod_name, refusal(class), || {
            format!("no bpf-sock-create block event for {OTHER}'s {class} socket of pod {pod_name}")
        })
        .await?;
    }
    let listed = log.matching(|e| {
        field(e, "/workload/pod") == pod_name
            && field(e, "/enforcer") == "bpf-sock-create"
            && field(e, "/process/binary") == PROBE
    })?;
    ensure(listed.is_empty(), || {
        format!(
            "the listed probe's sockets were refused: {}",
            summary(&listed)
        )
    })?;
    Ok(Observed::blocked(format!(
        "({PROBE} opens tcp and udp; {OTHER} EPERM for both, events enforcer=bpf-sock-create; raw EPERM for both)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapt_sets_namespace_and_drops_selector() {
        let out = adapt(SERVICE_ACCOUNT, "ns-x");
        assert!(out.contains("  namespace: ns-x\n"), "{out}");
        assert!(!out.contains("selector"), "{out}");
        assert!(!out.contains("app: wordpress"), "{out}");
        assert!(out.contains("  file:\n    matchDirectories:"), "{out}");
        assert!(out.contains("  action:\n    Block"), "{out}");
    }
}
