//! `palisade status --json` on an installed node layout, with a serving shim process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

mod support;
use support::{assert_contains, succeeds, PALISADE};

/// A process that looks like a serving shim in /proc (its argv[0] is the shim's path), killed
/// by its PID when dropped, also when the test fails.
struct FakeShim(Child);

impl Drop for FakeShim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = succeeds(Command::new(PALISADE).args(["status", "--json"]).args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reports_kernel_install_runtimes_and_pods() {
    let node = tempfile::tempdir().unwrap();
    let config = node.path().join("config.toml");
    std::fs::write(&config, "version = 2\n# operator\n").unwrap();
    let bin = node.path().join("bin");
    std::fs::write(node.path().join("shim"), "#!/bin/sh\n").unwrap();
    succeeds(
        Command::new(PALISADE)
            .arg("install")
            .arg("--containerd-config")
            .arg(&config)
            .arg("--bin-dir")
            .arg(&bin)
            .arg("--config-dir")
            .arg(node.path().join("etc"))
            .arg("--state-dir")
            .arg(node.path().join("state"))
            .arg("--log-dir")
            .arg(node.path().join("log"))
            .arg("--shim")
            .arg(node.path().join("shim"))
            .arg("--init")
            .arg(node.path().join("shim")),
    );
    // One runtime's config broken by hand: status says why the shim would refuse it.
    let audit = node.path().join("etc/palisade-audit.toml");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &audit,
        text.replace("log_level = \"info\"", "log_levle = \"info\""),
    )
    .unwrap();

    let id = format!("status-test-{}", std::process::id());
    let shim = Command::new("/bin/sh")
        .arg0(bin.join("containerd-shim-palisade-v2"))
        .args(["-c", "read line", "-namespace", "k8s.io", "-id", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let shim = FakeShim(shim);

    let s = status(&[
        "--containerd-config".as_ref(),
        config.as_os_str(),
        "--bin-dir".as_ref(),
        bin.as_os_str(),
    ]);
    let kernel = palisade_sandbox::KernelFeatures::probe().unwrap();
    assert_eq!(
        s["kernel"]["landlock_abi"].as_u64(),
        kernel.landlock_abi.map(u64::from)
    );
    let actions: Vec<String> = kernel.seccomp_actions.iter().cloned().collect();
    assert_eq!(s["kernel"]["seccomp_actions"], serde_json::json!(actions));
    assert_eq!(s["kernel"]["user_namespaces"], kernel.user_namespaces);
    assert_eq!(s["kernel"]["bpf_program_types"], "not checked yet");

    let rows = s["enforcement"].as_array().unwrap();
    let caps = rows
        .iter()
        .find(|r| r["rule"] == "capabilities Block")
        .unwrap();
    assert_eq!(caps["enforcer"], "capabilities-bounding");
    let file_block = rows
        .iter()
        .find(|r| r["rule"] == "file Block (path or directory)")
        .unwrap();
    assert_eq!(file_block["enforcer"], "bind-mount-mask");

    for b in s["binaries"].as_array().unwrap() {
        assert_eq!(b["installed"], true, "{b}");
    }
    assert_eq!(s["containerd"]["version"], 2);
    assert_eq!(s["containerd"]["cri_disabled"], false);
    let runtimes = s["containerd"]["runtimes"].as_array().unwrap();
    let names: Vec<&str> = runtimes
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "palisade",
            "palisade-strict",
            "palisade-audit",
            "palisade-compat"
        ]
    );
    assert_eq!(runtimes[0]["config"], "ok");
    let broken = runtimes[2]["config"].as_str().unwrap();
    assert_contains(broken, "unknown field `log_levle`");

    let pid = shim.0.id();
    let shims = s["shims"].as_array().unwrap();
    let ours = shims
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} in {shims:?}"));
    assert_eq!(ours["id"], id.as_str());
    assert_eq!(ours["namespace"], "k8s.io");
    assert_eq!(s["pods_served"].as_u64(), Some(shims.len() as u64));

    drop(shim);
    let s = status(&[
        "--containerd-config".as_ref(),
        config.as_os_str(),
        "--bin-dir".as_ref(),
        bin.as_os_str(),
    ]);
    assert!(!s["shims"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pid"] == pid));

    // The text report names the same things.
    let out = Command::new(PALISADE)
        .args(["status", "--containerd-config"])
        .arg(node.path().join("missing.toml"))
        .arg("--bin-dir")
        .arg(node.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_contains(&text, "bpf program types: not checked yet");
    assert!(
        text.contains(&format!(
            "containerd config: containerd config {}: ",
            node.path().join("missing.toml").display()
        )),
        "{text}"
    );
    assert_contains(&text, "containerd-shim-palisade-v2: missing");
}
