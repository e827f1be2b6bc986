//! WebSocket client for the CRI streaming server (exec and attach, `v4.channel.k8s.io`).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PROTOCOL: &str = "v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// One streaming session; collects what the server sends per channel.
pub struct Session {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The JSON status sent on the error channel, if any.
    pub status: Option<String>,
    pub closed: bool,
}

impl Session {
    /// Opens the URL returned by Exec or Attach (`http://host:port/...`).
    pub async fn connect(url: &str) -> Result<Self> {
        let ws_url = url
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}"))
            .with_context(|| format!("streaming url {url}: not http"))?;
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .with_context(|| format!("streaming url {url}"))?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        let (ws, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .context("websocket handshake timed out")?
        .with_context(|| format!("websocket connect {url}"))?;
        let proto = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if proto != PROTOCOL {
            bail!("streaming server negotiated subprotocol {proto:?}, want {PROTOCOL}");
        }
        Ok(Self {
            ws,
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: None,
            closed: false,
        })
    }

    async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .context("websocket send")
    }

    pub async fn stdin(&mut self, data: &[u8]) -> Result<()> {
        self.send(STDIN, data).await
    }

    pub async fn resize(&mut self, width: u16, height: u16) -> Result<()> {
        let msg = serde_json::json!({ "Width": width, "Height": height }).to_string();
        self.send(RESIZE, msg.as_bytes()).await
    }

    /// Reads one frame into the per-channel buffers; false once the stream ended.
    async fn read_one(&mut self) -> Result<bool> {
        match self.ws.next().await {
            None => {
                self.closed = true;
                Ok(false)
            }
            Some(Err(e)) => {
                self.closed = true;
                // A reset after the status was delivered is a normal end.
                if self.status.is_some() {
                    Ok(false)
                } else {
                    Err(e).context("websocket read")
                }
            }
            Some(Ok(Message::Binary(b))) => {
                self.take(&b);
                Ok(true)
            }
            Some(Ok(Message::Close(_))) => {
                self.closed = true;
                Ok(false)
            }
            Some(Ok(_)) => Ok(true),
        }
    }

    fn take(&mut self, frame: &[u8]) {
        let Some((&channel, data)) = frame.split_first() else {
            return;
        };
        match channel {
            STDOUT => self.stdout.extend_from_slice(data),
            STDERR => self.stderr.extend_from_slice(data),
            ERROR if !data.is_empty() => {
                let s = String::from_utf8_lossy(data).into_owned();
                self.status = Some(match self.status.take() {
                    Some(prev) => prev + &s,
                    None => s,
                });
            }
            _ => {}
        }
    }

    /// Reads until stdout contains `needle` (or fails after `timeout`).
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.read_until_in(|s| &s.stdout, "stdout", needle, timeout)
            .await
    }

    /// Reads until stderr contains `needle` (or fails after `timeout`).
    pub async fn read_until_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.read_until_in(|s| &s.stderr, "stderr", needle, timeout)
            .await
    }

    async fn read_until_in(
        &mut self,
        buf: fn(&Self) -> &Vec<u8>,
        name: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<()> {
        let fut = async {
            loop {
                if String::from_utf8_lossy(buf(self)).contains(needle) {
                    return Ok(());
                }
                if !self.read_one().await? {
                    bail!("stream ended before {needle:?} appeared");
                }
            }
        };
        let res = tokio::time::timeout(timeout, fut).await;
        let so_far = String::from_utf8_lossy(buf(self)).into_owned();
        match res {
            Ok(r) => r.with_context(|| format!("{name} so far: {so_far:?}")),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {needle:?} on {name}; so far: {so_far:?}"
            ),
        }
    }

    /// Reads until the server closes the stream.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Result<()> {
        let fut = async {
            while self.read_one().await? {}
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(timeout, fut)
            .await
            .with_context(|| format!("stream not closed after {timeout:?}"))?
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit code from the error-channel status: 0 for Success.
    pub fn exit_code(&self) -> Result<i32> {
        let raw = self
            .status
            .as_deref()
            .context("no status on the error channel")?;
        let v: serde_json::Value =
            serde_json::from_str(raw).with_context(|| format!("status {raw:?}"))?;
        if v.get("status").and_then(|s| s.as_str()) == Some("Success") {
            return Ok(0);
        }
        let causes = v
            .pointer("/details/causes")
            .and_then(|c| c.as_array())
            .with_context(|| format!("failure status without causes: {raw}"))?;
        for c in causes {
            if c.get("reason").and_then(|r| r.as_str()) == Some("ExitCode") {
                let msg = c.get("message").and_then(|m| m.as_str()).unwrap_or("");
                return msg
                    .parse()
                    .with_context(|| format!("exit code {msg:?} in status {raw}"));
            }
        }
        bail!("status without an exit code: {raw}")
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
