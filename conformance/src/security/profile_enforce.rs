//! A learned profile enforced through CRI, the scenario of issue 17: a real service (an HTTP
//! server, `nc -ll -e` running a CGI-like shell script per connection that reads a file, writes
//! below its own directory and calls a peer pod) learns under HTTP traffic from the host, its
//! three exports are made by the CLI and checked (`profile_exports`), it is pinned at enforce through the real `palisade` CLI, and a new pod of the workload gets the
//! profile at Create; the same traffic still passes, and the attack steps are made from a CRI
//! exec (what `kubectl exec` gives an attacker) and through a hole in the service (a command
//! injection in its CGI, taken only under enforce). What this host enforces (no BPF-LSM: files and
//! executions through landlock; the raw socket and the unshare fail with EPERM, from the
//! learned socket allow-list or the hardening, not told apart here) is asserted refused, what it does not is asserted to go through; every step the
//! monitor sees is asserted reported as a departure of the workload, and the pinned workload's
//! held rollback (a `profile-stage` event) carries departures as evidence. The table of what is
//! and is not refused here is in docs/profiles.md ("Enforced through CRI").

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_cri::v1::{Mount, PodSandboxConfig};
use palisade_profile::persist::{self, Loaded};
use palisade_profile::{Departure, Observation, WorkloadId};
use serde_json::Value;

use super::eventlog::{field, get, pod_ip, EventLog};
use super::profile_hole::through_service;
use super::Observed;
use crate::suite::{ensure, poll, Ctx};

const PROFILE: &str = "palisade.dev/profile";
/// How long the last merge may take after the pod is removed: a bound for a loaded machine.
const MERGE_WAIT: Duration = Duration::from_secs(30);
/// How long an event may take to reach the log (the departures are merged every 10 s).
const EVENT_WAIT: Duration = Duration::from_secs(40);
/// The service's port, in the pod's network.
const HTTP: u16 = 8080;
/// The peer the service calls, and another port of the same peer it never called.
const PEER_PORT: u16 = 9000;
const NEW_PEER_PORT: u16 = 9001;
/// The peer's UDP port the service sends a datagram to without connecting (busybox `tftp`
/// sends its request with `sendto` on an unconnected socket: checked with strace), which only
/// the sock_addr hooks see; nothing answers, so `tftp` is still waiting after a second
/// (`timeout` ends it: exit 143), where a refused send fails at once (exit 1).
const UDP_PEER_PORT: u16 = 9002;
/// Requests while learning and again under enforce: seconds of traffic.
const REQUESTS: usize = 8;
/// The CGI's mark in a good answer.
const DONE: &str = "palisade-cgi done";
/// The capabilities the service itself uses (`nc`, the shell, `cat`, the CGI's writes to
/// world-writable files as root): none. The kernel's `capability:cap_capable` tracepoint, read
/// per task during this check's run on this host (2026-12-07, docs/profiles.md
/// "Capabilities"), showed granted checks by `runc:[2:INIT]` only (setuid, setgid, setpcap,
/// dac_override, dac_read_search, mknod), none by the service's processes: the learned export
/// must hold no capability (before the runtime's were told apart it held
/// `chown,dac_override,setgid,setpcap,setuid`).
const SERVICE_CAPABILITIES: &[&str] = &[];

/// The service's request handler, a CGI-like shell script run by `nc -ll -e` for each
/// connection: it reads the request, reads its data and /etc/hostname, writes the query below
/// its own directory, to a file that exists and to a new one per request (`req-N`, N from the
/// query), calls the peer (PEER is replaced) and answers with the peer's exit
/// status. Not busybox `httpd`: it opens its files and runs its CGIs by paths relative to its
/// home, from children gone before the recorder reads their working directory, so its
/// recording holds unrecognized observations and cannot be promoted (docs/profiles.md).
///
/// Its hole: a query `run=BASE64` runs the decoded command in a shell and answers `run N`, its
/// exit status (a command injection, the foothold of an attacker without `kubectl exec`; the
/// traffic never takes it, so it is never learned).
const HANDLER: &str = "#!/bin/sh
cr=$(printf '\\r')
read -r request
while read -r h && [ \"$h\" != \"$cr\" ] && [ -n \"$h\" ]; do :; done
set -- $request
printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n'
case \"$2\" in
*'?run='*)
  sh -c \"$(echo \"${2#*run=}\" | base64 -d)\" >/dev/null 2>&1
  echo \"run $?\"
  exit 0;;
