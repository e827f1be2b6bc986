//! `enforce` on CRI-shaped specs (hardened first, as the shim does) with KubeArmor policies
//! written as users write them: what each rule kind and action becomes, strict mode, and the
//! refused and degraded cases.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use palisade_init::plan::{FsAccess, Plan};
use palisade_policy::{compile, parse_policies, CompileOptions, CompiledPolicy, Workload};
use palisade_sandbox::{
    enforce, harden_spec, EnforceError, Enforcement, Enforcer, HardeningConfig, KernelFeatures,
    StrictConfig,
};
use serde_json::{json, Value};

const ID: &str = "abc123";

fn kernel(landlock_abi: Option<u32>, log: bool) -> KernelFeatures {
    let mut actions: BTreeSet<String> = ["kill_process", "errno", "allow", "trap", "user_notif"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if log {
        actions.insert("log".to_owned());
    }
    KernelFeatures {
        landlock_abi,
        seccomp_actions: actions,
        user_namespaces: true,
        unprivileged_user_namespaces: None,
    }
}

fn node() -> KernelFeatures {
    kernel(Some(7), true)
}

/// The CRI container fixture after the default hardening.
fn hardened(config: &HardeningConfig) -> Result<Value> {
    let text = include_str!("fixtures/cri-container.json");
    let mut spec: Value = serde_json::from_str(text)?;
    harden_spec(ID, &mut spec, config)?;
    Ok(spec)
}

fn spec() -> Result<Value> {
    hardened(&HardeningConfig::default())
}

fn policy(yaml: &str) -> Result<CompiledPolicy> {
    let parsed = parse_policies(yaml.as_bytes()).map_err(|d| anyhow::anyhow!("{d}"))?;
    let refs: Vec<_> = parsed.policies.iter().collect();
    let workload = Workload {
        namespace: "demo".into(),
        pod_name: "web-0".into(),
        container_name: "web".into(),
        image: "nginx:1.25".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
    };
    Ok(compile(&refs, &workload, &CompileOptions::default()))
}

fn degraded() -> StrictConfig {
    StrictConfig {
        allow_degraded: true,
        ..StrictConfig::default()
    }
}

fn landlock(e: &Enforcement) -> &palisade_init::plan::LandlockPlan {
    let plan = e.plan.as_ref().expect("a plan");
    assert!(plan.problems().is_empty(), "{:?}", plan.problems());
    let text = serde_json::to_vec(plan).expect("serialize");
    let again = Plan::parse(&text, "plan.json".as_ref()).expect("palisade-init reads the plan");
    assert_eq!(&again, plan);
    plan.landlock.as_ref().expect("landlock")
}

/// The rights granted beneath exactly `path`.
fn grant(e: &Enforcement, path: &str) -> BTreeSet<FsAccess> {
    landlock(e)
        .fs
        .iter()
        .filter(|r| r.path.to_str() == Some(path))
        .flat_map(|r| r.access.iter().copied())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What the spec's seccomp profile does with a call, read the way libseccomp does: rules
/// naming the syscall whose conditions all hold; these must agree (palisade's rules are
/// disjoint), otherwise the default.
fn seccomp_action(spec: &Value, name: &str, args: [u64; 3]) -> String {
    let profile = &spec["linux"]["seccomp"];
    let mut found: BTreeSet<String> = BTreeSet::new();
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        if !strings(&rule["names"]).iter().any(|n| n == name) {
            continue;
        }
        let holds = rule["args"].as_array().into_iter().flatten().all(|c| {
            let arg = args[c["index"].as_u64().unwrap_or(9) as usize];
            let value = c["value"].as_u64().unwrap_or(0);
            let two = c["valueTwo"].as_u64().unwrap_or(0);
            match c["op"].as_str() {
                Some("SCMP_CMP_EQ") => arg == value,
                Some("SCMP_CMP_NE") => arg != value,
                Some("SCMP_CMP_LT") => arg < value,
                Some("SCMP_CMP_GT") => arg > value,
                Some("SCMP_CMP_MASKED_EQ") => arg & value == two,
                other => panic!("unexpected op {other:?}"),
            }
        });
        if holds {
            found.insert(action_of(rule, "action", "errnoRet"));
        }
    }
    assert!(
        found.len() <= 1,
        "{name}{args:?}: overlapping rules {found:?}"
    );
    found
        .pop_first()
        .unwrap_or_else(|| action_of(profile, "defaultAction", "defaultErrnoRet"))
}

fn action_of(v: &Value, key: &str, errno: &str) -> String {
    let action = v[key].as_str().unwrap_or("?").to_owned();
    if action == "SCMP_ACT_ERRNO" {
        format!("{action}({})", v[errno].as_u64().unwrap_or(1))
    } else {
        action
    }
}

const EPERM: &str = "SCMP_ACT_ERRNO(1)";
const ALLOW: &str = "SCMP_ACT_ALLOW";
const LOG: &str = "SCMP_ACT_LOG";
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_PACKET: u64 = 17;
const AF_NETLINK: u64 = 16;
const STREAM: u64 = 1;
const DGRAM: u64 = 2;
const RAW: u64 = 3;
const NONBLOCK_CLOEXEC: u64 = 0o4000 | 0o2_000_000;

fn enforcer_of(e: &Enforcement, origin: &str) -> Enforcer {
    e.rules
        .iter()
        .find(|r| r.rule.ends_with(origin))
        .unwrap_or_else(|| panic!("no rule {origin} in {:#?}", e.rules))
        .enforcer
        .clone()
}

#[test]
fn no_policy_and_no_strict_changes_nothing() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let e = enforce(ID, &mut s, None, None, &node())?;
    assert_eq!(s, before);
    assert!(e.plan.is_none() && e.rules.is_empty() && e.monitor.is_empty());
    Ok(())
}

