//! The event pipeline every violation goes through: de-duplication and per-container rate
//! limiting, then the sinks (the node's JSON-lines log, a Falco webhook, Prometheus counters,
//! containerd events), each behind its own bounded queue so that a slow sink never blocks a
//! container or the shim.

pub(crate) mod containerd;
pub(crate) mod limit;
pub(crate) mod metrics;
pub(crate) mod runtime;
pub(crate) mod webhook;

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_events::{Action, Event, Rule, Severity, Source};

use self::limit::Limiter;
use self::metrics::Metrics;

pub use palisade_config::{EventSettings, EventSettingsError};
pub use palisade_events::log::EVENTS_FILE;
/// The rule name of the runtime event that reports what the rate limit dropped.
pub const EVENTS_DROPPED_RULE: &str = "events-dropped";
const QUEUE: usize = 1024;
const SINK_QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(250);
const METRICS_EVERY: Duration = Duration::from_secs(5);
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(2);
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// What the reporter needs from the shim besides its settings.
#[derive(Debug, Clone, Default)]
pub struct SinkContext {
    /// Names this shim's metrics file; unique per pod.
    pub shim_id: String,
    /// The shim's containerd event path, for the `/palisade/violation` topic.
    pub containerd: Option<crate::events::EventSender>,
    /// The runtime the event path lives on; the current one when unset.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Sees every event before de-duplication and rate limiting (the compromise judge).
    pub observer: Option<Observer>,
}

/// A callback that sees every reported event; it must not block.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&Event) + Send + Sync>);

impl Observer {
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Observer(Arc::new(f))
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl SinkContext {
    /// The serving shim's `-id` from its arguments, else its pid.
    pub fn from_process() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let id = args
            .windows(2)
            .find(|w| w[0] == "-id" || w[0] == "--id")
            .map(|w| w[1].clone())
            .unwrap_or_else(|| format!("pid-{}", std::process::id()));
        SinkContext {
            shim_id: id,
            containerd: None,
            runtime: None,
            observer: None,
        }
    }

    /// The serving shim's context: its id, its containerd event path and the current runtime.
    pub fn for_shim(events: crate::events::EventSender) -> Self {
        SinkContext {
            containerd: Some(events),
            runtime: tokio::runtime::Handle::try_current().ok(),
            ..Self::from_process()
        }
    }
}

enum Msg {
    Event(Box<Event>),
    Shutdown(mpsc::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    limiter: Mutex<Limiter>,
    metrics: Arc<Metrics>,
    metrics_file: Option<PathBuf>,
    observer: Option<Observer>,
}

/// Where the shim reports violations. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::SyncSender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event(e) => write!(f, "Event({})", e.rule.name),
            Msg::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl Reporter {
    /// Starts the pipeline for `settings`, naming the shim from its arguments.
    pub fn start(settings: EventSettings) -> Reporter {
        Self::start_with(settings, SinkContext::from_process())
    }

    /// Starts the pipeline and its sinks' threads.
    pub fn start_with(settings: EventSettings, ctx: SinkContext) -> Reporter {
        let metrics = Arc::new(Metrics::new(&ctx.shim_id));
        let metrics_file = settings
            .metrics_dir
            .as_ref()
            .map(|d| d.join(format!("{}.prom", file_safe(&ctx.shim_id))));
        let shared = Arc::new(Shared {
            limiter: Mutex::new(Limiter::new(
                Duration::from_millis(settings.dedup_window_ms),
                settings.rate_per_second,
            )),
            metrics: metrics.clone(),
            metrics_file,
            observer: ctx.observer.clone(),
        });
        if let Some(addr) = settings.metrics_listen {
            match metrics::serve(metrics.clone(), addr) {
                Ok(bound) => tracing::info!("metrics served on {bound}"),
                Err(e) => tracing::error!("{e}"),
            }
        }
        if let Some(dir) = &settings.metrics_dir {
            let swept = metrics::sweep_stale(dir);
            if swept > 0 {
                tracing::info!(
                    "metrics {}: removed {swept} files of stopped shims",
                    dir.display()
                );
            }
        }
        let sinks = Sinks::start(&settings, ctx, &metrics);
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let rate = settings.rate_per_second;
        let pipeline_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("palisade-events".into())
            .spawn(move || pipeline(rx, pipeline_shared, sinks, rate));
        if let Err(e) = spawned {
            tracing::error!("event pipeline thread: {e}");
        }
        Reporter { tx, shared }
    }

    /// Counts the event, folds or rate-limits it, and queues what passes for the sinks; an
    /// event the full queue refuses is counted as dropped.
    pub fn report(&self, event: Event) {
        self.shared.metrics.observe(&event);
        if let Some(o) = &self.shared.observer {
            (o.0)(&event);
        }
        let mut out = Vec::new();
        lock(&self.shared.limiter).offer(event, Instant::now(), &mut out);
        for e in out {
            self.enqueue(e);
        }
    }

    fn enqueue(&self, event: Event) {
        match serde_json::to_string(&event) {
            Ok(line) => tracing::warn!(target: "palisade_event", event = %line, "violation"),
            Err(e) => tracing::error!("event: {e}"),
        }
        let n = event.count.max(1);
        if self.tx.try_send(Msg::Event(Box::new(event))).is_err() {
            self.shared.metrics.dropped("queue", n);
        }
    }

    /// Events lost so far, by every sink and the rate limit.
    pub fn dropped(&self) -> u64 {
        self.shared.metrics.dropped_total()
    }

    /// Events lost so far by one sink (`queue`, `rate_limit`, `jsonl`, `webhook`, `containerd`).
    pub fn dropped_by(&self, sink: &str) -> u64 {
        self.shared.metrics.dropped_by(sink)
    }

    /// The counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// Where this shim's `.prom` file is written, when it is.
    pub fn metrics_file(&self) -> Option<&Path> {
        self.shared.metrics_file.as_deref()
    }

    /// Flushes folded events to the sinks, waits a little for them, and removes the metrics
    /// file: the shim is going away and its counters with it.
    pub fn shutdown(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Shutdown(ack)).is_ok() {
            let _ = done.recv_timeout(SHUTDOWN_WAIT * 2);
        }
    }
}

