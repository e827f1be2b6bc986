//! Unit tests of the detections and rule matching, on made-up events.

use super::*;
use crate::rules::{ConnectRule, ExecRule};

fn set(rules: ContainerRules) -> RuleSet {
    RuleSet {
        sources: rules.deny_connect.iter().map(|_| None).collect(),
        sources_in_kernel: true,
        rules,
        connect_enforcer: Enforcer::BpfSockAddr,
    }
}

/// One container's rules and detection state, fed made-up events at `now`: what each test
/// starts with.
struct Feed {
    set: RuleSet,
    st: DetectState,
    now: Instant,
}

impl Feed {
    fn new(rules: ContainerRules) -> Self {
        let now = Instant::now();
        Feed {
            set: set(rules),
            st: DetectState::new(now),
            now,
        }
    }

    /// The findings on event `kind` of process `p`.
    fn of(&mut self, p: &ProcessInfo, kind: &EventKind) -> Vec<Finding> {
        findings(&self.set, &mut self.st, p, kind, self.now)
    }

    /// The rule names of those findings.
    fn names(&mut self, p: &ProcessInfo, kind: &EventKind) -> Vec<String> {
        self.of(p, kind).into_iter().map(|f| f.rule).collect()
    }
}

/// Process `pid` with these ids.
fn process(pid: u32, uid: u32, gid: u32) -> ProcessInfo {
    ProcessInfo {
        pid,
        uid,
        gid,
        ..ProcessInfo::default()
    }
}

fn exec(path: &str) -> EventKind {
    EventKind::Exec {
        filename: path.into(),
        args: vec![],
        parent: String::new(),
        ino: 1,
        dev: 1,
        killed: false,
        refused: false,
        deny_rule: None,
        entrypoint: false,
    }
}

/// What the kernel can mark on an open, for [`marked_open`]: on a secret mount, a write
/// below a system directory, a credential file.
const SECRET: u8 = 1;
const SYSTEM_DIR: u8 = 2;
const CREDENTIAL: u8 = 4;

/// An open of `path` relative to the working directory.
fn open(path: &str, flags: u64, result: i64) -> EventKind {
    marked_open(path, flags, result, 0)
}

/// [`open`] with what the kernel marked on it (`SECRET`, `SYSTEM_DIR`, `CREDENTIAL`).
fn marked_open(path: &str, flags: u64, result: i64, marks: u8) -> EventKind {
    EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        result,
        secret: marks & SECRET != 0,
        system_dir: marks & SYSTEM_DIR != 0,
        credential: marks & CREDENTIAL != 0,
    }
}

fn syscall(call: Syscall, args: [u64; 6], result: i64) -> EventKind {
    EventKind::Syscall { call, args, result }
}

fn socket(domain: i32, kind: i32, protocol: i32, result: i64) -> EventKind {
    EventKind::Socket {
        domain,
        kind,
        protocol,
        result,
    }
}

fn connect(addr: &str, result: i64) -> EventKind {
    EventKind::Connect {
        addr: Some(addr.parse().unwrap()),
        result,
    }
}

/// A connect rule refusing `addr` (one host) on `port` (every port: `None`).
fn deny_connect(name: &str, addr: &str, port: Option<u16>, severity: u8) -> ConnectRule {
    ConnectRule {
        name: name.into(),
        addr: addr.parse().unwrap(),
        prefix_len: 32,
        port,
        only_from: None,
        severity,
        message: String::new(),
    }
}

fn names(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.rule.as_str()).collect()
}

#[test]
fn the_entrypoint_shell_is_not_flagged_later_shells_are() {
    let mut f = Feed::new(ContainerRules::default());
    let p = ProcessInfo::default();
    assert!(f.of(&p, &exec("/bin/sh")).is_empty());
    assert_eq!(f.names(&p, &exec("/bin/bash")), ["shell-in-container"]);
    assert_eq!(
        f.names(&p, &exec("/usr/bin/apt-get")),
        ["package-manager-in-container"]
    );
    assert!(f.of(&p, &exec("/usr/bin/shasum")).is_empty());
}

