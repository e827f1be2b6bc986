//! The upstream side of the proxy: the gate's own HTTP/1.1 client on a kept-alive connection
//! to the service (request written in one buffered write, response head parsed with httparse
//! into a reused buffer, body streamed by its framing), and the tunnel of an upgrade.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{BodyError, GateBody};
use crate::proxy::RequestId;
use crate::wire::{
    parse_head, write_chunk, write_request_head, Chunked, Framing, Head, RequestFraming, WireError,
    LAST_CHUNK,
};

/// Opens connections to the upstream. The shim's connector makes its sockets inside the pod's
/// network namespace, so `127.0.0.1` means the pod's loopback, not the node's.
pub trait Connector: Send + Sync {
    /// Connects to `addr`.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;
}

/// Connects from the caller's own network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectConnector;

impl Connector for DirectConnector {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>> {
        Box::pin(TcpStream::connect(addr))
    }
}

/// What a read from the upstream asks for at least: the buffer grows by this when full.
const READ_CHUNK: usize = 8 * 1024;

/// One connection to the upstream with its buffers, which live as long as it does.
#[derive(Debug)]
pub(crate) struct UpConn {
    stream: TcpStream,
    /// Bytes read from the upstream and not yet consumed.
    buf: BytesMut,
    /// The request being written.
    out: Vec<u8>,
}

/// Where an idle kept-alive connection waits for the next request.
type Idle = Arc<Mutex<Option<UpConn>>>;

fn put_back(idle: &Idle, conn: UpConn) {
    // Nothing is left half-done under this lock: a poisoned one is used as it is.
    let mut slot = idle.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(conn);
    }
}

/// The upstream side of one client connection: one kept-alive upstream connection, opened on
/// first use and reopened when it closes; upgrades get a connection of their own.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    connect_timeout: Duration,
    connector: Arc<dyn Connector>,
    /// The kept-alive connection while no request uses it. A request takes it out; its
    /// response body puts it back once read to the end. Requests of one client connection
    /// come one at a time, so a plain lock held for no await is enough.
    idle: Idle,
}

