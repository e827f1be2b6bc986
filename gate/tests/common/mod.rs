//! Shared test harness: a real upstream HTTP server, a raw HTTP/1.1 client, a gate on
//! loopback, and a generator of benign and attack traffic.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade_gate::{Gate, GateConfig, GateEvent, Mode, Profile, SharedProfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "../../examples/gate-eval/corpus.rs"]
mod corpus;
pub use corpus::Rng;

/// The upstream service: answers every request, echoes bodies on `/echo`, echoes bytes after
/// a WebSocket upgrade, and counts what it received.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn start_upstream() -> Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let counter = counter.clone();
                    async move { Ok::<_, Infallible>(upstream_handle(req, counter).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(Upstream { addr, hits })
}

async fn upstream_handle(
    mut req: hyper::Request<hyper::body::Incoming>,
    counter: Arc<AtomicUsize>,
) -> hyper::Response<Full<Bytes>> {
    counter.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let protocol = req.headers()[hyper::header::UPGRADE].clone();
        let saw_settings = req.headers().contains_key("http2-settings");
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert("connection", HeaderValue::from_static("upgrade"));
        h.insert("upgrade", protocol);
        if saw_settings {
            h.insert("x-saw-http2-settings", HeaderValue::from_static("yes"));
        }
        return resp;
    }
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (ct, out) = if path == "/echo" {
        ("application/octet-stream", body)
    } else {
        (
            "application/json",
            Bytes::from(format!("{{\"ok\":true,\"received\":{}}}", body.len())),
        )
    };
    let mut resp = hyper::Response::new(Full::new(out));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ct));
    h.insert("server", HeaderValue::from_static("test-upstream"));
    resp
}

/// A gate on a loopback port in front of an upstream, with its event channel.
pub struct TestGate {
    pub gate: Gate,
    pub addr: SocketAddr,
    pub events: mpsc::Receiver<GateEvent>,
}

impl TestGate {
    pub fn drain_events(&mut self) -> Vec<GateEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

pub fn test_config(mode: Mode) -> GateConfig {
    GateConfig {
        mode,
        auto_alert: None,
        header_read_timeout: Duration::from_secs(5),
        alert_window: Duration::ZERO,
        ..GateConfig::default()
    }
}

pub async fn start_gate(
    config: GateConfig,
    profile: Profile,
    upstream: SocketAddr,
) -> Result<TestGate> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(4096);
    let gate = Gate::new(config, SharedProfile::new(profile), Arc::new(tx));
    let serving = gate.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve(listener, upstream).await {
            panic!("gate stopped: {e}");
        }
    });
    Ok(TestGate {
        gate,
        addr,
        events: rx,
    })
}

/// A real upstream and a gate in front of it with `config` and an empty profile; the test holds
/// both for as long as it sends.
pub async fn gate_to_upstream(config: GateConfig) -> Result<(Upstream, TestGate)> {
    let up = start_upstream().await?;
    let gate = start_gate(config, Profile::default(), up.addr).await?;
    Ok((up, gate))
}

