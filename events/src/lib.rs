#![doc = include_str!("../README.md")]

pub mod falco;
pub mod log;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The schema version every event carries; a consumer checks it before reading further.
pub const SCHEMA_VERSION: &str = "palisade.dev/events/v1";

/// What raised the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Seccomp, landlock, capabilities or a mount denied something.
    Sandbox,
    /// An eBPF monitor rule matched.
    Monitor,
    /// The HTTP gate decided on a request.
    Gate,
    /// The compromise policy judged a container compromised.
    Compromise,
    /// The runtime itself (hardening applied, degraded features, refused containers).
    Runtime,
}

/// What palisade did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Reported only.
    Audit,
    /// The action was refused (EPERM, EACCES, 403).
    Block,
    /// The offending process was killed.
    Kill,
    /// The container was restarted as compromised.
    Restart,
}

impl Source {
    /// The word the JSON form uses (`sandbox`, `monitor`, ...), for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sandbox => "sandbox",
            Source::Monitor => "monitor",
            Source::Gate => "gate",
            Source::Compromise => "compromise",
            Source::Runtime => "runtime",
        }
    }
}

impl Action {
    /// The word the JSON form uses (`audit`, `block`, `kill`, `restart`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Audit => "audit",
            Action::Block => "block",
            Action::Kill => "kill",
            Action::Restart => "restart",
        }
    }
}

/// Severity on KubeArmor's 1 (lowest) to 10 (highest) scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Severity(u8);

/// A severity outside 1..=10.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("severity {0}: must be between 1 and 10")]
pub struct SeverityError(pub u8);

impl Severity {
    pub fn new(level: u8) -> Result<Self, SeverityError> {
        if (1..=10).contains(&level) {
            Ok(Severity(level))
        } else {
            Err(SeverityError(level))
        }
    }

    pub fn level(self) -> u8 {
        self.0
    }

    /// The nearest valid severity, for levels fixed in code.
    pub const fn clamped(level: u8) -> Self {
        if level < 1 {
            Severity(1)
        } else if level > 10 {
            Severity(10)
        } else {
            Severity(level)
        }
    }
}

impl TryFrom<u8> for Severity {
    type Error = SeverityError;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Severity::new(v)
    }
}

impl From<Severity> for u8 {
    fn from(s: Severity) -> u8 {
        s.0
    }
}

/// Where it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

/// The process involved, when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub binary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
}

/// The parent of the process involved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub pid: u32,
    pub binary: String,
}

/// The rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One violation or notable event, in the one schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SCHEMA_VERSION`].
    pub schema: String,
    /// RFC 3339 time in UTC with nanoseconds.
    pub time: String,
    pub node: String,
    pub source: Source,
    pub workload: Workload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    pub rule: Rule,
    pub action: Action,
    /// The mechanism that acted or observed: `seccomp`, `landlock`, `bpf-exec-kill`, `gate`, ...
    pub enforcer: String,
    /// Rule-specific facts (path, flags, destination, request reasons), kept as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, serde_json::Value>,
    /// How many identical events this one stands for after de-duplication (1 when alone).
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

impl Event {
    /// An event stamped now, with no process and no evidence yet.
    pub fn new(
        node: &str,
        source: Source,
        workload: Workload,
        rule: Rule,
        action: Action,
        enforcer: &str,
    ) -> Self {
        Event {
            schema: SCHEMA_VERSION.to_string(),
            time: rfc3339(SystemTime::now()),
            node: node.to_string(),
            source,
            workload,
            process: None,
            rule,
            action,
            enforcer: enforcer.to_string(),
            evidence: BTreeMap::new(),
            count: 1,
        }
    }

    /// Adds one piece of evidence.
    pub fn with_evidence(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.evidence.insert(key.to_string(), value.into());
        self
    }

    /// The key under which identical events are de-duplicated: same place, rule, action and evidence.
    pub fn dedup_key(&self) -> String {
        let evidence = serde_json::to_string(&self.evidence).unwrap_or_default();
        format!(
            "{}/{}/{}|{}|{:?}|{}|{}",
            self.workload.namespace,
            self.workload.pod,
            self.workload.container,
            self.rule.name,
            self.action,
            self.process
                .as_ref()
                .map(|p| p.binary.as_str())
                .unwrap_or(""),
            evidence
        )
    }
}

