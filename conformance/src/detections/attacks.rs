//! The post-exploitation chain: steps an intruder with code execution in a web server's
//! container takes (MITRE ATT&CK for containers), each with a benign twin, run by CRI exec
//! in a palisade pod whose targets work: the service-account token mounted where the kubelet
//! mounts it, the Kubernetes service variables set, and a neighbour pod listening on the API
//! server's, Redis's, a mining pool's and an ordinary port.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use k8s_cri::v1::{KeyValue, Mount};
use serde_json::Value;

use super::clients;
use crate::cri;
use crate::security::eventlog::{field, pod_ip, EventLog};
use crate::suite::Ctx;

pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The target pod's container, as the events must name it.
pub const CONTAINER: &str = "web";

/// The neighbour's listeners: the API server's stand-in, Redis, a mining pool's stratum port
/// and an ordinary service the target talks to from its start (its learned upstream).
/// The chain pod's learning window for new outbound destinations (`palisade.dev/detection`).
const LEARNING_WINDOW: Duration = Duration::from_secs(15);

const API_PORT: u16 = 6443;
const REDIS_PORT: u16 = 6379;
const POOL_PORT: u16 = 3333;
const UPSTREAM_PORT: u16 = 8080;
/// Closed on the neighbour: a mining pool port and an ordinary one, for refused connects.
const CLOSED_POOL_PORT: &str = "4444";
const CLOSED_PORT: &str = "8081";

/// A blocking connect from python (as nc or a miner's own client makes it, not through
/// EINPROGRESS): `connect_ex`'s result printed; argv: host port. Every target is on the pod
/// network, so a closed port answers at once.
const CONNECT: &str = "import socket,sys\ns=socket.socket()\n\
print(s.connect_ex((sys.argv[1],int(sys.argv[2]))))";

