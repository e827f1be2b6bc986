//! The webhook sink: each event's Falco form POSTed to an `http://` URL over a plain HTTP/1.1
//! connection with a deadline, so that Falcosidekick (or anything reading Falco's output) takes it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use palisade_events::Event;

/// Posting one event failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {url}: {reason}")]
    Url { url: String, reason: &'static str },
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

/// Where events are posted, parsed once from the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`; https is not spoken.
    pub fn parse(url: &str) -> Result<Self, WebhookError> {
        let bad = |reason| WebhookError::Url {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host and no user info"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| bad("port is not a number"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("needs a host"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:2801/falco").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 2801, "/falco")
        );
        let t = Target::parse("http://sidekick.falco").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = Target::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.authority(), "[::1]:9000");
        let err = Target::parse("https://x").unwrap_err().to_string();
        assert_eq!(err, "webhook https://x: only http:// URLs are supported");
        assert!(Target::parse("http://h:port/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
