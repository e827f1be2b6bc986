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

fn names(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.rule.as_str()).collect()
}

#[test]
fn the_entrypoint_shell_is_not_flagged_later_shells_are() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    assert!(findings(&s, &mut st, &p, &exec("/bin/sh"), now).is_empty());
    assert_eq!(
        names(&findings(&s, &mut st, &p, &exec("/bin/bash"), now)),
        ["shell-in-container"]
    );
    assert_eq!(
        names(&findings(&s, &mut st, &p, &exec("/usr/bin/apt-get"), now)),
        ["package-manager-in-container"]
    );
    assert!(findings(&s, &mut st, &p, &exec("/usr/bin/shasum"), now).is_empty());
}

#[test]
fn runtime_setup_before_the_entrypoint_is_not_flagged() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo {
        uid: 1000,
        gid: 1000,
        ..ProcessInfo::default()
    };
    let unshare = EventKind::Syscall {
        call: Syscall::Unshare,
        args: [0; 6],
        result: 0,
    };
    let setuid = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [0; 6],
        result: 0,
    };
    assert!(findings(&s, &mut st, &p, &unshare, now).is_empty());
    assert!(findings(&s, &mut st, &p, &setuid, now).is_empty());
    // palisade-init's exec is still the runtime's setup.
    findings(&s, &mut st, &p, &exec(RUNTIME_INIT), now);
    assert!(findings(&s, &mut st, &p, &setuid, now).is_empty());
    findings(&s, &mut st, &p, &exec("/app"), now);
    assert_eq!(
        names(&findings(&s, &mut st, &p, &unshare, now)),
        ["namespace-change"]
    );
    assert_eq!(
        names(&findings(&s, &mut st, &p, &setuid, now)),
        ["privilege-gain"]
    );
    let setuid_user = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [1000, 0, 0, 0, 0, 0],
        result: 0,
    };
    assert!(findings(&s, &mut st, &p, &setuid_user, now).is_empty());
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
    let s = set(ContainerRules {
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
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    let open = |path: &str| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags: 0,
        result: 3,
        secret: false,
        system_dir: false,
        credential: false,
    };
    let f = findings(&s, &mut st, &p, &exec("/usr/bin/apt"), now);
    assert_eq!(names(&f), ["apt"]);
    assert_eq!(f[0].action, Action::Audit);
    assert_eq!(f[0].enforcer, "audit-only");
    assert!(findings(&s, &mut st, &p, &exec("/usr/bin/apt-get"), now).is_empty());
    assert!(
        findings(&s, &mut st, &p, &open("/usr/bin/apt"), now).is_empty(),
        "an exec rule is not about opens"
    );
    assert_eq!(
        names(&findings(&s, &mut st, &p, &open("/etc/ssl/cert.pem"), now)),
        ["etc"]
    );
    assert!(
        findings(&s, &mut st, &p, &open("/etc/ssl/certs/a.pem"), now).is_empty(),
        "not recursive"
    );
    assert!(findings(&s, &mut st, &p, &open("/etc/ssl"), now).is_empty());
}

#[test]
fn an_execs_runc_init_is_the_runtime_and_forked_children_are_the_container() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let proc_of = |pid: u32| ProcessInfo {
        pid,
        uid: 1000,
        gid: 1000,
        ..ProcessInfo::default()
    };
    let setuid = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [0; 6],
        result: 0,
    };
    let (entry, runc_exec, child) = (proc_of(10), proc_of(20), proc_of(11));
    findings(&s, &mut st, &entry, &exec("/app"), now);
    // runc init of a later exec: it entered from outside and has not exec'd yet.
    assert!(findings(&s, &mut st, &runc_exec, &setuid, now).is_empty());
    findings(&s, &mut st, &runc_exec, &exec(RUNTIME_INIT), now);
    assert!(findings(&s, &mut st, &runc_exec, &setuid, now).is_empty());
    findings(&s, &mut st, &runc_exec, &exec("/bin/sh"), now);
    assert_eq!(
        names(&findings(&s, &mut st, &runc_exec, &setuid, now)),
        ["privilege-gain"]
    );
    // A child forked by the entrypoint is the container's without an exec of its own.
    findings(&s, &mut st, &entry, &EventKind::Fork { child_pid: 11 }, now);
    assert_eq!(
        names(&findings(&s, &mut st, &child, &setuid, now)),
        ["privilege-gain"]
    );
    findings(&s, &mut st, &child, &EventKind::Exit { code: 0 }, now);
    assert!(
        findings(&s, &mut st, &child, &setuid, now).is_empty(),
        "a reused pid starts unknown"
    );
}

