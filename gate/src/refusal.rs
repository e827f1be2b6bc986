//! What the gate does around its own refusals: the head of a request the HTTP parser refused
//! (kept so the event can say what was sent), and the body of a refused request (drained so a
//! kept-alive connection stays usable, or the connection closed with `Connection: close`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONNECTION};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::GateBody;
use crate::rules::printable;

/// Bytes of the last read kept for the event of a parser refusal: enough for a request line.
const KEPT_HEAD: usize = 160;

/// The start of the last chunk read from a client, shared with the connection task.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastRead(Arc<Mutex<Vec<u8>>>);

impl LastRead {
    /// The first line of the last chunk read, printable and bounded.
    pub(crate) fn first_line(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let end = kept
            .iter()
            .position(|b| *b == b'\r' || *b == b'\n')
            .unwrap_or(kept.len());
        printable(&String::from_utf8_lossy(&kept[..end]))
    }
}

/// A client stream that keeps the start of its last read, so that a request the parser
/// refuses can be named in an event. Costs one copy of at most `KEPT_HEAD` bytes per read.
pub(crate) struct Recording<S> {
    inner: S,
    last: LastRead,
}

impl<S> Recording<S> {
    pub(crate) fn new(inner: S) -> (Self, LastRead) {
        let last = LastRead::default();
        (
            Recording {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            let mut kept = this.last.0.lock().unwrap_or_else(PoisonError::into_inner);
            kept.clear();
            kept.extend_from_slice(&fresh[..fresh.len().min(KEPT_HEAD)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The reason of a parser refusal: what hyper found, and the request line as sent.
pub(crate) fn parser_reason(error: &hyper::Error, last: &LastRead) -> String {
    let line = last.first_line();
    if line.is_empty() {
        format!("http: request refused by the parser: {error}")
    } else {
        format!("http: request refused by the parser: {error}: '{line}'")
    }
}

/// Reads what is left of a refused request's body, at most `cap` bytes within `wait`, so that
/// the client's next request on the connection is parsed from where it starts. Returns false
/// when the body is larger, slower or broken: the connection must then close.
pub(crate) async fn drain(mut body: GateBody, cap: usize, wait: Duration) -> bool {
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(d) = frame.data_ref() {
                seen += d.len();
                if seen > cap {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(wait, read).await.unwrap_or(false)
}

/// Marks a refusal as the last answer on its connection: hyper closes it after writing.
pub(crate) fn close_after<B>(resp: &mut hyper::Response<B>) {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}
