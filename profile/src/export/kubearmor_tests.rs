//! Tests of the KubeArmorPolicy export against palisade-policy's parser, validator and
//! compiler.

use std::collections::BTreeMap;

use palisade_policy::{
    compile_for, parse_policies, Action, CompileOptions, DenyPosture, FileTarget, ProcessTarget,
    Protocol, Workload,
};

use super::*;
use crate::record::{Observation, WorkloadId};

pub(crate) fn service() -> Recording {
    let mut r = Recording::new(WorkloadId::new("shop", "frontend").unwrap());
    r.add_pod("frontend-a");
    let obs = [
        Observation::Exec {
            path: "/usr/sbin/httpd".into(),
            parent: None,
        },
        Observation::Exec {
            path: "/usr/lib/cgi-bin/report.sh".into(),
            parent: Some("/usr/sbin/httpd".into()),
        },
        Observation::Exec {
            path: "/bin/sh".into(),
            parent: Some("/usr/lib/cgi-bin/report.sh".into()),
        },
        Observation::Open {
            path: "/etc/httpd/httpd.conf".into(),
            write: false,
        },
        Observation::Open {
            path: "/var/www/data/counter".into(),
            write: true,
        },
        Observation::Open {
            path: "/tmp/tmpa1b2c3d4".into(),
            write: true,
        },
        Observation::Socket {
            executable: "/usr/sbin/httpd".into(),
            protocol: Protocol::Tcp,
        },
        Observation::Socket {
            executable: "/usr/lib/cgi-bin/report.sh".into(),
            protocol: Protocol::Udp,
        },
        Observation::Listen {
            port: 8080,
            protocol: Protocol::Tcp,
        },
        Observation::Connect {
            address: "10.96.0.10".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
        },
        Observation::Connect {
            address: "192.0.2.40".parse().unwrap(),
            port: 443,
            protocol: Protocol::Tcp,
        },
        Observation::Capability {
            capability: palisade_policy::Capability::parse("net_bind_service").unwrap(),
        },
        Observation::Syscall {
            name: "accept4".into(),
        },
        Observation::Syscall {
            name: "sendto".into(),
        },
    ];
    for o in &obs {
        r.observe(1_000, o);
    }
    r
}

pub(crate) fn selector() -> BTreeMap<String, String> {
    [("app".to_string(), "frontend".to_string())].into()
}

fn workload() -> Workload {
    Workload {
        namespace: "shop".into(),
        pod_name: "frontend-a".into(),
        container_name: "httpd".into(),
        image: "httpd:2".into(),
        labels: selector(),
    }
}

#[test]
fn the_export_passes_policy_check_and_allow_lists_every_kind() {
    let e = kubearmor(&service(), "frontend-learned", &selector()).unwrap();
    assert!(e.notes.is_empty(), "{:?}", e.notes);
    let parsed = parse_policies(e.text.as_bytes()).unwrap();
    assert_eq!(parsed.policies.len(), 1);
    let p = &parsed.policies[0];
    assert_eq!(
        (p.id.namespace.as_str(), p.id.name.as_str()),
        ("shop", "frontend-learned")
    );

    let httpd = p
        .process
        .iter()
        .find(|r| r.target == ProcessTarget::Path("/usr/sbin/httpd".into()))
        .unwrap();
    assert!(httpd.from_source.is_empty(), "started by the runtime");
    let sh = p
        .process
        .iter()
        .find(|r| r.target == ProcessTarget::Path("/bin/sh".into()))
        .unwrap();
    assert_eq!(sh.from_source.len(), 1, "only from the CGI script");

    let conf = p
        .file
        .iter()
        .find(|r| r.target == FileTarget::Path("/etc/httpd/httpd.conf".into()))
        .unwrap();
    assert!(conf.read_only);
    let counter = p
        .file
        .iter()
        .find(|r| r.target == FileTarget::Path("/var/www/data/counter".into()))
        .unwrap();
    assert!(!counter.read_only);
    assert!(p.file.iter().any(|r| r.target
        == FileTarget::Directory {
            dir: "/tmp/".into(),
            recursive: true
        }
        && !r.read_only));

    let protocols: Vec<_> = p.network.iter().map(|r| r.protocol).collect();
    assert_eq!(protocols, vec![Protocol::Tcp, Protocol::Udp]);
    assert_eq!(p.capabilities.len(), 1);
    let calls = &p.syscalls[0].syscalls;
    for needed in ["accept4", "sendto", "exit_group", "execve"] {
        assert!(calls.iter().any(|c| c == needed), "{needed}");
    }

    for (posture, action) in [
        (DenyPosture::Block, Action::Block),
        (DenyPosture::Audit, Action::Audit),
    ] {
        let compiled = compile_for(
            &parsed.policies,
            &workload(),
            &CompileOptions {
                deny_posture: posture,
            },
        );
        let got = compiled.posture;
        assert_eq!(
            [
                got.process,
                got.file,
                got.network,
                got.capabilities,
                got.syscalls
            ],
            [action; 5],
            "every kind is an allow-list under {posture:?}"
        );
    }
}

#[test]
fn a_recording_with_runtime_and_script_parents_is_not_restricted_by_source() {
    let mut r = service();
    r.observe(
        2_000,
        &Observation::Exec {
            path: "/bin/sh".into(),
            parent: None,
        },
    );
    let e = kubearmor(&r, "frontend-learned", &selector()).unwrap();
    let parsed = parse_policies(e.text.as_bytes()).unwrap();
    let sh = parsed.policies[0]
        .process
        .iter()
        .find(|r| r.target == ProcessTarget::Path("/bin/sh".into()))
        .unwrap();
    assert!(sh.from_source.is_empty());
}