#[test]
fn file_detections() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    let open = |path: &str, flags: u64, result: i64| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        result,
        secret: false,
        system_dir: false,
        credential: false,
    };
    let secret_open = |path: &str| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags: 0,
        result: 3,
        secret: true,
        system_dir: false,
        credential: false,
    };
    assert_eq!(
        names(&findings(
            &s,
            &mut st,
            &p,
            &open("/etc/passwd", 0o1 | 0o1000, 3),
            now
        )),
        ["write-below-system-dir"]
    );
    assert!(findings(&s, &mut st, &p, &open("/etc/passwd", 0, 3), now).is_empty());
    assert!(findings(&s, &mut st, &p, &open("/etcetera", 0o1, 3), now).is_empty());
    let system_write = |path: &str| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags: 0o1,
        result: 3,
        secret: false,
        system_dir: true,
        credential: false,
    };
    assert_eq!(
        names(&findings(&s, &mut st, &p, &system_write("passwd"), now)),
        ["write-below-system-dir"],
        "a relative path the kernel placed below /etc"
    );
    assert_eq!(
        names(&findings(
            &s,
            &mut st,
            &p,
            &open("/var/run/secrets/kubernetes.io/serviceaccount/token", 0, 3),
            now
        )),
        ["service-account-token-read"]
    );
    // spelled so that no prefix matches: the kernel's mount test decides
    for path in [
        "token",
        "/var//run/secrets/kubernetes.io/serviceaccount/..data/token",
    ] {
        assert_eq!(
            names(&findings(&s, &mut st, &p, &secret_open(path), now)),
            ["service-account-token-read"],
            "{path}"
        );
        assert!(
            findings(&s, &mut st, &p, &open(path, 0, 3), now).is_empty(),
            "{path} off a secret mount"
        );
    }
    assert!(
        findings(&s, &mut st, &p, &secret_open("ca.crt"), now).is_empty(),
        "another file of the token volume"
    );
    assert_eq!(
        names(&findings(&s, &mut st, &p, &open("/root/x", 0, -13), now)),
        ["file-access-denied"]
    );
}

