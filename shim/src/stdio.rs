//! A process's stdio: pipes or a pty between the container and the FIFOs containerd passes.
//!
//! The FIFOs are opened read-write so that a restarting containerd (no reader for a while) never
//! turns into EPIPE for the container; output is buffered in the FIFO until a reader returns.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::runc::{ChildStdio, LaunchOpts};

/// How long runc may take to hand over the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Setting up or moving stdio failed.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("{what} {path}: {source}")]
    Fifo {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("create pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("console socket {path}: {source}")]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console socket: {0}")]
    Console(String),
    #[error("resize pty: {0}")]
    Resize(#[source] nix::Error),
}

/// The stdio containerd asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The running side of a process's stdio, owned by the shim while the process lives.
#[derive(Debug, Default)]
pub struct ProcessIo {
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    console: Option<Arc<AsyncFd<OwnedFd>>>,
}

/// Stdio being prepared for a runc launch: what runc's child gets, and how to finish afterwards.
pub struct PendingIo {
    child: ChildStdio,
    console_socket: Option<PathBuf>,
    console_rx: Option<JoinHandle<Result<OwnedFd, StdioError>>>,
    console_dir: Option<tempfile::TempDir>,
    io: ProcessIo,
    paths: StdioPaths,
}

impl PendingIo {
    /// runc's options for launching the process this stdio is for (Create's init or an
    /// exec): the child's ends of the pipes, handed over once, the console socket when a
    /// terminal was asked for, and where runc writes the pid and its log.
    pub fn launch_opts<'a>(&'a mut self, pid_file: &'a Path, log_file: &'a Path) -> LaunchOpts<'a> {
        LaunchOpts {
            pid_file,
            console_socket: self.console_socket.as_deref(),
            log_file,
            stdio: std::mem::take(&mut self.child),
        }
    }

    /// Opens the FIFOs and pipes (or a console socket when a terminal is asked for) before runc runs.
    pub async fn prepare(paths: &StdioPaths) -> Result<Self, StdioError> {
        let mut pending = PendingIo {
            child: ChildStdio::default(),
            console_socket: None,
            console_rx: None,
            console_dir: None,
            io: ProcessIo::default(),
            paths: paths.clone(),
        };
        if paths.terminal {
            let dir = tempfile::Builder::new()
                .prefix("palisade-pty")
                .tempdir()
                .map_err(|source| StdioError::ConsoleSocket {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let sock = dir.path().join("console.sock");
            let listener =
                UnixListener::bind(&sock).map_err(|source| StdioError::ConsoleSocket {
                    path: sock.clone(),
                    source,
                })?;
            pending.console_rx = Some(tokio::spawn(receive_console(listener)));
            pending.console_socket = Some(sock);
            pending.console_dir = Some(dir);
            return Ok(pending);
        }
        if !paths.stdin.is_empty() {
            let fifo = open_fifo_receiver(&paths.stdin)?;
            let (read_end, write_end) = pipe_pair()?;
            let mut sender = pipe::Sender::from_owned_fd(write_end)
                .map_err(fifo_error("stdin pipe", &paths.stdin))?;
            pending.child.stdin = Some(read_end);
            pending.io.stdin = Some(tokio::spawn(async move {
                let mut fifo = fifo;
                let _ = tokio::io::copy(&mut fifo, &mut sender).await;
            }));
        }
        for (path, slot) in [(&paths.stdout, 1), (&paths.stderr, 2)] {
            if path.is_empty() {
                continue;
            }
            let mut fifo = open_fifo_sender(path)?;
            let (read_end, write_end) = pipe_pair()?;
            let mut receiver =
                pipe::Receiver::from_owned_fd(read_end).map_err(fifo_error("output pipe", path))?;
            if slot == 1 {
                pending.child.stdout = Some(write_end);
            } else {
                pending.child.stderr = Some(write_end);
            }
            pending.io.outputs.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut receiver, &mut fifo).await;
                let _ = fifo.flush().await;
            }));
        }
        Ok(pending)
    }

    /// After runc returned: takes the pty master (for a terminal) and starts copying.
    pub async fn finish(mut self) -> Result<ProcessIo, StdioError> {
        let Some(rx) = self.console_rx.take() else {
            return Ok(self.io);
        };
        let master = tokio::time::timeout(CONSOLE_TIMEOUT, rx)
            .await
            .map_err(|_| StdioError::Console("runc sent no pty master".into()))?
            .map_err(|e| StdioError::Console(e.to_string()))??;
        drop(self.console_dir.take());
        let master = Arc::new(
            async_fd(master).map_err(|source| StdioError::ConsoleSocket {
                path: PathBuf::from("pty"),
                source,
            })?,
        );
        if !self.paths.stdin.is_empty() {
            let fifo = open_fifo_receiver(&self.paths.stdin)?;
            self.io.stdin = Some(tokio::spawn(copy_into_pty(fifo, master.clone())));
        }
        if !self.paths.stdout.is_empty() {
            let fifo = open_fifo_sender(&self.paths.stdout)?;
            self.io
                .outputs
                .push(tokio::spawn(copy_from_pty(master.clone(), fifo)));
        }
        self.io.console = Some(master);
        Ok(self.io)
    }

    /// Stops the copiers when runc failed and the process never ran.
    pub fn abandon(mut self) {
        if let Some(rx) = self.console_rx.take() {
            rx.abort();
        }
        self.io.abort();
    }
}

