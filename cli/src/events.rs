//! `palisade events`: reads the shim's JSON-lines event log (the rotated files, oldest first,
//! then the live file), filters it, and follows the live file across rotation.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_events::log::{rotated_index, EVENTS_FILE};
use palisade_events::{Action, Event, Severity, SCHEMA_VERSION};

/// Reading the log or understanding a filter failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("event log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("time {0:?}: expected RFC 3339 (2026-11-23T01:02:03Z) or a duration (90s, 15m, 2h, 7d, 1h30m)")]
    Time(String),
    #[error("action {0:?}: expected audit, block, kill or restart")]
    Action(String),
    #[error("severity {0:?}: expected a level from 1 to 10")]
    Severity(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EventsError {
    let path = path.to_path_buf();
    move |source| EventsError::Io { path, source }
}

/// Which events to show; every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub rule: Option<String>,
    /// The lowest severity shown.
    pub min_severity: Option<Severity>,
    pub action: Option<Action>,
    /// Events before this time are left out.
    pub since: Option<SystemTime>,
}

impl Filter {
    /// Whether `event` passes; its time is parsed only when `since` is set, and an event whose
    /// time does not parse never passes `since`.
    pub fn matches(&self, event: &Event) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.namespace, &event.workload.namespace)
            && eq(&self.pod, &event.workload.pod)
            && eq(&self.container, &event.workload.container)
            && eq(&self.rule, &event.rule.name)
            && self.min_severity.is_none_or(|s| event.rule.severity >= s)
            && self.action.is_none_or(|a| event.action == a)
            && self
                .since
                .is_none_or(|since| parse_rfc3339(&event.time).is_some_and(|t| t >= since))
    }
}

/// `--action`: one of the schema's actions.
pub fn parse_action(text: &str) -> Result<Action, EventsError> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase()))
        .map_err(|_| EventsError::Action(text.to_string()))
}