/// One HTTP/1.1 exchange's answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection, so tests control exactly which bytes go on the wire.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await.context("connect to gate")?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, req: &TestRequest) -> Result<HttpResponse> {
        self.stream.write_all(&req.to_bytes()).await?;
        self.read_response().await
    }

    async fn fill(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .context("response timed out")??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                bail!("connection closed mid-body");
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill().await? == 0 {
                bail!("connection closed");
            }
        }
    }

    pub async fn read_response(&mut self) -> Result<HttpResponse> {
        let status_line = self.line().await?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .context("status line")?
            .parse()?;
        let mut headers = Vec::new();
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').context("header line")?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 101 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if let Some(n) = resp.header("content-length") {
            let n: usize = n.parse()?;
            resp.body = self.take(n).await?;
        } else if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().await?.trim(), 16)?;
                if size == 0 {
                    self.line().await?;
                    break;
                }
                let chunk = self.take(size).await?;
                resp.body.extend_from_slice(&chunk);
                self.line().await?;
            }
        } else {
            while self.fill().await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Whether the peer closed the connection within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// A request of the shop's traffic: the evaluation corpus's request (`gate-eval`), written
/// out with `host: shop.test`.
#[derive(Clone, Debug)]
pub struct TestRequest(corpus::Req);

impl std::ops::Deref for TestRequest {
    type Target = corpus::Req;

    fn deref(&self) -> &corpus::Req {
        &self.0
    }
}

impl TestRequest {
    pub fn get(target: &str) -> Self {
        TestRequest(corpus::Req::get(target))
    }

    pub fn post(target: &str, content_type: &str, body: &[u8]) -> Self {
        TestRequest(corpus::Req::send(
            "POST",
            target,
            content_type,
            body.to_vec(),
        ))
    }

    pub fn header(self, k: &str, v: &str) -> Self {
        TestRequest(self.0.header(k, v))
    }

    /// The gate's view of this request, as the proxy would build it.
    pub fn to_sample(&self) -> palisade_gate::Request {
        let mut headers = vec![("host".to_string(), "shop.test".to_string())];
        headers.extend(self.headers.iter().cloned());
        if let Some(b) = &self.body {
            headers.push(("content-length".into(), b.len().to_string()));
        }
        let mut r = palisade_gate::Request::new(
            &self.method,
            "HTTP/1.1",
            &self.target,
            headers,
            Some(std::net::Ipv4Addr::LOCALHOST.into()),
        );
        if let Some(b) = &self.body {
            r.attach_body(b);
        }
        r
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes("shop.test")
    }
}

/// The shop's vocabulary (`fixtures/shop-vocabulary.txt`): a `[list]` line, then its entries.
const VOCABULARY: &str = include_str!("../fixtures/shop-vocabulary.txt");

/// The entries of one `[list]` of the shop's vocabulary.
fn vocab(list: &str) -> Vec<&'static str> {
    let head = format!("[{list}]");
    let mut lines = VOCABULARY.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "shop-vocabulary.txt has no {head}");
    lines
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| if l == "\"\"" { "" } else { l })
        .collect()
}

fn words(rng: &mut Rng, vocab: &[&str]) -> String {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| rng.pick(vocab))
        .collect::<Vec<_>>()
        .join("+")
}

/// Benign traffic of an online shop: several endpoints, ordinary varied values, browser-like
/// headers. `fresh` draws search words and notes from a vocabulary never used in learning.
pub fn benign(rng: &mut Rng, fresh: bool) -> TestRequest {
    let search_words = vocab(if fresh { "new-words" } else { "words" });
    let notes = vocab(if fresh { "new-notes" } else { "notes" });
    let mut req = match rng.below(9) {
        0 => TestRequest::get(&format!(
            "/api/products?category={}&page={}&sort={}",
            rng.pick(&vocab("categories")),
            1 + rng.below(20),
            rng.pick(&vocab("sorts"))
        )),
        1 => TestRequest::get(&format!("/api/products/{}", 1000 + rng.below(90000))),
        2 => TestRequest::get(&format!("/search?q={}&lang=en", words(rng, &search_words))),
        3 => {
            let body = format!(
                r#"{{"product_id":{},"quantity":{},"note":"{}","express":{}}}"#,
                1000 + rng.below(90000),
                1 + rng.below(5),
                rng.pick(&notes),
                rng.below(2) == 1
            );
            TestRequest::post("/api/orders", "application/json", body.as_bytes())
        }
        4 => {
            let body = format!(
                "username={}{}&password={}&remember=on",
                rng.pick(&vocab("first-names")),
                rng.below(100),
                rng.hex(12)
            );
            TestRequest::post(
                "/login",
                "application/x-www-form-urlencoded",
                body.as_bytes(),
            )
        }
        5 => TestRequest::get(&format!(
            "/users/{}/orders?limit={}",
            10 + rng.below(5000),
            rng.pick(&["10", "20", "50"])
        )),
        6 => TestRequest::get(&format!("/static/{}", rng.pick(&vocab("files")))),
        7 => {
            let ext = rng.pick(&["jpg", "png"]);
            let ct = if ext == "jpg" {
                "image/jpeg"
            } else {
                "image/png"
            };
            let file = format!(
                "{}-{}.{ext}",
                rng.pick(&vocab("first-names")),
                rng.below(1000)
            );
            avatar_upload(&rng.hex(16), &(10 + rng.below(5000)).to_string(), &file, ct)
        }
        _ => TestRequest::get(&format!(
            "/api/products?category={}",
            rng.pick(&vocab("categories"))
        )),
    };
    req = req
        .header("user-agent", rng.pick(&vocab("user-agents")))
        .header("accept", rng.pick(&vocab("accepts")))
        .header("accept-language", rng.pick(&vocab("languages")));
    if rng.below(2) == 0 {
        req = req.header("cookie", &format!("session={}", rng.hex(32)));
    }
    if rng.below(3) == 0 {
        req = req.header(
            "x-forwarded-for",
            &format!(
                "{}.{}.{}.{}",
                1 + rng.below(223),
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            ),
        );
    }
    req
}