#[test]
fn runtime_setup_before_the_entrypoint_is_not_flagged() {
    let mut f = Feed::new(ContainerRules::default());
    let p = process(0, 1000, 1000);
    let unshare = syscall(Syscall::Unshare, [0; 6], 0);
    let setuid = syscall(Syscall::Setuid, [0; 6], 0);
    assert!(f.of(&p, &unshare).is_empty());
    assert!(f.of(&p, &setuid).is_empty());
    // palisade-init's exec is still the runtime's setup.
    f.of(&p, &exec(RUNTIME_INIT));
    assert!(f.of(&p, &setuid).is_empty());
    f.of(&p, &exec("/app"));
    assert_eq!(f.names(&p, &unshare), ["namespace-change"]);
    assert_eq!(f.names(&p, &setuid), ["privilege-gain"]);
    let setuid_user = syscall(Syscall::Setuid, [1000, 0, 0, 0, 0, 0], 0);
    assert!(f.of(&p, &setuid_user).is_empty());
}

#[test]
fn audit_rules_report_matching_execs_and_opens_only() {
    use crate::rules::{AuditRule, AuditTarget};
    let rule = |name: &str, on: AuditOn| AuditRule {
        name: name.into(),
        on,
        severity: 4,
        message: String::new(),
    };
    let mut f = Feed::new(ContainerRules {
        audit: vec![
            rule(
                "apt",
                AuditOn::Exec(AuditTarget::Path("/usr/bin/apt".into())),
            ),
            rule(
                "etc",
                AuditOn::Open(AuditTarget::Directory {
                    dir: "/etc/ssl/".into(),
                    recursive: false,
                }),
            ),
        ],
        builtins: false,
        ..ContainerRules::default()
    });
    let p = ProcessInfo::default();
    let read = |path: &str| open(path, 0, 3);
    let apt = f.of(&p, &exec("/usr/bin/apt"));
    assert_eq!(names(&apt), ["apt"]);
    assert_eq!(apt[0].action, Action::Audit);
    assert_eq!(apt[0].enforcer, "audit-only");
    assert!(f.of(&p, &exec("/usr/bin/apt-get")).is_empty());
    assert!(
        f.of(&p, &read("/usr/bin/apt")).is_empty(),
        "an exec rule is not about opens"
    );
    assert_eq!(f.names(&p, &read("/etc/ssl/cert.pem")), ["etc"]);
    assert!(
        f.of(&p, &read("/etc/ssl/certs/a.pem")).is_empty(),
        "not recursive"
    );
    assert!(f.of(&p, &read("/etc/ssl")).is_empty());
}

#[test]
fn an_execs_runc_init_is_the_runtime_and_forked_children_are_the_container() {
    let mut f = Feed::new(ContainerRules::default());
    let proc_of = |pid: u32| process(pid, 1000, 1000);
    let setuid = syscall(Syscall::Setuid, [0; 6], 0);
    let (entry, runc_exec, child) = (proc_of(10), proc_of(20), proc_of(11));
    f.of(&entry, &exec("/app"));
    // runc init of a later exec: it entered from outside and has not exec'd yet.
    assert!(f.of(&runc_exec, &setuid).is_empty());
    f.of(&runc_exec, &exec(RUNTIME_INIT));
    assert!(f.of(&runc_exec, &setuid).is_empty());
    f.of(&runc_exec, &exec("/bin/sh"));
    assert_eq!(f.names(&runc_exec, &setuid), ["privilege-gain"]);
    // A child forked by the entrypoint is the container's without an exec of its own.
    f.of(&entry, &EventKind::Fork { child_pid: 11 });
    assert_eq!(f.names(&child, &setuid), ["privilege-gain"]);
    f.of(&child, &EventKind::Exit { code: 0 });
    assert!(
        f.of(&child, &setuid).is_empty(),
        "a reused pid starts unknown"
    );
}

#[test]
fn file_detections() {
    let mut f = Feed::new(ContainerRules::default());
    let p = ProcessInfo::default();
    let secret_open = |path: &str| marked_open(path, 0, 3, SECRET);
    assert_eq!(
        f.names(&p, &open("/etc/passwd", 0o1 | 0o1000, 3)),
        ["write-below-system-dir"]
    );
    assert!(f.of(&p, &open("/etc/passwd", 0, 3)).is_empty());
    assert!(f.of(&p, &open("/etcetera", 0o1, 3)).is_empty());
    assert_eq!(
        f.names(&p, &marked_open("passwd", 0o1, 3, SYSTEM_DIR)),
        ["write-below-system-dir"],
        "a relative path the kernel placed below /etc"
    );
    let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    assert_eq!(
        f.names(&p, &open(token, 0, 3)),
        ["service-account-token-read"]
    );
    // spelled so that no prefix matches: the kernel's mount test decides
    for path in [
        "token",
        "/var//run/secrets/kubernetes.io/serviceaccount/..data/token",
    ] {
        assert_eq!(
            f.names(&p, &secret_open(path)),
            ["service-account-token-read"],
            "{path}"
        );
        assert!(
            f.of(&p, &open(path, 0, 3)).is_empty(),
            "{path} off a secret mount"
        );
    }
    assert!(
        f.of(&p, &secret_open("ca.crt")).is_empty(),
        "another file of the token volume"
    );
    assert_eq!(
        f.names(&p, &open("/root/x", 0, -13)),
        ["file-access-denied"]
    );
}

