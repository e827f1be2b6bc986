//! The processes of the gate's throughput benchmark (`gate/bench.sh` drives them with wrk and
//! nginx; `docs/benchmarks.md` has the numbers).
//!
//! - `upstream <addr>`: a small HTTP/1.1 service (hyper) answering every request with a fixed
//!   28-byte JSON body.
//! - `gate <listen> <upstream> <learn>`: a `Gate` on `listen`, learning from `<learn>` generated
//!   benign requests sent through itself (so response rules are learned too), then switched to
//!   block mode; it prints `ready ...` once a request shaped like the load passes and an
//!   injection is refused, serves until SIGTERM, then prints the requests it decided and the
//!   violations it found.
//! - `drive <addr> <connections> <requests>`: sends `<requests>` requests shaped like wrk's load
//!   over `<connections>` kept-alive connections, one at a time on each, checks that every
//!   answer is 200, and prints the time taken; `gate/icount.sh` runs it against the gate and
//!   nginx under callgrind to count the instructions each spends per request.
//!
//! Both run on a current-thread runtime, as the gate does inside the shim.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade_gate::{Gate, GateConfig, GateEvent, Mode, Profile, SharedProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: gate-bench upstream <addr> | gate <listen> <upstream> <learn> \
                     | drive <addr> <connections> <requests>";

const BODY: &[u8] = b"{\"items\":[1,2,3],\"ok\":true}\n";

/// Words of the generated search queries; the load asks for `red+shoes`.
const WORDS: &[&str] = &[
    "red", "blue", "green", "shoes", "hat", "socks", "wool", "warm", "linen", "shirt", "boots",
    "scarf", "black", "white", "coat",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["upstream", addr] => rt.block_on(upstream(addr.parse().context("upstream address")?)),
        ["gate", listen, up, learn] => rt.block_on(gate(
            listen.parse().context("listen address")?,
            up.parse().context("upstream address")?,
            learn.parse().context("number of requests to learn")?,
        )),
        ["drive", addr, conns, requests] => rt.block_on(drive(
            addr.parse().context("address")?,
            conns.parse().context("number of connections")?,
            requests.parse().context("number of requests")?,
        )),
        _ => bail!("{USAGE}"),
    }
}

fn ready(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn upstream(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    ready("ready")?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                resp.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A small deterministic generator (xorshift), so every run learns the same profile.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One benign request: searches of one to three words, or a product by id, from a few client
/// versions; the headers are those the load sends (`Host`, `User-Agent`, `Accept`).
fn benign(rng: &mut Rng, host: SocketAddr) -> String {
    let target = if rng.below(4) == 0 {
        format!("/products/{}", 1 + rng.below(5000))
    } else {
        let n = 1 + rng.below(3);
        let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
        format!("/search?q={}", words.join("+"))
    };
    request(&target, host, &format!("bench/1.{}", rng.below(10)))
}

fn request(target: &str, host: SocketAddr, agent: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nAccept: application/json\r\n\r\n"
    )
}

/// Sends one request on a kept-alive connection and returns the response status.
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &str) -> Result<u16> {
    stream.write_all(req.as_bytes()).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head")?;
    let status: u16 = head
        .get(9..12)
        .context("status line")?
        .parse()
        .context("status")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("response without content-length")?;
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside a response body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

async fn gate(listen: SocketAddr, upstream: SocketAddr, learn: usize) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GateEvent>(1024);
    let config = GateConfig {
        service: "bench".into(),
        mode: Mode::Learn,
        auto_alert: None,
        ..GateConfig::default()
    };
    let gate = Gate::new(config, SharedProfile::new(Profile::default()), Arc::new(tx));
    let serving = gate.clone();
    let server = tokio::spawn(async move { serving.serve(listener, upstream).await });
    tokio::spawn(async move { while rx.recv().await.is_some() {} });

    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to the gate at {addr}"))?;
    let mut buf = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..learn {
        let status = exchange(&mut stream, &mut buf, &benign(&mut rng, addr)).await?;
        if status != 200 {
            bail!("learning: status {status}");
        }
    }
    gate.set_mode(Mode::Block);
    let load = request("/search?q=red+shoes", addr, "bench/1.0");
    let status = exchange(&mut stream, &mut buf, &load).await?;
    if status != 200 {
        bail!("block mode refused the load's request: status {status}");
    }
    let attack = request("/search?q=1'+or+'1'='1'--", addr, "bench/1.0");
    let status = exchange(&mut stream, &mut buf, &attack).await?;
    if status != 403 {
        bail!("block mode let an injection through: status {status}");
    }
    drop(stream);
    let profile = palisade_gate::export(&gate.profile().snapshot())?;
    let _ = gate.indicators();
    ready(&format!(
        "ready learned={learn} profile_bytes={}",
        profile.len()
    ))?;

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        served = server => {
            served.context("gate task")??;
            bail!("gate stopped serving");
        }
        _ = term.recv() => {}
    }
    let seen = gate.indicators();
    ready(&format!(
        "requests={} violations={} slow_responses={}",
        seen.requests, seen.violations, seen.slow_responses
    ))
}

async fn drive(addr: SocketAddr, conns: usize, requests: usize) -> Result<()> {
    if conns == 0 {
        bail!("drive: no connections");
    }
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        // Spread the requests evenly; the first connections take the remainder.
        let n = requests / conns + usize::from(c < requests % conns);
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect to {addr}"))?;
            let _ = stream.set_nodelay(true);
            let req = request("/search?q=red+shoes", addr, "bench/1.0");
            let mut buf = Vec::new();
            for _ in 0..n {
                let status = exchange(&mut stream, &mut buf, &req).await?;
                if status != 200 {
                    bail!("drive: status {status}");
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("drive task")??;
    }
    let elapsed = started.elapsed();
    ready(&format!(
        "drove requests={requests} connections={conns} seconds={:.3}",
        elapsed.as_secs_f64()
    ))
}
