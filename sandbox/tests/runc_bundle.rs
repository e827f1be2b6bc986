//! The hardened spec as runc runs it: a busybox bundle whose config.json went through
//! `harden_spec`, run with the real runc (whose libseccomp compiles the profile), reporting
//! from inside the container what it can and cannot do. Needs root, runc and busybox, as on
//! the developer machines and in CI.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use palisade_sandbox::capabilities::{DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES};
use palisade_sandbox::{harden_spec, HardeningConfig};
use serde_json::{json, Value};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/usr/bin/busybox";

/// Copies busybox and the libraries `ldd` names into `rootfs`, at the same paths.
fn busybox_rootfs(rootfs: &Path) -> Result<()> {
    let ldd = Command::new("ldd")
        .arg(BUSYBOX)
        .output()
        .context("run ldd")?;
    let mut files = vec![PathBuf::from(BUSYBOX)];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for file in files {
        let dest = rootfs.join(file.strip_prefix("/")?);
        std::fs::create_dir_all(dest.parent().context("file has a parent")?)?;
        std::fs::copy(&file, &dest).with_context(|| format!("copy {}", file.display()))?;
    }
    for dir in ["tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(())
}

/// The `CapBnd` mask of `/proc/self/status` for `caps`.
fn cap_mask(caps: &[&str]) -> u64 {
    caps.iter()
        .map(|c| {
            let bit = KNOWN_CAPABILITIES
                .iter()
                .position(|k| k == c)
                .unwrap_or_else(|| panic!("unknown capability {c}"));
            1u64 << bit
        })
        .fold(0, |acc, b| acc | b)
}

/// Runs `script` under busybox sh in a bundle whose spec is `runc spec`'s default made to
/// look like CRI's for a pod with `allowPrivilegeEscalation` and an unmasked /proc
/// (containerd's default capability set, nothing masked), hardened when `harden`.
fn run_bundle(script: &str, harden: bool) -> Result<(String, Value)> {
    run_bundle_in(script, harden, false)
}

/// The container's root is host uid/gid `USERNS_HOST_ID` in a user namespace, the way
/// containerd 1.7+ writes the spec for a pod whose CRI request asks for one.
const USERNS_HOST_ID: u32 = 100_000;

/// As `run_bundle`, optionally with a user namespace mapping container ids 0..65536.
fn run_bundle_in(script: &str, harden: bool, userns: bool) -> Result<(String, Value)> {
    ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir()?;
    let bundle = dir.path().join("bundle");
    let state = dir.path().join("state");
    busybox_rootfs(&bundle.join("rootfs"))?;
    let status = Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .context("runc spec")?;
    ensure!(status.success(), "runc spec: {status}");

    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!([BUSYBOX, "sh", "-c", script]);
    spec["root"]["readonly"] = json!(false);
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(DEFAULT_CAPABILITIES.as_slice());
    }
    spec["process"]["noNewPrivileges"] = json!(false);
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    if userns {
        // The mapped root must reach the bundle (tempdirs are 0700).
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755))?;
        spec["linux"]["namespaces"]
            .as_array_mut()
            .context("runc spec has namespaces")?
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": USERNS_HOST_ID, "size": 65536}]);
        spec["linux"]["uidMappings"] = map.clone();
        spec["linux"]["gidMappings"] = map;
    }
    if harden {
        harden_spec("runc-bundle-test", &mut spec, &HardeningConfig::default())?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;

    // Unique per run: the id also names the container's cgroup.
    let id = format!(
        "palisade-sandbox-test-{}-{}{}",
        std::process::id(),
        if harden { "hardened" } else { "plain" },
        if userns { "-userns" } else { "" }
    );
    let out = Command::new("timeout")
        .arg("60")
        .arg(RUNC)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .context("runc run")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "runc run: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((stdout, spec))
}

/// Reports what the container can do.
const SCRIPT: &str = r#"
        bb=/usr/bin/busybox
        $bb grep -E '^(Seccomp|NoNewPrivs|CapBnd|CapEff):' /proc/self/status
        if $bb unshare -U $bb true 2>/dev/null; then echo unshare: allowed; else echo unshare: refused; fi
        if $bb mknod /tmp/dev c 1 3 2>/dev/null; then echo mknod-char: allowed; else echo mknod-char: refused; fi
        if $bb mkfifo /tmp/fifo; then echo mkfifo: allowed; else echo mkfifo: refused; fi
        echo timer_list: $($bb wc -c < /proc/timer_list)
        if $bb grep -q ' /proc/sys ro,' /proc/self/mountinfo; then echo proc-sys: read-only; else echo proc-sys: writable; fi
    "#;

#[test]
fn runc_accepts_the_hardened_spec_and_the_container_is_confined() -> Result<()> {
    let (stdout, spec) = run_bundle(SCRIPT, true)?;

    let expected_caps: Vec<&str> = DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| *c != "CAP_NET_RAW")
        .collect();
    let mask = format!("{:016x}", cap_mask(&expected_caps));
    let expected = format!(
        "NoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t{mask}\nCapBnd:\t{mask}\n\
         unshare: refused\nmknod-char: refused\nmkfifo: allowed\ntimer_list: 0\nproc-sys: read-only\n"
    );
    let got: BTreeSet<&str> = stdout.lines().collect();
    let want: BTreeSet<&str> = expected.lines().collect();
    assert_eq!(got, want, "container output:\n{stdout}");
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    Ok(())
}

#[test]
fn the_same_bundle_unhardened_is_not_confined() -> Result<()> {
    // Guards the test above: each confinement it sees comes from the hardening.
    let (stdout, _) = run_bundle(SCRIPT, false)?;
    let mask = format!("{:016x}", cap_mask(&DEFAULT_CAPABILITIES));
    for line in [
        "NoNewPrivs:\t0".to_owned(),
        "Seccomp:\t0".to_owned(),
        format!("CapBnd:\t{mask}"),
        "unshare: allowed".to_owned(),
        "mknod-char: allowed".to_owned(),
        "proc-sys: writable".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing in:\n{stdout}"
        );
    }
    let timer_list = stdout
        .lines()
        .find_map(|l| l.strip_prefix("timer_list: "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        timer_list.is_some_and(|n| n > 0),
        "timer_list readable when unmasked:\n{stdout}"
    );
    Ok(())
}

#[test]
fn a_user_namespace_in_the_spec_is_kept_and_the_container_still_confined() -> Result<()> {
    let script = format!("{SCRIPT}\n/usr/bin/busybox cat /proc/self/uid_map /proc/self/gid_map\n");
    let (stdout, spec) = run_bundle_in(&script, true, true)?;
    assert!(
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "user"),
        "hardening dropped the user namespace: {spec}"
    );
    let maps: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 3 && w[0] == "0")
        .collect();
    let host = USERNS_HOST_ID.to_string();
    assert_eq!(
        maps,
        vec![vec!["0", host.as_str(), "65536"]; 2],
        "uid and gid maps in:\n{stdout}"
    );
    for line in [
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "unshare: refused",
        "mknod-char: refused",
        "proc-sys: read-only",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing in:\n{stdout}"
        );
    }
    Ok(())
}
