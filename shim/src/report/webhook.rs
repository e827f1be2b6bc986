//! The webhook sink: each event's Falco form POSTed to an `http://` URL over a plain HTTP/1.1
//! connection with a deadline, so that Falcosidekick (or anything reading Falco's output) takes it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use palisade_config::WebhookTarget as Target;
use palisade_events::Event;

/// Posting one event failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {host}: resolve: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("webhook {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("webhook {addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("webhook {addr}: answered {status}")]
    Status { addr: String, status: String },
    #[error("webhook: encode event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The request body for one event: its Falco JSON output.
pub fn body(event: &Event) -> Result<Vec<u8>, WebhookError> {
    Ok(serde_json::to_vec(&palisade_events::falco::to_falco(
        event,
    ))?)
}

/// POSTs one event and waits, at most `timeout` in all, for a 2xx status line.
pub fn post(target: &Target, event: &Event, timeout: Duration) -> Result<(), WebhookError> {
    let body = body(event)?;
    let deadline = Instant::now() + timeout;
    let authority = target.authority();
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| WebhookError::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    let io = |source| WebhookError::Io {
        addr: authority.clone(),
        source,
    };
    let timed_out = || WebhookError::Timeout {
        addr: authority.clone(),
        timeout,
    };
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        let Some(left) = remaining() else {
            return Err(timed_out());
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(io(e)),
        (None, None) => return Err(io(std::io::ErrorKind::NotFound.into())),
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: palisade\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        authority,
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    stream
        .set_write_timeout(Some(remaining().ok_or_else(timed_out)?))
        .map_err(io)?;
    stream.write_all(&request).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => io(e),
    })?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 4096 {
        stream
            .set_read_timeout(Some(remaining().ok_or_else(timed_out)?))
            .map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(io(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or("").trim().to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if status_line.starts_with("HTTP/1.") && code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(WebhookError::Status {
            addr: authority.clone(),
            status: if status_line.is_empty() {
                "nothing".to_string()
            } else {
                status_line
            },
        })
    }
}
