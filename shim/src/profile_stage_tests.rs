use super::*;
use palisade_policy::{Action, Protocol};
use palisade_profile::persist::Document;
use palisade_profile::{Command, Observation, Rule, StageState};
use serde_json::json;

use crate::test_support::{assert_noted, cri_in, recording_of, saved_document, workload};

/// A promotable recording of a small web server.
fn recording() -> Recording {
    let mut r = recording_of(&[
        Observation::Exec {
            path: "/bin/httpd".into(),
            parent: None,
        },
        Observation::Open {
            path: "/srv/www/index.html".into(),
            write: false,
        },
        Observation::Open {
            path: "/srv/www/data/log".into(),
            write: true,
        },
        Observation::Socket {
            executable: "/bin/httpd".into(),
            protocol: Protocol::Tcp,
        },
        Observation::Listen {
            port: 8080,
            protocol: Protocol::Tcp,
        },
        Observation::Syscall {
            name: "openat".into(),
        },
    ]);
    r.add_pod("web-1");
    assert!(r.promotable().is_ok());
    r
}

/// Saves the workload's document at `stage`.
fn saved_at(dir: &Path, stage: Stage) {
    let mut rec = recording();
    let mut s = StageState::new(1_000);
    if stage != Stage::Learn {
        s.command(1_000, Command::Pin(stage), &mut rec).unwrap();
        // Not held there: the rule may roll it back.
        s.command(1_000, Command::Unpin, &mut rec).unwrap();
    }
    persist::save(dir, &Document::new(rec, s)).unwrap();
}

/// A new state directory with the workload's document at `stage`.
fn dir_at(stage: Stage) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    saved_at(dir.path(), stage);
    dir
}

/// Container `id` of pod `pod`, which asks to learn.
fn cri(id: &str, pod: &str) -> CriContainer {
    cri_in(id, pod, &format!("sb-{pod}"), true)
}

/// What the document in `dir` decides for container `id` of pod `pod` at `now`.
fn govern(dir: &Path, id: &str, pod: &str, now: u64) -> Result<Governed, ProfileStageError> {
    governed(dir, workload(), &cri(id, pod), now, &Rule::default())
}

/// The same, when the decision is to apply the profile.
fn applied(dir: &Path, id: &str, pod: &str, now: u64) -> Applied {
    match govern(dir, id, pod, now).unwrap() {
        Governed::Apply(a) => *a,
        Governed::Learn(w) => panic!("{w} learns"),
    }
}

#[test]
fn absent_or_learning_workloads_learn() {
    let dir = tempfile::tempdir().unwrap();
    let g = govern(dir.path(), "c1", "web-1", 2_000).unwrap();
    assert!(matches!(g, Governed::Learn(w) if w == workload()));
    saved_at(dir.path(), Stage::Learn);
    let g = govern(dir.path(), "c1", "web-1", 2_000).unwrap();
    assert!(matches!(g, Governed::Learn(_)));
}

#[test]
fn audit_and_enforce_apply_the_export_without_its_system_calls() {
    let dir = dir_at(Stage::Audit);
    let a = applied(dir.path(), "c1", "web-1", 2_000);
    assert_eq!((a.stage, a.mode), (Stage::Audit, Mode::Audit));
    assert_eq!(a.policies.len(), 1);
    let p = &a.policies[0];
    assert_eq!(p.id.to_string(), "shop/palisade-learned-web");
    assert!(!p.process.is_empty() && !p.file.is_empty() && !p.network.is_empty());
    assert!(p.syscalls.is_empty(), "system calls are left out");
    // The export names /bin/httpd as the tcp socket's source; busybox's applets are symlinks
    // to one file the monitor cannot restrict to one of them, which refused the container.
    assert!(
        p.network.iter().all(|r| r.from_source.is_empty()),
        "{:?}",
        p.network
    );
    assert_noted(&a.notes, "network fromSource left out");
    assert_noted(&a.notes, "system-call rules left out");
    assert_eq!(
        a.describe(),
        "learned profile of shop/web applied in audit (stage audit): 6 observations"
    );
    saved_at(dir.path(), Stage::Enforce);
    let a = applied(dir.path(), "c1", "web-1", 2_000);
    assert_eq!((a.stage, a.mode), (Stage::Enforce, Mode::Enforce));
}