/// Failures to reach the upstream; each ends in a 502 for the client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting took longer than allowed.
    #[error("upstream {0}: connect timed out")]
    ConnectTimeout(SocketAddr),
    /// Connecting failed.
    #[error("upstream {addr}: connect: {source}")]
    Connect {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request or reading the response failed.
    #[error("upstream {addr}: {source}")]
    Io {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The upstream closed the connection before answering.
    #[error("upstream {0}: connection closed before a response")]
    Closed(SocketAddr),
    /// The upstream answered with something that is not forwardable HTTP/1.1.
    #[error("upstream {addr}: {source}")]
    Protocol {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: WireError,
    },
    /// The client's request body failed while it was forwarded.
    #[error("upstream {addr}: request body: {source}")]
    RequestBody {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: BodyError,
    },
}

/// The upstream's answer to one request.
pub(crate) struct Answer {
    pub(crate) response: hyper::Response<GateBody>,
    /// After a 101: the upstream connection, for the tunnel.
    pub(crate) upgraded: Option<UpConn>,
}

/// How one attempt at an exchange failed: before the upstream sent anything (worth one
/// more attempt on a fresh connection when the request can be sent again), or otherwise.
enum Failed {
    Unanswered(UpstreamError),
    Final(UpstreamError),
}

impl Upstream {
    pub(crate) fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Upstream {
            addr,
            connect_timeout,
            connector,
            idle: Arc::new(Mutex::new(None)),
        }
    }

    async fn connect(&self) -> Result<UpConn, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.connector.connect(self.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.addr))?
            .map_err(|source| UpstreamError::Connect {
                addr: self.addr,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(UpConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
        })
    }

    /// The idle connection, unless the upstream closed it (or sent something unasked) while
    /// it was idle. Costs no system call while the connection has nothing to read.
    fn take_idle(&self) -> Option<UpConn> {
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let mut probe = [0u8; 1];
        match conn.stream.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(conn),
            _ => None,
        }
    }

    fn io_error(&self, source: std::io::Error) -> UpstreamError {
        UpstreamError::Io {
            addr: self.addr,
            source,
        }
    }

    /// Sends a request (head already stripped of hop-by-hop headers, `target` in origin form)
    /// and returns the response once its head arrived; its body streams from the upstream and
    /// returns the connection for the next request when read to the end. An upgrade request
    /// gets a connection of its own. When a kept-alive connection turns out closed before
    /// the upstream answered (it dropped an idle connection just now), a request that was
    /// read whole is sent once more on a fresh connection, if sending it twice is harmless
    /// (an idempotent method) or it certainly was not received (the write failed).
    pub(crate) async fn send(
        &self,
        parts: &hyper::http::request::Parts,
        target: &str,
        mut body: GateBody,
        upgrade: bool,
    ) -> Result<Answer, UpstreamError> {
        let whole = body.take_whole();
        let framing = request_framing(&parts.method, &parts.headers, &body, whole.as_ref());
        let mut retried = false;
        loop {
            let kept = if upgrade { None } else { self.take_idle() };
            let reused = kept.is_some();
            let mut conn = match kept {
                Some(c) => c,
                // Boxed: connecting is rare, and its future would make every request's larger.
                None => Box::pin(self.connect()).await?,
            };
            conn.out.clear();
            write_request_head(
                &mut conn.out,
                &parts.method,
                target,
                &parts.headers,
                framing,
            );
            let written = match &whole {
                Some(frames) => self.write_whole(&mut conn, frames, framing).await,
                None => Box::pin(self.write_streamed(&mut conn, &mut body, framing)).await,
            };
            let result = match written {
                Ok(()) => self.read_answer(conn, &parts.method, upgrade).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(answer) => return Ok(answer),
                Err(Failed::Unanswered(e))
                    if reused && !retried && whole.is_some() && may_resend(&parts.method, &e) =>
                {
                    tracing::debug!(upstream = %self.addr, error = %e, "gate: upstream connection closed, retrying on a new one");
                    retried = true;
                }
                Err(Failed::Unanswered(e) | Failed::Final(e)) => return Err(e),
            }
        }
    }

    /// Writes the head and the whole body at once.
    async fn write_whole(
        &self,
        conn: &mut UpConn,
        frames: &VecDeque<Frame<Bytes>>,
        framing: RequestFraming,
    ) -> Result<(), Failed> {
        for data in frames.iter().filter_map(Frame::data_ref) {
            append_body(&mut conn.out, data, framing);
        }
        if framing == RequestFraming::Chunked {
            conn.out.extend_from_slice(LAST_CHUNK);
        }
        conn.stream
            .write_all(&conn.out)
            .await
            .map_err(|e| Failed::Unanswered(self.io_error(e)))
    }

    /// Writes the head and the body as it arrives from the client.
    async fn write_streamed(
        &self,
        conn: &mut UpConn,
        body: &mut GateBody,
        framing: RequestFraming,
    ) -> Result<(), Failed> {
        let io = |e| Failed::Final(self.io_error(e));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| {
                Failed::Final(UpstreamError::RequestBody {
                    addr: self.addr,
                    source,
                })
            })?;
            if let Some(data) = frame.data_ref() {
                append_body(&mut conn.out, data, framing);
            }
            // Written as it comes (a client may wait for an answer before sending more); the
            // last piece goes out with the end of the body.
            if !body.is_end_stream() {
                continue_write(conn).await.map_err(io)?;
            }
        }
        if framing == RequestFraming::Chunked {
            conn.out.extend_from_slice(LAST_CHUNK);
        }
        continue_write(conn).await.map_err(io)
    }

    /// Reads the response head and makes the response whose body streams the rest.
    async fn read_answer(
        &self,
        mut conn: UpConn,
        method: &Method,
        upgrade: bool,
    ) -> Result<Answer, Failed> {
        let mut received = false;
        let head = loop {
            if !conn.buf.is_empty() {
                let parsed = parse_head(&mut conn.buf, method, upgrade).map_err(|source| {
                    Failed::Final(UpstreamError::Protocol {
                        addr: self.addr,
                        source,
                    })
                })?;
                if let Some(head) = parsed {
                    break head;
                }
            }
            if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
                conn.buf.reserve(READ_CHUNK);
            }
            match conn.stream.read_buf(&mut conn.buf).await {
                Ok(0) if received => {
                    return Err(Failed::Final(UpstreamError::Protocol {
                        addr: self.addr,
                        source: WireError::Truncated,
                    }))
                }
                Ok(0) => return Err(Failed::Unanswered(UpstreamError::Closed(self.addr))),
                Ok(_) => received = true,
                Err(e) if received => return Err(Failed::Final(self.io_error(e))),
                Err(e) => return Err(Failed::Unanswered(self.io_error(e))),
            }
        };
        Ok(self.answer(head, conn, upgrade))
    }

    fn answer(&self, head: Head, mut conn: UpConn, upgrade: bool) -> Answer {
        let Head {
            status,
            headers,
            framing,
            keep_alive,
        } = head;
        // An upgrade's connection is its own, never kept for other requests.
        let keep_alive = keep_alive && !upgrade;
        let mut upgraded = None;
        let body = match framing {
            Framing::Empty if status == StatusCode::SWITCHING_PROTOCOLS => {
                upgraded = Some(conn);
                GateBody::empty()
            }
            Framing::Empty => {
                self.done(conn, keep_alive);
                GateBody::empty()
            }
            // The common case: the whole body came with the head.
            Framing::Length(n) if n <= conn.buf.len() as u64 => {
                let data = conn.buf.split_to(n as usize).freeze();
                self.done(conn, keep_alive);
                if data.is_empty() {
                    GateBody::empty()
                } else {
                    GateBody::full(data)
                }
            }
            Framing::Length(n) => {
                GateBody::upstream(self.body(conn, Reading::Length(n), keep_alive))
            }
            Framing::Chunked => {
                GateBody::upstream(self.body(conn, Reading::Chunked(Chunked::Size), keep_alive))
            }
            Framing::Close => GateBody::upstream(self.body(conn, Reading::Close, false)),
        };
        let mut response = hyper::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Answer { response, upgraded }
    }

    fn body(&self, conn: UpConn, reading: Reading, keep_alive: bool) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            reading,
            home: keep_alive.then(|| self.idle.clone()),
        }
    }

    /// A response read to its end: its connection waits for the next request, if it may
    /// carry one and the upstream sent nothing beyond the response.
    fn done(&self, conn: UpConn, keep_alive: bool) {
        if keep_alive && conn.buf.is_empty() {
            put_back(&self.idle, conn);
        }
    }
}

