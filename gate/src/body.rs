//! The body type the proxy forwards: frames read ahead for inspection, then the rest streamed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::idle::Busy;
use crate::upstream::UpstreamBody;

/// The error of a forwarded body: the client's side (hyper) or the upstream's (the gate's
/// own HTTP/1.1 reader).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What is left to stream after the frames read ahead.
#[derive(Debug)]
enum Rest {
    /// A request body, still arriving from the client.
    Client(Incoming),
    /// A response body, still arriving from the upstream.
    Upstream(UpstreamBody),
    /// One piece, known whole (a response body that came with its head, or the gate's own
    /// answer): no queue to allocate.
    Once(Option<Bytes>),
}

/// A body that replays the frames already read, then streams whatever is left of the
/// original; with nothing read ahead it is a plain pass-through.
#[derive(Debug)]
pub struct GateBody {
    read_ahead: VecDeque<Frame<Bytes>>,
    rest: Option<Rest>,
    /// For a response: its request, busy until the body is written and dropped.
    busy: Option<Busy>,
}

impl GateBody {
    /// Streams `body` as it is.
    pub fn stream(body: Incoming) -> Self {
        GateBody {
            read_ahead: VecDeque::new(),
            rest: Some(Rest::Client(body)),
            busy: None,
        }
    }

    /// Streams a response body from the upstream.
    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        GateBody {
            read_ahead: VecDeque::new(),
            rest: Some(Rest::Upstream(body)),
            busy: None,
        }
    }

    /// No body at all.
    pub(crate) fn empty() -> Self {
        GateBody {
            read_ahead: VecDeque::new(),
            rest: None,
            busy: None,
        }
    }

    /// Takes the data frames read ahead while nothing else is left: the whole body, which can
    /// be written with the head at once. `None` when part of the body is still to come.
    pub(crate) fn take_whole(&mut self) -> Option<VecDeque<Frame<Bytes>>> {
        match &self.rest {
            Some(Rest::Client(body)) if !body.is_end_stream() => None,
            Some(Rest::Upstream(_)) => None,
            _ => {
                if let Some(Rest::Once(Some(bytes))) = self.rest.take() {
                    self.read_ahead.push_back(Frame::data(bytes));
                }
                Some(std::mem::take(&mut self.read_ahead))
            }
        }
    }

    /// A body made of `bytes` alone (the gate's own responses).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GateBody {
            read_ahead: VecDeque::new(),
            rest: Some(Rest::Once(Some(bytes.into()))),
            busy: None,
        }
    }

    /// Keeps `busy` until this body is dropped: the connection is not idle while its answer
    /// is being written.
    pub(crate) fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    fn buffered_len(&self) -> u64 {
        self.read_ahead
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum()
    }
}

impl Body for GateBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.read_ahead.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Some(Rest::Client(rest)) => Pin::new(rest)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
            Some(Rest::Upstream(rest)) => rest.poll_frame(cx),
            Some(Rest::Once(once)) => Poll::Ready(once.take().map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read_ahead.is_empty()
            && match &self.rest {
                None => true,
                Some(Rest::Client(r)) => r.is_end_stream(),
                Some(Rest::Upstream(r)) => r.is_end_stream(),
                Some(Rest::Once(once)) => once.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.buffered_len();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let h = match rest {
                    Rest::Client(r) => r.size_hint(),
                    Rest::Upstream(r) => r.size_hint(),
                    Rest::Once(once) => {
                        SizeHint::with_exact(once.as_ref().map_or(0, |b| b.len() as u64))
                    }
                };
                let mut hint = SizeHint::new();
                hint.set_lower(h.lower() + buffered);
                if let Some(upper) = h.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

/// Reads `body` ahead up to `cap` bytes. Returns the body bytes when the whole body fit (to be
/// inspected), and the body to forward, which replays what was read either way.
pub async fn read_ahead(
    mut body: Incoming,
    cap: usize,
) -> Result<(Option<Vec<u8>>, GateBody), hyper::Error> {
    if body.size_hint().lower() > cap as u64 {
        return Ok((None, GateBody::stream(body)));
    }
    let mut frames = VecDeque::new();
    let mut data = Vec::new();
    loop {
        if body.is_end_stream() {
            let forward = GateBody {
                read_ahead: frames,
                rest: None,
                busy: None,
            };
            return Ok((Some(data), forward));
        }
        match body.frame().await {
            None => {
                let forward = GateBody {
                    read_ahead: frames,
                    rest: None,
                    busy: None,
                };
                return Ok((Some(data), forward));
            }
            Some(frame) => {
                let frame = frame?;
                if let Some(d) = frame.data_ref() {
                    data.extend_from_slice(d);
                }
                frames.push_back(frame);
                if data.len() > cap {
                    let forward = GateBody {
                        read_ahead: frames,
                        rest: Some(Rest::Client(body)),
                        busy: None,
                    };
                    return Ok((None, forward));
                }
            }
        }
    }
}
