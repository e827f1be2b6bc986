//! `palisade gate export` and `import` on profiles the gate itself saved, in the shim's
//! per-service layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use palisade_gate::{decide, Profile, Request};

mod support;
use support::{fails, succeeds, PALISADE};

fn get(target: &str, agent: &str) -> Request {
    Request::new(
        "GET",
        "HTTP/1.1",
        target,
        vec![("user-agent".into(), agent.into())],
        Some("10.1.0.7".parse().unwrap()),
    )
}

/// `palisade gate ARGS[0] --state-dir STATE ARGS[1..]`.
fn palisade(args: &[&str], state: &Path) -> Command {
    let mut cmd = Command::new(PALISADE);
    cmd.args(["gate"])
        .args(&args[..1])
        .arg("--state-dir")
        .arg(state)
        .args(&args[1..]);
    cmd
}

#[test]
fn export_merges_the_pods_and_import_round_trips() {
    let node = tempfile::tempdir().unwrap();
    let state = node.path().join("gate");
    let service = state.join("shop_web");
    std::fs::create_dir_all(&service).unwrap();
    let mut a = Profile::default();
    for q in ["red+shoes", "blue+hat"] {
        a.learn(&get(&format!("/search?q={q}"), "shop/1.2"));
    }
    let mut b = Profile::default();
    b.learn(&get("/cart?item=42", "shop/1.2"));
    palisade_gate::save(&a, &service.join("web-6f9c7-abcde.profile.json")).unwrap();
    palisade_gate::save(&b, &service.join("web-6f9c7-fghij.profile.json")).unwrap();

    let exported = node.path().join("shop_web.json");
    succeeds(&mut palisade(
        &[
            "export",
            "--service",
            "shop_web",
            "-o",
            exported.to_str().unwrap(),
        ],
        &state,
    ));
    let doc = std::fs::read_to_string(&exported).unwrap();
    let profile = palisade_gate::import(&doc).unwrap();
    let mut merged = a.clone();
    merged.merge(&b);
    assert_eq!(profile, merged);
    assert!(decide(&profile, &get("/search?q=wool+socks", "shop/1.2")).is_clean());
    assert!(decide(&profile, &get("/cart?item=7", "shop/1.2")).is_clean());
    let d = decide(&profile, &get("/cart?item=7&debug=1", "shop/1.2"));
    assert!(
        d.reasons
            .contains(&"query.debug: key not known".to_string()),
        "{d:?}"
    );

    // Export to stdout is the same document.
    let out = succeeds(&mut palisade(&["export", "--service", "shop_web"], &state));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        doc.trim_end()
    );

    // Import on another node: the service's next pod finds it in the shim's layout.
    let other = tempfile::tempdir().unwrap();
    let out = succeeds(&mut palisade(
        &[
            "import",
            "--service",
            "shop_web",
            exported.to_str().unwrap(),
        ],
        other.path(),
    ));
    let imported = other.path().join("shop_web/imported.profile.json");
    assert_eq!(
        palisade_gate::load(&imported).unwrap(),
        Some(merged.clone())
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains(&imported.display().to_string()));

    // And an export there gives back the same profile.
    let out = succeeds(&mut palisade(
        &["export", "--service", "shop_web"],
        other.path(),
    ));
    let again = palisade_gate::import(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(again, merged);
}

/// Asserts that palisade's error `err` names `file` as a profile that is no profile document.
fn assert_not_a_profile(err: &str, file: &Path) {
    assert!(
        err.starts_with(&format!(
            "palisade: profile {}: profile document: ",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn refuses_bad_documents_and_names() {
    let node = tempfile::tempdir().unwrap();
    let bad = node.path().join("bad.json");
    std::fs::write(&bad, "{\"version\": 999}").unwrap();
    let err = fails(&mut palisade(
        &["import", "--service", "shop_web", bad.to_str().unwrap()],
        node.path(),
    ));
    assert_not_a_profile(&err, &bad);
    assert!(!node.path().join("shop_web").exists(), "nothing written");

    let err = fails(&mut palisade(
        &["export", "--service", "../etc"],
        node.path(),
    ));
    assert_eq!(
        err,
        "palisade: profile of service \"../etc\": name not usable as a file name\n"
    );

    let err = fails(&mut palisade(
        &["export", "--service", "shop_web"],
        node.path(),
    ));
    assert!(
        err.starts_with("palisade: service shop_web: no profiles in "),
        "{err}"
    );

    // A pod's file that is not a profile stops the export, naming the file.
    let service = node.path().join("shop_web");
    std::fs::create_dir_all(&service).unwrap();
    let mut p = Profile::default();
    p.learn(&get("/", "x"));
    palisade_gate::save(&p, &service.join("a.profile.json")).unwrap();
    let torn = service.join("b.profile.json");
    std::fs::write(&torn, "{\"version\":").unwrap();
    let err = fails(&mut palisade(
        &["export", "--service", "shop_web"],
        node.path(),
    ));
    assert_not_a_profile(&err, &torn);
}
