//! The shim's event counters in the Prometheus text format: written as `<dir>/<shim id>.prom` for
//! node-exporter's textfile collector (one file per pod's shim), and optionally served over HTTP.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_events::{Event, Source};

/// Writing or serving the metrics failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics listener {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Counters {
    violations: BTreeMap<(String, u8, &'static str, &'static str), u64>,
    dropped: BTreeMap<&'static str, u64>,
    gate: BTreeMap<&'static str, u64>,
    /// Compromise decisions by what was done (kill, restart, ...), keyed by rule name.
    compromise: BTreeMap<String, u64>,
}

/// Counters shared by the reporter, its pipeline and its sinks.
#[derive(Debug)]
pub struct Metrics {
    shim: String,
    counters: Mutex<Counters>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counters labelled with this shim's id (node-exporter refuses the same series in two files).
    pub fn new(shim: &str) -> Self {
        Metrics {
            shim: shim.to_string(),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut guard = match self.counters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Counts a reported event (all `count` occurrences it stands for).
    pub fn observe(&self, e: &Event) {
        let n = e.count.max(1);
        let action = e.action.as_str();
        let source = e.source.as_str();
        self.with(|c| {
            *c.violations
                .entry((e.rule.name.clone(), e.rule.severity.level(), action, source))
                .or_insert(0) += n;
            if e.source == Source::Gate {
                *c.gate.entry(action).or_insert(0) += n;
            }
            if e.source == Source::Compromise {
                *c.compromise.entry(e.rule.name.clone()).or_insert(0) += n;
            }
        });
    }

    /// Counts `n` events a sink lost.
    pub fn dropped(&self, sink: &'static str, n: u64) {
        self.with(|c| *c.dropped.entry(sink).or_insert(0) += n);
    }

    /// Events lost by one sink so far.
    pub fn dropped_by(&self, sink: &str) -> u64 {
        self.with(|c| c.dropped.get(sink).copied().unwrap_or(0))
    }

    /// Events lost by every sink so far.
    pub fn dropped_total(&self) -> u64 {
        self.with(|c| c.dropped.values().sum())
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let shim = escape(&self.shim);
        self.with(|c| {
            let mut out = String::new();
            out.push_str("# HELP palisade_violations_total Violations and notable events reported by this shim.\n");
            out.push_str("# TYPE palisade_violations_total counter\n");
            for ((rule, sev, action, source), n) in &c.violations {
                out.push_str(&format!(
                    "palisade_violations_total{{rule=\"{}\",severity=\"{sev}\",action=\"{action}\",source=\"{source}\",shim=\"{shim}\"}} {n}\n",
                    escape(rule)
                ));
            }
            out.push_str("# HELP palisade_events_dropped_total Events a sink lost (full queue, failed write, rate limit).\n");
            out.push_str("# TYPE palisade_events_dropped_total counter\n");
            for (sink, n) in &c.dropped {
                out.push_str(&format!(
                    "palisade_events_dropped_total{{sink=\"{sink}\",shim=\"{shim}\"}} {n}\n"
                ));
            }
            out.push_str("# HELP palisade_gate_decisions_total Gate events by the action taken.\n");
            out.push_str("# TYPE palisade_gate_decisions_total counter\n");
            for (action, n) in &c.gate {
                out.push_str(&format!(
                    "palisade_gate_decisions_total{{action=\"{action}\",shim=\"{shim}\"}} {n}\n"
                ));
            }
            out.push_str("# HELP palisade_compromise_total Compromise decisions: containers killed, restarted, held back, quarantined.\n");
            out.push_str("# TYPE palisade_compromise_total counter\n");
            for (what, n) in &c.compromise {
                out.push_str(&format!(
                    "palisade_compromise_total{{event=\"{}\",shim=\"{shim}\"}} {n}\n",
                    escape(what)
                ));
            }
            out
        })
    }

    /// Writes the counters to `path` atomically (a temporary file renamed over it), so that a
    /// collector never reads half a file.
    pub fn write_file(&self, path: &Path) -> Result<(), MetricsError> {
        let err = |source| MetricsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A dot file: the textfile collector reads only `*.prom`.
        let tmp = dir.join(format!(".{name}.tmp"));
        let text = format!("{PID_COMMENT}{}\n{}", std::process::id(), self.render());
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            err(source)
        })
    }
}

/// The first line of every file this module writes: whose it is, so that files left by shims
/// that died without shutting down can be told apart and removed.
const PID_COMMENT: &str = "# palisade shim pid ";

/// Removes the `.prom` files of shims that are no longer running (killed, not shut down), which
/// the textfile collector would otherwise export forever; returns how many it removed.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("prom") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(PID_COMMENT))
            .and_then(|p| p.trim().parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Serves the counters to any HTTP request on `addr` from a thread of its own.
pub fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| MetricsError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let spawned = std::thread::Builder::new()
        .name("palisade-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                // One short request at a time: a client that stalls only delays the next scrape.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = metrics.render();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes());
            }
        });
    spawned.map_err(|source| MetricsError::Listen { addr, source })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_events::{Action, Rule, Severity, Workload};

    #[test]
    fn render_has_labels_and_escapes_them() {
        let m = Metrics::new("pod\"1");
        let mut e = Event::new(
            "n",
            Source::Gate,
            Workload::default(),
            Rule {
                name: "odd\\rule".into(),
                severity: Severity::clamped(8),
                tags: vec![],
                message: String::new(),
            },
            Action::Block,
            "gate",
        );
        e.count = 3;
        m.observe(&e);
        m.dropped("webhook", 2);
        let text = m.render();
        assert!(text.contains("palisade_violations_total{rule=\"odd\\\\rule\",severity=\"8\",action=\"block\",source=\"gate\",shim=\"pod\\\"1\"} 3\n"), "{text}");
        assert!(
            text.contains("palisade_gate_decisions_total{action=\"block\",shim=\"pod\\\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("palisade_events_dropped_total{sink=\"webhook\",shim=\"pod\\\"1\"} 2\n"),
            "{text}"
        );
        assert_eq!(m.dropped_total(), 2);
    }

    #[test]
    fn stale_files_of_dead_shims_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("alive.prom");
        Metrics::new("alive").write_file(&mine).unwrap();
        assert!(std::fs::read_to_string(&mine)
            .unwrap()
            .starts_with(&format!("{PID_COMMENT}{}\n", std::process::id())));
        // A pid that cannot be running: above the kernel's pid_max limit.
        let dead = dir.path().join("dead.prom");
        std::fs::write(&dead, format!("{PID_COMMENT}{}\n", 1 << 30)).unwrap();
        let foreign = dir.path().join("node.prom");
        std::fs::write(&foreign, "node_thing 1\n").unwrap();
        assert_eq!(sweep_stale(dir.path()), 1);
        assert!(mine.exists() && foreign.exists() && !dead.exists());
    }
}
