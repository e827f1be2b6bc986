//! The Falco JSON output form of an event, which Falcosidekick and its outputs accept as is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Event;

/// Falco's JSON output: the fields Falcosidekick reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalcoEvent {
    pub output: String,
    pub priority: String,
    pub rule: String,
    pub time: String,
    pub output_fields: BTreeMap<String, serde_json::Value>,
    pub source: String,
    pub tags: Vec<String>,
    pub hostname: String,
}

/// Maps KubeArmor's 1..10 severity onto Falco's priorities.
pub fn priority(severity: u8) -> &'static str {
    match severity {
        0..=1 => "Debug",
        2 => "Informational",
        3..=4 => "Notice",
        5..=6 => "Warning",
        7 => "Warning",
        8 => "Error",
        9 => "Critical",
        _ => "Emergency",
    }
}

/// The Falco form of an event; palisade's own fields go under `palisade.*` and the usual
/// `k8s.*`/`container.*`/`proc.*` names Falco users filter on.
pub fn to_falco(e: &Event) -> FalcoEvent {
    let mut f = BTreeMap::new();
    f.insert("k8s.ns.name".into(), e.workload.namespace.clone().into());
    f.insert("k8s.pod.name".into(), e.workload.pod.clone().into());
    f.insert("container.name".into(), e.workload.container.clone().into());
    f.insert(
        "container.id".into(),
        e.workload.container_id.clone().into(),
    );
    f.insert("container.image".into(), e.workload.image.clone().into());
    if let Some(p) = &e.process {
        f.insert("proc.pid".into(), p.pid.into());
        f.insert("proc.exepath".into(), p.binary.clone().into());
        f.insert("proc.cmdline".into(), p.args.join(" ").into());
        if let Some(parent) = &p.parent {
            f.insert("proc.ppid".into(), parent.pid.into());
            f.insert("proc.pexepath".into(), parent.binary.clone().into());
        }
    }
    f.insert("palisade.action".into(), e.action.as_str().into());
    f.insert("palisade.enforcer".into(), e.enforcer.clone().into());
    f.insert("palisade.count".into(), e.count.into());
    f.insert("palisade.schema".into(), e.schema.clone().into());
    for (k, v) in &e.evidence {
        f.insert(format!("palisade.evidence.{k}"), v.clone());
    }
    let proc_part = e
        .process
        .as_ref()
        .map(|p| format!(" proc={}", p.binary))
        .unwrap_or_default();
    let output = format!(
        "{}: {} (action={} enforcer={} ns={} pod={} container={}{})",
        e.rule.name,
        if e.rule.message.is_empty() {
            "violation"
        } else {
            &e.rule.message
        },
        e.action.as_str(),
        e.enforcer,
        e.workload.namespace,
        e.workload.pod,
        e.workload.container,
        proc_part
    );
    FalcoEvent {
        output,
        priority: priority(e.rule.severity.level()).to_string(),
        rule: e.rule.name.clone(),
        time: e.time.clone(),
        output_fields: f,
        source: "palisade".to_string(),
        tags: e.rule.tags.clone(),
        hostname: e.node.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Process;

    #[test]
    fn falco_form_carries_the_fields_falcosidekick_reads() {
        let mut e = crate::tests::sample();
        e.process = Some(Process {
            pid: 7,
            binary: "/bin/mount".into(),
            args: vec!["mount".into(), "/dev/sda1".into()],
            ..Default::default()
        });
        let f = to_falco(&e);
        assert_eq!(f.priority, "Error");
        assert_eq!(f.rule, "block-mount");
        assert_eq!(f.source, "palisade");
        assert_eq!(f.hostname, "node-a");
        assert_eq!(f.tags, vec!["MITRE_T1611".to_string()]);
        assert_eq!(f.time, e.time);
        assert_eq!(f.output_fields["k8s.pod.name"], "p");
        assert_eq!(f.output_fields["proc.cmdline"], "mount /dev/sda1");
        assert_eq!(f.output_fields["palisade.evidence.syscall"], "mount");
        assert_eq!(
            f.output,
            "block-mount: mount refused (action=block enforcer=seccomp ns=ns pod=p container=c proc=/bin/mount)"
        );
        let v = serde_json::to_value(&f).unwrap();
        for key in [
            "output",
            "priority",
            "rule",
            "time",
            "output_fields",
            "source",
            "tags",
            "hostname",
        ] {
            assert!(v.get(key).is_some(), "falco field {key}");
        }
    }

    #[test]
    fn priorities_cover_the_scale() {
        let got: Vec<_> = (1..=10).map(priority).collect();
        assert_eq!(
            got,
            [
                "Debug",
                "Informational",
                "Notice",
                "Notice",
                "Warning",
                "Warning",
                "Warning",
                "Error",
                "Critical",
                "Emergency"
            ]
        );
    }
}