#[test]
fn network_detections_and_learning_window() {
    let mut rules = ContainerRules {
        learning_window: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    rules.deny_connect.push(ConnectRule {
        name: "no-metadata".into(),
        addr: "169.254.169.254".parse().unwrap(),
        prefix_len: 32,
        port: None,
        only_from: None,
        severity: 9,
        message: String::new(),
    });
    let s = set(rules);
    let t0 = Instant::now();
    let mut st = DetectState::new(t0);
    let p = ProcessInfo::default();
    let connect = |a: &str, result: i64| EventKind::Connect {
        addr: Some(a.parse().unwrap()),
        result,
    };
    assert!(findings(&s, &mut st, &p, &connect("10.0.0.1:443", 0), t0).is_empty());
    let later = t0 + Duration::from_secs(61);
    assert!(findings(&s, &mut st, &p, &connect("10.0.0.1:443", 0), later).is_empty());
    assert_eq!(
        names(&findings(
            &s,
            &mut st,
            &p,
            &connect("10.0.0.2:443", -115),
            later
        )),
        ["new-outbound-destination"]
    );
    assert!(findings(&s, &mut st, &p, &connect("10.0.0.2:443", 0), later).is_empty());
    let miner = findings(&s, &mut st, &p, &connect("10.0.0.1:3333", 0), t0);
    assert_eq!(names(&miner), ["crypto-miner-pool-port"]);
    let blocked = findings(&s, &mut st, &p, &connect("169.254.169.254:80", -1), t0);
    assert_eq!(names(&blocked), ["no-metadata"]);
    assert_eq!(blocked[0].action, Action::Block);
    assert_eq!(blocked[0].enforcer, "bpf-sock-addr");
    let raw = EventKind::Socket {
        domain: 2,
        kind: 3,
        protocol: 1,
        result: 4,
    };
    assert_eq!(names(&findings(&s, &mut st, &p, &raw, t0)), ["raw-socket"]);
    let packet = EventKind::Socket {
        domain: 17,
        kind: 2,
        protocol: 768,
        result: 4,
    };
    assert_eq!(
        names(&findings(&s, &mut st, &p, &packet, t0)),
        ["raw-socket"]
    );
    // `ip addr` and Apache httpd: AF_NETLINK SOCK_RAW (also with SOCK_CLOEXEC); AF_UNIX
    for (domain, kind) in [(16, 3), (16, 524291), (1, 3), (1, 1), (2, 2)] {
        let s_ = EventKind::Socket {
            domain,
            kind,
            protocol: 0,
            result: 4,
        };
        assert!(
            findings(&s, &mut st, &p, &s_, t0).is_empty(),
            "domain {domain} type {kind}"
        );
    }
}

#[test]
fn a_privilege_change_is_a_gain_only_when_the_process_gets_root_it_did_not_hold() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    // busybox as uid 1000 with group 0 (no runAsGroup): setgid(0) at every start
    let busybox = ProcessInfo {
        pid: 30,
        uid: 1000,
        gid: 0,
        ..ProcessInfo::default()
    };
    findings(&s, &mut st, &busybox, &exec("/bin/sh"), now);
    let setgid0 = EventKind::Syscall {
        call: Syscall::Setgid,
        args: [0, 0, 0, 0, 0, 0],
        result: 0,
    };
    assert!(findings(&s, &mut st, &busybox, &setgid0, now).is_empty());
    let setuid_self = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [1000, 0, 0, 0, 0, 0],
        result: 0,
    };
    assert!(findings(&s, &mut st, &busybox, &setuid_self, now).is_empty());
    // a root server dropping to its service user gains nothing either
    let server = ProcessInfo {
        pid: 31,
        ..ProcessInfo::default()
    };
    findings(&s, &mut st, &server, &exec("/usr/sbin/apache2"), now);
    let drop = EventKind::Syscall {
        call: Syscall::Setresuid,
        args: [33, 33, 33, 0, 0, 0],
        result: 0,
    };
    assert!(findings(&s, &mut st, &server, &drop, now).is_empty());
    // a refused call changes nothing
    let refused = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [0; 6],
        result: -1,
    };
    assert!(findings(&s, &mut st, &server, &refused, now).is_empty());
    // the dropped process getting uid 0 back without holding it anywhere is a gain
    let regain = EventKind::Syscall {
        call: Syscall::Setuid,
        args: [0; 6],
        result: 0,
    };
    let f = findings(&s, &mut st, &server, &regain, now);
    assert_eq!(names(&f), ["privilege-gain"]);
    assert!(
        f[0].message.contains("uids 33/33/33 -> 33/0/33"),
        "{}",
        f[0].message
    );
    // a capset that succeeded raised nothing beyond the permitted set
    let capset = EventKind::Syscall {
        call: Syscall::Capset,
        args: [0; 6],
        result: 0,
    };
    assert!(findings(&s, &mut st, &busybox, &capset, now).is_empty());
}

#[test]
fn an_applications_pid_file_below_usr_local_is_not_a_system_write() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    let write = |path: &str| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags: 0o1 | 0o100 | 0o1000,
        result: 3,
        secret: false,
        system_dir: true,
        credential: false,
    };
    assert!(findings(
        &s,
        &mut st,
        &p,
        &write("/usr/local/apache2/logs/httpd.pid"),
        now
    )
    .is_empty());
    assert_eq!(
        names(&findings(&s, &mut st, &p, &write("/usr/bin/x"), now)),
        ["write-below-system-dir"]
    );
}