/// The shim's one reporter, started from the first container's configuration with what the
/// shim knows at start (its id and containerd event path).
#[derive(Debug)]
pub struct ReporterCell {
    cell: std::sync::OnceLock<Reporter>,
    ctx: SinkContext,
}

impl ReporterCell {
    pub fn new(ctx: SinkContext) -> Self {
        ReporterCell {
            cell: std::sync::OnceLock::new(),
            ctx,
        }
    }

    /// The reporter, started with `settings` on first use.
    pub fn get_or_start(&self, settings: &EventSettings) -> &Reporter {
        self.cell
            .get_or_init(|| Reporter::start_with(settings.clone(), self.ctx.clone()))
    }

    /// The reporter, if one was started.
    pub fn get(&self) -> Option<&Reporter> {
        self.cell.get()
    }
}

/// The guarded value, also after a panic elsewhere poisoned the lock (the shim must keep
/// reporting).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One sink: a bounded queue into a thread of its own; a full queue or a failed delivery is a
/// counted drop.
struct Sink {
    name: &'static str,
    /// Boxed: a bounded std channel touches every slot when it is made, and an event is
    /// hundreds of bytes.
    tx: Option<mpsc::SyncSender<Box<Event>>>,
    done: mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
}

impl Sink {
    fn spawn<E: Display>(
        name: &'static str,
        metrics: &Arc<Metrics>,
        mut deliver: impl FnMut(&Event) -> Result<(), E> + Send + 'static,
    ) -> Option<Sink> {
        let (tx, rx) = mpsc::sync_channel::<Box<Event>>(SINK_QUEUE);
        let (done_tx, done) = mpsc::channel::<()>();
        let thread_metrics = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("palisade-{name}"))
            .spawn(move || {
                let _done = done_tx;
                // A dead sink fails every event: log the 1st, 2nd, 4th, 8th, ... failure in a row.
                let mut failures: u64 = 0;
                while let Ok(event) = rx.recv() {
                    match deliver(&event) {
                        Ok(()) if failures > 0 => {
                            tracing::info!(
                                "event sink {name}: delivering again after {failures} failures"
                            );
                            failures = 0;
                        }
                        Ok(()) => {}
                        Err(e) => {
                            thread_metrics.dropped(name, event.count.max(1));
                            failures += 1;
                            if failures.is_power_of_two() {
                                tracing::error!("event sink {name}: {e} ({failures} in a row)");
                            }
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Sink {
                name,
                tx: Some(tx),
                done,
                metrics: metrics.clone(),
            }),
            Err(e) => {
                tracing::error!("event sink {name}: thread: {e}");
                None
            }
        }
    }

    fn offer(&self, event: &Event) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Box::new(event.clone())).is_err() {
            self.metrics.dropped(self.name, event.count.max(1));
        }
    }