#[test]
fn canary_enforces_on_the_first_pod_to_ask_and_saves_the_choice() {
    let dir = dir_at(Stage::Canary);
    let first = applied(dir.path(), "c1", "web-1", 2_000);
    assert_eq!(first.mode, Mode::Enforce);
    let other = applied(dir.path(), "c2", "web-2", 2_001);
    assert_eq!(other.mode, Mode::Audit);
    let doc = saved_document(dir.path());
    assert_eq!(doc.stage.canary_pod.as_deref(), Some("web-1"));
    assert!(first.events.is_empty() && other.events.is_empty());
    // The canary pod's container created again: a restart, which rolls the workload back.
    let again = applied(dir.path(), "c3", "web-1", 2_002);
    assert_eq!((again.stage, again.mode), (Stage::Audit, Mode::Audit));
    assert_eq!(again.events.len(), 1);
    let line = event_line(&workload(), &again.events[0]);
    assert!(
        line.starts_with("learned profile of shop/web: rolled back by the rule, canary -> audit: pod web-1 restarted"),
        "{line}"
    );
    let doc = saved_document(dir.path());
    assert_eq!(doc.stage.stage, Stage::Audit);
}

#[test]
fn an_unusable_document_refuses_unless_it_says_learn() {
    let dir = tempfile::tempdir().unwrap();
    let path = persist::path_in(dir.path(), &workload());
    std::fs::write(&path, b"{ not json").unwrap();
    let err = govern(dir.path(), "c1", "web-1", 2_000).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("container c1: learned profile of shop/web is at a stage above learn or unknown, and its document cannot be used: "),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!("fix or remove {}", path.display())),
        "{msg}"
    );
    // An enforced stage with an empty recording is refused by the loader: still refused.
    let doc = json!({"version": 1, "recording": Recording::new(workload()), "stage": {
        "stage": "enforce", "since": 1, "pinned": false, "canary_pod": null, "departures": [],
        "departures_beyond": 0, "recent_departures": [], "recent_restarts": [], "refusal": null}});
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(govern(dir.path(), "c1", "web-1", 2_000).is_err());
    // The same document in learn but of another version: learning again loses nothing.
    let mut learn = doc.clone();
    learn["version"] = json!(99);
    learn["stage"]["stage"] = json!("learn");
    std::fs::write(&path, serde_json::to_vec(&learn).unwrap()).unwrap();
    let g = govern(dir.path(), "c1", "web-1", 2_000).unwrap();
    assert!(matches!(g, Governed::Learn(_)));
}

/// The profile compiled with the container's other policies: audit reports what it does not
/// list in each kind it lists (execs through the governor: its process rules are left out,
/// as the monitor holds no exec allow-list), enforce refuses it, and a user's own allow-list
/// keeps Block.
#[test]
fn the_profile_compiles_with_the_containers_policies_in_its_mode() {
    let dir = dir_at(Stage::Audit);
    let c = cri("c1", "web-1");
    let compile = |mode: Mode, user: Option<&str>| {
        let mut a = applied(dir.path(), "c1", "web-1", 2_000);
        a.mode = mode;
        let mut spec = json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-name": "web-1",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.container-name": "app",
        }});
        if let Some(u) = user {
            spec["annotations"]["palisade.dev/policy"] = json!(u);
        }
        let candidates = crate::policy::candidates_for(&c, &spec, None).unwrap();
        let candidates = crate::policy::with_learned(
            candidates,
            &c,
            crate::policy::LearnedPolicies {
                policies: a.policies,
                audit: mode != Mode::Enforce,
            },
        )
        .expect("candidates");
        candidates
            .select(&crate::policy::PodLabels::Known(Default::default()), false)
            .unwrap()
            .expect("compiled")
    };
    let audited = compile(Mode::Audit, None);
    assert_eq!(audited.posture.process, Action::Allow);
    assert!(audited.process.is_empty(), "{:?}", audited.process);
    assert_eq!(audited.posture.file, Action::Audit);
    assert_eq!(audited.posture.network, Action::Audit);
    assert!(audited
        .policies
        .iter()
        .any(|p| p.name == "palisade-learned-web"));
    let enforced = compile(Mode::Enforce, None);
    assert_eq!(enforced.posture.process, Action::Block);
    assert!(!enforced.process.is_empty());
    assert_eq!(enforced.posture.file, Action::Block);
    assert_eq!(enforced.posture.network, Action::Block);
    // A user's file allow-list keeps its Block posture while the profile audits.
    let user = include_str!("../tests/fixtures/only-www.yaml");
    let mixed = compile(Mode::Audit, Some(user));
    assert_eq!(mixed.posture.file, Action::Block);
    assert_eq!(mixed.posture.process, Action::Allow);
}

