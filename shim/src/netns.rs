//! Sockets inside a pod's network namespace, made by a thread that lives there.
//!
//! A socket keeps the network namespace it was created in, so one thread entered into the pod's
//! namespace can hand out listeners and unconnected sockets that the rest of the shim (in the
//! host's namespace) then uses as if they were local.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::sync::oneshot;

/// Making sockets in a pod's network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: enter: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("network namespace {path}: listen on {addr}: {source}")]
    Listen {
        path: PathBuf,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: socket: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("network namespace {path}: socket thread gone")]
    Gone { path: PathBuf },
}

enum Request {
    Listen(SocketAddr, oneshot::Sender<Result<TcpListener, NetnsError>>),
    Socket(bool, oneshot::Sender<Result<OwnedFd, NetnsError>>),
}

/// A handle to the thread that makes sockets inside one network namespace.
#[derive(Debug, Clone)]
pub struct NetnsSockets {
    path: PathBuf,
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Listen(a, _) => write!(f, "listen {a}"),
            Request::Socket(v6, _) => write!(f, "socket v6={v6}"),
        }
    }
}

impl NetnsSockets {
    /// Starts the thread and enters the namespace at `path` (e.g. `/var/run/netns/cni-...`).
    pub fn enter(path: &Path) -> Result<Self, NetnsError> {
        let ns = std::fs::File::open(path).map_err(|source| NetnsError::Open {
            path: path.into(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), NetnsError>>();
        let thread_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("palisade-netns".into())
            .spawn(move || {
                // This thread never leaves the namespace: it only makes sockets.
                if let Err(source) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(NetnsError::Enter {
                        path: thread_path,
                        source,
                    }));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                serve(&thread_path, rx);
            })
            .map_err(|source| NetnsError::Open {
                path: path.into(),
                source,
            })?;
        ready_rx
            .recv()
            .map_err(|_| NetnsError::Gone { path: path.into() })??;
        Ok(NetnsSockets {
            path: path.into(),
            tx,
        })
    }

    /// A non-blocking listener bound inside the namespace.
    pub async fn listen(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Listen(addr, tx))
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    /// An unconnected, non-blocking TCP socket inside the namespace, ready for `connect`.
    pub async fn tcp_socket(&self, v6: bool) -> Result<tokio::net::TcpSocket, NetnsError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Socket(v6, tx))
            .map_err(|_| self.gone())?;
        let fd = rx.await.map_err(|_| self.gone())??;
        Ok(tokio::net::TcpSocket::from_std_stream(
            std::net::TcpStream::from(fd),
        ))
    }

    fn gone(&self) -> NetnsError {
        NetnsError::Gone {
            path: self.path.clone(),
        }
    }
}

fn serve(path: &Path, rx: mpsc::Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        match req {
            Request::Listen(addr, reply) => {
                let res = TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| NetnsError::Listen {
                        path: path.into(),
                        addr,
                        source,
                    });
                let _ = reply.send(res);
            }
            Request::Socket(v6, reply) => {
                let family = if v6 {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                };
                let res = socket(
                    family,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                    None,
                )
                .map_err(|source| NetnsError::Socket {
                    path: path.into(),
                    source,
                });
                let _ = reply.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A network namespace made with iproute2 for the test, removed on drop.
    struct TestNetns(String);

    impl TestNetns {
        fn new(name: &str) -> Self {
            let status = Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .expect("run ip netns add");
            assert!(status.success(), "ip netns add {name}");
            let up = Command::new("ip")
                .args(["-n", name, "link", "set", "lo", "up"])
                .status()
                .expect("run ip link");
            assert!(up.success(), "bring lo up in {name}");
            TestNetns(name.to_string())
        }
        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/var/run/netns/{}", self.0))
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }

    #[tokio::test]
    async fn listener_and_connections_live_in_the_pod_namespace() {
        let ns = TestNetns::new(&format!("palisade-test-{}", std::process::id()));
        let sockets = NetnsSockets::enter(&ns.path()).unwrap();
        let listener = sockets
            .listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();

        // From the host namespace the pod's loopback port is not there.
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "host must not reach the pod's loopback"
        );

        // A socket made in the pod's namespace reaches it.
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let sock = sockets.tcp_socket(false).await.unwrap();
        let mut client = sock.connect(addr).await.unwrap();
        let mut server = accept.await.unwrap().unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn missing_namespace_names_its_path() {
        let err = NetnsSockets::enter(Path::new("/var/run/netns/palisade-no-such-ns")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("network namespace /var/run/netns/palisade-no-such-ns: open: "),
            "{err}"
        );
    }
}
