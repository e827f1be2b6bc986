//! A learned seccomp profile applied for real: a busybox container, hardened as the shim does,
//! is watched with the monitor's syscall recording the way the shim watches a learning
//! container (after `runc create`, before `runc start`), its own recording narrows its
//! hardened filter (`profile_seccomp::narrow`), and under the narrowed filter the same
//! workload runs again while a call it never made (`fsync`, through `sync FILE`) is refused
//! with EPERM. With `noNewPrivileges` on (runc loads the filter after the watch began) and off
//! (before: the runtime's calls between are `RUNTIME_AFTER_FILTER`'s). Needs root, runc,
//! busybox and the kernel's BPF, as on the developer machines and in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_monitor::{
    cgroup_id_of_pid, ContainerRef, ContainerRules, MonitorConfig, NodeMonitor,
};
use palisade_profile::{Observation, Recording, WorkloadId};
use palisade_sandbox::{harden_spec, HardeningConfig};
use palisade_shim::profile_seccomp::narrow;
use serde_json::{json, Value};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/usr/bin/busybox";
const WORKLOAD: &str = "echo learned > /tmp/f && cat /tmp/f && echo done";

/// A private pin root, removed when dropped.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A runc container deleted (and its state directory removed) when dropped.
struct Container {
    state: tempfile::TempDir,
    id: String,
}

impl Container {
    fn runc(&self) -> Command {
        let mut c = Command::new(RUNC);
        c.arg("--root").arg(self.state.path());
        c
    }

    fn status(&self) -> String {
        let out = self.runc().args(["state", &self.id]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["status"].as_str().unwrap_or("gone").to_string()
    }

    fn pid(&self) -> u32 {
        let out = self.runc().args(["state", &self.id]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        u32::try_from(v["pid"].as_u64().unwrap()).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// busybox and its libraries in `root`, with the applets the scripts use.
fn rootfs(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let ldd = Command::new("ldd").arg(BUSYBOX).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let dst = root.join(p.trim_start_matches('/'));
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(p, dst).unwrap();
        }
    }
    for applet in ["sh", "cat", "echo", "sync"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
}

/// The bundle's spec from `runc spec`, shaped like CRI's and hardened as the shim does.
fn hardened_spec(bundle: &Path, name: &str, nnp: bool) -> Value {
    let out = Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "runc spec: {out:?}");
    let mut spec: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["root"] = json!({"path": bundle.join("rootfs"), "readonly": false});
    harden_spec(name, &mut spec, &HardeningConfig::default()).unwrap();
    spec["process"]["noNewPrivileges"] = json!(nnp);
    assert!(
        spec["linux"]["seccomp"].is_object(),
        "the hardened spec has a filter"
    );
    spec
}

/// Runs `script` in a container of `spec` the way the shim does (create, watch, start);
/// returns its output and, when `learn`, the system call numbers its processes made.
fn run(
    monitor: &NodeMonitor,
    bundle: &Path,
    spec: &Value,
    id: &str,
    script: &str,
    learn: bool,
) -> (String, Option<Vec<u32>>) {
    let mut spec = spec.clone();
    spec["process"]["args"] = json!(["/bin/sh", "-c", script]);
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let output = bundle.join(format!("{id}.out"));
    let container = Container {
        state: tempfile::tempdir().unwrap(),
        id: id.to_string(),
    };
    let errors = bundle.join(format!("{id}.err"));
    // The container's stdio is runc create's: files, not pipes it would hold open.
    let created = container
        .runc()
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&output).unwrap())
        .stderr(fs::File::create(&errors).unwrap())
        .status()
        .unwrap();
    assert!(
        created.success(),
        "runc create {id}: {created}: {}",
        fs::read_to_string(&errors).unwrap_or_default()
    );
    let pid = container.pid();
    let watched = ContainerRef {
        cgroup_id: cgroup_id_of_pid(pid).unwrap(),
        cgroup_dir: None,
        namespace: "test".into(),
        pod: id.into(),
        container: "c".into(),
        container_id: id.into(),
        image: "busybox".into(),
    };
    let rules = ContainerRules {
        record_syscalls: learn,
        ..Default::default()
    };
    let watch = monitor.watch(watched, rules).unwrap();
    let started = container.runc().args(["start", id]).output().unwrap();
    assert!(started.status.success(), "runc start {id}: {started:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while container.status() != "stopped" {
        assert!(Instant::now() < deadline, "container {id} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = watch.syscalls_seen();
    drop(watch);
    drop(container);
    (fs::read_to_string(&output).unwrap(), seen)
}

/// The recording the shim would make of `numbers`.
fn recording(numbers: &[u32]) -> Recording {
    let mut r = Recording::new(WorkloadId::new("test", "learned").unwrap());
    for nr in numbers {
        let name = syscalls::Sysno::new(*nr as usize).unwrap().name();
        r.observe(1, &Observation::Syscall { name: name.into() });
    }
    r
}

fn learn_narrow_and_enforce(nnp: bool) {
    let tag = if nnp { "nnp" } else { "no-nnp" };
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/palisade-test-{}-narrow-{tag}",
        std::process::id()
    )));
    let monitor = NodeMonitor::open(
        MonitorConfig {
            pin_root: root.0.clone(),
            ..Default::default()
        },
        |_| true,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    rootfs(&bundle.join("rootfs"));
    let spec = hardened_spec(&bundle, "narrow", nnp);
    let id = |step: &str| format!("palisade-narrow-{tag}-{step}-{}", std::process::id());

    let (out, seen) = run(&monitor, &bundle, &spec, &id("learn"), WORKLOAD, true);
    assert_eq!(
        out, "learned\ndone\n",
        "the workload under the hardened filter"
    );
    let seen = seen.expect("a learning watch has a table");
    let learned = recording(&seen);
    assert!(
        learned.syscalls.contains("execve") && !learned.syscalls.contains("fsync"),
        "{:?}",
        learned.syscalls
    );

    let mut narrowed = spec.clone();
    let n = narrow(&mut narrowed, &learned).unwrap();
    assert!(n.refused.iter().any(|c| c == "fsync"), "{:?}", n.refused);

    let (out, _) = run(&monitor, &bundle, &narrowed, &id("again"), WORKLOAD, false);
    assert_eq!(
        out, "learned\ndone\n",
        "the same workload under its narrowed filter"
    );

    let probe = "echo x > /tmp/g && if sync /tmp/g 2>/tmp/err; then echo synced; \
                 else echo refused; cat /tmp/err; fi";
    let (out, _) = run(&monitor, &bundle, &narrowed, &id("new"), probe, false);
    assert!(
        out.starts_with("refused\n") && out.contains("Operation not permitted"),
        "fsync, never learned, must fail with EPERM: {out:?}"
    );
    let (out, _) = run(&monitor, &bundle, &spec, &id("hardened"), probe, false);
    assert_eq!(out, "synced\n", "the hardened filter itself allows fsync");
}

#[test]
fn a_workload_runs_under_its_own_narrowed_filter_with_no_new_privileges() {
    learn_narrow_and_enforce(true);
}

#[test]
fn a_workload_runs_under_its_own_narrowed_filter_without_no_new_privileges() {
    learn_narrow_and_enforce(false);
}