/// A step or a twin: the commands run in order (exec, no shell unless the step is one); the
/// last is the action itself. `{peer}` is replaced by the neighbour pod's address.
pub struct Action {
    pub cmds: &'static [&'static [&'static str]],
}

/// One step of the chain and its benign twin.
pub struct Step {
    pub id: &'static str,
    pub tactic: &'static str,
    pub what: &'static str,
    pub step: Action,
    pub twin: Action,
    pub twin_what: &'static str,
    /// The rule the step must be reported under.
    pub rule: &'static str,
}

/// The chain, in run order.
pub const STEPS: &[Step] = &[
    Step {
        id: "interactive-shell",
        tactic: "execution",
        what: "bash -c id (a shell exec'd into the container)",
        step: Action {
            cmds: &[&["bash", "-c", "id"]],
        },
        twin: Action { cmds: &[&["id"]] },
        twin_what: "id",
        rule: "shell-in-container",
    },
    Step {
        id: "package-manager",
        tactic: "execution",
        what: "apt-get check",
        step: Action {
            cmds: &[&["apt-get", "check"]],
        },
        twin: Action {
            cmds: &[&["ls", "/var/lib/apt"]],
        },
        twin_what: "ls /var/lib/apt",
        rule: "package-manager-in-container",
    },
    Step {
        id: "package-manager-renamed",
        tactic: "defense evasion",
        // dpkg, not apt-get: apt-get runs dpkg under its own name, whose report would
        // stand for the copy's (and arrives seconds later, in the next twin's window)
        what: "cp /usr/bin/dpkg /tmp/x; /tmp/x --print-architecture",
        step: Action {
            cmds: &[
                &["cp", "/usr/bin/dpkg", "/tmp/x"],
                &["/tmp/x", "--print-architecture"],
            ],
        },
        twin: Action {
            cmds: &[&["cp", "/bin/ls", "/tmp/y"], &["/tmp/y", "/tmp"]],
        },
        twin_what: "cp /bin/ls /tmp/y; /tmp/y /tmp",
        rule: "package-manager-in-container",
    },
    Step {
        id: "cron-persistence",
        tactic: "persistence",
        what: "touch /etc/crontab",
        step: Action {
            cmds: &[&["touch", "/etc/crontab"]],
        },
        twin: Action {
            cmds: &[&["touch", "/tmp/crontab"]],
        },
        twin_what: "touch /tmp/crontab",
        rule: "write-below-system-dir",
    },
    Step {
        id: "binary-planted",
        tactic: "persistence",
        what: "cp /bin/true /usr/local/bin/kworker",
        step: Action {
            cmds: &[&["cp", "/bin/true", "/usr/local/bin/kworker"]],
        },
        twin: Action {
            cmds: &[&["cp", "/bin/true", "/tmp/kworker"]],
        },
        twin_what: "cp /bin/true /tmp/kworker",
        rule: "write-below-system-dir",
    },
    Step {
        id: "user-namespace",
        tactic: "privilege escalation",
        what: "unshare -U -r true (refused)",
        step: Action {
            cmds: &[&["unshare", "-U", "-r", "true"]],
        },
        twin: Action {
            cmds: &[&["setsid", "true"]],
        },
        twin_what: "setsid true",
        rule: "namespace-change",
    },
    Step {
        id: "enter-namespaces",
        tactic: "privilege escalation",
        what: "nsenter -t 1 -m -u true (setns)",
        step: Action {
            cmds: &[&["nsenter", "-t", "1", "-m", "-u", "true"]],
        },
        twin: Action {
            cmds: &[&["ls", "/proc/1/ns"]],
        },
        twin_what: "ls /proc/1/ns",
        rule: "namespace-change",
    },
    Step {
        id: "mount",
        tactic: "privilege escalation",
        what: "mount -t tmpfs none /mnt (refused)",
        step: Action {
            cmds: &[&["mount", "-t", "tmpfs", "none", "/mnt"]],
        },
        twin: Action {
            cmds: &[&["findmnt", "/"]],
        },
        twin_what: "findmnt /",
        rule: "mount-in-container",
    },
    Step {
        id: "kernel-module",
        tactic: "privilege escalation",
        what: "insmod /tmp/m.ko (refused)",
        step: Action {
            cmds: &[&["cp", "/bin/true", "/tmp/m.ko"], &["insmod", "/tmp/m.ko"]],
        },
        twin: Action {
            cmds: &[&["lsmod"]],
        },
        twin_what: "lsmod",
        rule: "kernel-module-load",
    },
    Step {
        id: "ptrace",
        tactic: "privilege escalation",
        what: "ptrace(PTRACE_ATTACH) of pid 1 from python3 (refused)",
        step: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import ctypes\nprint(ctypes.CDLL(None,use_errno=True).ptrace(16,1,0,0))",
            ]],
        },
        twin: Action {
            cmds: &[&["python3", "-c", "print(open('/proc/1/status').read()[:40])"]],
        },
        twin_what: "python3 reads /proc/1/status",
        rule: "ptrace-in-container",
    },
    Step {
        id: "bpf",
        tactic: "defense evasion",
        what: "bpf(BPF_MAP_CREATE) from python3 (refused)",
        step: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import ctypes\nprint(ctypes.CDLL(None,use_errno=True).syscall(321,0,0,0))",
            ]],
        },
        twin: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import ctypes\nprint(ctypes.CDLL(None).syscall(39))",
            ]],
        },
        twin_what: "getpid through syscall() from python3",
        rule: "bpf-in-container",
    },
    Step {
        id: "shadow-read",
        tactic: "credential access",
        what: "cat /etc/shadow",
        step: Action {
            cmds: &[&["cat", "/etc/shadow"]],
        },
        twin: Action {
            cmds: &[&["cat", "/etc/passwd"]],
        },
        twin_what: "cat /etc/passwd",
        rule: "credential-file-read",
    },
    Step {
        id: "token-read",
        tactic: "credential access",
        what: "cat the service-account token",
        step: Action {
            cmds: &[&[
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            ]],
        },
        twin: Action {
            cmds: &[&[
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            ]],
        },
        twin_what: "cat the namespace file beside it",
        rule: "service-account-token-read",
    },
    Step {
        id: "raw-socket",
        tactic: "credential access",
        what: "socket(AF_INET, SOCK_RAW, ICMP) from python3 (refused)",
        step: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import socket\ntry:\n socket.socket(socket.AF_INET,socket.SOCK_RAW,1)\nexcept OSError as e:\n print(e)",
            ]],
        },
        twin: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import socket\nprint(socket.socket(socket.AF_INET,socket.SOCK_DGRAM))",
            ]],
        },
        twin_what: "a UDP socket from python3",
        rule: "raw-socket",
    },
    Step {
        id: "k8s-api-discovery",
        tactic: "discovery",
        what: "connect to $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
        step: Action {
            cmds: &[&[
                "python3",
                "-c",
                "import os,socket\ns=socket.socket()\nprint(s.connect_ex((os.environ['KUBERNETES_SERVICE_HOST'],int(os.environ['KUBERNETES_SERVICE_PORT']))))",
            ]],
        },
        twin: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", "8080"]],
        },
        twin_what: "connect to the learned upstream",
        rule: "new-outbound-destination",
    },
    Step {
        id: "lateral-redis",
        tactic: "lateral movement",
        what: "connect to the neighbour's Redis",
        step: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", "6379"]],
        },
        twin: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", "8080"]],
        },
        twin_what: "connect to the learned upstream",
        rule: "new-outbound-destination",
    },
    Step {
        id: "miner-pool",
        tactic: "impact",
        what: "connect to a mining pool port (3333, listening)",
        step: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", "3333"]],
        },
        twin: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", "8080"]],
        },
        twin_what: "connect to the learned upstream",
        rule: "crypto-miner-pool-port",
    },
    Step {
        id: "miner-pool-refused",
        tactic: "impact",
        what: "connect to a mining pool port (4444, refused)",
        step: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", CLOSED_POOL_PORT]],
        },
        twin: Action {
            cmds: &[&["python3", "-c", CONNECT, "{peer}", CLOSED_PORT]],
        },
        twin_what: "connect to an upstream that is down (8081, refused; tried at start too)",
        rule: "crypto-miner-pool-port",
    },
    Step {
        id: "miner-dropped",
        tactic: "impact",
        // a stand-in: no real miner is fetched; what the detection reads is what every XMRig
        // build carries
        what: "a program written to /tmp/kswapd0 carrying XMRig's strings, run",
        step: Action {
            cmds: &[
                &[
                    "python3",
                    "-c",
                    DROP,
                    "/tmp/kswapd0",
                    "XMRig/6.21 stratum+tcp://pool.example:3333 rx/0 RandomX",
                ],
                &["/tmp/kswapd0"],
            ],
        },
        twin: Action {
            cmds: &[
                &[
                    "python3",
                    "-c",
                    DROP,
                    "/tmp/kswapd1",
                    "fetch https://example.com/index.html",
                ],
                &["/tmp/kswapd1"],
            ],
        },
        twin_what: "a program written to /tmp/kswapd1 carrying an ordinary URL, run",
        rule: "crypto-miner",
    },
];

