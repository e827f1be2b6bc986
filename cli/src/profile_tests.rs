use palisade_profile::{Observation, Recording, StageState};

use super::*;

/// A web server's recording (`tests/fixtures/web-observations.json`) with `drops` lost
/// observations.
fn recording(drops: u64) -> Recording {
    let mut r = Recording::new(WorkloadId::new("shop", "web").unwrap());
    r.add_pod("web-1");
    let obs: Vec<Observation> =
        serde_json::from_str(include_str!("../tests/fixtures/web-observations.json")).unwrap();
    for o in &obs {
        r.observe(1_000, o);
    }
    r.add_drops(drops);
    r
}

fn saved(dir: &Path, drops: u64) -> WorkloadId {
    let doc = Document::new(recording(drops), StageState::new(1_000));
    persist::save(dir, &doc).unwrap();
    doc.recording.workload
}

#[test]
fn workloads_stages_formats_and_selectors_parse_or_say_why() {
    assert_eq!(parse_workload("shop/web").unwrap().to_string(), "shop/web");
    assert_eq!(
        parse_workload("web").unwrap_err().to_string(),
        "workload \"web\": expected NAMESPACE/NAME"
    );
    assert!(parse_workload("shop/Web").is_err());
    assert_eq!(parse_stage("canary").unwrap(), Stage::Canary);
    assert_eq!(
        parse_stage("on").unwrap_err().to_string(),
        "stage \"on\": expected learn, audit, canary or enforce"
    );
    assert_eq!("seccomp".parse::<Format>().unwrap(), Format::Seccomp);
    assert!("yaml".parse::<Format>().is_err());
    assert_eq!(
        parse_selector("app=web").unwrap(),
        ("app".to_string(), "web".to_string())
    );
    assert!(parse_selector("=web").is_err());
    assert!(parse_cidr("10.96.0.0/12").is_ok());
    assert!(parse_cidr("10.96.0.0/40").is_err());
}

#[test]
fn the_kubearmor_export_passes_policy_check_and_the_others_parse() {
    let dir = tempfile::tempdir().unwrap();
    let w = saved(dir.path(), 0);
    let doc = load(dir.path(), &w).unwrap();
    let ka = export(&doc, Format::KubeArmor, &BTreeMap::new(), None).unwrap();
    let kernel = palisade_sandbox::KernelFeatures::probe().unwrap();
    let report =
        crate::check::check_bytes(Path::new("web.yaml"), ka.text.as_bytes(), &kernel).unwrap();
    assert!(report.valid, "{:?}", report.diagnostics);
    assert!(ka.text.contains("app: web"), "{}", ka.text);
    let sc: serde_json::Value = serde_json::from_str(
        &export(&doc, Format::Seccomp, &BTreeMap::new(), None)
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
    let names = sc["syscalls"][0]["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "openat") && names.iter().any(|n| n == "exit_group"));
    let selector = BTreeMap::from([("tier".to_string(), "front".to_string())]);
    let np = export(&doc, Format::NetworkPolicy, &selector, None).unwrap();
    let np: serde_yaml::Value = serde_yaml::from_str(&np.text).unwrap();
    assert_eq!(np["kind"], "NetworkPolicy");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["tier"], "front");
}

#[test]
fn promotion_moves_a_clean_recording_and_refuses_a_lossy_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = saved(dir.path(), 0);
    let (event, stage) = apply(dir.path(), &w, Command::Promote, 2_000).unwrap();
    assert_eq!(stage, Stage::Audit);
    assert_eq!(event.to, Stage::Audit);
    let (_, stage) = hold(dir.path(), &w, 2_001).unwrap();
    assert_eq!(stage, Stage::Audit);
    assert!(load(dir.path(), &w).unwrap().stage.pinned);
    let (_, stage) = apply(dir.path(), &w, Command::Pin(Stage::Enforce), 2_002).unwrap();
    assert_eq!(stage, Stage::Enforce);

    let lossy = tempfile::tempdir().unwrap();
    let w = saved(lossy.path(), 12);
    let err = apply(lossy.path(), &w, Command::Promote, 2_000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "profile of shop/web cannot be promoted: recording is lossy: 12 events were dropped before they were recorded"
    );
    assert_eq!(load(lossy.path(), &w).unwrap().stage.stage, Stage::Learn);
    let shown = show(&load(lossy.path(), &w).unwrap());
    assert!(
        shown.contains("promotable: no\n    recording is lossy"),
        "{shown}"
    );

    let none = WorkloadId::new("shop", "absent").unwrap();
    let err = apply(lossy.path(), &none, Command::Promote, 2_000).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("workload shop/absent: no learned profile in "));
    assert!(
        !persist::path_in(lossy.path(), &none).exists(),
        "nothing created"
    );
}

#[test]
fn status_lists_each_workloads_stage_and_unusable_documents() {
    let dir = tempfile::tempdir().unwrap();
    let w = saved(dir.path(), 0);
    apply(dir.path(), &w, Command::Promote, 2_000).unwrap();
    std::fs::write(dir.path().join("shop_broken.learned.json"), "{").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let rows = workloads(dir.path());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].workload, "shop/broken");
    assert!(rows[0].error.is_some());
    assert_eq!(rows[1].stage.as_deref(), Some("audit"));
    let text = render_workloads(dir.path(), &rows);
    assert!(
        text.contains("  shop/web: audit, 8 observations, 0 dropped, promotable\n"),
        "{text}"
    );
    assert!(text.contains("  shop/broken: unusable: "), "{text}");
    assert!(workloads(&dir.path().join("missing")).is_empty());
}

#[test]
fn show_lists_the_pending_departures_and_the_canary_pod() {
    let dir = tempfile::tempdir().unwrap();
    let w = saved(dir.path(), 0);
    apply(dir.path(), &w, Command::Pin(Stage::Canary), 2_000).unwrap();
    persist::update(dir.path(), &w, 2_001, |doc| {
        doc.stage.mode_for("web-1");
        doc.stage.departure(
            palisade_profile::Departure {
                at: 2_001,
                pod: "web-1".into(),
                refused: true,
                observation: Observation::Syscall {
                    name: "unshare".into(),
                },
            },
            &palisade_profile::Rule::default(),
        );
    })
    .unwrap();
    let shown = show(&load(dir.path(), &w).unwrap());
    assert!(
        shown.contains(
            "  pending departures: 1\n    at 2001 pod web-1 refused: {\"kind\":\"syscall\",\"name\":\"unshare\"}\n"
        ),
        "{shown}"
    );
    assert!(shown.ends_with("  canary pod: web-1\n"), "{shown}");
}
