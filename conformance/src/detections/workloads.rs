//! The ordinary workloads: servers from Debian's packages in palisade pods, each driven by a
//! traffic generator speaking its protocol from the host, start-up and shutdown included, and
//! every event raised for the pod collected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_cri::v1::Int64Value;
use serde_json::Value;

use super::clients::{self, Postgres, Redis};
use k8s_cri::v1::ContainerState;

use crate::cri;
use crate::security::eventlog::{field, pod_ip, EventLog};
use crate::security::security;
use crate::suite::Ctx;

/// What a workload's generator sends.
#[derive(Clone, Copy, Debug)]
pub enum Traffic {
    /// GETs and HEADs of the default site, a query string and a missing page.
    Http,
    /// The WSGI app: its pages and form posts (each a row in its sqlite database).
    App,
    /// Strings, counters and lists through RESP on one connection.
    Redis,
    /// A session per round: a table created once, inserts, a count, an update.
    Postgres,
    /// None: the container's own loop (`id`, `ls`) is the workload.
    None,
}

/// One ordinary workload.
pub struct Workload {
    pub name: &'static str,
    /// The suite's check name for it: pods are named after it.
    pub pod: &'static str,
    /// true: the corpus image; false: the busybox test image.
    pub corpus: bool,
    pub command: &'static [&'static str],
    pub port: u16,
    pub traffic: Traffic,
    /// Run as this uid with no group given (CRI then gives group 0).
    pub run_as_user: Option<i64>,
}

/// The workloads, in run order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "nginx",
        pod: "corpus-nginx",
        corpus: true,
        command: &["nginx", "-g", "daemon off;"],
        port: 80,
        traffic: Traffic::Http,
        run_as_user: None,
    },
    Workload {
        name: "apache2",
        pod: "corpus-apache2",
        corpus: true,
        command: &["apache2ctl", "-D", "FOREGROUND"],
        port: 80,
        traffic: Traffic::Http,
        run_as_user: None,
    },
    Workload {
        name: "redis",
        pod: "corpus-redis",
        corpus: true,
        command: &["/usr/local/bin/corpus-redis"],
        port: 6379,
        traffic: Traffic::Redis,
        run_as_user: None,
    },
    Workload {
        name: "postgresql",
        pod: "corpus-postgresql",
        corpus: true,
        command: &["/usr/local/bin/corpus-postgres"],
        port: 5432,
        traffic: Traffic::Postgres,
        run_as_user: None,
    },
    Workload {
        name: "python-wsgi",
        pod: "corpus-python",
        corpus: true,
        command: &["python3", "/srv/app/app.py"],
        port: 8000,
        traffic: Traffic::App,
        run_as_user: None,
    },
    Workload {
        name: "busybox-uid1000-gid0",
        pod: "corpus-busybox",
        corpus: false,
        command: &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do id >/dev/null; ls / >/dev/null; sleep 1 & wait; done",
        ],
        port: 0,
        traffic: Traffic::None,
        run_as_user: Some(1000),
    },
];

/// The stop's grace period: a server that ignores SIGTERM is killed after it (exit code 137).
pub const STOP_GRACE_SECONDS: i64 = 10;

/// What one workload run produced.
pub struct WorkloadRun {
    pub name: &'static str,
    /// From the pod's start to its removal.
    pub seconds: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Every event raised for the pod, in log order.
    pub events: Vec<Value>,
    /// The container's exit code after the stop (173: killed as compromised).
    pub exit_code: i32,
}

impl WorkloadRun {
    /// Events raised by the compromise policy (each a kill), plus one if the container's exit
    /// code says it was killed without its event reaching the log.
    pub fn compromise_kills(&self) -> usize {
        let events = self
            .events
            .iter()
            .filter(|e| field(e, "/source") == "compromise")
            .count();
        if events == 0 && self.exit_code == 173 {
            1
        } else {
            events
        }
    }

    pub fn per_minute(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events.len() as f64 * 60.0 / self.seconds
        } else {
            0.0
        }
    }
}

