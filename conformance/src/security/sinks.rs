//! The sinks through CRI: a scripted attack sequence in one palisade container reaches the
//! JSON-lines log, the Falco webhook, containerd's `/palisade/violation` topic and the metrics,
//! each with every event and nothing dropped; and the helpers that read those sinks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use super::eventlog::{field, EventLog};
use super::{Observed, Scope, SecCheck, PALISADE};
use crate::sec_check;
use crate::suite::{ensure, poll, Ctx};

pub fn all() -> Vec<SecCheck> {
    vec![sec_check!(sinks_attack_sequence, 90, Scope::Only(PALISADE))]
}

/// A Falco webhook receiver on the address the shims post to; keeps every body.
pub struct Webhook {
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn listen(ctx: &Ctx) -> Result<Self> {
        let addr = ctx
            .settings
            .webhook_listen
            .context("no --webhook-listen: the shims' webhook address is unknown")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on the webhook address {addr}"))?;
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    if let Ok(body) = read_post(conn).await {
                        if let Ok(mut b) = kept.lock() {
                            b.push(body);
                        }
                    }
                });
            }
        });
        Ok(Webhook { bodies, task })
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .map(|b| {
                b.iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 POST (Content-Length body), answers 204, returns the body.
async fn read_post(conn: tokio::net::TcpStream) -> Result<String> {
    let mut r = BufReader::new(conn);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().context("content-length")?;
            }
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body).await?;
    r.get_mut()
        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `ctr events` against the harness's containerd, collecting its lines; killed by pid on drop.
pub struct CtrEvents {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl CtrEvents {
    pub fn start(ctx: &Ctx) -> Result<Self> {
        let address = ctx
            .settings
            .containerd_address
            .as_ref()
            .context("no --containerd-address")?;
        let mut child = std::process::Command::new("ctr")
            .args(["--address", address, "events"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start ctr events")?;
        let out = child.stdout.take().context("ctr events stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut l) = kept.lock() {
                    l.push(line);
                }
            }
        });
        Ok(CtrEvents { child, lines })
    }

    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().filter(|s| s.contains(needle)).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for CtrEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `pred` for up to `timeout`.
/// Every shim's Prometheus textfile, concatenated (one file per pod's shim).
pub fn metrics_text(ctx: &Ctx) -> Result<String> {
    let dir = ctx
        .settings
        .metrics_dir
        .as_ref()
        .context("no --metrics-dir")?;
    let mut out = String::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "prom") {
            out += &std::fs::read_to_string(&p).unwrap_or_default();
        }
    }
    Ok(out)
}

/// The attack sequence: an interactive shell, a write below /etc, a package manager, a
/// user-namespace escape attempt and a raw socket, one after the other in one container.
const SEQUENCE: &[(&str, &[&str])] = &[
    ("shell-in-container", &["sh", "-c", "true"]),
    (
        "write-below-system-dir",
        &["sh", "-c", "echo x > /etc/palisade-sinks-probe"],
    ),
    ("package-manager-in-container", &["/usr/bin/apt", "tcpsock"]),
    ("namespace-change", &["/usr/bin/palisade-probe", "unshare"]),
];

/// Every event of the sequence is in every sink, with the same count, and no sink dropped any.
pub async fn sinks_attack_sequence(ctx: &Ctx) -> Result<Observed> {
    let hook = Webhook::listen(ctx).await?;
    let ctr = CtrEvents::start(ctx)?;
    let log = EventLog::mark(ctx)?;
    let mut cfg = ctx.pod_config();
    // Judged, not killed: the sequence must run to its end.
    cfg.annotations
        .insert("palisade.dev/compromise".into(), "off".into());
    let pod_name = crate::cri::pod_name(&cfg).to_string();
    let (pod, c) = ctx.run_sleeper_pod(&cfg, "target").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, cmd) in SEQUENCE {
        ctx.cri.exec_sync(&c, cmd, 20).await?;
    }
    let of_pod = |e: &Value| {
        field(e, "/workload/pod") == pod_name
            && SEQUENCE.iter().any(|(r, _)| field(e, "/rule/name") == *r)
    };
    let logged = poll(Duration::from_secs(10), || {
        let got = log.matching(of_pod)?;
        Ok(SEQUENCE
            .iter()
            .all(|(r, _)| got.iter().any(|e| field(e, "/rule/name") == *r))
            .then_some(got))
    })
    .await?
    .with_context(|| format!("the log lacks some of the sequence: {}", log.seen()))?;
    let count = |rule: &str| {
        logged
            .iter()
            .filter(|e| field(e, "/rule/name") == rule)
            .map(|e| e.get("count").and_then(Value::as_u64).unwrap_or(1))
            .sum::<u64>()
    };
    for (rule, _) in SEQUENCE {
        let want = logged
            .iter()
            .filter(|e| field(e, "/rule/name") == *rule)
            .count();
        let hooked = poll(Duration::from_secs(10), || {
            let n = hook
                .bodies()
                .iter()
                .filter(|v| {
                    field(v, "/rule") == *rule
                        && field(v, "/output_fields/k8s.pod.name") == pod_name
                })
                .count();
            Ok((n == want).then_some(n))
        })
        .await?;
        ensure(hooked.is_some(), || {
            format!("webhook: {rule}: not the {want} event(s) of the log")
        })?;
        let topic = poll(Duration::from_secs(10), || {
            let n = ctr
                .matching("/palisade/violation")
                .iter()
                .filter(|l| l.contains(rule) && l.contains(&pod_name))
                .count();
            Ok((n == want).then_some(n))
        })
        .await?;
        ensure(topic.is_some(), || {
            let seen = ctr.matching(rule).len();
            format!("ctr events: {rule}: {seen} line(s), want the log's {want}")
        })?;
    }
    let metrics = poll(Duration::from_secs(12), || {
        let text = metrics_text(ctx)?;
        Ok(SEQUENCE
            .iter()
            .all(|(rule, _)| {
                let want = count(rule);
                let got: u64 = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("palisade_violations_total{")
                            && l.contains(&format!("rule=\"{rule}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum();
                got >= want
            })
            .then_some(text))
    })
    .await?
    .context("the metrics files do not count every event of the sequence")?;
    let dropped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("palisade_events_dropped_total{") && !l.ends_with(" 0"))
        .filter(|l| l.contains(&format!("shim=\"{pod}\"")))
        .collect();
    ensure(dropped.is_empty(), || {
        format!("sinks dropped events: {dropped:?}")
    })?;
    Ok(Observed::blocked(format!(
        "{} events of {} rules in the log, the webhook, ctr events and the metrics, none dropped",
        logged.len(),
        SEQUENCE.len()
    )))
}