#[test]
fn strict_makes_the_root_read_only_and_writes_land_only_in_rw_mounts() -> Result<()> {
    let mut s = spec()?;
    let cfg = StrictConfig {
        writable_paths: vec!["/tmp".into(), "/dev/shm/cache".into()],
        ..StrictConfig::default()
    };
    let e = enforce(ID, &mut s, None, Some(&cfg), &node())?;
    assert_eq!(s["root"]["readonly"], true);
    let ll = landlock(&e);
    assert_eq!(ll.required_abi, 6, "scoping needs abi 6");
    assert!(!ll.best_effort);
    assert!(ll.scope.signal && ll.scope.abstract_unix_socket);
    let handled: BTreeSet<FsAccess> = ll
        .handled_fs
        .clone()
        .expect("handled")
        .into_iter()
        .collect();
    // Every kind of write and nothing else: reads, execute and ioctl stay unhandled, since
    // handling them would make every open walk the path for no protection strict asks for
    // (truncate already does; docs/benchmarks.md). init/tests/binary.rs runs this same set.
    let writes: BTreeSet<FsAccess> = [
        FsAccess::WriteFile,
        FsAccess::RemoveDir,
        FsAccess::RemoveFile,
        FsAccess::MakeChar,
        FsAccess::MakeDir,
        FsAccess::MakeReg,
        FsAccess::MakeSock,
        FsAccess::MakeFifo,
        FsAccess::MakeBlock,
        FsAccess::MakeSym,
        FsAccess::Refer,
        FsAccess::Truncate,
    ]
    .into();
    assert_eq!(handled, writes);
    let paths: BTreeSet<&str> = ll.fs.iter().filter_map(|r| r.path.to_str()).collect();
    let want: BTreeSet<&str> = [
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/etc/hosts",
        "/dev/termination-log",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/dev/shm",
        "/tmp",
    ]
    .into();
    assert_eq!(
        paths, want,
        "read-only, proc, sysfs and cgroup mounts are not writable"
    );
    assert!(grant(&e, "/tmp").contains(&FsAccess::MakeReg));
    // /tmp is on the read-only root: it gets a tmpfs; /dev/shm/cache is under a rw mount.
    let tmpfs: Vec<&Value> = s["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "tmpfs" && m["destination"] == "/tmp")
        .collect();
    assert_eq!(tmpfs.len(), 1);
    assert!(strings(&tmpfs[0]["options"]).contains(&"noexec".to_owned()));
    assert!(!s["mounts"].to_string().contains("/dev/shm/cache"));
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    Ok(())
}

#[test]
fn strict_without_scoping_needs_abi_3_only() -> Result<()> {
    let mut s = spec()?;
    let cfg = StrictConfig {
        scope_signals: false,
        scope_abstract_unix: false,
        ..StrictConfig::default()
    };
    let e = enforce(ID, &mut s, None, Some(&cfg), &kernel(Some(3), true))?;
    let ll = landlock(&e);
    assert_eq!(ll.required_abi, 3, "truncate is abi 3");
    assert!(!ll.scope.signal);
    Ok(())
}

#[test]
fn strict_on_an_old_kernel_is_refused_unless_degrading() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let err = enforce(
        ID,
        &mut s,
        None,
        Some(&StrictConfig::default()),
        &kernel(Some(3), true),
    )
    .unwrap_err();
    assert!(matches!(err, EnforceError::LandlockAbi { required: 6, .. }));
    assert_eq!(
        err.to_string(),
        "container abc123: landlock: needs abi 6 for scope.signal, scope.abstract_unix_socket, \
         the kernel has abi 3; refused (allow_degraded is off)"
    );
    assert_eq!(s, before, "a refused spec is left as it was");

    let e = enforce(ID, &mut s, None, Some(&degraded()), &kernel(Some(3), true))?;
    let ll = landlock(&e);
    assert!(ll.best_effort);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("running without scope.signal, scope.abstract_unix_socket"),
        "{}",
        e.warnings[0]
    );

    let e = enforce(
        ID,
        &mut spec()?,
        None,
        Some(&degraded()),
        &kernel(None, true),
    )?;
    assert!(landlock(&e).best_effort);
    assert!(e.warnings[0].contains("no landlock"), "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("every landlock rule"),
        "{:?}",
        e.warnings
    );
    Ok(())
}

