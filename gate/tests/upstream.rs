//! The gate's own HTTP/1.1 client against a scripted upstream on a real socket: response
//! bodies by length, chunks and close, interim answers, HEAD, 204 and 304 without bodies,
//! `Connection: close`, malformed and truncated answers, request body framing, hop-by-hop
//! headers, and which answers leave the upstream connection kept alive.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use common::{start_gate, test_config, Client, TestGate, TestRequest};
use palisade_gate::{Mode, Profile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted answer: written in pieces (with a pause between, so that the gate reads
/// them separately), then the connection closed or kept.
struct Answer {
    pieces: Vec<&'static [u8]>,
    close: bool,
}

/// A plain `200 ok` answer.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn kept(pieces: &[&'static [u8]]) -> Answer {
    Answer {
        pieces: pieces.to_vec(),
        close: false,
    }
}

fn closing(pieces: &[&'static [u8]]) -> Answer {
    Answer {
        pieces: pieces.to_vec(),
        close: true,
    }
}

/// An upstream that answers the n-th request it receives, over all its connections, with the
/// n-th scripted answer, and records each request as it arrived.
struct Scripted {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn request(&self, n: usize) -> String {
        let seen = lock(&self.seen);
        String::from_utf8_lossy(&seen[n]).into_owned()
    }
}

async fn scripted(answers: Vec<Answer>) -> Result<Scripted> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (a, s) = (accepts.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, answers.clone(), s.clone()));
        }
    });
    Ok(Scripted {
        addr,
        accepts,
        seen,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Answers = Arc<Mutex<std::vec::IntoIter<Answer>>>;

async fn serve(mut stream: TcpStream, answers: Answers, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        lock(&seen).push(request);
        let Some(answer) = lock(&answers).next() else {
            return;
        };
        for (i, piece) in answer.pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if answer.close {
            return;
        }
    }
}

/// Reads one request (head, and a body by `content-length` or chunked) off `buf` and the
/// stream; `None` when the connection closes first.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let end = if let Some(n) = length {
        while buf.len() < head_end + n {
            fill(stream, buf).await?;
        }
        head_end + n
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                break head_end + i + 5;
            }
            fill(stream, buf).await?;
        }
    } else {
        head_end
    };
    Some(buf.drain(..end).collect())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// An upstream scripted with `answers`, a learning gate (every request passes) in front of
/// it, and a client of the gate.
async fn through_gate(answers: Vec<Answer>) -> Result<(Scripted, TestGate, Client)> {
    let up = scripted(answers).await?;
    let gate = start_gate(test_config(Mode::Learn), Profile::default(), up.addr).await?;
    let client = Client::connect(gate.addr).await?;
    Ok((up, gate, client))
}

/// Sends `req` and expects the answer `(status, body)`.
async fn expect(c: &mut Client, req: &TestRequest, want: (u16, &[u8]), what: &str) -> Result<()> {
    let r = c.send(req).await?;
    assert_eq!((r.status, r.body.as_slice()), want, "{what}");
    Ok(())
}

/// Reads a response head only (the answer to a HEAD request) off the raw stream.
async fn read_head_only(c: &mut Client) -> Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.stream.read(&mut b))
            .await
            .context("head timed out")??;
        anyhow::ensure!(n == 1, "connection closed in the head");
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn lengths_chunks_and_interim_answers_share_one_upstream_connection() -> Result<()> {
    let (up, _gate, mut c) = through_gate(vec![
        kept(&[
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello",
            b" world",
        ]),
        kept(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]),
        kept(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
        ]),
        kept(&[b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"]),
        kept(&[b"HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\ncontent-length: 50\r\n\r\n"]),
        kept(&[OK]),
    ])
    .await?;
    let get = TestRequest::get("/a");
    expect(&mut c, &get, (200, b"hello world"), "by length").await?;
    expect(&mut c, &get, (200, b"ok"), "1xx skipped").await?;
    let r = c.send(&get).await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(r.header("x-trailer"), None, "trailers are not headers");
    let r = c.send(&get).await?;
    assert_eq!((r.status, r.header("x-a")), (204, Some("1")));
    let r = c.send(&get).await?;
    assert_eq!((r.status, r.header("etag")), (304, Some("\"a\"")));
    expect(&mut c, &get, (200, b"ok"), "the 304 had no body").await?;
    assert_eq!(
        up.accepts(),
        1,
        "every answer left the upstream connection usable"
    );
    Ok(())
}

