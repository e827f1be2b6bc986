//! Sending the corpus over real sockets: a small upstream service, a keep-alive HTTP/1.1
//! client that reads answers, and the gate itself on loopback.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// An upstream that answers 200 with a small JSON body to every request.
pub async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                let mut resp =
                    hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}\n")));
                resp.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A blocking keep-alive client: one connection, reopened when the server closes it.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, conn: None }
    }

    /// Sends `raw` and returns the status of the answer; retries once on a fresh connection
    /// when a kept-alive one was closed before answering. Bytes that hold more than one
    /// request head (a smuggled or split request) go on a connection of their own, and every
    /// answer on it counts: the first refusal among them, else the first answer.
    pub fn status(&mut self, raw: &[u8]) -> Result<u16> {
        let heads = raw.windows(4).filter(|w| w == b"\r\n\r\n").count();
        if heads > 1 {
            self.conn = None;
            let first = self.exchange(raw)?;
            let mut answers = vec![first];
            if let Some(conn) = self.conn.as_mut() {
                conn.get_mut()
                    .set_read_timeout(Some(Duration::from_millis(500)))?;
            }
            while self.conn.is_some() {
                match self.exchange(b"") {
                    Ok(s) => answers.push(s),
                    Err(_) => break,
                }
            }
            self.conn = None;
            return Ok(answers
                .iter()
                .copied()
                .find(|s| !(200..400).contains(s))
                .unwrap_or(first));
        }
        let reused = self.conn.is_some();
        match self.exchange(raw) {
            Ok(s) => Ok(s),
            Err(_) if reused => {
                self.conn = None;
                self.exchange(raw)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self, raw: &[u8]) -> Result<u16> {
        if self.conn.is_none() {
            let s =
                TcpStream::connect(self.addr).with_context(|| format!("connect {}", self.addr))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let Some(conn) = self.conn.as_mut() else {
            bail!("no connection")
        };
        conn.get_mut().write_all(raw)?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            self.conn = None;
            bail!("connection closed before an answer");
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .context("status line")?
            .trim()
            .parse()?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut skip = vec![0u8; n + 2];
                conn.read_exact(&mut skip)?;
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            let mut skip = vec![0u8; n];
            conn.read_exact(&mut skip)?;
        } else {
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}
