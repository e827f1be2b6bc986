//! HTTP/1.1 on the upstream side, as bytes: the request head the gate writes, the response
//! head it parses (httparse), how the response body is framed, and the chunked decoder.

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Method, StatusCode};

/// Largest response head accepted from the upstream.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most response headers accepted from the upstream.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailers accepted after the last chunk (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// What the upstream sent that is not HTTP/1.1 the gate can forward.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The response head does not parse.
    #[error("response head: {0}")]
    Head(#[from] httparse::Error),
    /// The response head is larger than allowed.
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    /// A header the gate cannot carry on (a name or value hyper refuses).
    #[error("response header {0:?}: not forwardable")]
    Header(String),
    /// `Content-Length` is not one number.
    #[error("response content-length: not a single length")]
    ContentLength,
    /// A chunk of a chunked body is malformed.
    #[error("chunked body: {0}")]
    Chunk(&'static str),
    /// The connection closed before the body ended.
    #[error("connection closed before the end of the body")]
    Truncated,
    /// A 101 answer to a request that asked for no upgrade.
    #[error("unrequested 101 switching protocols")]
    UnrequestedUpgrade,
}

/// How the body of a request is sent to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body (and no header saying otherwise).
    None,
    /// The `Content-Length` the client sent, kept in the headers.
    Length,
    /// A body read whole, of this length, which the gate states.
    Sized(u64),
    /// `Transfer-Encoding: chunked`, added by the gate.
    Chunked,
}

/// Writes the request head: request line, headers (hop-by-hop already removed), and the
/// framing header the body needs.
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Sized(n) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::None | RequestFraming::Length => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub(crate) fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the body of a response is delimited (RFC 9112, section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a HEAD request, or a 1xx, 204 or 304 answer.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Headers whose places are noted for sharing the head's bytes; a head with more has its
/// values copied instead (the note is a stack array, set up for every response).
const SHARED_HEADERS: usize = 32;

/// What the headers of a response say about its framing, gathered as they are read.
struct Seen {
    http11: bool,
    close: bool,
    chunked: Option<bool>,
    length: Option<u64>,
    lengths_agree: bool,
}

impl Seen {
    /// Notes one header, checks that it can be forwarded, and adds it to `headers`.
    fn add(
        &mut self,
        headers: &mut HeaderMap,
        raw_name: &[u8],
        value: Result<HeaderValue, hyper::header::InvalidHeaderValue>,
    ) -> Result<(), WireError> {
        let unnamed = || WireError::Header(String::from_utf8_lossy(raw_name).into_owned());
        let name = HeaderName::from_bytes(raw_name).map_err(|_| unnamed())?;
        let value = value.map_err(|_| unnamed())?;
        let bytes = value.as_bytes();
        if name == CONNECTION {
            for token in bytes.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !self.http11 {
                    self.close = false;
                }
            }
        } else if name == hyper::header::TRANSFER_ENCODING {
            // The last coding decides: chunked delimits the body, anything else leaves it
            // to the connection's end.
            let last = bytes.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONTENT_LENGTH {
            for part in bytes.split(|b| *b == b',') {
                match parse_length(part.trim_ascii()) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    _ => self.lengths_agree = false,
                }
            }
        }
        headers.append(name, value);
        Ok(())
    }
}

/// Parses a response head from the start of `buf`. Returns `None` while the head is still
/// incomplete; on success, the head's bytes are consumed from `buf`. Interim (1xx other than
/// 101) responses are consumed and skipped.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Option<Head>, WireError> {
    loop {
        // Left uninitialised: httparse writes what it parses, and filling 128 empty headers
        // for every response would cost more than parsing a small head.
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed? {
            httparse::Status::Partial if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(WireError::HeadTooLarge)
            }
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(len) => len,
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| httparse::Error::Status)?;
        if status.is_informational() && code != 101 {
            buf.advance(len);
            continue;
        }
        if code == 101 && !upgrade {
            return Err(WireError::UnrequestedUpgrade);
        }
        let http11 = resp.version == Some(1);
        let mut seen = Seen {
            http11,
            close: !http11,
            chunked: None,
            length: None,
            lengths_agree: true,
        };
        let count = resp.headers.len();
        let mut headers = HeaderMap::with_capacity(count);
        if count <= SHARED_HEADERS {
            // Where each name and value lies in the head, so that the values can share the
            // head's bytes once it is split off the buffer instead of each being copied.
            let base = buf.as_ptr() as usize;
            let at = |part: &[u8]| (part.as_ptr() as usize - base, part.len());
            let mut spans = [((0, 0), (0, 0)); SHARED_HEADERS];
            for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
                *span = (at(h.name.as_bytes()), at(h.value));
            }
            let head = buf.split_to(len).freeze();
            for &((name_at, name_len), (value_at, value_len)) in &spans[..count] {
                let value =
                    HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len));
                seen.add(&mut headers, &head[name_at..name_at + name_len], value)?;
            }
        } else {
            for h in resp.headers.iter() {
                seen.add(
                    &mut headers,
                    h.name.as_bytes(),
                    HeaderValue::from_bytes(h.value),
                )?;
            }
            buf.advance(len);
        }
        let Seen {
            mut close,
            chunked,
            length,
            lengths_agree,
            ..
        } = seen;
        let no_body = *method == Method::HEAD
            || code == 101
            || code == 204
            || code == 304
            || status.is_informational();
        let framing = if no_body {
            Framing::Empty
        } else if let Some(chunked) = chunked {
            // A length beside a transfer coding is what smuggling looks like: the coding
            // wins, the length is not passed on, and the connection is not reused.
            if length.is_some() || !lengths_agree {
                close = true;
                headers.remove(CONTENT_LENGTH);
            }
            if chunked {
                Framing::Chunked
            } else {
                close = true;
                Framing::Close
            }
        } else if !lengths_agree {
            return Err(WireError::ContentLength);
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            close = true;
            Framing::Close
        };
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive: !close && code != 101,
        }));
    }
}

