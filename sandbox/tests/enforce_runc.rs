//! `enforce` proven on real containers: a busybox bundle shaped like CRI's, hardened by
//! `harden_spec`, enforced with a KubeArmor policy as users write it (or palisade-strict),
//! palisade-init installed with `install_init` as the shim does, run by the real runc. Each
//! test checks the denial and that the permitted neighbour still works. Needs root, runc and
//! busybox, as on the developer machines and in CI.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use palisade_policy::CompileOptions;
use palisade_sandbox::capabilities::DEFAULT_CAPABILITIES;
use palisade_sandbox::install::install_init;
use palisade_sandbox::{
    enforce, harden_spec, Enforcement, Enforcer, HardeningConfig, KernelFeatures, StrictConfig,
};
use serde_json::json;

#[macro_use]
#[path = "support/policy.rs"]
mod fixtures;
#[path = "../../init/tests/support/runc.rs"]
mod support;
use support::{
    busybox, copy_into, run_with_timeout, runc_spec, static_init, succeeded, Container, BUSYBOX,
};

/// busybox at /bin/busybox with applet links, the libraries `ldd` lists at their own
/// paths, and separate copies (own inodes) where a test needs a binary of its own.
fn busybox_rootfs(root: &Path) -> Result<()> {
    for d in [
        "proc", "dev", "sys", "tmp", "data", "etc", "sbin", "usr/sbin",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    busybox(
        root,
        &[
            "sh",
            "cat",
            "echo",
            "touch",
            "rm",
            "chmod",
            "mv",
            "ls",
            "ping",
            "arping",
            "nc",
            "sleep",
            "grep",
            "id",
            "mkdir",
            "traceroute",
        ],
    )?;
    for copy in [
        "/usr/bin/id",
        "/opt/allowed/echo",
        "/opt/denied/echo",
        "/usr/bin/apt",
    ] {
        copy_into(root, Path::new(BUSYBOX), copy)?;
    }
    fs::write(root.join("etc/motd"), "welcome\n")?;
    Ok(())
}

/// One container run: what to enforce, what to run.
struct Case<'a> {
    name: &'a str,
    policy: Option<&'a str>,
    strict: Option<StrictConfig>,
    hardening: HardeningConfig,
    script: &'a str,
    /// Changes the plan before it is written (to show what a grant is for).
    tweak_plan: Option<fn(&mut palisade_init::plan::Plan)>,
    /// Whether `runc run` must exit 0.
    must_succeed: bool,
    /// Adds files to the rootfs.
    setup: Option<fn(&Path) -> Result<()>>,
}

impl<'a> Case<'a> {
    fn new(name: &'a str, script: &'a str) -> Self {
        Self {
            name,
            policy: None,
            strict: None,
            hardening: HardeningConfig::default(),
            script,
            tweak_plan: None,
            must_succeed: true,
            setup: None,
        }
    }

    /// The same run under a KubeArmor policy.
    fn with_policy(mut self, policy: &'a str) -> Self {
        self.policy = Some(policy);
        self
    }
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    enforcement: Enforcement,
    /// The host directory bound read-write at /data, checked from outside.
    data: PathBuf,
    /// The container is deleted before its bundle goes (fields drop in order).
    _dirs: (Container<tempfile::TempDir>, tempfile::TempDir),
}