    /// Closes the queue and waits until `deadline` for the thread to drain it.
    fn close(&mut self, deadline: Instant) {
        self.tx = None;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(left) {
            tracing::warn!("event sink {}: still busy at shutdown", self.name);
        }
    }
}

/// Delivering an event to containerd failed.
#[derive(Debug, thiserror::Error)]
enum ContainerdSinkError {
    #[error("containerd event: encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("containerd event: queue full for {0:?}")]
    Timeout(Duration),
}

struct Sinks {
    all: Vec<Sink>,
}

impl Sinks {
    fn start(settings: &EventSettings, ctx: SinkContext, metrics: &Arc<Metrics>) -> Sinks {
        let mut all = Vec::new();
        let jsonl = settings.clone();
        let path = settings.log_dir.join(EVENTS_FILE);
        all.extend(Sink::spawn("jsonl", metrics, move |event: &Event| {
            let mut line = serde_json::to_vec(event)?;
            line.push(b'\n');
            append(&jsonl, &path, &line).map_err(|e| JsonlError::Write {
                path: path.clone(),
                source: e,
            })
        }));
        if let Some(url) = &settings.webhook_url {
            match webhook::Target::parse(url) {
                Ok(target) => {
                    let timeout = Duration::from_millis(settings.webhook_timeout_ms.max(1));
                    all.extend(Sink::spawn("webhook", metrics, move |event: &Event| {
                        webhook::post(&target, event, timeout)
                    }));
                }
                Err(e) => tracing::error!("{e}: webhook off"),
            }
        }
        if settings.containerd_topic {
            let handle = match ctx.runtime {
                Some(h) => Ok(h),
                None => tokio::runtime::Handle::try_current(),
            };
            match (ctx.containerd, handle) {
                (Some(sender), Ok(handle)) => {
                    all.extend(Sink::spawn("containerd", metrics, move |event: &Event| {
                        let v = containerd::Violation::of(event)?;
                        handle
                            .block_on(async {
                                tokio::time::timeout(CONTAINERD_TIMEOUT, sender.send(v)).await
                            })
                            .map_err(|_| ContainerdSinkError::Timeout(CONTAINERD_TIMEOUT))
                    }));
                }
                (None, _) => tracing::warn!("containerd events: no event path: topic off"),
                (_, Err(e)) => tracing::warn!("containerd events: {e}: topic off"),
            }
        }
        Sinks { all }
    }

    fn offer(&self, event: &Event) {
        for s in &self.all {
            s.offer(event);
        }
    }

    fn close(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        for s in &mut self.all {
            s.close(deadline);
        }
    }
}

/// Writing the JSON-lines log failed.
#[derive(Debug, thiserror::Error)]
enum JsonlError {
    #[error("event log: encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("event log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The runtime event that tells what the rate limit dropped for one container.
fn dropped_event(d: &limit::Dropped, rate: u32) -> Event {
    Event::new(
        &d.node,
        Source::Runtime,
        d.workload.clone(),
        Rule {
            name: EVENTS_DROPPED_RULE.to_string(),
            severity: Severity::clamped(4),
            tags: vec![],
            message: format!("{} events dropped by the rate limit", d.count),
        },
        Action::Audit,
        "rate-limit",
    )
    .with_evidence("dropped", d.count)
    .with_evidence("rate_per_second", rate)
}

fn pipeline(rx: mpsc::Receiver<Msg>, shared: Arc<Shared>, mut sinks: Sinks, rate: u32) {
    let mut last_tick = Instant::now();
    let mut last_metrics: Option<Instant> = None;
    let mut metrics_failed = false;
    let mut write_metrics = |shared: &Shared| {
        if let Some(path) = &shared.metrics_file {
            match shared.metrics.write_file(path) {
                Ok(()) => metrics_failed = false,
                Err(e) if !metrics_failed => {
                    metrics_failed = true;
                    tracing::error!("{e}");
                }
                Err(_) => {}
            }
        }
    };
    // Folded runs and rate-limit counts go to the sinks; drop reports skip the limiter.
    let drain = |shared: &Shared, sinks: &Sinks, flush: bool| {
        let mut out = Vec::new();
        let dropped = {
            let mut l = lock(&shared.limiter);
            if flush {
                l.flush(Instant::now(), &mut out);
            } else {
                l.tick(Instant::now(), &mut out);
            }
            l.take_dropped()
        };
        for d in &dropped {
            shared.metrics.dropped("rate_limit", d.count);
            out.push(dropped_event(d, rate));
        }
        for e in out {
            if e.rule.name == EVENTS_DROPPED_RULE && e.source == Source::Runtime {
                shared.metrics.observe(&e);
            }
            sinks.offer(&e);
        }
    };
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Event(e)) => sinks.offer(&e),
            Ok(Msg::Shutdown(ack)) => {
                drain(&shared, &sinks, true);
                sinks.close();
                if let Some(path) = &shared.metrics_file {
                    if let Err(e) = std::fs::remove_file(path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!("metrics file {}: remove: {e}", path.display());
                        }
                    }
                }
                let _ = ack.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                drain(&shared, &sinks, true);
                sinks.close();
                write_metrics(&shared);
                return;
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            drain(&shared, &sinks, false);
            if last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
                last_metrics = Some(Instant::now());
                write_metrics(&shared);
            }
        }
    }
}