#[tokio::test]
async fn head_answers_have_no_body() -> Result<()> {
    let (up, _gate, mut c) = through_gate(vec![
        kept(&[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n"]),
        kept(&[OK]),
    ])
    .await?;
    c.stream
        .write_all(b"HEAD /a HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        .await?;
    let head = read_head_only(&mut c).await?.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 5"), "{head}");
    let get = TestRequest::get("/b");
    expect(&mut c, &get, (200, b"ok"), "after the HEAD").await?;
    assert_eq!(up.accepts(), 1);
    assert!(up.request(0).starts_with("HEAD /a HTTP/1.1\r\n"));
    Ok(())
}

#[tokio::test]
async fn close_delimited_and_connection_close_answers_end_the_upstream_connection() -> Result<()> {
    let (up, _gate, mut c) = through_gate(vec![
        closing(&[b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"]),
        closing(&[b"HTTP/1.1 200 OK\r\nx-b: 2\r\n\r\nuntil ", b"close"]),
        kept(&[
            b"HTTP/1.1 200 OK\r\nconnection: x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nx-end: 2\r\ncontent-length: 2\r\n\r\nok",
        ]),
        kept(&[b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"]),
        kept(&[OK]),
    ])
    .await?;
    let get = TestRequest::get("/a");
    let r = c.send(&get).await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(
        r.header("connection"),
        None,
        "the client connection stays open"
    );
    let r = c.send(&get).await?;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"until close"[..]));
    assert_eq!(r.header("x-b"), Some("2"));
    let r = c.send(&get).await?;
    assert_eq!(r.body, b"ok");
    assert_eq!(r.header("x-end"), Some("2"));
    assert_eq!((r.header("x-hop"), r.header("keep-alive")), (None, None));
    let r = c.send(&get).await?;
    assert_eq!(r.body, b"ok", "an HTTP/1.0 answer");
    let r = c.send(&get).await?;
    assert_eq!(r.body, b"ok");
    assert_eq!(
        up.accepts(),
        4,
        "a connection each for the close, the close-delimited body and the HTTP/1.0 answer \
         without keep-alive; the hop-by-hop answer's connection carried the HTTP/1.0 one"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_or_missing_answers_are_502() -> Result<()> {
    let malformed: [(&str, &'static [u8]); 3] = [
        (
            "conflicting lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        ),
        ("no HTTP", b"NOT HTTP AT ALL\r\n\r\n"),
        (
            "unrequested 101",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
        ),
    ];
    let mut answers: Vec<Answer> = malformed.iter().map(|(_, a)| kept(&[a])).collect();
    answers.extend([kept(&[OK]), closing(&[]), kept(&[OK])]);
    let (up, _gate, mut c) = through_gate(answers).await?;
    let get = TestRequest::get("/a");
    for (what, _) in malformed {
        let r = c.send(&get).await?;
        assert_eq!(r.status, 502, "{what}");
    }
    expect(&mut c, &get, (200, b"ok"), "a good answer").await?;
    // The kept-alive connection closes without an answer to a POST: it may have been
    // received, so it is not sent again.
    let post = TestRequest::post("/a", "application/json", br#"{"a":1}"#);
    let r = c.send(&post).await?;
    assert_eq!(r.status, 502);
    expect(&mut c, &get, (200, b"ok"), "after the POST").await?;
    assert_eq!(
        lock(&up.seen).len(),
        6,
        "each request reached the upstream once"
    );
    assert_eq!(up.accepts(), 5);
    Ok(())
}

#[tokio::test]
async fn a_truncated_body_ends_the_client_connection() -> Result<()> {
    let (_up, gate, mut c) = through_gate(vec![
        closing(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]),
        closing(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"]),
        kept(&[OK]),
    ])
    .await?;
    let get = TestRequest::get("/a");
    assert!(
        c.send(&get).await.is_err(),
        "a body cut short is not passed off as whole"
    );
    let mut c = Client::connect(gate.addr).await?;
    assert!(c.send(&get).await.is_err());
    let mut c = Client::connect(gate.addr).await?;
    expect(&mut c, &get, (200, b"ok"), "a whole body").await?;
    Ok(())
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() -> Result<()> {
    let (up, _gate, mut c) = through_gate((0..4).map(|_| kept(&[OK])).collect()).await?;
    // A length from the client, with hop-by-hop headers to remove.
    c.stream
        .write_all(b"POST /a HTTP/1.1\r\nhost: shop.test\r\nconnection: x-hop\r\nx-hop: 1\r\nkeep-alive: 300\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}")
        .await?;
    assert_eq!(c.read_response().await?.status, 200);
    // Chunked and inspected: read whole, sent with its length.
    c.stream
        .write_all(b"POST /a HTTP/1.1\r\nhost: shop.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":2}\r\n0\r\n\r\n")
        .await?;
    assert_eq!(c.read_response().await?.status, 200);
    // Chunked and not inspected: streamed, chunked again.
    c.stream
        .write_all(b"POST /a HTTP/1.1\r\nhost: shop.test\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.stream.write_all(b"2\r\nde\r\n0\r\n\r\n").await?;
    assert_eq!(c.read_response().await?.status, 200);
    // No body.
    assert_eq!(c.send(&TestRequest::get("/b?c=1")).await?.status, 200);

    let first = up.request(0).to_ascii_lowercase();
    assert!(first.starts_with("post /a http/1.1\r\n"), "{first}");
    assert!(first.contains("content-length: 7\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n{\"a\":1}"), "{first}");
    for hop in ["x-hop", "keep-alive", "connection"] {
        assert!(!first.contains(hop), "{hop} removed: {first}");
    }
    let second = up.request(1).to_ascii_lowercase();
    assert!(second.contains("content-length: 7\r\n"), "{second}");
    assert!(!second.contains("transfer-encoding"), "{second}");
    assert!(second.ends_with("\r\n\r\n{\"a\":2}"), "{second}");
    let third = up.request(2).to_ascii_lowercase();
    assert!(third.contains("transfer-encoding: chunked\r\n"), "{third}");
    assert!(!third.contains("content-length"), "{third}");
    let body = &third[third.find("\r\n\r\n").context("head end")? + 4..];
    let decoded: String = body
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(decoded, "abcde", "{body:?}");
    let fourth = up.request(3);
    assert!(fourth.starts_with("GET /b?c=1 HTTP/1.1\r\n"), "{fourth}");
    assert!(fourth.ends_with("\r\n\r\n"), "no body: {fourth}");
    assert!(!fourth.to_ascii_lowercase().contains("content-length"));
    assert_eq!(up.accepts(), 1);
    Ok(())
}