#[test]
fn degraded_landlock_is_not_reported_as_enforced() -> Result<()> {
    let p = policy(PROCESS_ALLOW)?;
    let e = enforce(
        ID,
        &mut spec()?,
        Some(&p),
        Some(&degraded()),
        &kernel(None, true),
    )?;
    let first = &e
        .rules
        .iter()
        .find(|r| r.target == "/bin/bash")
        .context("rule")?
        .enforcer;
    assert_eq!(
        first.to_string(),
        "unenforceable: the kernel has no landlock (allow_degraded)"
    );
    let e = enforce(
        ID,
        &mut spec()?,
        Some(&p),
        Some(&degraded()),
        &kernel(Some(2), true),
    )?;
    let bash = e
        .rules
        .iter()
        .find(|r| r.target == "/bin/bash")
        .context("rule")?;
    assert_eq!(bash.enforcer, Enforcer::Landlock);
    assert_eq!(
        bash.note.as_deref(),
        Some("best effort: the kernel lacks truncate, scope.signal, scope.abstract_unix_socket")
    );
    Ok(())
}

#[test]
fn apparmor_parts_are_reported_as_not_enforced() -> Result<()> {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: with-apparmor
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  apparmor: |
    deny /etc/** w,
  capabilities:
    matchCapabilities:
    - capability: net_raw
  action: Block
"#;
    let e = enforce(ID, &mut spec()?, Some(&policy(yaml)?), None, &node())?;
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].starts_with("policy demo/with-apparmor: "),
        "{}",
        e.warnings[0]
    );
    assert!(
        e.warnings[0].ends_with(": not enforced by palisade"),
        "{}",
        e.warnings[0]
    );
    Ok(())
}

#[test]
fn strict_refuses_a_relative_writable_path() -> Result<()> {
    let cfg = StrictConfig {
        writable_paths: vec!["tmp".into()],
        ..StrictConfig::default()
    };
    let err = enforce(ID, &mut spec()?, None, Some(&cfg), &node()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container abc123: strict: writable path \"tmp\": must be absolute, without .. or //"
    );
    Ok(())
}

const BLOCK_TOKEN: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: block-sa-token
  namespace: demo
spec:
  severity: 7
  selector:
    matchLabels:
      app: web
  file:
    matchPaths:
    - path: /var/run/secrets/kubernetes.io/serviceaccount/token
  action: Block
"#;

const BLOCK_SA_DIR: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-wordpress-block-sa
  namespace: demo
spec:
  severity: 7
  selector:
    matchLabels:
      app: web
  file:
    matchDirectories:
    - dir: /run/secrets/kubernetes.io/serviceaccount/
      recursive: true
  action:
    Block
"#;

#[test]
fn file_block_masks_the_path_and_only_that_path() -> Result<()> {
    let mut s = spec()?;
    let p = policy(BLOCK_TOKEN)?;
    let e = enforce(ID, &mut s, Some(&p), None, &node())?;
    let masked = strings(&s["linux"]["maskedPaths"]);
    assert!(masked.contains(&"/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned()));
    assert!(!masked
        .iter()
        .any(|m| m.ends_with("ca.crt") || m.ends_with("serviceaccount")));
    assert!(
        masked.contains(&"/proc/kcore".to_owned()),
        "harden_spec's masks stay"
    );
    assert_eq!(
        enforcer_of(&e, "spec.file.matchPaths[0]"),
        Enforcer::BindMountMask
    );
    assert!(e.plan.is_none(), "masks need no palisade-init");
    assert_eq!(
        e.rules[0].rule,
        "demo/block-sa-token: spec.file.matchPaths[0]"
    );

    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_SA_DIR)?), None, &node())?;
    assert!(strings(&s["linux"]["maskedPaths"])
        .contains(&"/run/secrets/kubernetes.io/serviceaccount".to_owned()));
    assert_eq!(e.rules[0].enforcer.to_string(), "bind-mount-mask");
    Ok(())
}

const FIM: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: fim-for-system-paths
  namespace: demo
spec:
  action: Block
  selector:
    matchLabels:
      app: web
  file:
    matchDirectories:
    - dir: /bin/
      readOnly: true
      recursive: true
    - dir: /sbin/
      readOnly: true
      recursive: true
    - dir: /usr/sbin/
      readOnly: true
      recursive: true
    - dir: /usr/bin/
      readOnly: true
      recursive: true
  message: Alert! An attempt to write to system directories denied.
  severity: 5
"#;

#[test]
fn file_integrity_read_only_block_becomes_readonly_paths() -> Result<()> {
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(FIM)?), None, &node())?;
    let ro = strings(&s["linux"]["readonlyPaths"]);
    for dir in ["/bin", "/sbin", "/usr/sbin", "/usr/bin"] {
        assert!(ro.contains(&dir.to_owned()), "{dir} in {ro:?}");
    }
    assert!(ro.contains(&"/proc/sys".to_owned()));
    assert!(!strings(&s["linux"]["maskedPaths"]).contains(&"/bin".to_owned()));
    assert_eq!(e.rules.len(), 4);
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::ReadonlyPath));
    assert!(e.rules[0].note.as_deref().unwrap_or("").contains("EROFS"));
    Ok(())
}

const PATTERN_BLOCK: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: block-keys
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  file:
    matchPatterns:
    - pattern: /etc/**/*.key
    matchPaths:
    - path: /etc/shadow
      ownerOnly: true
  action: Block
"#;

#[test]
fn file_rules_landlock_and_mounts_cannot_express_are_refused_or_degraded_to_audit() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let p = policy(PATTERN_BLOCK)?;
    let err = enforce(ID, &mut s, Some(&p), None, &node()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "container abc123: policy demo/block-keys: spec.file.matchPaths[0]: file rule \
             /etc/shadow: ownerOnly"
        ) || msg.contains("policy demo/block-keys: spec.file.matchPatterns[0]: file rule /etc/**/*.key: matchPatterns"),
        "{msg}"
    );
    assert!(
        msg.contains("/etc/**/*.key: matchPatterns: landlock and mounts cannot express globs"),
        "{msg}"
    );
    assert!(msg.contains("/etc/shadow: ownerOnly"), "{msg}");
    assert!(msg.ends_with("refused (allow_degraded is off)"), "{msg}");
    assert_eq!(s, before);

    let e = enforce(ID, &mut s, Some(&p), Some(&degraded()), &node())?;
    assert_eq!(e.rules.len(), 2);
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::AuditOnly));
    assert_eq!(e.monitor.audit.len(), 2);
    assert_eq!(e.warnings.len(), 2);
    assert!(!strings(&s["linux"]["maskedPaths"]).contains(&"/etc/shadow".to_owned()));
    Ok(())
}

