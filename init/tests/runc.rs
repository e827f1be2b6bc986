//! Runs palisade-init inside a real runc container: a busybox rootfs, the static helper
//! and its plan bind-mounted read-only, process.args prefixed as the shim does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/runc.rs"]
mod support;
use support::{busybox, run_with_timeout, runc_spec, static_init, Container};

/// Whether an ELF file asks for a program interpreter (PT_INTERP), i.e. is dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "64-bit ELF expected");
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// A rootfs with busybox, the libraries ldd lists for it, and applet links.
fn busybox_rootfs(root: &Path) {
    for d in [
        "bin",
        "proc",
        "dev",
        "sys",
        "tmp",
        "data",
        "other",
        ".palisade",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let libs = busybox(root, &["sh", "cat", "echo", "grep", "touch", "ls", "sleep"]).unwrap();
    assert!(libs >= 2, "busybox should need libc and the loader");
}

const PREFIX: [&str; 4] = [
    "/.palisade/palisade-init",
    "--plan",
    "/.palisade/plan.json",
    "--",
];

/// The container's plan: busybox runs, /data is writable, nothing else is.
fn plan(scope_signal: bool) -> Value {
    let rx = ["execute", "read_file", "read_dir"];
    json!({
        "version": 1,
        "no_new_privs": true,
        "capabilities": {"bounding_keep": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]},
        "landlock": {
            "required_abi": 1,
            "fs": [
                {"path": "/bin", "access": rx},
                {"path": "/lib", "access": rx},
                {"path": "/lib64", "access": rx, "optional": true},
                {"path": "/proc", "access": ["read_file", "read_dir"]},
                {"path": "/dev/null", "access": ["read_file", "write_file"]},
                {"path": "/data", "access": ["read_file", "read_dir", "write_file", "make_reg"]}
            ],
            "scope": {"signal": scope_signal}
        }
    })
}

/// A bundle whose process runs `args` behind palisade-init, wired up as the shim does:
/// the static helper and the plan bind-mounted read-only, process.args prefixed.
fn bundle(helper: &Path, plan: &Value, args: &[&str]) -> tempfile::TempDir {
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let plan_path = bundle.path().join("plan.json");
    fs::write(&plan_path, serde_json::to_vec(plan).unwrap()).unwrap();

    let config_path = bundle.path().join("config.json");
    let mut config = runc_spec(bundle.path()).unwrap();
    config["process"]["terminal"] = json!(false);
    let full: Vec<&str> = PREFIX.iter().chain(args).copied().collect();
    config["process"]["args"] = json!(full);
    // CAP_SETPCAP lets the helper cut the bounding set below what runc set.
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SETPCAP"));
    }
    config["root"] = json!({"path": rootfs, "readonly": false});
    let mounts = config["mounts"].as_array_mut().unwrap();
    for (source, destination) in [
        (helper, "/.palisade/palisade-init"),
        (plan_path.as_path(), "/.palisade/plan.json"),
    ] {
        mounts.push(json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": ["bind", "ro"]
        }));
    }
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    bundle
}

fn checked_static_init() -> PathBuf {
    let helper = static_init().unwrap();
    let elf = fs::read(&helper).unwrap();
    assert!(
        !has_interpreter(&elf),
        "{} must be static",
        helper.display()
    );
    helper
}

/// Runs `cmd`, a `what` (`runc run`, `runc exec`) that must succeed within a minute: its
/// stdout and stderr.
fn runc_ok(cmd: &mut Command, what: &str) -> (String, String) {
    let out = run_with_timeout(cmd, Duration::from_secs(60)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn landlock_confines_a_runc_container() {
    let helper = checked_static_init();
    let script = "echo allowed > /data/f && cat /data/f; \
                  echo denied > /other/f || echo other-refused; \
                  echo denied > /f || echo root-refused; \
                  grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status";
    let bundle = bundle(&helper, &plan(false), &["/bin/sh", "-c", script]);
    let rootfs = bundle.path().join("rootfs");
    let c = Container::fresh("palisade-init-run").unwrap();
    let (stdout, stderr) = runc_ok(
        c.runc()
            .arg("run")
            .arg("--bundle")
            .arg(bundle.path())
            .arg(&c.id),
        "runc run",
    );
    assert_eq!(
        stdout, "allowed\nother-refused\nroot-refused\nCapBnd:\t0000000000000420\nNoNewPrivs:\t1\n",
        "stderr: {stderr}"
    );
    assert_eq!(stderr.matches("Permission denied").count(), 2, "{stderr}");
    assert_eq!(
        fs::read_to_string(rootfs.join("data/f")).unwrap(),
        "allowed\n"
    );
    assert!(!rootfs.join("other/f").exists());
    assert!(!rootfs.join("f").exists());
}

#[test]
fn exec_processes_get_their_own_domain() {
    let helper = checked_static_init();
    let bundle = bundle(&helper, &plan(true), &["/bin/sleep", "60"]);
    let rootfs = bundle.path().join("rootfs");
    let c = Container::fresh("palisade-init-exec").unwrap();
    // Detached: runc hands its stdio to the container, so none of it may be a pipe
    // this test waits on.
    let started = c
        .runc()
        .args(["run", "--detach", "--bundle"])
        .arg(bundle.path())
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "runc run --detach failed");
    let state_out = c.runc().arg("state").arg(&c.id).output().unwrap();
    let container_state: Value = serde_json::from_slice(&state_out.stdout).unwrap_or_else(|e| {
        panic!(
            "runc state: {e}: {}",
            String::from_utf8_lossy(&state_out.stderr)
        )
    });
    assert_eq!(container_state["status"], "running", "{container_state}");

    let script = "echo from-exec > /data/e && cat /data/e; \
                  echo denied > /other/e || echo other-refused; \
                  kill -0 1 || echo init-unreachable; \
                  sleep 30 & kill $! && echo own-child-signalled";
    let args: Vec<&str> = PREFIX
        .iter()
        .copied()
        .chain(["/bin/sh", "-c", script])
        .collect();
    let (stdout, stderr) = runc_ok(c.runc().arg("exec").arg(&c.id).args(&args), "runc exec");
    assert_eq!(
        stdout, "from-exec\nother-refused\ninit-unreachable\nown-child-signalled\n",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(!rootfs.join("other/e").exists());

    // A plan error in an exec is reported with its code and the command never runs.
    let out = run_with_timeout(
        c.runc().arg("exec").arg(&c.id).args([
            "/.palisade/palisade-init",
            "--plan",
            "/.palisade/missing.json",
            "--",
            "/bin/touch",
            "/data/never",
        ]),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(121));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "palisade-init: plan /.palisade/missing.json: no such file or directory\n"
    );
    assert!(!rootfs.join("data/never").exists());
}
