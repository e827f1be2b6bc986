//! The upstream side of the proxy: kept-alive connections to the service, and the tunnel
//! that carries an upgraded connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1 as client;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::GateBody;
use crate::proxy::RequestId;

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

/// The upstream side of one client connection: one kept-alive upstream connection, opened on
/// first use and reopened when it closes; upgrades get a connection of their own.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    connect_timeout: Duration,
    connector: Arc<dyn Connector>,
    /// The kept-alive connection while no request uses it. A request takes it out and puts
    /// it back once its request is written: requests of one client connection come one at a
    /// time, so there is nothing to wait for, and a plain lock held for no await is enough.
    sender: Mutex<Option<client::SendRequest<GateBody>>>,
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
    /// The HTTP exchange failed.
    #[error("upstream {addr}: {source}")]
    Http {
        /// The upstream.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
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
            sender: Mutex::new(None),
        }
    }

    async fn connect(
        &self,
        upgrades: bool,
    ) -> Result<client::SendRequest<GateBody>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.connector.connect(self.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.addr))?
            .map_err(|source| UpstreamError::Connect {
                addr: self.addr,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        // Head and body copied into one buffer and written at once: cheaper than queueing them
        // for a vectored write for the small messages most requests are.
        let (sender, conn) = client::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.http_error(source))?;
        let addr = self.addr;
        tokio::spawn(async move {
            let result = if upgrades {
                conn.with_upgrades().await
            } else {
                conn.await
            };
            if let Err(e) = result {
                tracing::debug!(upstream = %addr, error = %e, "gate: upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn slot(&self) -> MutexGuard<'_, Option<client::SendRequest<GateBody>>> {
        // Nothing is left half-done under this lock: a poisoned one is used as it is.
        self.sender.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn http_error(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Http {
            addr: self.addr,
            source,
        }
    }

    /// Sends `req` on the kept-alive connection. When that connection turns out closed before
    /// the request was written (the service dropped an idle connection just now), hyper hands
    /// the request back and it is sent once more on a fresh connection.
    pub(crate) async fn send(
        &self,
        req: hyper::Request<GateBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, UpstreamError> {
        let mut req = req;
        let mut retried = false;
        loop {
            let kept = self.slot().take();
            let reusable = match kept {
                Some(mut s) => s.ready().await.is_ok().then_some(s),
                None => None,
            };
            let mut sender = match reusable {
                Some(s) => s,
                // Boxed: connecting is rare, and its future would make every request's larger.
                None => Box::pin(self.connect(false)).await?,
            };
            let response = sender.try_send_request(req);
            *self.slot() = Some(sender);
            match response.await {
                Ok(r) => return Ok(r),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !retried => {
                        tracing::debug!(upstream = %self.addr, error = %e.error(), "gate: upstream connection closed, retrying on a new one");
                        *self.slot() = None;
                        req = unsent;
                        retried = true;
                    }
                    _ => return Err(self.http_error(e.into_error())),
                },
            }
        }
    }

    pub(crate) async fn send_upgrade(
        &self,
        req: hyper::Request<GateBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, UpstreamError> {
        let mut sender = self.connect(true).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.http_error(e))
    }
}

/// After a 101, copies bytes both ways until either side closes.
pub(crate) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    id: RequestId,
) {
    match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                Ok((to_up, to_client)) => {
                    tracing::debug!(request_id = %id, to_up, to_client, "gate: upgraded connection closed")
                }
                Err(e) => {
                    tracing::debug!(request_id = %id, error = %e, "gate: upgraded connection failed")
                }
            }
        }
        (c, u) => {
            tracing::debug!(request_id = %id, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "gate: upgrade failed")
        }
    }
}