fn run(case: Case<'_>) -> Result<Ran> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir()?;
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs)?;
    if let Some(setup) = case.setup {
        setup(&rootfs)?;
    }
    let data = dir.path().join("volume");
    fs::create_dir_all(&data)?;
    let secrets = dir.path().join("serviceaccount");
    fs::create_dir_all(&secrets)?;
    fs::write(secrets.join("token"), "eyJhbGciOiJSUzI1NiJ9.secret\n")?;
    fs::write(secrets.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n")?;
    let hosts = dir.path().join("etc-hosts");
    fs::write(&hosts, "127.0.0.1 localhost\n")?;

    let config = bundle.join("config.json");
    let mut spec = runc_spec(&bundle)?;
    // Shaped like CRI's spec: containerd's default capabilities, no masks of its own,
    // writable root, the kubelet's volumes.
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/sh", "-c", case.script]);
    spec["process"]["noNewPrivileges"] = json!(false);
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(DEFAULT_CAPABILITIES.as_slice());
    }
    spec["root"] = json!({"path": rootfs, "readonly": false});
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    let mounts = spec["mounts"].as_array_mut().context("mounts")?;
    for (source, destination, mode) in [
        (&data, "/data", "rw"),
        (&hosts, "/etc/hosts", "rw"),
        (&secrets, "/run/secrets/kubernetes.io/serviceaccount", "ro"),
    ] {
        mounts.push(json!({
            "destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "rprivate", mode]
        }));
    }

    harden_spec(case.name, &mut spec, &case.hardening)?;
    let policy = match case.policy {
        Some(yaml) => Some(fixtures::policy_for(
            yaml,
            "busybox",
            &CompileOptions::default(),
        )?),
        None => None,
    };
    let kernel = KernelFeatures::probe()?;
    let mut enforcement = enforce(
        case.name,
        &mut spec,
        policy.as_ref(),
        case.strict.as_ref(),
        &kernel,
    )?;
    if let (Some(plan), Some(tweak)) = (enforcement.plan.as_mut(), case.tweak_plan) {
        tweak(plan);
    }
    if let Some(plan) = &enforcement.plan {
        let plan_path = bundle.join("plan.json");
        fs::write(&plan_path, serde_json::to_vec(plan)?)?;
        install_init(case.name, &mut spec, &static_init()?, &plan_path)?;
    }
    fs::write(&config, serde_json::to_vec_pretty(&spec)?)?;

    let container = Container::fresh(&format!("palisade-enforce-{}", case.name))?;
    let out = run_with_timeout(
        container
            .runc()
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&container.id),
        Duration::from_secs(60),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success() || !case.must_succeed,
        "runc run {}: {}\nstdout: {stdout}\nstderr: {stderr}",
        case.name,
        out.status
    );
    Ok(Ran {
        code: out.status.code(),
        stdout,
        stderr,
        enforcement,
        data,
        _dirs: (container, dir),
    })
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The container printed exactly `want`, line by line.
fn assert_lines(ran: &Ran, want: &[&str]) {
    assert_eq!(lines(&ran.stdout), want, "stderr: {}", ran.stderr);
}

/// The container's stderr says `what` exactly `count` times.
fn assert_stderr_count(ran: &Ran, what: &str, count: usize) {
    assert_eq!(ran.stderr.matches(what).count(), count, "{}", ran.stderr);
}

#[test]
fn strict_mode_confines_writes_to_the_writable_mounts() -> Result<()> {
    let mut case = Case::new(
        "strict",
        "echo vol > /data/f && cat /data/f; \
         mkdir /data/d && mv /data/f /data/d/f && mv /data/d/f /data/f && echo moved; \
         echo tmp > /tmp/f && cat /tmp/f; \
         touch /newfile || echo root-refused; \
         echo x > /proc/self/comm || echo proc-refused; \
         cat /etc/motd; \
         grep -c -E '^([^ ]+ ){4}/ ro[, ]' /proc/self/mountinfo",
    );
    case.strict = Some(StrictConfig {
        writable_paths: vec!["/tmp".into()],
        ..StrictConfig::default()
    });
    let ran = run(case)?;
    assert_lines(
        &ran,
        &[
            "vol",
            "moved",
            "tmp",
            "root-refused",
            "proc-refused",
            "welcome",
            "1",
        ],
    );
    assert!(
        ran.stderr.contains("Read-only file system"),
        "{}",
        ran.stderr
    );
    // The root is read-only for everything; /proc/self/comm is writable by the mount but
    // not by landlock, which only grants writes beneath the writable paths.
    assert!(ran.stderr.contains("Permission denied"), "{}", ran.stderr);
    assert_eq!(fs::read_to_string(ran.data.join("f"))?, "vol\n");
    let plan = ran
        .enforcement
        .plan
        .context("strict mode needs palisade-init")?;
    assert!(plan.landlock.context("landlock")?.scope.signal);
    Ok(())
}