#[test]
fn many_file_rules_continue_in_further_documents() {
    let mut r = service();
    for i in 0..1_100 {
        r.observe(
            1,
            &Observation::Open {
                path: format!("/srv/d{i}x/conf"),
                write: false,
            },
        );
    }
    assert!(r.promotable().is_err(), "over the file cap");
    let e = kubearmor(&r, "big", &selector()).unwrap();
    assert!(
        e.notes.iter().any(|n| n.starts_with("files:")),
        "{:?}",
        e.notes
    );
    let parsed = parse_policies(e.text.as_bytes()).unwrap();
    assert_eq!(parsed.policies.len(), 2);
    assert_eq!(parsed.policies[1].id.name, "big-files-2");
    let total: usize = parsed.policies.iter().map(|p| p.file.len()).sum();
    assert_eq!(total, r.files.len());
    assert!(parsed
        .policies
        .iter()
        .all(|p| p.rule_count() <= RULES_PER_DOCUMENT));
}

#[test]
fn bad_names_and_selectors_are_refused() {
    let e = kubearmor(&service(), "Not_A_Name", &selector()).unwrap_err();
    assert!(matches!(e, ExportError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("metadata.name"), "{e}");
    let bad: BTreeMap<String, String> = [("app".to_string(), "a b".to_string())].into();
    assert!(matches!(
        kubearmor(&service(), "ok", &bad),
        Err(ExportError::Selector { .. })
    ));
}

#[test]
fn an_empty_recording_still_allows_the_floor() {
    let r = Recording::new(WorkloadId::new("shop", "idle").unwrap());
    let e = kubearmor(&r, "idle", &selector()).unwrap();
    let parsed = parse_policies(e.text.as_bytes()).unwrap();
    let p = &parsed.policies[0];
    assert!(p.process.is_empty() && p.file.is_empty());
    let mut want: Vec<&str> = SYSCALL_FLOOR
        .iter()
        .chain(crate::floor::RUNTIME_AFTER_FILTER)
        .copied()
        .collect();
    want.sort_unstable();
    want.dedup();
    assert_eq!(p.syscalls[0].syscalls.len(), want.len());
}

#[test]
fn socket_sources_follow_the_monitor_limits() {
    let mut r = service();
    for i in 0..5 {
        r.observe(
            1,
            &Observation::Socket {
                executable: format!("/usr/bin/t{i}"),
                protocol: Protocol::Tcp,
            },
        );
    }
    r.observe(
        1,
        &Observation::Socket {
            executable: "/usr/bin/ping".into(),
            protocol: Protocol::Raw,
        },
    );
    let e = kubearmor(&r, "frontend-learned", &selector()).unwrap();
    assert!(
        e.notes
            .iter()
            .any(|n| n.starts_with("tcp sockets were created by 6 executables")),
        "{:?}",
        e.notes
    );
    let parsed = parse_policies(e.text.as_bytes()).unwrap();
    let net = &parsed.policies[0].network;
    let by = |p: Protocol| net.iter().find(|r| r.protocol == p).unwrap();
    assert!(by(Protocol::Tcp).from_source.is_empty());
    assert!(by(Protocol::Raw).from_source.is_empty());
    assert_eq!(
        by(Protocol::Udp).from_source.len(),
        1,
        "udp stays with the CGI script"
    );
}

/// Capabilities a recording could not observe are not exported as rules (an allow-list of
/// them would be a guess), and a note says so.
#[test]
fn unobserved_capabilities_export_no_rules() {
    let mut r = service();
    let cap = palisade_policy::Capability::parse("net_bind_service").unwrap();
    r.observe(1, &Observation::Capability { capability: cap });
    let observed = kubearmor(&r, "web", &selector()).unwrap();
    assert!(observed.text.contains("matchCapabilities"));
    r.capabilities_unobserved = 1;
    let e = kubearmor(&r, "web", &selector()).unwrap();
    assert!(!e.text.contains("matchCapabilities"), "{}", e.text);
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("capabilities: not observable")),
        "{:?}",
        e.notes
    );
    // merged recordings add up; a document from before the field could not observe them
    let merged = r.merge(&service()).unwrap();
    assert!(!merged.capabilities_observed());
    let mut old = serde_json::to_value(service()).unwrap();
    old.as_object_mut()
        .unwrap()
        .remove("capabilities_unobserved");
    let old: Recording = serde_json::from_value(old).unwrap();
    assert_eq!(old.capabilities_unobserved, 1);
}

/// The runtime's capabilities (`floor::runtime_capability`) are kept through merges and the
/// document, and never exported.
#[test]
fn the_runtimes_capabilities_are_not_exported() {
    let mut r = service();
    let cap = |n: &str| palisade_policy::Capability::parse(n).unwrap();
    r.observe(
        1,
        &Observation::Capability {
            capability: cap("chown"),
        },
    );
    r.runtime_capabilities.insert(cap("sys_admin"));
    let e = kubearmor(&r, "web", &selector()).unwrap();
    assert!(e.text.contains("chown"), "{}", e.text);
    assert!(!e.text.contains("sys_admin"), "{}", e.text);
    let merged = service().merge(&r).unwrap();
    assert_eq!(merged.runtime_capabilities, [cap("sys_admin")].into());
    let text = serde_json::to_string(&merged).unwrap();
    let back: Recording = serde_json::from_str(&text).unwrap();
    assert_eq!(back, merged);
    // A document from before the field: none.
    let old: Recording = serde_json::from_value(serde_json::to_value(service()).unwrap()).unwrap();
    assert!(old.runtime_capabilities.is_empty());
}