const FILE_ALLOW: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: files-allowed
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  file:
    matchDirectories:
    - dir: /usr/
      recursive: true
      readOnly: true
    - dir: /var/cache/nginx/
      recursive: true
    matchPaths:
    - path: /etc/nginx/nginx.conf
      readOnly: true
  action: Allow
"#;

#[test]
fn file_allow_list_becomes_landlock_read_and_write_grants() -> Result<()> {
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(FILE_ALLOW)?), None, &node())?;
    let ll = landlock(&e);
    let handled: BTreeSet<FsAccess> = ll
        .handled_fs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(handled.contains(&FsAccess::ReadFile) && handled.contains(&FsAccess::WriteFile));
    assert!(
        !handled.contains(&FsAccess::Execute),
        "no process allow-list"
    );
    let usr = grant(&e, "/usr");
    assert!(usr.contains(&FsAccess::ReadFile) && !usr.contains(&FsAccess::WriteFile));
    let cache = grant(&e, "/var/cache/nginx");
    assert!(cache.contains(&FsAccess::ReadDir) && cache.contains(&FsAccess::MakeReg));
    assert_eq!(
        grant(&e, "/etc/nginx/nginx.conf"),
        [FsAccess::ReadFile, FsAccess::ReadDir].into()
    );
    assert!(grant(&e, "/etc").is_empty(), "nothing else is granted");
    assert_eq!(ll.required_abi, 3);
    assert!(!ll.scope.signal, "no strict mode, no scoping");
    assert!(e.rules.iter().all(|r| r.enforcer == Enforcer::Landlock));

    // With strict mode, writes need both the allow-list and a writable mount.
    let mut s = spec()?;
    let cfg = StrictConfig {
        writable_paths: vec!["/var/cache".into()],
        ..StrictConfig::default()
    };
    let e = enforce(ID, &mut s, Some(&policy(FILE_ALLOW)?), Some(&cfg), &node())?;
    assert!(grant(&e, "/var/cache/nginx").contains(&FsAccess::WriteFile));
    assert!(!grant(&e, "/var/cache").contains(&FsAccess::WriteFile));
    assert!(
        !grant(&e, "/dev").contains(&FsAccess::WriteFile),
        "not in the file allow-list"
    );
    Ok(())
}

const PROCESS_ALLOW: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: allow-specific-process
  namespace: demo
spec:
  action: Allow
  file:
    matchDirectories:
    - dir: /
      recursive: true
  process:
    matchPaths:
    - path: /bin/bash
    - fromSource:
      - path: /bin/dash
      path: /bin/ping
    - fromSource:
      - path: /usr/sbin/apache2
      path: /bin/sh
    - path: /usr/sbin/apache2
  selector:
    matchLabels:
      app: web
  severity: 1
"#;