/// Enforced, the learned calls narrow the hardened filter (a call never learned is refused);
/// audited, the filter stays; a spec without a filter refuses the enforced container.
#[test]
fn an_enforced_profile_narrows_the_seccomp_filter_and_an_audited_one_does_not() {
    use palisade_sandbox::seccomp::{default_profile, Arch};
    let dir = tempfile::tempdir().unwrap();
    saved_at(dir.path(), Stage::Enforce);
    let mut a = applied(dir.path(), "c1", "web-1", 2_000);
    let bounding = ["CAP_CHOWN".to_string()].into();
    let hardened = json!({"linux": {"seccomp":
        serde_json::to_value(default_profile(Arch::X86_64, &bounding, false)).unwrap()}});
    let names = |spec: &serde_json::Value| -> Vec<String> {
        spec["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&hardened).iter().any(|n| n == "fsync"));
    let mut spec = hardened.clone();
    let n = narrow_seccomp("c1", &a, &mut spec)
        .unwrap()
        .expect("narrowed");
    assert!(n.refused.iter().any(|c| c == "fsync"), "{:?}", n.refused);
    assert!(n.allowed.iter().any(|c| c == "openat" || c == "execve"));
    assert!(!names(&spec).iter().any(|c| c == "fsync"));
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");

    a.mode = Mode::Audit;
    let mut spec = hardened.clone();
    assert!(narrow_seccomp("c1", &a, &mut spec).unwrap().is_none());
    assert_eq!(spec, hardened);

    a.mode = Mode::Enforce;
    let err = narrow_seccomp("c1", &a, &mut json!({"linux": {}})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container c1: container spec has no linux.seccomp filter to narrow to the learned profile of shop/web"
    );
}

/// The configuration's default `[profile.rule]` is the rule's own default.
#[test]
fn the_default_rule_table_is_the_rules_default() {
    assert_eq!(
        rule_of(&palisade_config::ProfileSettings::default()),
        Rule::default()
    );
}

#[test]
fn enforced_profiles_turn_their_peers_into_the_egress_allow_list() {
    let w = workload();
    let connect = |address: &str, port, protocol| Observation::Connect {
        address: address.parse().unwrap(),
        port,
        protocol,
    };
    let r = recording_of(&[
        connect("10.0.0.9", 9000, Protocol::Tcp),
        connect("10.0.0.10", 53, Protocol::Udp),
        connect("10.0.0.11", 7, Protocol::Raw),
    ]);
    assert!(
        egress_list(&w, Mode::Audit, &r).is_none(),
        "audit refuses nothing"
    );
    assert!(egress_list(&w, Mode::Learn, &r).is_none());
    let (list, notes) = egress_list(&w, Mode::Enforce, &r).unwrap();
    assert_eq!(list.name, egress_rule(&w));
    assert!(list.name.ends_with(": egress") && !list.audit, "{list:?}");
    let peers: Vec<(String, u8, Option<u16>, palisade_monitor::SockClass)> = list
        .peers
        .iter()
        .map(|p| (p.addr.to_string(), p.prefix_len, p.port, p.protocol))
        .collect();
    assert_eq!(
        peers,
        [
            (
                "10.0.0.9".to_string(),
                32,
                Some(9000),
                palisade_monitor::SockClass::Tcp
            ),
            (
                "10.0.0.10".to_string(),
                32,
                Some(53),
                palisade_monitor::SockClass::Udp
            ),
        ]
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("raw peer 10.0.0.11/32 port 7"),
        "{notes:?}"
    );
    // Nothing learned: nothing allowed.
    let (empty, _) = egress_list(&w, Mode::Enforce, &recording()).unwrap();
    assert!(empty.peers.is_empty());
}
