//! `palisade policy check` on KubeArmor's published use cases and on broken inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::assert_contains;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "fixtures in {}", dir.display());
    files
}

/// A policy of this suite's own (`tests/fixtures`): broken or unusual on purpose.
fn cli_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(args: &[&str], files: &[PathBuf]) -> (Output, String) {
    let out = Command::new(PALISADE)
        .args(["policy", "check"])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    (out, stdout)
}

#[test]
fn kubearmor_use_cases_are_valid_and_placed() {
    let files = fixtures();
    let (out, stdout) = check(&[], &files);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &files {
        assert!(
            stdout.contains(&format!("{}: valid, ", f.display())),
            "{}: {stdout}",
            f.display()
        );
    }
    // The service account token directory is masked whatever the kernel offers.
    assert_contains(&stdout, "    spec.file.matchDirectories[0]: file /run/secrets/kubernetes.io/serviceaccount/ (Block): masked path; ");
    // A Block on a binary's path is the monitor's kill at exec, which the shim runs: the
    // container is not refused for it.
    assert!(
        stdout.contains("    spec.process.matchPaths[0]: process /usr/bin/apt (Block): monitor: killed at exec ("),
        "{stdout}"
    );
    assert!(
        !stdout.contains("refused unless the runtime allows degrading: spec.process.matchPaths[0]"),
        "{stdout}"
    );
    // fromSource Allow rules on tcp and udp are the shim's socket allow-lists: not refused.
    assert_contains(&stdout, "    spec.network.matchProtocols[0]: network tcp (Allow): monitor: socket creation allow-list per binary");
    assert!(
        !stdout
            .contains("refused unless the runtime allows degrading: spec.network.matchProtocols["),
        "{stdout}"
    );
    // Warnings carry the file and the place.
    let fim = files
        .iter()
        .find(|f| f.ends_with("file-integrity-system-paths.yaml"))
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "{}:6:1: warning: spec.selector: is missing",
            fim.display()
        )),
        "{stdout}"
    );

    // The allow-list's landlock rules name this kernel's ABI, or say why they cannot be.
    let kernel = palisade_sandbox::KernelFeatures::probe().unwrap();
    let allow = files
        .iter()
        .find(|f| f.ends_with("process-allow-list.yaml"))
        .unwrap();
    let (_, json) = check(&["--json"], std::slice::from_ref(allow));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["landlock_abi"].as_u64(),
        kernel.landlock_abi.map(u64::from)
    );
    let rules = report["files"][0]["policies"][0]["rules"]
        .as_array()
        .unwrap();
    let bash = rules
        .iter()
        .find(|r| r["target"] == "/bin/bash")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(bash["action"], "Allow");
    assert_eq!(
        bash["candidates"],
        serde_json::json!(["landlock", "ebpf-exec-kill"])
    );
    match kernel.landlock_abi {
        Some(abi) => assert_eq!(bash["summary"], format!("landlock (ABI {abi})")),
        None => assert!(
            bash["summary"]
                .as_str()
                .unwrap()
                .starts_with("unenforceable here: "),
            "{bash}"
        ),
    }
}

#[test]
fn broken_inputs_exit_1_with_located_diagnostics() {
    let good = fixtures()[0].clone();
    let bad = cli_fixture("broken.yaml");
    let dir = tempfile::tempdir().unwrap();
    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "apiVersion: v1\nkind: [\n").unwrap();
    let missing = dir.path().join("missing.yaml");

    let (out, stdout) = check(
        &[],
        &[good.clone(), bad.clone(), syntax.clone(), missing.clone()],
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let b = bad.display();
    for line in [
        format!("{b}:13:7: error: spec.file.matchPaths[0].readonly: unknown field, expected one of path, readOnly"),
        format!("{b}:7:3: error: spec.severity: must be between 1 and 10\n"),
        format!("{b}:12:7: error: spec.file.matchPaths[0].path: must be absolute\n"),
        format!("{b}:14:3: error: spec.action: unknown action Deny"),
        format!("{}:3:1: error: .: ", syntax.display()),
        format!("{}: error: .: cannot read: ", missing.display()),
        format!("{b}: invalid (4 error(s))\n"),
        format!("{}: valid, 1 policy\n", good.display()),
    ] {
        assert!(stdout.contains(&line), "{line:?} in:\n{stdout}");
    }

    let (out, json) = check(&["--json"], std::slice::from_ref(&bad));
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let file = &report["files"][0];
    assert_eq!(file["valid"], false);
    let severity = file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "spec.severity")
        .unwrap();
    assert_eq!(
        (severity["line"].as_u64(), severity["column"].as_u64()),
        (Some(7), Some(3))
    );
    assert_eq!(severity["level"], "error");
}

#[test]
fn usage_errors_exit_2() {
    let (out, _) = check(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let (out, _) = check(&["--no-such-flag"], &[PathBuf::from("x.yaml")]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn source_limited_network_block_is_refused() {
    let (out, stdout) = check(&[], &[cli_fixture("nc-block.yaml")]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The socket allow-lists only allow: a Block limited to a binary is not in the monitor.
    assert!(
        stdout.contains(
            "refused unless the runtime allows degrading: spec.network.matchProtocols[0]"
        ),
        "{stdout}"
    );
}
