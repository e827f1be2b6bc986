//! The traffic generator's clients, speaking each server's own protocol from the host: HTTP/1.1,
//! Redis's RESP and PostgreSQL's frontend/backend protocol (simple queries, trust auth).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long one exchange may take before the generator gives up on it.
const EXCHANGE: Duration = Duration::from_secs(10);

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    tokio::time::timeout(EXCHANGE, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect {addr}: no answer in {EXCHANGE:?}"))?
        .with_context(|| format!("connect {addr}"))
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): the status code.
pub async fn http(addr: SocketAddr, method: &str, target: &str, body: &str) -> Result<u16> {
    let exchange = async {
        let mut s = connect(addr).await?;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: corpus.palisade.test\r\n\
             User-Agent: palisade-corpus/1\r\nAccept: */*\r\nConnection: close\r\n"
        );
        if !body.is_empty() || method == "POST" {
            req += &format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req += "\r\n";
        req += body;
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(EXCHANGE, exchange)
        .await
        .with_context(|| format!("{method} {target} to {addr}: no response in {EXCHANGE:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let line = text.lines().next().unwrap_or("");
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {target} to {addr}: bad status line {line:?}"))
}

/// A Redis connection: commands in RESP, one reply read per command.
pub struct Redis {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Redis {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            stream: connect(addr).await?,
            buf: Vec::new(),
        })
    }

    /// Sends one command; the reply's first line (`+OK`, `$3`, `:42`, `*2`, ...). An error
    /// reply (`-ERR ...`) fails.
    pub async fn cmd(&mut self, args: &[&str]) -> Result<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req += &format!("${}\r\n{a}\r\n", a.len());
        }
        let reply = tokio::time::timeout(EXCHANGE, async {
            self.stream.write_all(req.as_bytes()).await?;
            self.reply().await
        })
        .await
        .with_context(|| format!("redis {}: no reply in {EXCHANGE:?}", args[0]))??;
        if reply.starts_with('-') {
            bail!("redis {}: {reply}", args.join(" "));
        }
        Ok(reply)
    }

    /// Reads one whole reply (nested arrays and bulk strings included); its first line.
    async fn reply(&mut self) -> Result<String> {
        let first = self.line().await?;
        let mut pending: i64 = match first.as_bytes().first() {
            Some(b'*') => first[1..].parse().context("redis array length")?,
            Some(b'$') => {
                let n: i64 = first[1..].parse().context("redis bulk length")?;
                if n >= 0 {
                    self.take(usize::try_from(n)? + 2).await?;
                }
                0
            }
            _ => 0,
        };
        while pending > 0 {
            let l = self.line().await?;
            pending -= 1;
            match l.as_bytes().first() {
                Some(b'$') => {
                    let n: i64 = l[1..].parse().context("redis bulk length")?;
                    if n >= 0 {
                        self.take(usize::try_from(n)? + 2).await?;
                    }
                }
                Some(b'*') => pending += l[1..].parse::<i64>().context("redis array")?.max(0),
                _ => {}
            }
        }
        Ok(first)
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("redis closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> Result<()> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        self.buf.drain(..n);
        Ok(())
    }
}

/// A PostgreSQL session over TCP with trust authentication, simple query protocol only.
pub struct Postgres {
    stream: TcpStream,
}

impl Postgres {
    /// Connects as `user` to `database` and waits for ReadyForQuery.
    pub async fn connect(addr: SocketAddr, user: &str, database: &str) -> Result<Self> {
        let mut stream = connect(addr).await?;
        let mut body = Vec::new();
        body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [("user", user), ("database", database)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = (u32::try_from(body.len())? + 4).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        stream.write_all(&msg).await?;
        let mut pg = Self { stream };
        pg.until_ready().await.context("postgres start-up")?;
        Ok(pg)
    }

    /// Runs one simple query (several statements allowed): the rows it returned.
    pub async fn query(&mut self, sql: &str) -> Result<usize> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&(u32::try_from(sql.len())? + 5).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.stream.write_all(&msg).await?;
        self.until_ready()
            .await
            .with_context(|| format!("postgres query {sql:?}"))
    }

    /// Says goodbye (Terminate) so that the server logs an ordinary disconnect.
    pub async fn close(mut self) -> Result<()> {
        self.stream.write_all(&[b'X', 0, 0, 0, 4]).await?;
        Ok(())
    }

    /// Reads messages until ReadyForQuery; counts DataRow messages, fails on ErrorResponse or
    /// on an authentication request other than "ok" (trust).
    async fn until_ready(&mut self) -> Result<usize> {
        let mut rows = 0;
        let mut error = None;
        loop {
            let (tag, body) = tokio::time::timeout(EXCHANGE, self.message())
                .await
                .context("postgres: no answer")??;
            match tag {
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                    bail!("postgres asks for authentication (not trust)")
                }
                b'D' => rows += 1,
                b'E' => {
                    error = Some(
                        body.split(|b| *b == 0)
                            .filter(|f| f.first() == Some(&b'M'))
                            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                            .next()
                            .unwrap_or_else(|| "error".into()),
                    )
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => bail!("postgres: {e}"),
            None => Ok(rows),
        }
    }

    async fn message(&mut self) -> Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let mut body = vec![0u8; usize::try_from(len.saturating_sub(4))?];
        self.stream.read_exact(&mut body).await?;
        Ok((head[0], body))
    }
}

/// Waits until `addr` accepts a TCP connection, for up to `timeout`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{addr}: not listening after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