#[test]
fn service_account_token_is_masked_and_its_neighbour_stays_readable() -> Result<()> {
    let ran = run(Case::new(
        "token",
        "echo \"token=[$(cat /run/secrets/kubernetes.io/serviceaccount/token)]\"; \
         cat /run/secrets/kubernetes.io/serviceaccount/ca.crt",
    )
    .with_policy(policy_file!("block-token-runc")))?;
    assert_lines(&ran, &["token=[]", "-----BEGIN CERTIFICATE-----"]);
    assert_eq!(ran.enforcement.rules[0].enforcer, Enforcer::BindMountMask);
    Ok(())
}

#[test]
fn service_account_directory_block_hides_the_whole_directory() -> Result<()> {
    let ran = run(Case::new(
        "sadir",
        "ls -A /run/secrets/kubernetes.io/serviceaccount | grep -c . ; \
         cat /run/secrets/kubernetes.io/serviceaccount/token || echo token-hidden; \
         cat /etc/motd",
    )
    .with_policy(policy_file!("block-sa-dir")))?;
    assert_lines(&ran, &["0", "token-hidden", "welcome"]);
    Ok(())
}

#[test]
fn file_integrity_policy_refuses_writes_to_system_dirs_and_binaries_still_run() -> Result<()> {
    let ran = run(Case::new(
        "fim",
        "touch /usr/bin/implant || echo usr-bin-refused; \
         touch /sbin/implant || echo sbin-refused; \
         rm /bin/cat || echo bin-refused; \
         /usr/bin/id -u; \
         touch /data/ok && echo data-ok",
    )
    .with_policy(policy_file!("fim")))?;
    assert_lines(
        &ran,
        &[
            "usr-bin-refused",
            "sbin-refused",
            "bin-refused",
            "0",
            "data-ok",
        ],
    );
    assert_stderr_count(&ran, "Read-only file system", 3);
    assert!(ran.data.join("ok").exists());
    Ok(())
}

#[test]
fn process_allow_list_runs_only_the_listed_binaries() -> Result<()> {
    let ran = run(Case::new(
        "procallow",
        "/opt/allowed/echo allowed-ran; \
         /opt/denied/echo denied-ran || echo denied-refused; \
         /usr/bin/id -u || echo id-refused; \
         echo written > /data/f && echo write-ok",
    )
    .with_policy(policy_file!("process-allow-runc")))?;
    assert_lines(
        &ran,
        &["allowed-ran", "denied-refused", "id-refused", "write-ok"],
    );
    assert_stderr_count(&ran, "Permission denied", 2);
    assert!(ran
        .enforcement
        .rules
        .iter()
        .filter(|r| r.kind.to_string() == "process")
        .all(|r| r.enforcer == Enforcer::Landlock));
    Ok(())
}

#[test]
fn the_dynamic_loader_needs_execute_under_an_exec_allow_list() -> Result<()> {
    // The kernel opens a binary's ELF interpreter for execution, so landlock asks for the
    // execute right on ld.so (libraries are only mapped and need none): without the
    // loader grants, even the listed /bin/sh (dynamic busybox) cannot start.
    let mut case = Case::new("noloader", "echo started");
    case.policy = Some(policy_file!("process-allow-runc"));
    case.tweak_plan = Some(|plan| {
        let ll = plan.landlock.as_mut().expect("landlock");
        ll.fs.retain(|r| !r.path.to_string_lossy().contains("/ld-"));
    });
    case.must_succeed = false;
    let ran = run(case)?;
    assert_eq!(
        ran.code,
        Some(126),
        "stdout: {} stderr: {}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(
        ran.stderr,
        "palisade-init: exec /bin/sh: permission denied\n"
    );
    assert!(ran.stdout.is_empty());
    Ok(())
}