#[test]
fn process_allow_list_grants_execute_to_the_listed_binaries_and_the_loader() -> Result<()> {
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(PROCESS_ALLOW)?), None, &node())?;
    let ll = landlock(&e);
    let handled: BTreeSet<FsAccess> = ll
        .handled_fs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(handled.contains(&FsAccess::Execute));
    for bin in ["/bin/bash", "/bin/ping", "/bin/sh", "/usr/sbin/apache2"] {
        assert_eq!(grant(&e, bin), [FsAccess::Execute].into(), "{bin}");
    }
    assert!(grant(&e, "/lib64/ld-linux-x86-64.so.2").contains(&FsAccess::Execute));
    assert!(
        ll.fs.iter().all(|r| r.optional),
        "a missing binary grants nothing"
    );
    // The file Allow on / keeps every path readable and writable.
    let root = grant(&e, "/");
    assert!(root.contains(&FsAccess::ReadFile) && root.contains(&FsAccess::WriteFile));
    assert!(!root.contains(&FsAccess::Execute));

    assert_eq!(
        enforcer_of(&e, "spec.process.matchPaths[0]"),
        Enforcer::Landlock
    );
    assert_eq!(
        enforcer_of(&e, "spec.process.matchPaths[1]"),
        Enforcer::MonitorExecKill
    );
    let allow_exec: Vec<&str> = e
        .monitor
        .allow_exec
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(
        allow_exec,
        [
            "demo/allow-specific-process: spec.process.matchPaths[1]",
            "demo/allow-specific-process: spec.process.matchPaths[2]"
        ]
    );
    assert_eq!(e.monitor.allow_exec[0].from_source, ["/bin/dash"]);
    assert!(
        !e.monitor.exec_allow_list,
        "landlock carries the list itself"
    );
    Ok(())
}

#[test]
fn allow_lists_in_audit_posture_restrict_nothing_and_go_to_the_monitor() -> Result<()> {
    let parsed = parse_policies(PROCESS_ALLOW.as_bytes()).map_err(|d| anyhow::anyhow!("{d}"))?;
    let refs: Vec<_> = parsed.policies.iter().collect();
    let workload = Workload {
        namespace: "demo".into(),
        pod_name: "web-0".into(),
        container_name: "web".into(),
        image: "nginx:1.25".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
    };
    let options = CompileOptions {
        deny_posture: palisade_policy::DenyPosture::Audit,
    };
    let p = compile(&refs, &workload, &options);
    let e = enforce(ID, &mut spec()?, Some(&p), None, &node())?;
    assert!(
        e.plan.is_none(),
        "an allow-list being tried out restricts nothing"
    );
    assert!(e.monitor.exec_allow_list);
    assert_eq!(e.monitor.exec_posture, Some(palisade_policy::Action::Audit));
    assert_eq!(e.monitor.allow_exec.len(), 4);
    assert_eq!(e.monitor.audit.len(), 1, "the file allow-list");
    assert!(
        e.rules.iter().all(|r| r.enforcer == Enforcer::MonitorAudit),
        "{:#?}",
        e.rules
    );
    Ok(())
}

const BLOCK_APT: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: ksp-wordpress-block-process
  namespace: demo
spec:
  severity: 3
  selector:
    matchLabels:
      app: web
  process:
    matchPaths:
    - path: /usr/bin/apt
    - path: /usr/bin/apt-get
  action:
    Block
"#;

#[test]
fn process_block_without_allow_list_goes_to_the_monitor() -> Result<()> {
    let mut s = spec()?;
    let before = s.clone();
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_APT)?), None, &node())?;
    assert_eq!(s, before, "nothing in the spec can block an exec by path");
    assert!(e.plan.is_none());
    let deny: Vec<String> = e
        .monitor
        .deny_exec
        .iter()
        .map(|r| format!("{:?} {:?} {}", r.target, r.action, r.severity))
        .collect();
    assert_eq!(
        deny,
        [
            "Path(\"/usr/bin/apt\") Block 3",
            "Path(\"/usr/bin/apt-get\") Block 3"
        ]
    );
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorExecKill));
    Ok(())
}

#[test]
fn process_block_outside_an_allow_list_is_already_landlock_s() -> Result<()> {
    let yaml = format!("{PROCESS_ALLOW}\n---\n{BLOCK_APT}");
    let e = enforce(ID, &mut spec()?, Some(&policy(&yaml)?), None, &node())?;
    let apt = e
        .rules
        .iter()
        .find(|r| r.target == "/usr/bin/apt")
        .context("apt rule")?;
    assert_eq!(apt.enforcer, Enforcer::Landlock);
    assert!(e.monitor.deny_exec.is_empty());
    Ok(())
}

const EXECNAME_ALLOW: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: allow-by-name
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  process:
    matchPaths:
    - execname: nginx
    - path: /bin/sh
  action: Allow
"#;

#[test]
fn process_allow_list_by_name_is_refused_or_handed_to_the_monitor() -> Result<()> {
    let p = policy(EXECNAME_ALLOW)?;
    let err = enforce(ID, &mut spec()?, Some(&p), None, &node()).unwrap_err();
    assert!(
        err.to_string()
            .contains("policy demo/allow-by-name: spec.process.matchPaths[0]: process rule nginx: landlock's execute right takes paths"),
        "{err}"
    );
    let e = enforce(ID, &mut spec()?, Some(&p), Some(&degraded()), &node())?;
    assert!(e.monitor.exec_allow_list);
    assert_eq!(e.monitor.exec_posture, Some(palisade_policy::Action::Block));
    assert_eq!(e.monitor.allow_exec.len(), 2);
    assert!(e
        .rules
        .iter()
        .all(|r| r.enforcer == Enforcer::MonitorExecKill));
    assert_eq!(e.rules.len(), 2);
    let ll = landlock(&e);
    assert!(!ll
        .handled_fs
        .clone()
        .unwrap_or_default()
        .contains(&FsAccess::Execute));
    Ok(())
}