#[test]
fn network_detections_and_learning_window() {
    let mut rules = ContainerRules {
        learning_window: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    rules
        .deny_connect
        .push(deny_connect("no-metadata", "169.254.169.254", None, 9));
    let mut f = Feed::new(rules);
    let t0 = f.now;
    let p = ProcessInfo::default();
    assert!(f.of(&p, &connect("10.0.0.1:443", 0)).is_empty());
    f.now = t0 + Duration::from_secs(61);
    assert!(f.of(&p, &connect("10.0.0.1:443", 0)).is_empty());
    assert_eq!(
        f.names(&p, &connect("10.0.0.2:443", -115)),
        ["new-outbound-destination"]
    );
    assert!(f.of(&p, &connect("10.0.0.2:443", 0)).is_empty());
    f.now = t0;
    let miner = f.of(&p, &connect("10.0.0.1:3333", 0));
    assert_eq!(names(&miner), ["crypto-miner-pool-port"]);
    let blocked = f.of(&p, &connect("169.254.169.254:80", -1));
    assert_eq!(names(&blocked), ["no-metadata"]);
    assert_eq!(blocked[0].action, Action::Block);
    assert_eq!(blocked[0].enforcer, "bpf-sock-addr");
    assert_eq!(f.names(&p, &socket(2, 3, 1, 4)), ["raw-socket"]);
    assert_eq!(f.names(&p, &socket(17, 2, 768, 4)), ["raw-socket"]);
    // `ip addr` and Apache httpd: AF_NETLINK SOCK_RAW (also with SOCK_CLOEXEC); AF_UNIX
    for (domain, kind) in [(16, 3), (16, 524291), (1, 3), (1, 1), (2, 2)] {
        assert!(
            f.of(&p, &socket(domain, kind, 0, 4)).is_empty(),
            "domain {domain} type {kind}"
        );
    }
}

#[test]
fn a_privilege_change_is_a_gain_only_when_the_process_gets_root_it_did_not_hold() {
    let mut f = Feed::new(ContainerRules::default());
    // busybox as uid 1000 with group 0 (no runAsGroup): setgid(0) at every start
    let busybox = process(30, 1000, 0);
    f.of(&busybox, &exec("/bin/sh"));
    let setgid0 = syscall(Syscall::Setgid, [0, 0, 0, 0, 0, 0], 0);
    assert!(f.of(&busybox, &setgid0).is_empty());
    let setuid_self = syscall(Syscall::Setuid, [1000, 0, 0, 0, 0, 0], 0);
    assert!(f.of(&busybox, &setuid_self).is_empty());
    // a root server dropping to its service user gains nothing either
    let server = process(31, 0, 0);
    f.of(&server, &exec("/usr/sbin/apache2"));
    let drop = syscall(Syscall::Setresuid, [33, 33, 33, 0, 0, 0], 0);
    assert!(f.of(&server, &drop).is_empty());
    // a refused call changes nothing
    let refused = syscall(Syscall::Setuid, [0; 6], -1);
    assert!(f.of(&server, &refused).is_empty());
    // the dropped process getting uid 0 back without holding it anywhere is a gain
    let regain = f.of(&server, &syscall(Syscall::Setuid, [0; 6], 0));
    assert_eq!(names(&regain), ["privilege-gain"]);
    assert!(
        regain[0].message.contains("uids 33/33/33 -> 33/0/33"),
        "{}",
        regain[0].message
    );
    // a capset that succeeded raised nothing beyond the permitted set
    let capset = syscall(Syscall::Capset, [0; 6], 0);
    assert!(f.of(&busybox, &capset).is_empty());
}

#[test]
fn an_applications_pid_file_below_usr_local_is_not_a_system_write() {
    let mut f = Feed::new(ContainerRules::default());
    let p = ProcessInfo::default();
    let write = |path: &str| marked_open(path, 0o1 | 0o100 | 0o1000, 3, SYSTEM_DIR);
    assert!(f
        .of(&p, &write("/usr/local/apache2/logs/httpd.pid"))
        .is_empty());
    assert_eq!(
        f.names(&p, &write("/usr/bin/x")),
        ["write-below-system-dir"]
    );
}

#[test]
fn only_from_rules_spare_their_source_in_kernel_and_in_audit() {
    let rule = |name: &str| ConnectRule {
        only_from: Some("/app/client".into()),
        ..deny_connect(name, "10.0.0.1", Some(5432), 6)
    };
    let rules = ContainerRules {
        deny_connect: vec![rule("only-client"), rule("general")],
        learning_window: None,
        ..Default::default()
    };
    let mut f = Feed::new(rules);
    f.set.sources = vec![Some((8, 42)), None];
    f.set.rules.deny_connect[1].only_from = None;
    let connect = connect("10.0.0.1:5432", 0);
    let client = ProcessInfo {
        exe_id: Some((8, 42)),
        ..Default::default()
    };
    let other = ProcessInfo {
        exe_id: Some((8, 43)),
        ..Default::default()
    };
    // In the kernel: a connect that went through was the source; the general rule still
    // matches (audit, since the kernel did not refuse it).
    assert_eq!(f.names(&other, &connect), ["general"]);
    f.set.sources_in_kernel = false;
    assert_eq!(f.names(&client, &connect), ["general"]);
    // One finding per connect: the first rule that applies.
    let found = f.of(&other, &connect);
    assert_eq!(names(&found), ["only-client"]);
    assert_eq!(found[0].action, Action::Audit);
}

#[test]
fn exec_deny_reports_kill_or_audit() {
    let mut rules = ContainerRules::default();
    rules.deny_exec.push(ExecRule {
        name: "no-id".into(),
        path: "/usr/bin/id".into(),
        from_parent: None,
        severity: 9,
        message: "id is forbidden".into(),
    });
    let mut f = Feed::new(rules);
    let denied = |killed: bool, refused: bool, entrypoint: bool| EventKind::Exec {
        filename: "/usr/bin/id".into(),
        args: vec![],
        parent: String::new(),
        ino: 1,
        dev: 1,
        killed,
        refused,
        deny_rule: Some("no-id".into()),
        entrypoint,
    };
    let killed = f.of(&ProcessInfo::default(), &denied(true, false, true));
    assert_eq!(names(&killed), ["no-id"]);
    assert_eq!(killed[0].action, Action::Kill);
    assert_eq!(killed[0].enforcer, "bpf-exec-kill");
    assert_eq!(killed[0].severity, 9);
    let refused = f.of(&ProcessInfo::default(), &denied(false, true, false));
    assert_eq!(
        (refused[0].action, refused[0].enforcer),
        (Action::Block, "bpf-lsm")
    );
}

#[test]
fn refused_attempts_are_blocks_by_their_enforcer_below_the_counted_severities() {
    let mut rules = ContainerRules {
        seccomp_refused: vec!["unshare".into()],
        ..ContainerRules::default()
    };
    rules
        .deny_connect
        .push(deny_connect("no-pool", "10.0.0.9", None, 5));
    let mut f = Feed::new(rules);
    let p = ProcessInfo::default();
    f.of(&p, &exec("/app"));
    let call = |call, result| syscall(call, [0; 6], result);
    let unshare = f.of(&p, &call(Syscall::Unshare, -1));
    assert_eq!(names(&unshare), ["namespace-change"]);
    assert_eq!(
        (unshare[0].action, unshare[0].enforcer),
        (Action::Block, "seccomp")
    );
    assert_eq!(unshare[0].severity, 6);
    assert!(
        unshare[0]
            .message
            .starts_with("unshare refused by seccomp: "),
        "{}",
        unshare[0].message
    );
    let module = f.of(&p, &call(Syscall::FinitModule, -1));
    assert_eq!(
        (module[0].enforcer, module[0].severity),
        ("capabilities", 6)
    );
    let ran = f.of(&p, &call(Syscall::Unshare, 0));
    assert_eq!((ran[0].action, ran[0].severity), (Action::Audit, 8));
    let raw = f.of(&p, &socket(2, 3, 1, -1));
    assert_eq!(names(&raw), ["raw-socket"]);
    assert_eq!(
        (raw[0].action, raw[0].enforcer, raw[0].severity),
        (Action::Block, "capabilities", 4)
    );
    // mining pool ports: a refused or unreachable pool still counts; a connect rule's refusal
    // names the rule's enforcer
    for result in [-111, -110, -113] {
        let pool = f.of(&p, &connect("10.0.0.1:3333", result));
        assert_eq!(names(&pool), ["crypto-miner-pool-port"], "result {result}");
        assert_eq!((pool[0].action, pool[0].severity), (Action::Audit, 8));
    }
    let pool = f.of(&p, &connect("10.0.0.9:4444", -1));
    assert_eq!(names(&pool), ["no-pool", "crypto-miner-pool-port"]);
    assert_eq!(
        (pool[1].action, pool[1].enforcer),
        (Action::Block, "bpf-sock-addr")
    );
    assert!(
        f.of(&p, &connect("10.0.0.1:3333", -22)).is_empty(),
        "EINVAL: no attempt reached the network"
    );
}

#[test]
fn credential_files_are_reported_by_what_the_kernel_says_not_the_path() {
    let mut f = Feed::new(ContainerRules::default());
    let p = ProcessInfo::default();
    let credential = |path: &str, flags: u64| marked_open(path, flags, 3, CREDENTIAL);
    let shadow = f.of(&p, &credential("shadow", 0));
    assert_eq!(
        names(&shadow),
        ["credential-file-read"],
        "a relative spelling"
    );
    assert_eq!(shadow[0].severity, 6);
    assert!(
        shadow[0].message.contains("shadow read"),
        "{}",
        shadow[0].message
    );
    // the twin: a file of the same directory the kernel does not know as a credential
    assert!(f.of(&p, &open("/etc/passwd", 0, 3)).is_empty());
    assert!(
        f.of(&p, &open("/etc/shadow", 0, 3)).is_empty(),
        "the path alone decides nothing: the kernel keyed no such file in this container"
    );
    // refused: no file was opened, the refusal is its own report
    assert_eq!(
        f.names(&p, &open("/etc/shadow", 0, -13)),
        ["file-access-denied"]
    );
    let kubeconfig = f.of(&p, &credential("/root/.kube/config", 0o2));
    assert_eq!(names(&kubeconfig), ["credential-file-read"]);
    assert!(
        kubeconfig[0].message.contains("opened for writing"),
        "{}",
        kubeconfig[0].message
    );
    // the built-in detections off: nothing
    let off = set(ContainerRules {
        builtins: false,
        ..ContainerRules::default()
    });
    let shadow = credential("shadow", 0);
    assert!(findings(&off, &mut f.st, &p, &shadow, f.now).is_empty());
}

#[test]
fn network_tools_after_the_entrypoint_are_reported_by_name_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["usr/bin", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("usr/bin/ncat"), b"ncat's own code").unwrap();
    std::fs::write(root.join("usr/bin/socat"), b"socat's own code").unwrap();
    let mut f = Feed::new(ContainerRules {
        rootfs: Some(root.to_path_buf()),
        ..ContainerRules::default()
    });
    let p = ProcessInfo {
        pid: u32::MAX,
        ..ProcessInfo::default()
    };
    assert!(
        f.of(&p, &exec("/usr/bin/socat")).is_empty(),
        "the entrypoint: a proxy"
    );
    for tool in [
        "/bin/nc",
        "/usr/bin/ncat",
        "/usr/bin/nmap",
        "/bin/nc.openbsd",
    ] {
        assert_eq!(
            f.names(&p, &exec(tool)),
            ["network-tool-in-container"],
            "{tool}"
        );
    }
    assert!(f.of(&p, &exec("/usr/bin/curl")).is_empty());
    std::fs::copy(root.join("usr/bin/ncat"), root.join("tmp/z")).unwrap();
    let copy = f.of(&p, &exec("/tmp/z"));
    assert_eq!(names(&copy), ["network-tool-in-container"]);
    assert!(
        copy[0].message.contains("the content of ncat"),
        "{}",
        copy[0].message
    );
    // written since the registration, carrying a miner's strings
    std::fs::write(root.join("tmp/kswapd0"), b"XMRig stratum+tcp://pool:3333").unwrap();
    std::fs::write(root.join("tmp/kswapd1"), b"https://example.com/").unwrap();
    let miner = f.of(&p, &exec("/tmp/kswapd0"));
    assert_eq!(names(&miner), ["crypto-miner"]);
    assert_eq!(miner[0].severity, 8);
    assert!(f.of(&p, &exec("/tmp/kswapd1")).is_empty());
}