#[test]
fn only_from_rules_spare_their_source_in_kernel_and_in_audit() {
    let rule = |name: &str, port: u16| ConnectRule {
        name: name.into(),
        addr: "10.0.0.1".parse().unwrap(),
        prefix_len: 32,
        port: Some(port),
        only_from: Some("/app/client".into()),
        severity: 6,
        message: String::new(),
    };
    let rules = ContainerRules {
        deny_connect: vec![rule("only-client", 5432), rule("general", 5432)],
        learning_window: None,
        ..Default::default()
    };
    let mut s = set(rules);
    s.sources = vec![Some((8, 42)), None];
    s.rules.deny_connect[1].only_from = None;
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let connect = EventKind::Connect {
        addr: Some("10.0.0.1:5432".parse().unwrap()),
        result: 0,
    };
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
    assert_eq!(
        names(&findings(&s, &mut st, &other, &connect, now)),
        ["general"]
    );
    s.sources_in_kernel = false;
    assert_eq!(
        names(&findings(&s, &mut st, &client, &connect, now)),
        ["general"]
    );
    // One finding per connect: the first rule that applies.
    let f = findings(&s, &mut st, &other, &connect, now);
    assert_eq!(names(&f), ["only-client"]);
    assert_eq!(f[0].action, Action::Audit);
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
    let s = set(rules);
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let kind = EventKind::Exec {
        filename: "/usr/bin/id".into(),
        args: vec![],
        parent: String::new(),
        ino: 1,
        dev: 1,
        killed: true,
        refused: false,
        deny_rule: Some("no-id".into()),
        entrypoint: true,
    };
    let f = findings(&s, &mut st, &ProcessInfo::default(), &kind, now);
    assert_eq!(names(&f), ["no-id"]);
    assert_eq!(f[0].action, Action::Kill);
    assert_eq!(f[0].enforcer, "bpf-exec-kill");
    assert_eq!(f[0].severity, 9);
    let refused = EventKind::Exec {
        filename: "/usr/bin/id".into(),
        args: vec![],
        parent: String::new(),
        ino: 1,
        dev: 1,
        killed: false,
        refused: true,
        deny_rule: Some("no-id".into()),
        entrypoint: false,
    };
    let f = findings(&s, &mut st, &ProcessInfo::default(), &refused, now);
    assert_eq!((f[0].action, f[0].enforcer), (Action::Block, "bpf-lsm"));
}

#[test]
fn refused_attempts_are_blocks_by_their_enforcer_below_the_counted_severities() {
    let mut rules = ContainerRules {
        seccomp_refused: vec!["unshare".into()],
        ..ContainerRules::default()
    };
    rules.deny_connect.push(ConnectRule {
        name: "no-pool".into(),
        addr: "10.0.0.9".parse().unwrap(),
        prefix_len: 32,
        port: None,
        only_from: None,
        severity: 5,
        message: String::new(),
    });
    let s = set(rules);
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    findings(&s, &mut st, &p, &exec("/app"), now);
    let call = |call, result| EventKind::Syscall {
        call,
        args: [0; 6],
        result,
    };
    let f = findings(&s, &mut st, &p, &call(Syscall::Unshare, -1), now);
    assert_eq!(names(&f), ["namespace-change"]);
    assert_eq!((f[0].action, f[0].enforcer), (Action::Block, "seccomp"));
    assert_eq!(f[0].severity, 6);
    assert!(
        f[0].message.starts_with("unshare refused by seccomp: "),
        "{}",
        f[0].message
    );
    let f = findings(&s, &mut st, &p, &call(Syscall::FinitModule, -1), now);
    assert_eq!((f[0].enforcer, f[0].severity), ("capabilities", 6));
    let ran = findings(&s, &mut st, &p, &call(Syscall::Unshare, 0), now);
    assert_eq!((ran[0].action, ran[0].severity), (Action::Audit, 8));
    let raw = EventKind::Socket {
        domain: 2,
        kind: 3,
        protocol: 1,
        result: -1,
    };
    let f = findings(&s, &mut st, &p, &raw, now);
    assert_eq!(names(&f), ["raw-socket"]);
    assert_eq!(
        (f[0].action, f[0].enforcer, f[0].severity),
        (Action::Block, "capabilities", 4)
    );
    // mining pool ports: a refused or unreachable pool still counts; a connect rule's refusal
    // names the rule's enforcer
    let connect = |a: &str, result: i64| EventKind::Connect {
        addr: Some(a.parse().unwrap()),
        result,
    };
    for result in [-111, -110, -113] {
        let f = findings(&s, &mut st, &p, &connect("10.0.0.1:3333", result), now);
        assert_eq!(names(&f), ["crypto-miner-pool-port"], "result {result}");
        assert_eq!((f[0].action, f[0].severity), (Action::Audit, 8));
    }
    let f = findings(&s, &mut st, &p, &connect("10.0.0.9:4444", -1), now);
    assert_eq!(names(&f), ["no-pool", "crypto-miner-pool-port"]);
    assert_eq!(
        (f[1].action, f[1].enforcer),
        (Action::Block, "bpf-sock-addr")
    );
    assert!(
        findings(&s, &mut st, &p, &connect("10.0.0.1:3333", -22), now).is_empty(),
        "EINVAL: no attempt reached the network"
    );
}

