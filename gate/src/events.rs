//! Events the gate raises (alerts, blocks, response alerts), where they go, and de-duplication.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What raised an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A request broke the rules and was forwarded (alert mode).
    Alert,
    /// A request broke the rules and was refused (block mode).
    Block,
    /// A response broke the response rules (reported, never refused).
    Response,
    /// The HTTP parser refused the request (400, 431) before any rule could see it; the
    /// reason says what it found.
    Refused,
    /// The gate changed stage (learn, alert, block) on its own or by the operator; the
    /// reasons say why.
    Stage,
}

/// One reported violation; `count` says how many identical ones it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateEvent {
    /// What raised it.
    pub kind: EventKind,
    /// The request id (also in the 403 body of a refused request).
    pub request_id: String,
    /// The rules broken, from `Decision::reasons`.
    pub reasons: Vec<String>,
    /// The peer that connected to the gate.
    pub client: SocketAddr,
    /// Request method.
    pub method: String,
    /// Request path as sent, bounded in length.
    pub path: String,
    /// This occurrence plus the identical ones suppressed since the last event of its kind.
    pub count: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl GateEvent {
    /// Severity on the shared 1..=10 scale: a refused request ranks above a reported one,
    /// a response anomaly below both.
    pub fn severity(&self) -> u8 {
        match self.kind {
            EventKind::Block | EventKind::Refused => 6,
            EventKind::Alert => 5,
            EventKind::Response => 4,
            EventKind::Stage => 3,
        }
    }

    /// This event in palisade's one event schema, for the violation pipeline. The rule is
    /// `gate-request-rules` or `gate-response-rules`; the reasons, request id, client, method
    /// and path go into the evidence. Fails only if `severity` leaves 1..=10.
    pub fn to_event(
        &self,
        node: &str,
        workload: palisade_events::Workload,
    ) -> Result<palisade_events::Event, palisade_events::SeverityError> {
        use palisade_events::{Action, Event, Rule, Severity, Source};
        let (name, action, tags) = match self.kind {
            EventKind::Block | EventKind::Refused => (
                "gate-request-rules",
                Action::Block,
                vec!["MITRE_T1190".to_string()],
            ),
            EventKind::Alert => (
                "gate-request-rules",
                Action::Audit,
                vec!["MITRE_T1190".to_string()],
            ),
            EventKind::Response => ("gate-response-rules", Action::Audit, Vec::new()),
            EventKind::Stage => ("gate-stage", Action::Audit, Vec::new()),
        };
        let rule = Rule {
            name: name.to_string(),
            severity: Severity::new(self.severity())?,
            tags,
            message: self.reasons.first().cloned().unwrap_or_default(),
        };
        let mut event = Event::new(node, Source::Gate, workload, rule, action, "gate")
            .with_evidence("request_id", self.request_id.clone())
            .with_evidence("reasons", self.reasons.clone())
            .with_evidence("client", self.client.to_string())
            .with_evidence("method", self.method.clone())
            .with_evidence("path", self.path.clone());
        event.time = palisade_events::rfc3339(UNIX_EPOCH + Duration::from_millis(self.unix_ms));
        event.count = self.count;
        Ok(event)
    }
}

/// Where events go; the shim routes them into its violation pipeline.
pub trait EventSink: Send + Sync {
    /// Takes one event; must not block the request path.
    fn emit(&self, event: GateEvent);
}

/// A bounded channel as sink: when it is full the event is dropped and logged rather than
/// holding up traffic.
impl EventSink for tokio::sync::mpsc::Sender<GateEvent> {
    fn emit(&self, event: GateEvent) {
        if let Err(e) = self.try_send(event) {
            tracing::warn!(error = %e, "gate events: channel full or closed, event dropped");
        }
    }
}

/// A sink that only logs, for a gate run without a violation pipeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn emit(&self, e: GateEvent) {
        tracing::warn!(
            kind = ?e.kind,
            request_id = %e.request_id,
            client = %e.client,
            path = %e.path,
            count = e.count,
            reasons = ?e.reasons,
            "gate event"
        );
    }
}

struct Seen {
    last_emitted: Instant,
    suppressed: u64,
}