const BLOCK_RAW: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: block-raw-sockets
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  network:
    matchProtocols:
    - protocol: raw
  action: Block
"#;

#[test]
fn network_block_raw_filters_socket_by_family_and_type() -> Result<()> {
    let mut s = hardened(&HardeningConfig {
        drop_net_raw: false,
        ..HardeningConfig::default()
    })?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, RAW, 1]), ALLOW);
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_RAW)?), None, &node())?;
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    for (args, want) in [
        ([AF_INET, RAW, 1], EPERM),
        ([AF_INET6, RAW | NONBLOCK_CLOEXEC, 58], EPERM),
        ([AF_INET, RAW, 255], EPERM),
        ([AF_PACKET, DGRAM, 0], EPERM),
        ([AF_PACKET, RAW, 768], EPERM),
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM | NONBLOCK_CLOEXEC, 6], ALLOW),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 1], ALLOW),
        ([AF_UNIX, STREAM, 0], ALLOW),
        ([AF_NETLINK, RAW, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    assert_eq!(seccomp_action(&s, "socketcall", [1, 0, 0]), EPERM);
    assert_eq!(seccomp_action(&s, "connect", [3, 0, 16]), ALLOW);
    Ok(())
}

const TCP_ONLY: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: tcp-only
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  network:
    matchProtocols:
    - protocol: TCP
    - protocol: icmp
      action: Audit
  action: Allow
"#;

#[test]
fn network_allow_list_refuses_the_complement_and_logs_audited_protocols() -> Result<()> {
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(TCP_ONLY)?), None, &node())?;
    for (args, want) in [
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM, 0], ALLOW),
        ([AF_INET, DGRAM, 0], EPERM),
        ([AF_INET, DGRAM, 17], EPERM),
        ([AF_INET, DGRAM, 1], EPERM),
        ([AF_INET, RAW, 1], EPERM),
        ([AF_INET, 5, 132], EPERM),
        ([AF_PACKET, RAW, 0], EPERM),
        ([AF_UNIX, DGRAM, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    assert_eq!(
        enforcer_of(&e, "spec.network.matchProtocols[0]"),
        Enforcer::Seccomp
    );
    // icmp is audited but the allow-list's posture refuses it: nothing to log in seccomp.
    assert_eq!(
        enforcer_of(&e, "spec.network.matchProtocols[1]"),
        Enforcer::MonitorAudit
    );
    Ok(())
}

const AUDIT_UDP: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: audit-udp
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  network:
    matchProtocols:
    - protocol: udp
  action: Audit
"#;

#[test]
fn network_audit_logs_through_seccomp_or_goes_to_the_monitor() -> Result<()> {
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(AUDIT_UDP)?), None, &node())?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), LOG);
    assert_eq!(
        seccomp_action(&s, "socket", [AF_INET, DGRAM, 1]),
        ALLOW,
        "icmp is not udp"
    );
    assert_eq!(seccomp_action(&s, "socket", [AF_INET6, DGRAM, 17]), LOG);
    assert_eq!(
        seccomp_action(&s, "socket", [AF_INET, DGRAM, 136]),
        LOG,
        "every datagram protocol but icmp is udp"
    );
    assert_eq!(
        strings(&s["linux"]["seccomp"]["architectures"]),
        ["SCMP_ARCH_X86_64"],
        "the default profile covers only the native entry (and libseccomp cannot filter \
         x86's socketcall by family anyway)"
    );
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, STREAM, 0]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    assert!(e.monitor.audit.is_empty());

    let mut s = spec()?;
    let e = enforce(
        ID,
        &mut s,
        Some(&policy(AUDIT_UDP)?),
        None,
        &kernel(Some(7), false),
    )?;
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::MonitorAudit);
    assert_eq!(e.monitor.audit.len(), 1);
    Ok(())
}

#[test]
fn network_audit_of_icmp_tells_ping_sockets_and_raw_icmp_apart() -> Result<()> {
    let yaml = AUDIT_UDP.replace("protocol: udp", "protocol: icmp");
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(&yaml)?), None, &node())?;
    for (args, want) in [
        ([AF_INET, DGRAM, 1], LOG),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 17], ALLOW),
        ([AF_INET, RAW, 1], LOG),
        ([AF_INET, RAW, 0], ALLOW),
        ([AF_INET, RAW, 255], ALLOW),
        ([AF_INET6, RAW, 58], LOG),
        ([AF_INET6, RAW, 6], ALLOW),
        ([AF_INET6, DGRAM | NONBLOCK_CLOEXEC, 58], LOG),
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_PACKET, RAW, 0], ALLOW),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);
    Ok(())
}