#[test]
fn package_manager_block_is_handed_to_the_monitor() -> Result<()> {
    let ran = run(Case::new("apt", "/usr/bin/id -u").with_policy(policy_file!("block-apt")))?;
    assert_lines(&ran, &["0"]);
    let e = &ran.enforcement;
    assert!(
        e.plan.is_none(),
        "nothing for palisade-init: the kill is the monitor's"
    );
    let targets: Vec<String> = e
        .monitor
        .deny_exec
        .iter()
        .map(|r| serde_json::to_string(&r.target).unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            r#"{"path":"/usr/bin/apt"}"#,
            r#"{"path":"/usr/bin/apt-get"}"#
        ]
    );
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorExecKill));
    Ok(())
}

/// Raw and packet sockets, then a TCP connection over loopback.
const NETWORK_SCRIPT: &str = "ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-failed; \
     arping -c 1 -w 1 -I lo 127.0.0.1 2>&1 | grep -q 'Operation not permitted' && echo arping-eperm; \
     (echo hello-tcp | nc -l -p 8080 &); sleep 0.5; nc -w 2 127.0.0.1 8080";

#[test]
fn raw_socket_block_fails_ping_while_tcp_still_connects() -> Result<()> {
    // CAP_NET_RAW stays in the container, so only the policy's filter refuses raw sockets:
    // the same container without it can ping.
    let keep_net_raw = HardeningConfig {
        drop_net_raw: false,
        ..HardeningConfig::default()
    };
    let mut control = Case::new("rawctl", NETWORK_SCRIPT);
    control.hardening = keep_net_raw.clone();
    let ran = run(control)?;
    assert_lines(&ran, &["ping-ok", "hello-tcp"]);

    let mut case = Case::new(
        "raw",
        "ping -c 1 -W 2 127.0.0.1 2>&1 | grep -i -q 'permission denied\\|not permitted' && echo ping-refused; \
         arping -c 1 -w 1 -I lo 127.0.0.1 2>&1 | grep -q 'Operation not permitted' && echo arping-eperm; \
         (echo hello-tcp | nc -l -p 8080 &); sleep 0.5; nc -w 2 127.0.0.1 8080",
    );
    case.hardening = keep_net_raw;
    case.policy = Some(policy_file!("block-raw"));
    let ran = run(case)?;
    assert_lines(&ran, &["ping-refused", "arping-eperm", "hello-tcp"]);
    assert_eq!(ran.enforcement.rules[0].enforcer, Enforcer::Seccomp);
    Ok(())
}

/// A static program making 32-bit x86 system calls (`int $0x80`) from a 64-bit process:
/// getpid, then socketcall(SYS_SOCKET) for a raw socket.
#[cfg(target_arch = "x86_64")]
const INT80_C: &str = r#"
#include <stdio.h>
int main(void) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("getpid32=%ld\n", ret);
    static unsigned int args[3] = {2, 3, 1};
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(102L), "b"(1L), "c"(args) : "memory");
    printf("socketcall32=%ld\n", ret);
    return 0;
}
"#;

#[cfg(target_arch = "x86_64")]
fn int80_binary(rootfs: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("int80.c");
    fs::write(&src, INT80_C)?;
    succeeded(
        Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(rootfs.join("bin/int80"))
            .arg(&src),
        "cc -static int80.c",
    )?;
    Ok(())
}

/// Runs the `int $0x80` program in a container hardened by `hardening` (and `policy`).
#[cfg(target_arch = "x86_64")]
fn run_int80(
    name: &'static str,
    hardening: HardeningConfig,
    policy: Option<&'static str>,
) -> Result<Ran> {
    let mut case = Case::new(name, "/bin/int80; echo exit=$?");
    case.hardening = hardening;
    case.setup = Some(int80_binary);
    case.policy = policy;
    run(case)
}

/// The program was killed by SIGSYS (128 + 31) at its first 32-bit call.
#[cfg(target_arch = "x86_64")]
fn assert_killed_at_first_32bit_call(ran: &Ran) {
    assert_eq!(
        lines(&ran.stdout),
        ["exit=159"],
        "killed by SIGSYS (128 + 31) at the first 32-bit call; stderr: {}",
        ran.stderr
    );
}

