//! The JSON-lines violation log every palisade shim on the node appends to, size-bounded and
//! rotated, fed through a bounded queue so that a slow disk never blocks a container.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use palisade_events::Event;
use serde::{Deserialize, Serialize};

/// The log's name inside the log directory; rotated copies get `.1`, `.2`, ...
pub const EVENTS_FILE: &str = "events.jsonl";
const QUEUE: usize = 4096;

/// The shim configuration's `[events]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Where `events.jsonl` is written.
    pub log_dir: PathBuf,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            log_dir: PathBuf::from("/var/log/palisade"),
            max_bytes: 10 << 20,
            keep: 3,
        }
    }
}

/// Where the shim reports violations. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::SyncSender<Event>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    /// Starts the writer thread for `settings`.
    pub fn start(settings: EventSettings) -> Reporter {
        let (tx, rx) = mpsc::sync_channel::<Event>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let write_dropped = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("palisade-events".into())
            .spawn(move || writer(settings, rx, write_dropped));
        if let Err(e) = spawned {
            tracing::error!("event log writer: {e}");
        }
        Reporter { tx, dropped }
    }

    /// Queues an event for the log (and the shim's own log); counts it if the queue is full.
    pub fn report(&self, event: Event) {
        match serde_json::to_string(&event) {
            Ok(line) => tracing::warn!(target: "palisade_event", event = %line, "violation"),
            Err(e) => tracing::error!("event: {e}"),
        }
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events lost because the writer could not keep up or the disk refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn writer(settings: EventSettings, rx: mpsc::Receiver<Event>, dropped: Arc<AtomicU64>) {
    let path = settings.log_dir.join(EVENTS_FILE);
    while let Ok(event) = rx.recv() {
        let Ok(mut line) = serde_json::to_vec(&event) else {
            continue;
        };
        line.push(b'\n');
        if let Err(e) = append(&settings, &path, &line) {
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("event log {}: {e}", path.display());
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
    let nth = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
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