const NETWORK_FROM_SOURCE: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: curl-no-udp
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  network:
    matchProtocols:
    - protocol: udp
      fromSource:
      - path: /usr/bin/curl
  action: Block
"#;

#[test]
fn network_from_source_is_refused_or_handed_to_the_monitor() -> Result<()> {
    let p = policy(NETWORK_FROM_SOURCE)?;
    let err = enforce(ID, &mut spec()?, Some(&p), None, &node()).unwrap_err();
    assert!(
        err.to_string().contains("network rule udp: fromSource"),
        "{err}"
    );
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&p), Some(&degraded()), &node())?;
    assert_eq!(e.rules[0].enforcer, Enforcer::AuditOnly);
    assert_eq!(e.monitor.network.len(), 1);
    assert_eq!(e.monitor.network[0].from_source, ["/usr/bin/curl"]);
    assert_eq!(seccomp_action(&s, "socket", [AF_INET, DGRAM, 0]), ALLOW);
    Ok(())
}

/// KubeArmor's "limit TCP/UDP/raw sockets to named binaries" fixture, as users write it.
const NETWORK_SPECIFIC_PROCESSES: &str =
    include_str!("../../policy/tests/fixtures/network-specific-processes.yaml");

#[test]
fn network_allow_from_source_becomes_a_socket_allow_list_in_the_monitor() -> Result<()> {
    let yaml = NETWORK_SPECIFIC_PROCESSES
        .replace("namespace: shop", "namespace: demo")
        .replace("app: nginx", "app: web");
    let p = policy(&yaml)?;
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&p), None, &node())?;
    for origin in [
        "spec.network.matchProtocols[0]",
        "spec.network.matchProtocols[1]",
    ] {
        assert_eq!(enforcer_of(&e, origin), Enforcer::MonitorSockCreate);
    }
    assert_eq!(
        enforcer_of(&e, "spec.network.matchProtocols[2]"),
        Enforcer::Seccomp
    );
    // Seccomp lets TCP and UDP through (the monitor decides per binary) and keeps refusing
    // raw and ICMP sockets, which no binary may open.
    for (args, want) in [
        ([AF_INET, STREAM, 0], ALLOW),
        ([AF_INET6, STREAM | NONBLOCK_CLOEXEC, 6], ALLOW),
        ([AF_INET, DGRAM, 0], ALLOW),
        ([AF_INET, DGRAM, 1], EPERM),
        ([AF_INET, RAW, 1], EPERM),
        ([AF_PACKET, RAW, 0], EPERM),
    ] {
        assert_eq!(seccomp_action(&s, "socket", args), want, "socket{args:?}");
    }
    let targets: Vec<_> = e
        .monitor
        .network
        .iter()
        .map(|r| (format!("{:?}", r.target), r.action, r.from_source.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            (
                "Protocol(\"tcp\")".to_owned(),
                palisade_policy::Action::Allow,
                vec!["/usr/sbin/nginx".to_owned()]
            ),
            (
                "Protocol(\"udp\")".to_owned(),
                palisade_policy::Action::Allow,
                vec!["/usr/sbin/nginx".to_owned()]
            ),
        ]
    );
    let unlisted: Vec<_> = e.monitor.socket_unlisted.iter().collect();
    assert_eq!(
        unlisted,
        [
            (&"tcp".to_owned(), &palisade_policy::Action::Block),
            (&"udp".to_owned(), &palisade_policy::Action::Block)
        ]
    );
    Ok(())
}

#[test]
fn network_allow_from_source_of_raw_sockets_is_refused() -> Result<()> {
    let yaml = NETWORK_SPECIFIC_PROCESSES
        .replace("namespace: shop", "namespace: demo")
        .replace("app: nginx", "app: web")
        .replace("protocol: udp", "protocol: raw")
        .replace("    - protocol: raw\n      action: Block\n", "");
    let err = enforce(ID, &mut spec()?, Some(&policy(&yaml)?), None, &node()).unwrap_err();
    assert!(
        err.to_string().contains(
            "network rule raw: fromSource: the socket-creation hook does not see AF_PACKET"
        ),
        "{err}"
    );
    Ok(())
}

const CAPS: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: caps
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  capabilities:
    matchCapabilities:
    - capability: chown
    - capability: CAP_KILL
      action: Audit
  action: Block
"#;

#[test]
fn capability_block_leaves_every_set_and_audit_goes_to_the_monitor() -> Result<()> {
    let mut s = spec()?;
    assert!(strings(&s["process"]["capabilities"]["bounding"]).contains(&"CAP_CHOWN".to_owned()));
    let e = enforce(ID, &mut s, Some(&policy(CAPS)?), None, &node())?;
    for set in ["bounding", "effective", "permitted", "inheritable"] {
        let caps = strings(&s["process"]["capabilities"][set]);
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()), "{set}: {caps:?}");
        assert!(caps.contains(&"CAP_KILL".to_owned()), "{set}: {caps:?}");
    }
    assert_eq!(
        enforcer_of(&e, "matchCapabilities[0]"),
        Enforcer::CapabilitiesBounding
    );
    assert_eq!(
        enforcer_of(&e, "matchCapabilities[1]"),
        Enforcer::MonitorAudit
    );
    assert_eq!(e.monitor.audit.len(), 1);
    assert!(
        e.plan.is_none(),
        "runc applies the sets; palisade-init needs no capability step"
    );
    Ok(())
}