/// A decimal length, digits only, that fits in 64 bits.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section (this many bytes seen).
    Trailers(usize),
    /// The body has ended.
    Done,
}

impl Chunked {
    /// Decodes what `buf` holds: returns the next data, or `None` when more bytes are needed
    /// (or the body is done: see `self`). Consumes what it decoded.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            match *self {
                Chunked::Done => return Ok(None),
                Chunked::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Some(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let Some(end) = find_crlf(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(None);
                    };
                    buf.advance(end + 2);
                    *self = if end == 0 {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(seen + end + 2)
                    };
                }
            }
        }
    }
}

/// The position of the first CRLF in `buf`, which must come within `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, WireError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= limit => Ok(Some(i)),
        Some(_) => Err(WireError::Chunk("line too long")),
        None if buf.len() > limit + 1 => Err(WireError::Chunk("line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(WireError::Chunk("no chunk size"));
    }
    if digits > 15 {
        return Err(WireError::Chunk("chunk size too large"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(WireError::Chunk("bad chunk-size line"));
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(WireError::Chunk("no chunk size"))?;
        Ok(n * 16 + u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], method: Method) -> Result<Option<Head>, WireError> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, &method, false)
    }

    /// The head of a whole answer to a `method` request.
    fn answer(bytes: &[u8], method: Method) -> Head {
        head(bytes, method).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::HEAD,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = answer(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = answer(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET);
        assert!(!h.keep_alive);
        let h = answer(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(h.keep_alive);
        let h = answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(!h.headers.contains_key(CONTENT_LENGTH));
        let h = answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Length(3));
        assert!(matches!(
            head(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
                Method::GET
            ),
            Err(WireError::ContentLength)
        ));
        assert!(matches!(
            head(
                b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
                Method::GET
            ),
            Err(WireError::ContentLength)
        ));
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn heads_with_many_headers_keep_every_value() {
        for n in [3, SHARED_HEADERS, SHARED_HEADERS + 1, 100] {
            let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                wire.extend_from_slice(format!("x-h{i}: v{i}\r\n").as_bytes());
            }
            wire.extend_from_slice(b"content-length: 2\r\n\r\nok");
            let mut buf = BytesMut::from(&wire[..]);
            let h = parse_head(&mut buf, &Method::GET, false).unwrap().unwrap();
            assert_eq!(h.headers.len(), n + 1);
            for i in 0..n {
                assert_eq!(
                    h.headers[format!("x-h{i}").as_str()],
                    format!("v{i}").as_str()
                );
            }
            assert_eq!((h.framing, &buf[..]), (Framing::Length(2), &b"ok"[..]));
        }
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-bad\x01: v\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, &Method::GET, false).is_err());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\nrest"[..],
        );
        let h = parse_head(&mut buf, &Method::POST, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&buf[..], b"rest");
        let mut buf = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
        assert!(matches!(
            parse_head(&mut buf, &Method::GET, false),
            Err(WireError::UnrequestedUpgrade)
        ));
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\nnext";
        for split in 0..wire.len() {
            let mut state = Chunked::Size;
            let mut buf = BytesMut::from(&wire[..split]);
            let mut body = Vec::new();
            while let Some(d) = state.decode(&mut buf).unwrap() {
                body.extend_from_slice(&d);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(d) = state.decode(&mut buf).unwrap() {
                body.extend_from_slice(&d);
            }
            assert_eq!(state, Chunked::Done, "split at {split}");
            assert_eq!(body, b"hello world");
            assert_eq!(&buf[..], b"next");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"ffffffffffffffff\r\n",
            b"5 x\r\n",
            b"2\r\nabXY",
        ] {
            let mut state = Chunked::Size;
            let mut buf = BytesMut::from(bad);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = state.decode(&mut buf);
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_heads_carry_the_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.test"));
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &Method::POST,
            "/a?b=1",
            &headers,
            RequestFraming::Chunked,
        );
        write_chunk(&mut out, b"hello");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: shop.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
    }
}