esac
cat /www/data/seed /etc/hostname >/dev/null || echo 'read failed'
echo \"$2\" > /www/data/last || echo 'write failed'
echo \"$2\" > \"/www/data/req-${2##*=}\" || echo 'create failed'
echo hello | nc -w 2 PEER >/dev/null 2>&1
echo \"peer $?\"
timeout 1 tftp -g -r x -l /dev/null UDP_TO >/dev/null 2>&1
echo \"udp $?\"
echo 'palisade-cgi done'
";

/// How an attack step gets into the container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A CRI exec of the step's `argv` (what `kubectl exec` gives).
    CriExec,
    /// The service's hole: `argv[0]` is a shell command the CGI runs (`run=`).
    Service,
}

/// What an attacker tries under the enforced profile, each with what this host does about it.
struct Attack {
    name: &'static str,
    via: Via,
    argv: &'static [&'static str],
    /// Whether this host refuses it: the step's command must fail.
    refused: bool,
    /// The departure the step must leave in the workload's document; `None` where the
    /// monitor does not see the step (landlock refused an exec before any event).
    departs: Option<fn(&Observation) -> bool>,
}

fn shell_exec(o: &Observation) -> bool {
    matches!(o, Observation::Exec { path, parent: None } if path == "/bin/sh")
}

fn probe_exec(o: &Observation) -> bool {
    matches!(o, Observation::Exec { path, parent: None } if path == PROBE)
}

/// The command of [`BUSYBOX_SHELL`], run by a CRI exec with `busybox` resolved.
fn busybox_shell_command(o: &Observation) -> bool {
    matches!(o, Observation::RuntimeCommand { argv } if argv.first().is_some_and(|p| p == "/bin/busybox") && argv[1..] == BUSYBOX_SHELL[1..])
}

/// A shell through the exec probe's executable: busybox, which the runtime started while
/// learning, but never with this command.
const BUSYBOX_SHELL: &[&str] = &["busybox", "sh", "-c", "true"];

/// The exec of [`PROBE`] the service's shell asked for (the refused execve's event): the
/// shell the CGI started as `sh`.
fn probe_exec_from_shell(o: &Observation) -> bool {
    matches!(o, Observation::Exec { path, parent: Some(p) } if path == PROBE && p == "/bin/sh")
}

/// The CGI, as `nc -e` executes it.
const CGI: &str = "/www/cgi-bin/svc";

/// A binary in the image the service never ran.
const PROBE: &str = "/usr/bin/palisade-probe";
/// The exec probe made while the workload learns (what a kubelet's exec probe does): the
/// runtime starts `busybox` with this command, and under enforce a CRI exec of this command
/// alone stays allowed (not `busybox sh`: the same file, another command).
const EXEC_PROBE: &[&str] = &["busybox", "cat", "/www/data/seed"];
/// What the shim's Exec reports for a CRI exec it refuses under the enforced profile.
const EXEC_RULE: &str = "profile-exec";
const EXEC_ENFORCER: &str = "shim-exec";

fn etc_write(o: &Observation) -> bool {
    matches!(o, Observation::Open { path, write: true } if path == "/etc/palisade-attack")
}

fn raw_socket(o: &Observation) -> bool {
    matches!(o, Observation::Socket { protocol, .. } if *protocol == palisade_policy::Protocol::Raw)
}

fn unshare_call(o: &Observation) -> bool {
    matches!(o, Observation::Syscall { name } if name == "unshare")
}