/// Starts the workload, drives it for `traffic_for`, stops and removes it, and returns what
/// was raised for its pod from before its start to after its removal.
pub async fn run(
    ctx: &Ctx,
    w: &Workload,
    corpus_image: &str,
    traffic_for: Duration,
) -> Result<WorkloadRun> {
    let log = EventLog::mark(ctx)?;
    let started = Instant::now();
    let (pod, cfg) = ctx.pod().await?;
    let pod_name = cri::pod_name(&cfg).to_string();
    let image = if w.corpus { corpus_image } else { ctx.image() };
    let mut cc = cri::container_config(w.name, 0, image, w.command);
    if let Some(uid) = w.run_as_user {
        security(&mut cc).run_as_user = Some(Int64Value { value: uid });
    }
    let c = ctx.cri.run_container(&pod, &cc, &cfg).await?;
    let (mut ok, mut failed) = (0, 0);
    if w.port != 0 {
        let addr = SocketAddr::new(pod_ip(ctx, &pod).await?, w.port);
        clients::wait_listening(addr, Duration::from_secs(60))
            .await
            .with_context(|| format!("{} did not start", w.name))?;
        let until = Instant::now() + traffic_for;
        let mut round = 0u64;
        while Instant::now() < until {
            match one_round(w.traffic, addr, round).await {
                Ok(n) => ok += n,
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("corpus: {}: round {round}: {e:#}", w.name);
                    }
                }
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(
            ok > 0,
            "{}: no request succeeded ({failed} rounds failed)",
            w.name
        );
    } else {
        tokio::time::sleep(traffic_for).await;
    }
    // Shutdown as the kubelet does it: StopContainer with a grace period, then the pod.
    let st = ctx.cri.container_status(&c).await?;
    let was_running = st.state == ContainerState::ContainerRunning as i32;
    ctx.cri.stop_container(&c, STOP_GRACE_SECONDS).await?;
    let st = ctx.cri.container_status(&c).await?;
    ctx.cleanup().await?;
    let seconds = started.elapsed().as_secs_f64();
    // Events of the last moments reach the log a little later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = log.matching(|e| field(e, "/workload/pod") == pod_name)?;
    if !was_running {
        eprintln!(
            "corpus: {}: the container had exited before the stop (exit code {})",
            w.name, st.exit_code
        );
    }
    Ok(WorkloadRun {
        name: w.name,
        seconds,
        requests_ok: ok,
        requests_failed: failed,
        events,
        exit_code: st.exit_code,
    })
}

/// One round of the generator: the requests or commands that succeeded.
async fn one_round(traffic: Traffic, addr: SocketAddr, round: u64) -> Result<u64> {
    match traffic {
        Traffic::Http => {
            let paths = [
                ("GET", "/"),
                ("GET", "/index.html"),
                ("HEAD", "/"),
                ("GET", "/?q=shoes&page=2"),
                ("GET", "/no-such-page"),
            ];
            let (method, path) = paths[(round % paths.len() as u64) as usize];
            let status = clients::http(addr, method, path, "").await?;
            anyhow::ensure!(
                status == 200 || (status == 404 && path == "/no-such-page"),
                "{method} {path}: status {status}"
            );
            Ok(1)
        }
        Traffic::App => {
            let (method, path, body) = match round % 4 {
                0 => ("GET", "/", String::new()),
                1 => ("POST", "/items", format!("name=item{round}")),
                2 => ("GET", "/items", String::new()),
                _ => ("GET", "/health", String::new()),
            };
            let status = clients::http(addr, method, path, &body).await?;
            anyhow::ensure!(status == 200, "{method} {path}: status {status}");
            Ok(1)
        }
        Traffic::Redis => {
            let mut r = Redis::connect(addr).await?;
            let key = format!("session:{}", round % 50);
            r.cmd(&["SET", &key, "alice", "EX", "60"]).await?;
            r.cmd(&["GET", &key]).await?;
            r.cmd(&["INCR", "hits"]).await?;
            r.cmd(&["LPUSH", "recent", &key]).await?;
            r.cmd(&["LTRIM", "recent", "0", "99"]).await?;
            r.cmd(&["LRANGE", "recent", "0", "9"]).await?;
            r.cmd(&["PING"]).await?;
            Ok(7)
        }
        Traffic::Postgres => {
            let mut pg = Postgres::connect(addr, "postgres", "postgres").await?;
            pg.query(
                "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text, qty int)",
            )
            .await?;
            pg.query(&format!(
                "INSERT INTO orders (item, qty) VALUES ('item{}', {})",
                round % 20,
                round % 7
            ))
            .await?;
            pg.query("SELECT item, sum(qty) FROM orders GROUP BY item")
                .await?;
            pg.query("UPDATE orders SET qty = qty + 1 WHERE id % 10 = 0")
                .await?;
            pg.close().await?;
            Ok(4)
        }
        Traffic::None => Ok(0),
    }
}