impl ProcessIo {
    /// Closes the process's stdin: it sees EOF once what was written so far is read.
    pub fn close_stdin(&mut self) {
        if let Some(task) = self.stdin.take() {
            task.abort();
        }
    }

    /// Sets the terminal size; a no-op for a process without a terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), StdioError> {
        let Some(master) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
        let rc = unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(StdioError::Resize(nix::Error::last()));
        }
        Ok(())
    }

    /// Waits until the output copiers drained what the process wrote, at most `limit`.
    pub async fn drain(&mut self, limit: Duration) {
        let outputs = std::mem::take(&mut self.outputs);
        let all = futures_join(outputs);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("stdio not drained after {limit:?}");
        }
        self.close_stdin();
    }

    fn abort(&mut self) {
        self.close_stdin();
        for t in self.outputs.drain(..) {
            t.abort();
        }
        self.console = None;
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.abort();
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Registers an owned descriptor with the reactor.
pub(crate) fn async_fd<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: every caller passes a type that owns its descriptor (OwnedFd, EventFd, Inotify), so
    // the descriptor stays open and the same for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), StdioError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)
}

/// Names the fifo or pipe, and what was being done with it, in an I/O error.
fn fifo_error(what: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> StdioError {
    let path = path.to_string();
    move |source| StdioError::Fifo { what, path, source }
}

fn open_fifo_sender(path: &str) -> Result<pipe::Sender, StdioError> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(fifo_error("open output fifo", path))
}

fn open_fifo_receiver(path: &str) -> Result<pipe::Receiver, StdioError> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(fifo_error("open stdin fifo", path))
}

/// Accepts runc's connection on the console socket and takes the pty master it sends.
async fn receive_console(listener: UnixListener) -> Result<OwnedFd, StdioError> {
    let (stream, _) = listener
        .accept()
        .await
        .map_err(|e| StdioError::Console(format!("accept: {e}")))?;
    loop {
        stream
            .readable()
            .await
            .map_err(|e| StdioError::Console(format!("wait: {e}")))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                for c in msg
                    .cmsgs()
                    .map_err(|e| StdioError::Console(e.to_string()))?
                {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        if let Some(&fd) = fds.first() {
                            // SAFETY: the kernel just installed this descriptor for us; we own it.
                            let owned =
                                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                            for extra in &fds[1..] {
                                let _ = nix::unistd::close(*extra);
                            }
                            set_nonblocking(&owned)?;
                            return Ok(owned);
                        }
                    }
                }
                return Err(StdioError::Console(
                    "message carried no file descriptor".into(),
                ));
            }
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(StdioError::Console(format!("recvmsg: {e}"))),
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), StdioError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| StdioError::Console(e.to_string()))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| StdioError::Console(e.to_string()))?;
    Ok(())
}

async fn copy_from_pty(master: Arc<AsyncFd<OwnedFd>>, mut out: pipe::Sender) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match master.readable().await {
            Ok(mut guard) => match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
            }) {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
                // EIO: every slave side closed, the process is gone.
                Ok(Err(_)) => break,
                Err(_would_block) => continue,
            },
            Err(_) => break,
        };
        if out.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
}

async fn copy_into_pty(mut input: pipe::Receiver, master: Arc<AsyncFd<OwnedFd>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut written = 0;
        while written < n {
            let Ok(mut guard) = master.writable().await else {
                return;
            };
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref(), &buf[written..n]).map_err(std::io::Error::from)
            }) {
                Ok(Ok(w)) => written += w,
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use std::path::Path;

    fn mkfifo(dir: &Path, name: &str) -> String {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[tokio::test]
    async fn output_pipe_reaches_fifo_and_stdin_reaches_child() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StdioPaths {
            stdin: mkfifo(dir.path(), "in"),
            stdout: mkfifo(dir.path(), "out"),
            stderr: String::new(),
            terminal: false,
        };
        let mut out_reader = pipe::OpenOptions::new()
            .open_receiver(&paths.stdout)
            .unwrap();
        let mut in_writer = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&paths.stdin)
            .unwrap();
        let mut pending = PendingIo::prepare(&paths).await.unwrap();
        let child_out = pending.child.stdout.take().unwrap();
        let child_in = pending.child.stdin.take().unwrap();
        assert!(pending.child.stderr.is_none());
        let mut io = pending.finish().await.unwrap();

        nix::unistd::write(&child_out, b"hello\n").unwrap();
        drop(child_out);
        let mut got = vec![0u8; 6];
        out_reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello\n");

        in_writer.write_all(b"typed").await.unwrap();
        let mut buf = [0u8; 5];
        let child_in_file = std::fs::File::from(child_in);
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = child_in_file;
            f.read_exact(&mut buf).map(|_| (buf, f))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&read.0, b"typed");
        io.close_stdin();
        let mut rest = Vec::new();
        let n = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = read.1;
            f.read_to_end(&mut rest)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(n, 0, "stdin must be at EOF after close_stdin");
        io.drain(Duration::from_secs(5)).await;
    }
}