/// The attack steps. The CRI execs first: the interactive shell itself (`sh` started by the
/// runtime, which the service never did: its handler's interpreter is started by nc), a shell
/// through the exec probe's `busybox`, and a binary never run, all refused by the shim's Exec.
/// Then the steps through the service's hole (the CGI's `run=`): the service's own shell
/// (busybox, which the service runs: allowed) tries each.
fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "an interactive shell (sh started by a CRI exec)",
            via: Via::CriExec,
            argv: &["sh", "-c", "true"],
            // Refused by the shim's Exec: the runtime never started /bin/sh while learning.
            refused: true,
            departs: Some(shell_exec),
        },
        Attack {
            name: "a shell through the exec probe's busybox (a CRI exec)",
            via: Via::CriExec,
            argv: BUSYBOX_SHELL,
            // Refused by the shim's Exec: no CRI exec ran this command while learning.
            refused: true,
            departs: Some(busybox_shell_command),
        },
        Attack {
            name: "a binary the service never ran (a CRI exec)",
            via: Via::CriExec,
            argv: &[PROBE, "getpid"],
            // Refused by the shim's Exec before landlock sees it, and reported.
            refused: true,
            departs: Some(probe_exec),
        },
        Attack {
            name: "a write below /etc (through the service)",
            via: Via::Service,
            argv: &["echo x > /etc/palisade-attack"],
            refused: true,
            departs: Some(etc_write),
        },
        Attack {
            name: "a binary the service never ran (from the service's shell)",
            via: Via::Service,
            argv: &["/usr/bin/palisade-probe getpid"],
            // landlock refuses the exec (126) before the monitor's exec hook sees it; the
            // syscall hooks report the refused execve, by the shell's busybox.
            refused: true,
            departs: Some(probe_exec_from_shell),
        },
        Attack {
            name: "a raw socket (busybox ping, through the service)",
            via: Via::Service,
            argv: &["ping -c 1 -W 1 127.0.0.1"],
            refused: true,
            departs: Some(raw_socket),
        },
        Attack {
            name: "an unshare (through the service)",
            via: Via::Service,
            argv: &["unshare -U -r true"],
            refused: true,
            departs: Some(unshare_call),
        },
    ]
}

/// The host directory mounted at /www: the handler (calling `peer`) and its data.
fn write_www(dir: &Path, peer: SocketAddr) -> Result<PathBuf> {
    let www = dir.join("profile-www");
    let _ = std::fs::remove_dir_all(&www);
    for d in ["cgi-bin", "data"] {
        std::fs::create_dir_all(www.join(d)).with_context(|| format!("create {d} in www"))?;
    }
    std::fs::write(www.join("data/seed"), "seed\n")?;
    // The file the CGI writes exists from the start (a volume's file): landlock grants only
    // paths present when a container starts.
    std::fs::write(www.join("data/last"), "")?;
    let cgi = www.join("cgi-bin/svc");
    let udp = format!("{} {UDP_PEER_PORT}", peer.ip());
    let peer = format!("{} {}", peer.ip(), peer.port());
    std::fs::write(&cgi, HANDLER.replace("UDP_TO", &udp).replace("PEER", &peer))?;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755))?;
    for p in [www.join("data"), www.join("data/last")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(www)
}

