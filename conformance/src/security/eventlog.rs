//! Reading the shims' violation log (`events.jsonl`) from a mark on, and a small HTTP/1.1
//! client for the gate checks: what the gate and monitor checks observe.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::suite::Ctx;

/// The violation log from the moment [`EventLog::mark`] was called.
pub struct EventLog {
    path: PathBuf,
    from: u64,
}

impl EventLog {
    /// Remembers the log's current end: only lines written later are read.
    pub fn mark(ctx: &Ctx) -> Result<Self> {
        let path = super::events_log(ctx)?;
        let from = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Self { path, from })
    }

    /// Every whole event line written since the mark (the log is not rotated during a run:
    /// it is bounded at megabytes, the suite writes kilobytes).
    pub fn events(&self) -> Result<Vec<Value>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.path.display())),
        };
        let start = usize::try_from(self.from)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let mut out = Vec::new();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let v: Value = serde_json::from_str(line.trim())
                .with_context(|| format!("event log line {line:?}"))?;
            out.push(v);
        }
        Ok(out)
    }

    /// The events since the mark that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
        Ok(self.events()?.into_iter().filter(|e| pred(e)).collect())
    }

    /// Waits up to `timeout` for an event satisfying `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>> {
        crate::suite::poll(timeout, || Ok(self.events()?.into_iter().find(|e| pred(e)))).await
    }

    /// A summary of every event since the mark, for a failure message (empty when the log
    /// cannot be read).
    pub fn seen(&self) -> String {
        summary(&self.events().unwrap_or_default())
    }

    /// Waits up to `timeout` for an event satisfying `pred`; without one, fails with `missing`
    /// and the events of pod `pod` that were seen.
    pub async fn expect(
        &self,
        timeout: Duration,
        pod: &str,
        pred: impl Fn(&Value) -> bool,
        missing: impl FnOnce() -> String,
    ) -> Result<Value> {
        match self.wait_for(timeout, pred).await? {
            Some(e) => Ok(e),
            None => {
                let seen = self.matching(|e| field(e, "/workload/pod") == pod)?;
                bail!("{}; saw {}", missing(), summary(&seen))
            }
        }
    }
}

/// A string field of an event by JSON pointer (`/workload/pod`), empty when absent.
pub fn field<'a>(e: &'a Value, pointer: &str) -> &'a str {
    e.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// An event of pod `pod` raised under rule `rule`.
pub fn of_pod_rule<'a>(pod: &'a str, rule: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| field(e, "/workload/pod") == pod && field(e, "/rule/name") == rule
}

/// One line per event, short enough for a failure message.
pub fn summary(events: &[Value]) -> String {
    let mut out: Vec<String> = events
        .iter()
        .take(8)
        .map(|e| {
            format!(
                "{}:{}:{}:{}",
                field(e, "/source"),
                field(e, "/rule/name"),
                field(e, "/action"),
                field(e, "/workload/pod")
            )
        })
        .collect();
    if events.len() > 8 {
        out.push(format!("... {} more", events.len() - 8));
    }
    format!("[{}]", out.join(", "))
}

/// The pod's address on the test bridge.
pub async fn pod_ip(ctx: &Ctx, pod: &str) -> Result<IpAddr> {
    let status = ctx
        .cri
        .pod_status(pod, false)
        .await?
        .status
        .with_context(|| format!("pod sandbox status {pod}: empty"))?;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    ip.parse()
        .with_context(|| format!("pod {pod}: ip {ip:?} is not an address"))
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET target` over a fresh connection (`Connection: close`), the response read to its end.
pub async fn get(addr: SocketAddr, target: &str) -> Result<Response> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: shop.palisade.test\r\nUser-Agent: palisade-conformance/1\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .with_context(|| format!("send request to {addr}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .with_context(|| format!("read response from {addr}"))?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {target} from {addr}: no response in 10s"))??;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET {target} from {addr}: no response head in {text:?}");
    };
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {target}: bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}