/// Writes argv[1] as a copy of /bin/true followed by argv[2] (an executable that runs and
/// exits 0 whatever it carries).
const DROP: &str = "import shutil,sys\nshutil.copy('/bin/true',sys.argv[1])\n\
open(sys.argv[1],'ab').write(sys.argv[2].encode())";

/// What one step and its twin produced.
pub struct StepRun {
    pub id: &'static str,
    /// The expected rule arrived for the right pod and container.
    pub reported: bool,
    /// Every event of the target pod while the step ran (the expected one included).
    pub step_events: Vec<Value>,
    /// Every event of the target pod while the twin ran.
    pub twin_events: Vec<Value>,
    /// The exit codes of the step's and the twin's last command.
    pub codes: (i32, i32),
}

/// The neighbour (under runc: it is the target's environment, not under test) and the
/// target pod; then every step, each after its twin.
pub async fn run(ctx: &Ctx, neighbour: &Ctx, corpus_image: &str) -> Result<Vec<StepRun>> {
    let peer = start_neighbour(neighbour, corpus_image).await?;
    let token_dir = ctx.dir.join("serviceaccount");
    std::fs::create_dir_all(&token_dir)
        .with_context(|| format!("create {}", token_dir.display()))?;
    for (file, content) in [
        ("token", "eyJhbGciOiJSUzI1NiJ9.corpus.token\n"),
        ("namespace", "palisade-conformance\n"),
        (
            "ca.crt",
            "-----BEGIN CERTIFICATE-----\ncorpus\n-----END CERTIFICATE-----\n",
        ),
    ] {
        std::fs::write(token_dir.join(file), content).context("write the token volume")?;
    }
    let mut cfg = ctx.pod_config();
    // The chain runs to its end: no compromise kill in between.
    cfg.annotations
        .insert("palisade.dev/compromise".into(), "off".into());
    // A learning window for new outbound destinations short enough for a run to leave it.
    cfg.annotations.insert(
        "palisade.dev/detection".into(),
        format!("learning-window={}s", LEARNING_WINDOW.as_secs()),
    );
    let pod = ctx.run_pod(&cfg).await?;
    let pod_name = cri::pod_name(&cfg).to_string();
    let mut cc = cri::container_config(CONTAINER, 0, corpus_image, &["nginx", "-g", "daemon off;"]);
    cc.mounts = vec![Mount {
        container_path: TOKEN_DIR.into(),
        host_path: token_dir.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    cc.envs = vec![
        KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: peer.clone(),
        },
        KeyValue {
            key: "KUBERNETES_SERVICE_PORT".into(),
            value: API_PORT.to_string(),
        },
    ];
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let learning = Instant::now();
    let addr = std::net::SocketAddr::new(pod_ip(ctx, &pod).await?, 80);
    clients::wait_listening(addr, Duration::from_secs(60))
        .await
        .context("the target's nginx did not start")?;
    // The upstream the web server talks to from its start: learned.
    let (_, out) = exec(ctx, &c, &["python3", "-c", CONNECT, &peer, "8080"]).await?;
    anyhow::ensure!(
        out.trim() == "0",
        "the upstream {peer}:{UPSTREAM_PORT} refused: {out:?}"
    );
    // An optional upstream that is down from the start (a cache not deployed yet): its
    // refused attempts are learned like the answered ones, so the same refusal later is not
    // a new destination.
    let (_, out) = exec(ctx, &c, &["python3", "-c", CONNECT, &peer, CLOSED_PORT]).await?;
    anyhow::ensure!(
        out.trim() == "111",
        "the closed port {peer}:{CLOSED_PORT} was not refused (ECONNREFUSED): {out:?}"
    );
    // What the start-up raised is the workload's, not the first twin's; the steps start once
    // the learning window (counted from the container's start) has surely ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wait = (LEARNING_WINDOW + Duration::from_secs(5)).saturating_sub(learning.elapsed());
    tokio::time::sleep(wait).await;
    let mut runs = Vec::new();
    for s in STEPS {
        let log = EventLog::mark(ctx)?;
        let from = palisade_events::rfc3339(SystemTime::now());
        let twin_code = act(ctx, &c, &s.twin, &peer).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let twin_events =
            log.matching(|e| field(e, "/workload/pod") == pod_name && !raised_before(e, &from))?;
        let log = EventLog::mark(ctx)?;
        let from = palisade_events::rfc3339(SystemTime::now());
        let step_code = act(ctx, &c, &s.step, &peer).await?;
        let started = Instant::now();
        let hit = log
            .wait_for(Duration::from_secs(5), |e| {
                field(e, "/workload/pod") == pod_name
                    && field(e, "/workload/container") == CONTAINER
                    && field(e, "/rule/name") == s.rule
                    && !raised_before(e, &from)
            })
            .await?;
        // Let the step's other events land before the next twin's mark.
        let settle = Duration::from_millis(1500).saturating_sub(started.elapsed());
        tokio::time::sleep(settle).await;
        let step_events =
            log.matching(|e| field(e, "/workload/pod") == pod_name && !raised_before(e, &from))?;
        eprintln!(
            "corpus: step {}: {} (exit {step_code}); twin {} (exit {twin_code})",
            s.id,
            if hit.is_some() { "reported" } else { "missed" },
            if twin_events.is_empty() {
                "silent"
            } else {
                "noisy"
            },
        );
        runs.push(StepRun {
            id: s.id,
            reported: hit.is_some(),
            step_events,
            twin_events,
            codes: (step_code, twin_code),
        });
    }
    Ok(runs)
}

/// True when `e` was raised before `from` (both RFC 3339 UTC with nanoseconds, as the shim
/// writes them, so their text orders as their times): the shim folds identical events within
/// its de-duplication window and writes the fold when the window closes, seconds later, with
/// the time of the last repeat. Such a fold belongs to the step or twin that raised the
/// repeats, not to the window it lands in (seen under emulation in the 6.1 guest: apt-get's
/// dpkg repeats folded into a later twin's window).
fn raised_before(e: &Value, from: &str) -> bool {
    let t = field(e, "/time");
    !t.is_empty() && t < from
}

/// Runs an action's commands in order; the last one's exit code.
async fn act(ctx: &Ctx, c: &str, a: &Action, peer: &str) -> Result<i32> {
    let mut code = 0;
    for cmd in a.cmds {
        let argv: Vec<String> = cmd.iter().map(|s| s.replace("{peer}", peer)).collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        code = exec(ctx, c, &argv).await?.0;
    }
    Ok(code)
}

async fn exec(ctx: &Ctx, c: &str, cmd: &[&str]) -> Result<(i32, String)> {
    let (out, err, code) = ctx.cri.exec_sync(c, cmd, 20).await?;
    Ok((code, format!("{out}{err}")))
}

/// The neighbour pod: Redis and three python listeners; its address once all listen.
async fn start_neighbour(ctx: &Ctx, image: &str) -> Result<String> {
    let (pod, cfg) = ctx.pod().await?;
    let script = format!(
        "trap 'exit 0' TERM; redis-server --bind 0.0.0.0 --protected-mode no --port {REDIS_PORT} & \
         for p in {API_PORT} {POOL_PORT} {UPSTREAM_PORT}; do python3 -m http.server -d /tmp $p & done; wait"
    );
    let cc = cri::container_config("neighbour", 0, image, &["sh", "-c", &script]);
    ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let ip = pod_ip(ctx, &pod).await?;
    for port in [REDIS_PORT, API_PORT, POOL_PORT, UPSTREAM_PORT] {
        clients::wait_listening(std::net::SocketAddr::new(ip, port), Duration::from_secs(60))
            .await
            .context("the neighbour pod's listeners")?;
    }
    Ok(ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fold_raised_before_the_window_is_not_the_window_s() {
        let from = palisade_events::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(100));
        let before = json!({"time": palisade_events::rfc3339(
            SystemTime::UNIX_EPOCH + Duration::from_millis(99_999)
        )});
        let after = json!({"time": palisade_events::rfc3339(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100)
        )});
        assert!(raised_before(&before, &from));
        assert!(!raised_before(&after, &from));
        // An event without a time is kept in the window it landed in.
        assert!(!raised_before(&json!({"rule": {"name": "x"}}), &from));
    }
}