/// Writes out what `conn.out` holds.
async fn continue_write(conn: &mut UpConn) -> std::io::Result<()> {
    if conn.out.is_empty() {
        return Ok(());
    }
    conn.stream.write_all(&conn.out).await?;
    conn.out.clear();
    Ok(())
}

fn append_body(out: &mut Vec<u8>, data: &[u8], framing: RequestFraming) {
    match framing {
        RequestFraming::Chunked => write_chunk(out, data),
        _ => out.extend_from_slice(data),
    }
}

/// How the request body goes to the upstream: the client's `Content-Length` when it sent one;
/// the length of a body read whole; chunked while its end is not known; none when there is
/// none (`Content-Length: 0` for the methods that carry a body, as clients write them).
fn request_framing(
    method: &Method,
    headers: &hyper::HeaderMap,
    body: &GateBody,
    whole: Option<&VecDeque<Frame<Bytes>>>,
) -> RequestFraming {
    if headers.contains_key(CONTENT_LENGTH) {
        return RequestFraming::Length;
    }
    if let Some(frames) = whole {
        let len: usize = frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(Bytes::len)
            .sum();
        let carries_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        return if len > 0 || carries_body {
            RequestFraming::Sized(len as u64)
        } else {
            RequestFraming::None
        };
    }
    if body.is_end_stream() {
        RequestFraming::None
    } else {
        RequestFraming::Chunked
    }
}

/// Whether a request whose connection failed before any answer may be sent again: when the
/// write itself failed nothing reached the service; otherwise only an idempotent method.
fn may_resend(method: &Method, error: &UpstreamError) -> bool {
    matches!(error, UpstreamError::Io { .. })
        || matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
}

/// How much of a response body is left to read.
#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(Chunked),
    Close,
}

/// A response body still arriving from the upstream; the connection goes back to the idle
/// slot once the body ended cleanly, and is closed when the body fails or is dropped early.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    conn: Option<UpConn>,
    reading: Reading,
    /// Where the connection goes when the body ends; `None` when it must close.
    home: Option<Idle>,
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if conn.buf.is_empty() {
                put_back(&home, conn);
            }
        }
    }

    fn fail(&mut self, e: impl Into<BodyError>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // What the buffer already holds.
            let data = match &mut self.reading {
                Reading::Length(0) => None,
                Reading::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64);
                    *left -= n;
                    Some(conn.buf.split_to(n as usize).freeze())
                }
                Reading::Chunked(state) => match state.decode(&mut conn.buf) {
                    Ok(d) => d,
                    Err(e) => return self.fail(e),
                },
                Reading::Close if !conn.buf.is_empty() => Some(conn.buf.split().freeze()),
                _ => None,
            };
            let ended = matches!(
                self.reading,
                Reading::Length(0) | Reading::Chunked(Chunked::Done)
            );
            if ended {
                self.finish();
            }
            if let Some(d) = data {
                return Poll::Ready(Some(Ok(Frame::data(d))));
            }
            if ended {
                return Poll::Ready(None);
            }
            // More is needed from the upstream.
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 4 {
                conn.buf.reserve(READ_CHUNK);
            }
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) if matches!(self.reading, Reading::Close) => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(WireError::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match conn.stream.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return self.fail(e),
                    }
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.reading, Reading::Length(0))
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// After a 101, copies bytes both ways until either side closes; what the upstream sent
/// after its 101 head goes to the client first.
pub(crate) async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: UpConn, id: RequestId) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(request_id = %id, error = %e, "gate: upgrade failed");
            return;
        }
    };
    let UpConn {
        stream: mut up,
        buf: early,
        ..
    } = upstream;
    let mut c = TokioIo::new(client);
    if !early.is_empty() {
        if let Err(e) = c.write_all(&early).await {
            tracing::debug!(request_id = %id, error = %e, "gate: upgraded connection failed");
            return;
        }
    }
    match tokio::io::copy_bidirectional(&mut c, &mut up).await {
        Ok((to_up, to_client)) => {
            tracing::debug!(request_id = %id, to_up, to_client, "gate: upgraded connection closed")
        }
        Err(e) => {
            tracing::debug!(request_id = %id, error = %e, "gate: upgraded connection failed")
        }
    }
}