/// Collapses identical events: the first of a kind goes out, repeats within `window` are
/// counted, and the next one after the window carries the count.
pub struct Dedup {
    window: Duration,
    max_entries: usize,
    seen: HashMap<String, Seen>,
}

impl Dedup {
    /// De-duplicates over `window`, remembering at most `max_entries` distinct events.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Dedup {
            window,
            max_entries,
            seen: HashMap::new(),
        }
    }

    /// Whether an event with identity `key` goes out now; `Some(count)` with the occurrences
    /// it stands for, `None` when it is a suppressed repeat.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some(seen) = self.seen.get_mut(key) {
            if now.saturating_duration_since(seen.last_emitted) < self.window {
                seen.suppressed += 1;
                return None;
            }
            let count = seen.suppressed + 1;
            seen.last_emitted = now;
            seen.suppressed = 0;
            return Some(count);
        }
        if self.seen.len() >= self.max_entries {
            let window = self.window;
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.last_emitted) < window);
            if self.seen.len() >= self.max_entries {
                // Every entry is recent: forget them rather than grow; at worst a repeat is
                // reported twice.
                self.seen.clear();
            }
        }
        self.seen.insert(
            key.to_string(),
            Seen {
                last_emitted: now,
                suppressed: 0,
            },
        );
        Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_reported_after_the_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10), 16);
        assert_eq!(d.admit("a", t0), Some(1));
        assert_eq!(d.admit("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(d.admit("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            d.admit("b", t0 + Duration::from_secs(2)),
            Some(1),
            "other keys pass"
        );
        assert_eq!(d.admit("a", t0 + Duration::from_secs(11)), Some(3));
        assert_eq!(d.admit("a", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10), 4);
        for i in 0..100 {
            assert_eq!(d.admit(&format!("k{i}"), t0), Some(1));
            assert!(d.seen.len() <= 4);
        }
    }

    #[test]
    fn converts_to_the_shared_event_schema() {
        let mut e = GateEvent {
            kind: EventKind::Block,
            request_id: "0000abcd-00000001".into(),
            reasons: vec![
                "query.q: new punctuation '''".into(),
                "query.q: new comment marker '--'".into(),
            ],
            client: "10.0.0.7:51000".parse().unwrap(),
            method: "GET".into(),
            path: "/search".into(),
            count: 3,
            unix_ms: 1_795_387_866_000,
        };
        let workload = palisade_events::Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "app".into(),
            ..Default::default()
        };
        let ev = e.to_event("node-a", workload.clone()).unwrap();
        assert_eq!(ev.schema, palisade_events::SCHEMA_VERSION);
        assert_eq!(ev.source, palisade_events::Source::Gate);
        assert_eq!(ev.action, palisade_events::Action::Block);
        assert_eq!(ev.enforcer, "gate");
        assert_eq!(ev.rule.name, "gate-request-rules");
        assert_eq!(ev.rule.message, "query.q: new punctuation '''");
        assert_eq!(ev.count, 3);
        assert_eq!(ev.time, "2026-11-22T22:51:06.000000000Z");
        assert_eq!(ev.evidence["request_id"], "0000abcd-00000001");
        assert_eq!(
            ev.evidence["reasons"][1],
            "query.q: new comment marker '--'"
        );
        assert_eq!(ev.evidence["client"], "10.0.0.7:51000");
        e.kind = EventKind::Alert;
        let ev = e.to_event("n", workload.clone()).unwrap();
        assert_eq!(ev.action, palisade_events::Action::Audit);
        e.kind = EventKind::Response;
        let ev = e.to_event("n", workload).unwrap();
        assert_eq!(ev.rule.name, "gate-response-rules");
        assert!(ev.rule.severity.level() < 5);
    }

    #[tokio::test]
    async fn channel_sink_delivers_and_never_blocks() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let event = GateEvent {
            kind: EventKind::Alert,
            request_id: "r1".into(),
            reasons: vec!["query.a: key not known".into()],
            client: "127.0.0.1:9".parse().unwrap(),
            method: "GET".into(),
            path: "/".into(),
            count: 1,
            unix_ms: 0,
        };
        tx.emit(event.clone());
        tx.emit(event.clone()); // full: dropped, does not wait
        assert_eq!(rx.recv().await, Some(event));
        assert!(rx.try_recv().is_err());
    }
}