/// Formats a time as RFC 3339 in UTC with nanoseconds (`2026-11-22T22:31:06.123456789Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn action_and_source_words_are_their_json_form() {
        for a in [Action::Audit, Action::Block, Action::Kill, Action::Restart] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for s in [
            Source::Sandbox,
            Source::Monitor,
            Source::Gate,
            Source::Compromise,
            Source::Runtime,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    /// A seccomp block of `mount`; the Falco form's test starts from it too.
    pub(crate) fn sample() -> Event {
        Event::new(
            "node-a",
            Source::Sandbox,
            Workload {
                namespace: "ns".into(),
                pod: "p".into(),
                container: "c".into(),
                container_id: "abc".into(),
                image: "busybox".into(),
            },
            Rule {
                name: "block-mount".into(),
                severity: Severity::new(8).unwrap(),
                tags: vec!["MITRE_T1611".into()],
                message: "mount refused".into(),
            },
            Action::Block,
            "seccomp",
        )
        .with_evidence("syscall", "mount")
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let mut e = sample();
        e.process = Some(Process {
            pid: 42,
            binary: "/bin/mount".into(),
            args: vec!["mount".into(), "/dev/sda1".into()],
            uid: Some(0),
            parent: Some(Parent {
                pid: 1,
                binary: "/bin/sh".into(),
            }),
        });
        let text = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "palisade.dev/events/v1");
        assert_eq!(v["source"], "sandbox");
        assert_eq!(v["action"], "block");
        assert_eq!(v["rule"]["severity"], 8);
        assert_eq!(v["evidence"]["syscall"], "mount");
        assert_eq!(v["count"], 1);
    }

    /// The JSON schema and the Rust types describe the same document.
    #[test]
    fn schema_matches_serialized_form() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../schema/event.schema.json")).unwrap();
        let mut e = sample();
        e.process = Some(Process {
            pid: 1,
            binary: "/bin/x".into(),
            args: vec!["x".into()],
            uid: Some(0),
            parent: Some(Parent {
                pid: 0,
                binary: "/init".into(),
            }),
        });
        let v = serde_json::to_value(&e).unwrap();
        fn check(schema: &serde_json::Value, v: &serde_json::Value, at: &str) {
            let props = schema["properties"].as_object().unwrap();
            let obj = v.as_object().unwrap();
            for k in obj.keys() {
                assert!(
                    props.contains_key(k),
                    "{at}.{k}: serialized but not in the schema"
                );
                if props[k].get("properties").is_some() {
                    check(&props[k], &obj[k], &format!("{at}.{k}"));
                }
            }
            for r in schema["required"].as_array().unwrap() {
                assert!(
                    obj.contains_key(r.as_str().unwrap()),
                    "{at}.{r}: required by the schema, not serialized"
                );
            }
        }
        check(&schema, &v, "event");
        assert_eq!(schema["properties"]["schema"]["const"], SCHEMA_VERSION);
    }

    #[test]
    fn severity_out_of_range_is_refused_in_json_too() {
        assert_eq!(
            Severity::new(0).unwrap_err().to_string(),
            "severity 0: must be between 1 and 10"
        );
        assert!(Severity::new(11).is_err());
        assert_eq!(Severity::clamped(0).level(), 1);
        assert_eq!(Severity::clamped(5).level(), 5);
        assert_eq!(Severity::clamped(200).level(), 10);
        let text = serde_json::to_string(&sample())
            .unwrap()
            .replace("\"severity\":8", "\"severity\":12");
        let err = serde_json::from_str::<Event>(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("severity 12: must be between 1 and 10"),
            "{err}"
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_387_866, 5);
        assert_eq!(rfc3339(t), "2026-11-22T22:51:06.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn dedup_key_separates_what_differs() {
        let a = sample();
        let mut b = sample();
        b.time = "later".into();
        assert_eq!(
            a.dedup_key(),
            b.dedup_key(),
            "time does not make events different"
        );
        let c = sample().with_evidence("syscall", "umount2");
        assert_ne!(a.dedup_key(), c.dedup_key());
        let mut d = sample();
        d.workload.container = "other".into();
        assert_ne!(a.dedup_key(), d.dedup_key());
    }
}