/// A pod of the workload with its service; returns the pod, its name, the container and the
/// service's address.
async fn service_pod(
    ctx: &Ctx,
    governed: &str,
    www: &Path,
) -> Result<(String, String, String, SocketAddr)> {
    let mut cfg: PodSandboxConfig = ctx.pod_config();
    cfg.annotations.insert(PROFILE.into(), governed.into());
    let name = crate::cri::pod_name(&cfg).to_string();
    let pod = ctx.run_pod(&cfg).await?;
    let port = HTTP.to_string();
    let mut cc = ctx.container(
        "svc",
        &["nc", "-ll", "-p", port.as_str(), "-e", "/www/cgi-bin/svc"],
    );
    cc.mounts = vec![Mount {
        container_path: "/www".into(),
        host_path: www.display().to_string(),
        readonly: false,
        ..Default::default()
    }];
    let c = ctx
        .cri
        .run_container(&pod, &cc, &cfg)
        .await
        .with_context(|| format!("the service's container in pod {name} did not start"))?;
    let addr = SocketAddr::new(pod_ip(ctx, &pod).await?, HTTP);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match get(addr, "/ready").await {
            Ok(r) if r.status == 200 => break,
            other if tokio::time::Instant::now() > deadline => {
                let status = ctx.cri.container_status(&c).await.ok();
                bail!(
                    "service of pod {name} at {addr} not answering after 20s: {other:?}; container {:?}",
                    status.map(|s| (crate::cri::state_name(s.state), s.exit_code, s.reason, s.message))
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok((pod, name, c, addr))
}

/// The service's traffic, each answer checked.
async fn traffic(addr: SocketAddr, phase: &str) -> Result<()> {
    for n in 0..REQUESTS {
        let r = get(addr, &format!("/cgi-bin/svc?order={n}")).await?;
        ensure(
            r.status == 200
                && r.body.contains(DONE)
                && r.body.contains("peer 0")
                && r.body.contains("udp 143"),
            || {
                format!(
                    "{phase}: GET /cgi-bin/svc?order={n}: status {}, body {:.200?}",
                    r.status, r.body
                )
            },
        )?;
        ensure(!r.body.contains("failed"), || {
            format!("{phase}: the CGI said {:.200?}", r.body)
        })?;
    }
    Ok(())
}

pub async fn profile_enforce_refuses_departures(ctx: &Ctx) -> Result<Observed> {
    let Some(state) = ctx.settings.profile_state_dir.clone() else {
        bail!("the suite was not given --profile-state-dir (the shims' [profile] state_dir)");
    };
    // The peer: another pod (not governed) answering on two ports.
    let peer_cfg = ctx.pod_config();
    let peer_pod = ctx.run_pod(&peer_cfg).await?;
    let listen = format!(
        "nc -ll -p {PEER_PORT} -e /bin/true & nc -ll -p {NEW_PEER_PORT} -e /bin/true & wait"
    );
    ctx.cri
        .run_container(
            &peer_pod,
            &ctx.container("peer", &["sh", "-c", listen.as_str()]),
            &peer_cfg,
        )
        .await?;
    let peer = SocketAddr::new(pod_ip(ctx, &peer_pod).await?, PEER_PORT);
    let www = write_www(&ctx.dir, peer)?;

    let naming = ctx.pod_config();
    let meta = naming.metadata.clone().unwrap_or_default();
    let workload = WorkloadId::from_pod(&meta.namespace, &meta.name)?;
    let governed = format!("learn,workload={}", workload.name);
    // A document of an earlier run of this check in the same state directory.
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));

    // Learn, under traffic from the host, and one CRI exec of a command.
    let (pod, _, c1, addr) = service_pod(ctx, &governed, &www).await?;
    traffic(addr, "learning").await?;
    learned_exec(ctx, &c1, "learning").await?;
    ctx.cri.remove_pod(&pod).await?;
    ctx.untrack(&pod);
    let learned_write = |r: &palisade_profile::Recording| {
        r.files
            .iter()
            .any(|(p, a)| a.write && "/www/data/last".starts_with(p.as_str()))
    };
    let doc = poll(MERGE_WAIT, || {
        Ok(match persist::load(&state, &workload) {
            Loaded::Present(doc) if learned_write(&doc.recording) => Some(doc),
            _ => None,
        })
    })
    .await?
    .with_context(|| {
        format!("no learned profile of {workload} with the CGI's write after {MERGE_WAIT:?}")
    })?;
    let r = &doc.recording;
    ensure(r.peers.iter().any(|p| p.port == PEER_PORT), || {
        format!(
            "the learned profile has no peer on port {PEER_PORT}: {:?}",
            r.peers
        )
    })?;
    // The unconnected UDP sends were learned, from the sock_addr hooks' reports.
    ensure(
        r.peers.iter().any(|p| {
            p.protocol == palisade_policy::Protocol::Udp
                && p.net.contains(&palisade_profile::Cidr::host(peer.ip()))
                && p.port == UDP_PEER_PORT
        }),
        || {
            format!(
                "the learned profile has no udp peer {}:{UDP_PEER_PORT}: {:?}",
                peer.ip(),
                r.peers
            )
        },
    )?;
    if let Err(reasons) = r.promotable() {
        bail!(
            "the learned profile cannot be promoted: {}",
            reasons.join("; ")
        );
    }
    // The CRI exec's command, whole: the exec probe's, with busybox resolved, and no other.
    let probe_command: Vec<String> = std::iter::once("/bin/busybox".to_string())
        .chain(EXEC_PROBE[1..].iter().map(|w| w.to_string()))
        .collect();
    ensure(
        r.runtime_commands
            .as_ref()
            .is_some_and(|c| c.len() == 1 && c.contains(&probe_command)),
        || {
            format!(
                "the learned CRI exec commands are {:?}, want only {probe_command:?}",
                r.runtime_commands
            )
        },
    )?;
    let learned = format!(
        "{} observations: {} executables, {} files, {} peers, CRI exec command {:?}",
        r.observations,
        r.executables.len(),
        r.files.len(),
        r.peers.len(),
        probe_command.join(" ")
    );

    // The three exports, by the real CLI, each checked.
    let exports = super::profile_exports::exports_validate(ctx, &state, &workload, HTTP, peer)?;
    // The capabilities exported are the service's own, none of the runtime's.
    let capabilities = super::profile_exports::capabilities_exported(ctx, r, SERVICE_CAPABILITIES)?;
    let exports = format!("{exports}; {capabilities}");
    let udp_export = super::profile_exports::netpol_udp_peer(
        ctx,
        &state,
        &workload,
        SocketAddr::new(peer.ip(), UDP_PEER_PORT),
    )?;

    // Enforce, by the operator's command through the real CLI.
    pin_enforce(ctx, &state, &workload)?;

    // The files the service created while learning are gone: the enforced pod creates them.
    for n in 0..REQUESTS {
        let _ = std::fs::remove_file(www.join(format!("data/req-{n}")));
    }
    // A new pod of the workload: the profile is applied at Create, the traffic still passes.
    let log = EventLog::mark(ctx)?;
    let (pod2, pod2_name, c2, addr2) = service_pod(ctx, &governed, &www).await?;
    let applied = log
        .wait_for(EVENT_WAIT, |e| {
            field(e, "/workload/pod") == pod2_name && field(e, "/rule/name") == "profile-applied"
        })
        .await?
        .with_context(|| format!("no profile-applied event for {pod2_name}"))?;
    let message = field(&applied, "/rule/message").to_string();
    ensure(message.contains("applied in enforce"), || {
        format!("profile-applied says {message:?}")
    })?;
    traffic(addr2, "enforced").await?;
    ensure(www.join("data/req-0").exists(), || {
        "enforced: the CGI's new file req-0 was not created".into()
    })?;
    let creations =
        super::profile_canary::pod_event(&log, &pod2_name, "profile-creations", |_| true).await?;
    let creations = field(&creations, "/rule/message").to_string();
    ensure(creations.contains("beneath /www/data"), || {
        format!("profile-creations says {creations:?}")
    })?;
    // The command learned from a CRI exec: what the runtime does to start it (runc's init,
    // palisade-init) is no departure, and neither is the command.
    learned_exec(ctx, &c2, "enforced").await?;

    // The attack steps, by CRI exec and through the service; every outcome is gathered before
    // judging, so that a failure names them all.
    let mut outcomes = Vec::new();
    for a in attacks() {
        let code = match a.via {
            Via::CriExec => match ctx.cri.exec_sync(&c2, a.argv, 20).await {
                Ok((out, err, code)) => (code, format!("{out}{err}")),
                // The exec itself refused (the runtime could not start it).
                Err(e) => (-1, format!("{e:#}")),
            },
            Via::Service => (through_service(addr2, a.argv[0]).await?, String::new()),
        };
        outcomes.push((a, code));
    }
    let present = through_service(addr2, "test -e /etc/palisade-attack").await?;
    let wrong: Vec<String> = outcomes
        .iter()
        .filter(|(a, (code, _))| a.refused != (*code != 0))
        .map(|(a, (code, text))| format!("{}: exit {code}: {:.200}", a.name, text.trim()))
        .collect();
    // A new peer: the peer's other port, from the CGI's own tool through its hole. The egress
    // allow-list holds the learned peer only: refused in the kernel and reported with the
    // peer, the list and its enforcer (the learned peer kept answering in the traffic above:
    // "peer 0").
    let new_peer = format!("echo hi | nc -w 2 {} {NEW_PEER_PORT}", peer.ip());
    let new_peer_code = through_service(addr2, &new_peer).await?;
    let egress_enforcer = applied
        .pointer("/evidence/egress/enforcer")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let refused_peer = SocketAddr::new(peer.ip(), NEW_PEER_PORT).to_string();
    let egress = log
        .wait_for(EVENT_WAIT, |e| {
            field(e, "/workload/pod") == pod2_name
                && field(e, "/rule/name").ends_with(": egress")
                && field(e, "/evidence/peer") == refused_peer
        })
        .await?;
    ensure(
        new_peer_code != 0
            && egress_enforcer == "bpf-sock-addr"
            && egress
                .as_ref()
                .is_some_and(|e| field(e, "/enforcer") == "bpf-sock-addr"),
        || {
            format!(
                "enforced: the new peer {refused_peer}: exit {new_peer_code} (want refused), profile-applied egress enforcer {egress_enforcer:?}, egress event {egress:?}"
            )
        },
    )?;

    // Reported: the departures reach the workload's document and, pinned, a held rollback
    // carrying them as evidence.
    let departures = poll(MERGE_WAIT, || {
        Ok(match persist::load(&state, &workload) {
            Loaded::Present(doc) if all_reported(&doc.stage.departures, peer.ip()) => {
                Some(doc.stage.departures)
            }
            _ => None,
        })
    })
    .await?;
    let have = |departures: &[Departure]| -> Vec<String> {
        departures
            .iter()
            .map(|d| format!("{:?} refused={}", d.observation, d.refused))
            .collect()
    };
    let Some(departures) = departures else {
        let now = match persist::load(&state, &workload) {
            Loaded::Present(d) => have(&d.stage.departures),
            _ => vec!["no document".into()],
        };
        let codes: Vec<String> = outcomes
            .iter()
            .map(|(a, (code, _))| format!("{} exit {code}", a.name))
            .collect();
        let missing = missing_departures(&state, &workload, peer.ip());
        bail!("enforced: not every attack step is a departure of {workload}: missing {missing:?}; departures {now:?}; outcomes {codes:?}, new peer exit {new_peer_code}; wrong outcomes: {wrong:?}");
    };
    // The learned unconnected UDP sends passed under enforce (each request said "udp 143")
    // and left no departure.
    let udp_departures: Vec<String> = departures
        .iter()
        .filter(|d| matches!(d.observation, Observation::Connect { address, port, .. } if address == peer.ip() && port == UDP_PEER_PORT))
        .map(|d| format!("{:?} refused={}", d.observation, d.refused))
        .collect();
    ensure(udp_departures.is_empty(), || {
        format!(
            "enforced: the learned udp peer {}:{UDP_PEER_PORT} departed: {udp_departures:?}",
            peer.ip()
        )
    })?;
    // The CRI execs the shim refused are reported by it, naming the binary and its enforcer;
    // their departures are refused ones.
    for binary in ["/bin/sh", "/bin/busybox", PROBE] {
        log.expect(
            EVENT_WAIT,
            &pod2_name,
            |e| {
                field(e, "/workload/pod") == pod2_name
                    && field(e, "/rule/name") == EXEC_RULE
                    && field(e, "/enforcer") == EXEC_ENFORCER
                    && field(e, "/action") == "block"
                    && field(e, "/evidence/path") == binary
            },
            || format!("no {EXEC_RULE} event ({EXEC_ENFORCER}, block) for {binary}"),
        )
        .await?;
    }
    let exec_refused = departures
        .iter()
        .filter(|d| d.refused && (shell_exec(&d.observation) || probe_exec(&d.observation)))
        .count();
    let command_refused = departures
        .iter()
        .any(|d| d.refused && busybox_shell_command(&d.observation));
    ensure(exec_refused == 2 && command_refused, || {
        format!(
            "enforced: the refused CRI execs are not all refused departures: {:?}",
            have(&departures)
        )
    })?;
    // The probe a shell in the container started, refused by landlock (126) before any exec
    // event: the syscall hooks report the refused execve, naming landlock, and it is a refused
    // departure.
    log.expect(
        EVENT_WAIT,
        &pod2_name,
        |e| {
            field(e, "/workload/pod") == pod2_name
                && field(e, "/rule/name") == "exec-refused"
                && field(e, "/enforcer") == "landlock"
                && field(e, "/action") == "block"
                && field(e, "/evidence/path") == PROBE
        },
        || format!("no exec-refused event (landlock, block) for {PROBE} run from a shell"),
    )
    .await?;
    ensure(
        departures
            .iter()
            .any(|d| d.refused && probe_exec_from_shell(&d.observation)),
        || {
            format!(
                "enforced: the probe run from a shell is not a refused departure: {:?}",
                have(&departures)
            )
        },
    )?;
    // The service's own shell, started through its hole, runs (the same busybox file as the
    // handler's interpreter; the monitor does not refuse an exec by its parent) and is
    // reported, named after the CGI that started it; no exec in the service is taken for one
    // the runtime started (before a forked subshell's child named no parent: `base64`).
    let service_shell = departures.iter().any(|d| {
        !d.refused
            && matches!(&d.observation, Observation::Exec { path, parent: Some(p) } if path == "/bin/sh" && p == CGI)
    });
    let by_runtime: Vec<String> = have(&departures)
        .into_iter()
        .zip(&departures)
        .filter(|(_, d)| matches!(&d.observation, Observation::Exec { path, parent: None } if path != "/bin/sh" && path != PROBE))
        .map(|(text, _)| text)
        .collect();
    ensure(service_shell && by_runtime.is_empty(), || {
        format!(
            "enforced: the service's shell reported (not refused) from {CGI}: {service_shell}; execs taken for the runtime's: {by_runtime:?}; departures {:?}",
            have(&departures)
        )
    })?;
    let runtime: Vec<String> = have(&departures)
        .into_iter()
        .zip(&departures)
        .filter(|(_, d)| runtime_work(&d.observation))
        .map(|(text, _)| text)
        .collect();
    ensure(runtime.is_empty(), || {
        format!("enforced: the runtime's work in a CRI exec (or the learned command) counted as departures: {runtime:?}")
    })?;
    ensure(wrong.is_empty() && present != 0, || {
        format!(
            "enforced: outcomes other than this host's enforcement: {wrong:?}; /etc/palisade-attack present: {}; departures {:?}",
            present == 0,
            have(&departures)
        )
    })?;
    let held = log
        .wait_for(EVENT_WAIT, |e| {
            field(e, "/workload/pod") == pod2_name
                && field(e, "/rule/name") == "profile-stage"
                && field(e, "/rule/message").contains("rollback held")
        })
        .await?
        .with_context(|| format!("no profile-stage event (rollback held) for {pod2_name}"))?;
    let evidence = held
        .pointer("/evidence/transition/evidence")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    ctx.cri.remove_pod(&pod2).await?;
    ctx.untrack(&pod2);
    ctx.cri.remove_pod(&peer_pod).await?;
    ctx.untrack(&peer_pod);
    let _ = std::fs::remove_file(persist::path_in(&state, &workload));
    let refused = departures.iter().filter(|d| d.refused).count();
    let steps: Vec<String> = outcomes
        .iter()
        .map(|(a, (code, _))| {
            format!(
                "{} {} (exit {code}){}",
                a.name,
                if a.refused { "refused" } else { "not refused" },
                if a.departs.is_some() {
                    ""
                } else {
                    ", not seen by the monitor"
                }
            )
        })
        .collect();
    Ok(Observed::blocked(format!(
        "learned {learned}; {exports}; {udp_export} (learned from unconnected sends, which passed under enforce with no departure); {message}; {creations}; {REQUESTS} CGI requests (each creating a file) passed under enforce; a learned CRI exec ({EXEC_PROBE:?}) passed with no departure of the runtime's; {}; a new peer refused (exit {new_peer_code}, enforcer {egress_enforcer}); {} departures ({refused} refused), rollback held with {evidence} as evidence",
        steps.join(", "),
        departures.len()
    )))
}

/// Runs [`EXEC_PROBE`] in container `c`; it must succeed.
async fn learned_exec(ctx: &Ctx, c: &str, phase: &str) -> Result<()> {
    let (out, err, code) = ctx.cri.exec_sync(c, EXEC_PROBE, 20).await?;
    ensure(code == 0 && out.contains("seed"), || {
        format!("{phase}: exec {EXEC_PROBE:?}: exit {code}: {out}{err}")
    })
}

/// What the runtime does in a CRI exec before the command runs (runc's init looking the user
/// up, palisade-init reading its plan), the learned command itself, or the service's own shell
/// and tools: none may depart.
fn runtime_work(o: &Observation) -> bool {
    match o {
        Observation::Open { path, .. } => {
            path.starts_with("/.palisade/") || path == "/etc/passwd" || path == "/etc/group"
        }
        Observation::Exec { path, .. } => path == "/bin/busybox" || path.starts_with("/.palisade/"),
        Observation::RuntimeCommand { argv } => {
            argv.first().is_some_and(|p| p == "/bin/busybox") && argv[1..] == EXEC_PROBE[1..]
        }
        _ => false,
    }
}

/// The attack steps (and the new peer) without their departure in the workload's document.
fn missing_departures(state: &Path, workload: &WorkloadId, peer: IpAddr) -> Vec<String> {
    let Loaded::Present(doc) = persist::load(state, workload) else {
        return vec!["no document".into()];
    };
    let departures = &doc.stage.departures;
    let mut missing: Vec<String> = attacks()
        .iter()
        .filter(|a| {
            a.departs
                .is_some_and(|f| !departures.iter().any(|d| f(&d.observation)))
        })
        .map(|a| a.name.to_string())
        .collect();
    if !departures.iter().any(|d| d.refused && matches!(d.observation, Observation::Connect { address, port, .. } if address == peer && port == NEW_PEER_PORT)) {
        missing.push(format!("the new peer {peer}:{NEW_PEER_PORT} (refused)"));
    }
    missing
}

/// Whether every attack step left a departure, and the new peer a refused one.
fn all_reported(departures: &[Departure], peer: IpAddr) -> bool {
    let new_peer = departures.iter().any(|d| {
        d.refused
            && matches!(d.observation, Observation::Connect { address, port, .. } if address == peer && port == NEW_PEER_PORT)
    });
    new_peer
        && attacks().iter().all(|a| {
            a.departs
                .is_none_or(|f| departures.iter().any(|d| f(&d.observation)))
        })
}

/// `palisade profile pin WORKLOAD enforce` through the real CLI.
fn pin_enforce(ctx: &Ctx, state: &Path, workload: &WorkloadId) -> Result<()> {
    let cli = super::status::cli(ctx)?;
    let out = std::process::Command::new(&cli)
        .args([
            "profile",
            "pin",
            &workload.to_string(),
            "enforce",
            "--state-dir",
        ])
        .arg(state)
        .output()
        .with_context(|| format!("run {}", cli.display()))?;
    ensure(out.status.success(), || {
        format!(
            "palisade profile pin enforce: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
