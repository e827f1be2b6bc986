//! The post-exploitation chain: steps an intruder with code execution in a web server's
//! container takes (MITRE ATT&CK for containers), each with a benign twin, run by CRI exec
//! in a palisade pod whose targets work: the service-account token mounted where the kubelet
//! mounts it, the Kubernetes service variables set, and a neighbour pod listening on the API
//! server's, Redis's, a mining pool's and an ordinary port.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use k8s_cri::v1::KeyValue;
use serde::Deserialize;
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
const API_PORT: u16 = 6443;
const REDIS_PORT: u16 = 6379;
const POOL_PORT: u16 = 3333;
const UPSTREAM_PORT: u16 = 8080;
/// Closed on the neighbour: an ordinary port, for refused connects (the chain's refused mining
/// pool port, 4444, is closed too).
const CLOSED_PORT: &str = "8081";

/// The chain pod's learning window for new outbound destinations (`palisade.dev/detection`).
const LEARNING_WINDOW: Duration = Duration::from_secs(15);

/// A blocking connect from python (as nc or a miner's own client makes it, not through
/// EINPROGRESS): `connect_ex`'s result printed; argv: host port. Every target is on the pod
/// network, so a closed port answers at once.
const CONNECT: &str = "import socket,sys\ns=socket.socket()\n\
print(s.connect_ex((sys.argv[1],int(sys.argv[2]))))";

/// The chain, in run order, as `conformance/fixtures/detection-chain.yaml` lists it.
const CHAIN: &str = include_str!("../../fixtures/detection-chain.yaml");

/// One step of the chain and its benign twin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    pub tactic: String,
    pub what: String,
    /// The commands run in order (exec, no shell unless the command is one); the last is the
    /// action itself. Placeholders: see `expand`.
    pub step: Vec<Vec<String>>,
    pub twin: Vec<Vec<String>>,
    pub twin_what: String,
    /// The rule the step must be reported under.
    pub rule: String,
}

/// The chain, in run order.
pub fn steps() -> Result<Vec<Step>> {
    serde_yaml::from_str(CHAIN).context("conformance/fixtures/detection-chain.yaml")
}

/// An argument of a chain command with its placeholder filled in: `{connect}` and `{drop}`
/// (the whole argument) are [`CONNECT`] and [`DROP`]; `{peer}` is the neighbour pod's address
/// and `{closed_port}` [`CLOSED_PORT`].
fn expand(arg: &str, peer: &str) -> String {
    match arg {
        "{connect}" => CONNECT.to_string(),
        "{drop}" => DROP.to_string(),
        _ => arg
            .replace("{peer}", peer)
            .replace("{closed_port}", CLOSED_PORT),
    }
}

/// Writes argv[1] as a copy of /bin/true followed by argv[2] (an executable that runs and
/// exits 0 whatever it carries).
const DROP: &str = "import shutil,sys\nshutil.copy('/bin/true',sys.argv[1])\n\
open(sys.argv[1],'ab').write(sys.argv[2].encode())";

/// What one step and its twin produced.
pub struct StepRun {
    pub id: String,
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
pub async fn run(
    ctx: &Ctx,
    neighbour: &Ctx,
    corpus_image: &str,
    chain: &[Step],
) -> Result<Vec<StepRun>> {
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
    cc.mounts = vec![cri::bind_mount(TOKEN_DIR, &token_dir, true)];
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
    for s in chain {
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
            id: s.id.clone(),
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

/// Runs a step's or a twin's commands in order; the last one's exit code.
async fn act(ctx: &Ctx, c: &str, cmds: &[Vec<String>], peer: &str) -> Result<i32> {
    let mut code = 0;
    for cmd in cmds {
        let argv: Vec<String> = cmd.iter().map(|a| expand(a, peer)).collect();
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

    #[test]
    fn the_chain_parses_with_unique_ids_and_known_placeholders() {
        let chain = steps().unwrap();
        assert_eq!(chain.len(), 19);
        let ids: std::collections::BTreeSet<&str> = chain.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), chain.len(), "duplicate step ids");
        for s in &chain {
            assert!(
                !s.step.is_empty() && !s.twin.is_empty(),
                "{}: no command",
                s.id
            );
            for arg in s.step.iter().chain(&s.twin).flatten() {
                let filled = expand(arg, "10.0.0.9");
                assert!(
                    !filled.contains("{peer}") && !filled.contains("{closed_port}"),
                    "{}: {arg}",
                    s.id
                );
                if arg.starts_with('{') {
                    assert_ne!(&filled, arg, "{}: unknown placeholder {arg}", s.id);
                }
            }
        }
        let redis = chain.iter().find(|s| s.id == "lateral-redis").unwrap();
        assert_eq!(
            redis.step[0]
                .iter()
                .map(|a| expand(a, "10.0.0.9"))
                .collect::<Vec<_>>(),
            ["python3", "-c", CONNECT, "10.0.0.9", "6379"]
        );
    }
}