#[test]
fn capability_allow_list_keeps_only_what_it_lists() -> Result<()> {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: caps-allowed
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  capabilities:
    matchCapabilities:
    - capability: net_bind_service
    - capability: sys_admin
  action: Allow
"#;
    let mut s = spec()?;
    enforce(ID, &mut s, Some(&policy(yaml)?), None, &node())?;
    for set in ["bounding", "effective", "permitted"] {
        assert_eq!(
            strings(&s["process"]["capabilities"][set]),
            ["CAP_NET_BIND_SERVICE"],
            "{set}: an allow-list never adds what the spec did not hold"
        );
    }
    Ok(())
}

const BLOCK_SYSCALLS: &str = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: no-unlink-chmod
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  syscalls:
    matchSyscalls:
    - syscall:
      - unlink
      - chmod
  action: Block
"#;

#[test]
fn syscall_block_refuses_the_calls_with_eperm() -> Result<()> {
    let mut s = spec()?;
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), ALLOW);
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_SYSCALLS)?), None, &node())?;
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "chmod", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "unlinkat", [0; 3]), ALLOW);
    assert_eq!(seccomp_action(&s, "fchmod", [0; 3]), ALLOW);
    assert_eq!(e.rules[0].enforcer, Enforcer::Seccomp);

    // Without a profile (allow_unconfined_seccomp) one is created that allows the rest.
    let mut s = hardened(&HardeningConfig {
        allow_unconfined_seccomp: true,
        ..HardeningConfig::default()
    })?;
    assert!(s["linux"]["seccomp"].is_null());
    let e = enforce(ID, &mut s, Some(&policy(BLOCK_SYSCALLS)?), None, &node())?;
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], ALLOW);
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(seccomp_action(&s, "unlinkat", [0; 3]), ALLOW);
    assert!(e
        .applied
        .iter()
        .any(|a| a.contains("the spec had no profile")));
    Ok(())
}

#[test]
fn syscall_audit_logs_what_the_profile_lets_through() -> Result<()> {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: audit-calls
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  syscalls:
    matchSyscalls:
    - syscall: [fchownat]
    - syscall: [ptrace]
"#;
    let mut s = spec()?;
    let e = enforce(ID, &mut s, Some(&policy(yaml)?), None, &node())?;
    assert_eq!(seccomp_action(&s, "fchownat", [0; 3]), LOG);
    assert_eq!(
        seccomp_action(&s, "ptrace", [0; 3]),
        EPERM,
        "audit never opens a refused call"
    );
    assert_eq!(enforcer_of(&e, "matchSyscalls[0]"), Enforcer::Seccomp);
    assert_eq!(enforcer_of(&e, "matchSyscalls[1]"), Enforcer::MonitorAudit);
    Ok(())
}

#[test]
fn syscall_allow_list_narrows_the_profile() -> Result<()> {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata:
  name: few-calls
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  syscalls:
    matchSyscalls:
    - syscall: [nanosleep, clock_nanosleep, mount]
  action: Allow
"#;
    let mut s = spec()?;
    enforce(ID, &mut s, Some(&policy(yaml)?), None, &node())?;
    assert_eq!(seccomp_action(&s, "nanosleep", [0; 3]), ALLOW);
    assert_eq!(
        seccomp_action(&s, "execve", [0; 3]),
        ALLOW,
        "palisade-init and runc need it"
    );
    assert_eq!(seccomp_action(&s, "unlink", [0; 3]), EPERM);
    assert_eq!(
        seccomp_action(&s, "mount", [0; 3]),
        EPERM,
        "never more than the profile"
    );
    Ok(())
}

#[test]
fn every_rule_is_reported_once_in_policy_order() -> Result<()> {
    let yaml = format!("{BLOCK_TOKEN}\n---\n{BLOCK_APT}\n---\n{BLOCK_RAW}\n---\n{CAPS}");
    let p = policy(&yaml)?;
    let e = enforce(ID, &mut spec()?, Some(&p), None, &node())?;
    assert_eq!(e.rules.len(), p.rule_count());
    let kinds: Vec<String> = e.rules.iter().map(|r| r.kind.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "file",
            "process",
            "process",
            "capabilities",
            "capabilities",
            "network"
        ]
    );
    let json = serde_json::to_value(&e)?;
    assert_eq!(json["rules"][0]["enforcer"], "bind-mount-mask");
    if json["plan"] != Value::Null {
        bail!("no plan expected: {}", json["plan"]);
    }
    assert_eq!(
        json["monitor"]["deny_exec"][0]["target"],
        json!({"path": "/usr/bin/apt"})
    );
    Ok(())
}