/// Appends one line with one write (O_APPEND keeps lines of several shims whole), rotating
/// first under an exclusive lock when the file is full.
fn append(settings: &EventSettings, path: &Path, line: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(&settings.log_dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .append(true)
        .open(settings.log_dir.join(".events.lock"))?;
    // Held until the end of this function: rotation and the append are one step for every shim.
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + line.len() as u64 > settings.max_bytes {
        rotate(path, settings.keep)?;
    }
    let mut f: File = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line)?;
    Ok(())
}

fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let nth = |n: u32| path.with_file_name(palisade_events::log::rotated_name(n));
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(nth(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(nth(n), nth(n + 1));
    }
    std::fs::rename(path, nth(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_events::{Action, Rule, Severity, Source, Workload};

    fn event(n: u32) -> Event {
        Event::new(
            "node",
            Source::Gate,
            Workload {
                namespace: "ns".into(),
                pod: "p".into(),
                container: "c".into(),
                ..Default::default()
            },
            Rule {
                name: format!("r{n}"),
                severity: Severity::new(5).unwrap(),
                tags: vec![],
                message: String::new(),
            },
            Action::Block,
            "gate",
        )
    }

    #[test]
    fn lines_are_whole_json_and_rotation_bounds_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let settings = EventSettings {
            log_dir: dir.path().to_path_buf(),
            max_bytes: 2000,
            keep: 2,
            ..Default::default()
        };
        let path = dir.path().join(EVENTS_FILE);
        for n in 0..60 {
            let mut line = serde_json::to_vec(&event(n)).unwrap();
            line.push(b'\n');
            append(&settings, &path, &line).unwrap();
        }
        let mut total = 0;
        for p in [
            path.clone(),
            dir.path().join("events.jsonl.1"),
            dir.path().join("events.jsonl.2"),
        ] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.len() as u64 <= settings.max_bytes,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            for l in text.lines() {
                let e: Event = serde_json::from_str(l).unwrap();
                assert_eq!(e.source, Source::Gate);
                total += 1;
            }
        }
        assert!(
            !dir.path().join("events.jsonl.3").exists(),
            "only `keep` rotated files stay"
        );
        assert!(
            total > 0 && total < 60,
            "older lines rotated away, newest kept: {total}"
        );
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(
            last.lines().last().unwrap().contains("\"r59\""),
            "the newest event is in the live file"
        );
    }

    #[test]
    fn reporter_writes_through_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reporter::start(EventSettings {
            log_dir: dir.path().join("log"),
            metrics_dir: None,
            ..Default::default()
        });
        r.report(event(1));
        r.report(event(2));
        let path = dir.path().join("log").join(EVENTS_FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = std::fs::read_to_string(&path)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if n == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events not written: {n}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn unwritable_directory_counts_drops_and_never_blocks() {
        let r = Reporter::start(EventSettings {
            log_dir: PathBuf::from("/proc/palisade-no-such-dir"),
            metrics_dir: None,
            ..Default::default()
        });
        for n in 0..5 {
            r.report(event(n));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.dropped() < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "drops not counted: {}",
                r.dropped()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