#[test]
fn credential_files_are_reported_by_what_the_kernel_says_not_the_path() {
    let s = set(ContainerRules::default());
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo::default();
    let open = |path: &str, flags: u64, result: i64, credential: bool| EventKind::Open {
        path: path.into(),
        dirfd: -100,
        flags,
        result,
        secret: false,
        system_dir: false,
        credential,
    };
    let f = findings(&s, &mut st, &p, &open("shadow", 0, 3, true), now);
    assert_eq!(names(&f), ["credential-file-read"], "a relative spelling");
    assert_eq!(f[0].severity, 6);
    assert!(f[0].message.contains("shadow read"), "{}", f[0].message);
    // the twin: a file of the same directory the kernel does not know as a credential
    assert!(findings(&s, &mut st, &p, &open("/etc/passwd", 0, 3, false), now).is_empty());
    assert!(
        findings(&s, &mut st, &p, &open("/etc/shadow", 0, 3, false), now).is_empty(),
        "the path alone decides nothing: the kernel keyed no such file in this container"
    );
    // refused: no file was opened, the refusal is its own report
    assert_eq!(
        names(&findings(
            &s,
            &mut st,
            &p,
            &open("/etc/shadow", 0, -13, false),
            now
        )),
        ["file-access-denied"]
    );
    let f = findings(
        &s,
        &mut st,
        &p,
        &open("/root/.kube/config", 0o2, 3, true),
        now,
    );
    assert_eq!(names(&f), ["credential-file-read"]);
    assert!(
        f[0].message.contains("opened for writing"),
        "{}",
        f[0].message
    );
    // the built-in detections off: nothing
    let off = set(ContainerRules {
        builtins: false,
        ..ContainerRules::default()
    });
    assert!(findings(&off, &mut st, &p, &open("shadow", 0, 3, true), now).is_empty());
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
    let s = set(ContainerRules {
        rootfs: Some(root.to_path_buf()),
        ..ContainerRules::default()
    });
    let now = Instant::now();
    let mut st = DetectState::new(now);
    let p = ProcessInfo {
        pid: u32::MAX,
        ..ProcessInfo::default()
    };
    assert!(
        findings(&s, &mut st, &p, &exec("/usr/bin/socat"), now).is_empty(),
        "the entrypoint: a proxy"
    );
    for tool in [
        "/bin/nc",
        "/usr/bin/ncat",
        "/usr/bin/nmap",
        "/bin/nc.openbsd",
    ] {
        assert_eq!(
            names(&findings(&s, &mut st, &p, &exec(tool), now)),
            ["network-tool-in-container"],
            "{tool}"
        );
    }
    assert!(findings(&s, &mut st, &p, &exec("/usr/bin/curl"), now).is_empty());
    std::fs::copy(root.join("usr/bin/ncat"), root.join("tmp/z")).unwrap();
    let f = findings(&s, &mut st, &p, &exec("/tmp/z"), now);
    assert_eq!(names(&f), ["network-tool-in-container"]);
    assert!(
        f[0].message.contains("the content of ncat"),
        "{}",
        f[0].message
    );
    // written since the registration, carrying a miner's strings
    std::fs::write(root.join("tmp/kswapd0"), b"XMRig stratum+tcp://pool:3333").unwrap();
    std::fs::write(root.join("tmp/kswapd1"), b"https://example.com/").unwrap();
    let f = findings(&s, &mut st, &p, &exec("/tmp/kswapd0"), now);
    assert_eq!(names(&f), ["crypto-miner"]);
    assert_eq!(f[0].severity, 8);
    assert!(findings(&s, &mut st, &p, &exec("/tmp/kswapd1"), now).is_empty());
}