/// `--severity`: a level from 1 to 10.
pub fn parse_severity(text: &str) -> Result<Severity, EventsError> {
    text.trim()
        .parse::<u8>()
        .ok()
        .and_then(|n| Severity::new(n).ok())
        .ok_or_else(|| EventsError::Severity(text.to_string()))
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (`90s`, `15m`, `2h`, `7d`,
/// `1h30m`).
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, EventsError> {
    let bad = || EventsError::Time(text.to_string());
    if let Some(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    let d = parse_duration(text).ok_or_else(bad)?;
    now.checked_sub(d).ok_or_else(bad)
}

fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    // A bare number without a unit is ambiguous: refused.
    (any && digits.is_empty()).then(|| Duration::from_secs(total))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, the form events carry.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let digits = &frac[..len.min(9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
        rest = &frac[len..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = rest.as_bytes();
            if r.len() != 6 || r[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s) - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The compact human form: `time severity namespace/pod/container rule action summary`.
pub fn human_line(event: &Event) -> String {
    let mut summary = event.rule.message.clone();
    if let Some(p) = &event.process {
        if !summary.is_empty() {
            summary.push(' ');
        }
        summary.push_str(&format!("proc={}", p.binary));
    }
    if summary.is_empty() {
        let ev: Vec<String> = event
            .evidence
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        summary = ev.join(" ");
    }
    if event.count > 1 {
        summary.push_str(&format!(" (x{})", event.count));
    }
    format!(
        "{} {:>2} {}/{}/{} {} {} {}",
        short_time(&event.time),
        event.rule.severity.level(),
        event.workload.namespace,
        event.workload.pod,
        event.workload.container,
        event.rule.name,
        event.action.as_str(),
        summary.trim_end()
    )
    .trim_end()
    .to_string()
}

/// The event's time to the millisecond: `2026-11-23T01:02:03.123Z`.
fn short_time(time: &str) -> String {
    match (time.get(..19), time.get(19..)) {
        (Some(head), Some(tail)) if tail.starts_with('.') && tail.ends_with('Z') => {
            let frac: String = tail[1..tail.len() - 1].chars().take(3).collect();
            format!("{head}.{frac:0<3}Z")
        }
        (Some(head), Some("Z")) => format!("{head}.000Z"),
        _ => time.to_string(),
    }
}

/// One line read from the log: an event, or what was wrong with the line.
#[derive(Debug)]
pub enum Line {
    Event {
        event: Box<Event>,
        /// The line as written, without its newline.
        raw: String,
    },
    Malformed {
        file: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Parses one line of the log; `file` and `line` locate a malformed one.
pub fn parse_line(raw: &str, file: &Path, line: u64) -> Line {
    let malformed = |reason: String| Line::Malformed {
        file: file.to_path_buf(),
        line,
        reason,
    };
    match serde_json::from_str::<Event>(raw) {
        Ok(event) if event.schema != SCHEMA_VERSION => malformed(format!(
            "schema {:?}: expected {SCHEMA_VERSION}",
            event.schema
        )),
        Ok(event) => Line::Event {
            event: Box::new(event),
            raw: raw.to_string(),
        },
        Err(e) => malformed(e.to_string()),
    }
}

/// The rotated files of the log in `dir`, oldest first (`events.jsonl.3`, `.2`, `.1`).
pub fn rotated_files(dir: &Path) -> Result<Vec<PathBuf>, EventsError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(rotated_index) else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// An open file read line by line from where the last read stopped.
#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    offset: u64,
    line: u64,
    partial: Vec<u8>,
}

impl Cursor {
    fn open(path: &Path) -> Result<Option<Cursor>, EventsError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        let meta = file.metadata().map_err(io(path))?;
        Ok(Some(Cursor {
            path: path.to_path_buf(),
            file,
            id: (meta.dev(), meta.ino()),
            offset: 0,
            line: 0,
            partial: Vec::new(),
        }))
    }

    /// Reads to the end of the file; a last line without its newline waits for the rest
    /// unless `finish` (a rotated file gets no more writes).
    fn read(&mut self, finish: bool, out: &mut Vec<Line>) -> Result<(), EventsError> {
        let len = self.file.metadata().map_err(io(&self.path))?.len();
        if len < self.offset {
            // Truncated in place: start over.
            self.offset = 0;
            self.partial.clear();
        }
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(io(&self.path))?;
        let mut buf = Vec::new();
        let n = (&self.file).read_to_end(&mut buf).map_err(io(&self.path))?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&c| c == b'\n') {
            let end = start + i;
            self.emit(start, end, out);
            start = end + 1;
        }
        self.partial.drain(..start);
        if finish && !self.partial.is_empty() {
            let end = self.partial.len();
            self.emit(0, end, out);
            self.partial.clear();
        }
        Ok(())
    }

    fn emit(&mut self, start: usize, end: usize, out: &mut Vec<Line>) {
        self.line += 1;
        let bytes = &self.partial[start..end];
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => parse_line(text.trim_end_matches('\r'), &self.path, self.line),
            Err(e) => Line::Malformed {
                file: self.path.clone(),
                line: self.line,
                reason: format!("not UTF-8: {e}"),
            },
        };
        out.push(parsed);
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Reads the whole log of a directory, then follows it: each [`Log::poll`] returns what was
/// appended since, across rotations (the live file renamed to `.1` and a new one begun).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    live: Option<Cursor>,
    /// Set when rotations outran the reader and lines may have been lost.
    pub lost: bool,
}

impl Log {
    /// Opens the log in `dir` and returns every line already in it, oldest first.
    pub fn open(dir: &Path) -> Result<(Log, Vec<Line>), EventsError> {
        let mut lines = Vec::new();
        for path in rotated_files(dir)? {
            if let Some(mut c) = Cursor::open(&path)? {
                c.read(true, &mut lines)?;
            }
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            live: None,
            lost: false,
        };
        log.poll_into(&mut lines)?;
        Ok((log, lines))
    }

    fn live_path(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    /// What was written since the last call.
    pub fn poll(&mut self) -> Result<Vec<Line>, EventsError> {
        let mut lines = Vec::new();
        self.poll_into(&mut lines)?;
        Ok(lines)
    }

    fn poll_into(&mut self, lines: &mut Vec<Line>) -> Result<(), EventsError> {
        let live = self.live_path();
        if let Some(c) = &mut self.live {
            c.read(false, lines)?;
            if file_id(&live) == Some(c.id) {
                return Ok(());
            }
            // Rotated: the shim writes under a lock and reopens the path for every line,
            // so the old file is complete now; finish it, then read any newer rotated
            // files (several rotations between two polls) before the new live file.
            c.read(true, lines)?;
            let old = c.id;
            let rotated = rotated_files(&self.dir)?;
            match rotated.iter().position(|p| file_id(p) == Some(old)) {
                Some(i) => {
                    for path in &rotated[i + 1..] {
                        if let Some(mut c) = Cursor::open(path)? {
                            c.read(true, lines)?;
                        }
                    }
                }
                None if !rotated.is_empty() => self.lost = true,
                None => {}
            }
            self.live = None;
        }
        self.live = Cursor::open(&live)?;
        if let Some(c) = &mut self.live {
            c.read(false, lines)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use palisade_events::{Process, Rule, Source, Workload};

    fn event(ns: &str, pod: &str, rule: &str, sev: u8, action: Action, time: &str) -> Event {
        let mut e = Event::new(
            "node-a",
            Source::Monitor,
            Workload {
                namespace: ns.into(),
                pod: pod.into(),
                container: "app".into(),
                ..Default::default()
            },
            Rule {
                name: rule.into(),
                severity: Severity::new(sev).unwrap(),
                tags: vec![],
                message: "shell spawned".into(),
            },
            action,
            "bpf-exec",
        );
        e.time = time.into();
        e
    }

    #[test]
    fn each_filter_narrows_on_its_field() {
        let e = event(
            "shop",
            "web-0",
            "shell",
            7,
            Action::Kill,
            "2026-11-23T01:00:00.5Z",
        );
        assert!(Filter::default().matches(&e));
        // Each case sets one or two fields on an empty filter.
        type Set = fn(&mut Filter);
        let cases: [(Set, bool); 14] = [
            (|f| f.namespace = Some("shop".into()), true),
            (|f| f.namespace = Some("kube-system".into()), false),
            (|f| f.pod = Some("web-1".into()), false),
            (|f| f.container = Some("app".into()), true),
            (|f| f.container = Some("sidecar".into()), false),
            (|f| f.rule = Some("shell".into()), true),
            (|f| f.rule = Some("shel".into()), false),
            (|f| f.min_severity = Some(Severity::new(7).unwrap()), true),
            (|f| f.min_severity = Some(Severity::new(8).unwrap()), false),
            (|f| f.action = Some(Action::Kill), true),
            (|f| f.action = Some(Action::Audit), false),
            (|f| f.since = parse_rfc3339("2026-11-23T01:00:00.5Z"), true),
            (
                |f| f.since = parse_rfc3339("2026-11-23T01:00:00.500000001Z"),
                false,
            ),
            (
                |f| {
                    f.namespace = Some("shop".into());
                    f.action = Some(Action::Block);
                },
                false,
            ),
        ];
        let cases = cases.map(|(set, want)| {
            let mut f = Filter::default();
            set(&mut f);
            (f, want)
        });
        for (i, (f, want)) in cases.iter().enumerate() {
            assert_eq!(f.matches(&e), *want, "case {i}: {f:?}");
        }
        let mut bad_time = e.clone();
        bad_time.time = "yesterday".into();
        assert!(!Filter {
            since: Some(UNIX_EPOCH),
            ..Default::default()
        }
        .matches(&bad_time));
    }

    #[test]
    fn times_and_durations_parse() {
        let t = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
        assert_eq!(
            t("2026-11-22T22:51:06.000000005Z"),
            Some(Duration::new(1_795_387_866, 5))
        );
        assert_eq!(
            t("2026-11-22T23:51:06+01:00"),
            Some(Duration::new(1_795_387_866, 0))
        );
        assert_eq!(
            t("2000-02-29T00:00:00Z"),
            Some(Duration::from_secs(951_782_400))
        );
        assert_eq!(
            t("2026-11-22T22:51:06.1Z").unwrap().subsec_nanos(),
            100_000_000
        );
        for bad in [
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T22:51:06",
            "2026-11-22T22:51:06.Z",
            "2026-11-22T22:51:06+0100",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
        // Round trip with the writer's formatter.
        let now = SystemTime::now();
        assert_eq!(parse_rfc3339(&palisade_events::rfc3339(now)), Some(now));

        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        let ago = |s| {
            now.duration_since(parse_since(s, now).unwrap())
                .unwrap()
                .as_secs()
        };
        assert_eq!(ago("90s"), 90);
        assert_eq!(ago("15m"), 900);
        assert_eq!(ago("1h30m"), 5400);
        assert_eq!(ago("1d"), 86_400);
        for bad in ["15", "5x", "", "h", "1h30"] {
            let err = parse_since(bad, now).unwrap_err().to_string();
            assert!(err.starts_with(&format!("time {bad:?}: expected")), "{err}");
        }
        assert_eq!(
            parse_since("2026-11-22T22:51:06Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_795_387_866)
        );
    }

    #[test]
    fn action_and_severity_arguments() {
        assert_eq!(parse_action("block").unwrap(), Action::Block);
        assert_eq!(parse_action("Kill").unwrap(), Action::Kill);
        assert_eq!(
            parse_action("deny").unwrap_err().to_string(),
            "action \"deny\": expected audit, block, kill or restart"
        );
        assert_eq!(parse_severity("7").unwrap().level(), 7);
        assert!(parse_severity("0").is_err());
        assert!(parse_severity("11").is_err());
        assert!(parse_severity("high").is_err());
    }

    #[test]
    fn human_line_is_compact_and_complete() {
        let mut e = event(
            "shop",
            "web-0",
            "shell",
            7,
            Action::Kill,
            "2026-11-23T01:02:03.123456789Z",
        );
        e.process = Some(Process {
            pid: 9,
            binary: "/bin/sh".into(),
            ..Default::default()
        });
        e.count = 4;
        assert_eq!(
            human_line(&e),
            "2026-11-23T01:02:03.123Z  7 shop/web-0/app shell kill shell spawned proc=/bin/sh (x4)"
        );
        let mut g = event(
            "a",
            "b",
            "gate-new-path",
            5,
            Action::Audit,
            "2026-11-23T01:02:03Z",
        );
        g.rule.message.clear();
        let g = g
            .with_evidence("path", "/admin")
            .with_evidence("status", 403);
        assert_eq!(
            human_line(&g),
            "2026-11-23T01:02:03.000Z  5 a/b/app gate-new-path audit path=/admin status=403"
        );
    }

    #[test]
    fn malformed_lines_are_located() {
        let file = Path::new("/var/log/palisade/events.jsonl.1");
        match parse_line("{not json", file, 12) {
            Line::Malformed { file: f, line, .. } => {
                assert_eq!(f, file);
                assert_eq!(line, 12);
            }
            other => panic!("{other:?}"),
        }
        let e = event("a", "b", "r", 5, Action::Audit, "2026-11-23T01:02:03Z");
        let text = serde_json::to_string(&e)
            .unwrap()
            .replace(SCHEMA_VERSION, "palisade.dev/events/v9");
        match parse_line(&text, file, 1) {
            Line::Malformed { reason, .. } => assert!(reason.contains("events/v9"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
