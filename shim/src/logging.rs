//! The shim's own log: tracing lines into the `log` FIFO containerd reads beside the bundle.
//!
//! The FIFO is opened non-blocking and read-write: a containerd that stops reading must cost
//! log lines, never a stalled shim.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, format, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// containerd creates this FIFO in the shim's working directory.
const LOG_FIFO: &str = "log";

/// A writer that drops what the FIFO cannot take right now.
#[derive(Clone)]
struct LossyFifo(Arc<File>);

impl Write for LossyFifo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match (&*self.0).write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LossyFifo {
    type Writer = LossyFifo;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Prefixes every line with the shim's id (the pod sandbox's container id).
struct WithShim<F> {
    id: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithShim<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "shim={} ", self.id)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Sends tracing (and the `log` records of the shim library) to containerd's log FIFO.
pub fn init_serve_logging(shim_id: &str, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(LOG_FIFO);
    let format = WithShim {
        id: shim_id.to_string(),
        inner: format().with_ansi(false).with_target(false),
    };
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .event_format(format)
        .with_env_filter(filter);
    let result = match file {
        Ok(f) => builder.with_writer(LossyFifo(Arc::new(f))).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("palisade shim: logging: {e}");
    }
}