/// The program made its 32-bit calls and exited 0; returns its three lines.
#[cfg(target_arch = "x86_64")]
fn assert_32bit_calls_made(ran: &Ran) -> Vec<&str> {
    let out = lines(&ran.stdout);
    assert_eq!(out.len(), 3, "{out:?} stderr: {}", ran.stderr);
    assert!(
        out[0].starts_with("getpid32=") && out[0] != "getpid32=-1",
        "the getpid went through the 32-bit entry: {out:?}"
    );
    assert_eq!(out[2], "exit=0");
    out
}

#[cfg(target_arch = "x86_64")]
#[test]
fn filtered_socket_leaves_no_way_around_through_32_bit_socketcall() -> Result<()> {
    // libseccomp cannot filter socketcall's arguments, so the x86 personality leaves the
    // filter: a 32-bit system call kills the process instead of reaching socket(). The
    // same program without the policy makes its 32-bit calls (with the 32-bit entries
    // allowed: by default they kill, see the next test).
    let keep_net_raw = HardeningConfig {
        drop_net_raw: false,
        allow_32bit_syscalls: true,
        ..HardeningConfig::default()
    };
    assert_32bit_calls_made(&run_int80("int80ctl", keep_net_raw.clone(), None)?);

    let ran = run_int80("int80", keep_net_raw, Some(policy_file!("block-raw")))?;
    assert_killed_at_first_32bit_call(&ran);
    assert!(ran
        .enforcement
        .applied
        .iter()
        .any(|a| a.contains("without SCMP_ARCH_X86")));
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_default_profile_kills_32_bit_system_calls_unless_allowed() -> Result<()> {
    assert_killed_at_first_32bit_call(&run_int80("int80def", HardeningConfig::default(), None)?);

    let compat = HardeningConfig {
        allow_32bit_syscalls: true,
        ..HardeningConfig::default()
    };
    let ran = run_int80("int80compat", compat, None)?;
    let out = assert_32bit_calls_made(&ran);
    assert_eq!(
        out[1], "socketcall32=-1",
        "a raw socket through socketcall is refused (EPERM, CAP_NET_RAW dropped): {out:?}"
    );
    Ok(())
}

#[test]
fn syscall_block_refuses_unlink_and_chmod_while_rename_works() -> Result<()> {
    let ran = run(Case::new(
        "syscalls",
        "touch /data/a /data/b; \
         rm /data/a || echo rm-refused; \
         chmod 600 /data/b || echo chmod-refused; \
         mv /data/b /data/c && echo mv-ok",
    )
    .with_policy(policy_file!("block-syscalls")))?;
    assert_lines(&ran, &["rm-refused", "chmod-refused", "mv-ok"]);
    assert_stderr_count(&ran, "Operation not permitted", 2);
    assert!(ran.data.join("a").exists() && ran.data.join("c").exists());
    Ok(())
}

#[test]
fn audit_rules_log_through_seccomp_and_permit() -> Result<()> {
    // SCMP_ACT_LOG rules, with socket() told apart by protocol (icmp logged, udp and other
    // raw sockets allowed), are accepted by runc's libseccomp and let the calls through.
    let mut case = Case::new(
        "audit",
        "mkdir /data/d && echo mkdir-ok; \
         ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok; \
         traceroute -n -m 1 -q 1 -w 1 127.0.0.1 2>/dev/null | grep -q '^ 1  127.0.0.1' && echo udp-ok; \
         grep '^Seccomp:' /proc/self/status",
    );
    case.hardening = HardeningConfig {
        drop_net_raw: false,
        ..HardeningConfig::default()
    };
    case.policy = Some(policy_file!("audits"));
    let ran = run(case)?;
    assert_lines(&ran, &["mkdir-ok", "ping-ok", "udp-ok", "Seccomp:\t2"]);
    assert!(ran.data.join("d").is_dir());
    let kernel = KernelFeatures::probe()?;
    let want = if kernel.seccomp_action("log") {
        Enforcer::Seccomp
    } else {
        Enforcer::MonitorAudit
    };
    assert!(
        ran.enforcement.rules.iter().all(|r| r.enforcer == want),
        "{:#?}",
        ran.enforcement.rules
    );
    Ok(())
}