/// A multipart upload of an avatar picture with the owner's id.
pub fn avatar_upload(
    boundary: &str,
    user_id: &str,
    filename: &str,
    content_type: &str,
) -> TestRequest {
    let boundary = format!("----shopform{boundary}");
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"user_id\"\r\n\r\n{user_id}\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"avatar\"; filename=\"{filename}\"\r\ncontent-type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&[0x89, b'P', b'N', b'G', 0, 1, 2, 3, 0xff, 0xd8]);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    TestRequest::post(
        "/api/avatar",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    )
}

/// The attacks of `fixtures/attacks.tsv` (its header says how a line reads), shared by the
/// detection and persistence suites.
const ATTACKS: &str = include_str!("../fixtures/attacks.tsv");

/// A field of `attacks.tsv` with each `{{TEXT*N}}` written out: TEXT N times.
fn expand(field: &str) -> String {
    let Some((head, rest)) = field.split_once("{{") else {
        return field.to_string();
    };
    let parsed = rest.split_once("}}").and_then(|(inner, tail)| {
        let (text, n) = inner.rsplit_once('*')?;
        Some((text, n.parse::<usize>().ok()?, tail))
    });
    let Some((text, n, tail)) = parsed else {
        panic!("attacks.tsv: {field:?}: {{{{TEXT*N}}}} expected");
    };
    format!("{head}{}{}", text.repeat(n), expand(tail))
}

/// Attacks, each named by its family, delivered in the places a real exploit would use.
pub fn attacks() -> Vec<(&'static str, TestRequest)> {
    let ua = vocab("user-agents")[0];
    let get = |target: &str| {
        TestRequest::get(target)
            .header("user-agent", ua)
            .header("accept", "*/*")
    };
    let order = |note: &str| {
        let body = format!(r#"{{"product_id":1234,"quantity":1,"note":"{note}","express":false}}"#);
        TestRequest::post("/api/orders", "application/json", body.as_bytes())
            .header("user-agent", ua)
    };
    let login = |user: &str| {
        let body = format!("username={user}&password=abc123&remember=on");
        TestRequest::post(
            "/login",
            "application/x-www-form-urlencoded",
            body.as_bytes(),
        )
        .header("user-agent", ua)
    };
    let upload = |user_id: &str, filename: &str| {
        avatar_upload("0123456789abcdef", user_id, filename, "image/png").header("user-agent", ua)
    };
    let lines = ATTACKS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    lines
        .map(|line| {
            let mut fields = line.split('\t');
            let family = fields.next().unwrap_or_default();
            let how = fields.next().unwrap_or_default();
            let args: Vec<String> = fields.map(expand).collect();
            let req = match (how, args.as_slice()) {
                ("get", [target]) => get(target),
                ("get", [target, name, value]) => get(target).header(name, value),
                ("order", [note]) => order(note),
                ("login", [user]) => login(user),
                ("upload", [user_id, filename]) => upload(user_id, filename),
                _ => panic!("attacks.tsv: {line:?}: not a form its header describes"),
            };
            (family, req)
        })
        .collect()
}
