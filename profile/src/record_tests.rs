//! Tests of the recording: folding, caps, coverage, promotability and merging.

use super::*;

fn wl() -> WorkloadId {
    WorkloadId::new("shop", "frontend").unwrap()
}

fn open(path: &str, write: bool) -> Observation {
    Observation::Open {
        path: path.to_string(),
        write,
    }
}

fn connect(addr: &str, port: u16) -> Observation {
    Observation::Connect {
        address: addr.parse().unwrap(),
        port,
        protocol: Protocol::Tcp,
    }
}

fn exec(path: &str, parent: Option<&str>) -> Observation {
    Observation::Exec {
        path: path.to_string(),
        parent: parent.map(str::to_string),
    }
}

/// A recording of a small web service, as one pod would produce it.
fn pod_a() -> Recording {
    let mut r = Recording::new(wl());
    r.add_pod("frontend-a");
    for (t, o) in [
        exec("/usr/sbin/nginx", None),
        exec("/bin/sh", Some("/usr/sbin/nginx")),
        open("/etc/nginx/nginx.conf", false),
        open("/var/log/nginx/access.log", true),
        connect("10.0.0.5", 5432),
        Observation::Listen {
            port: 8080,
            protocol: Protocol::Tcp,
        },
        Observation::Syscall {
            name: "accept4".into(),
        },
        Observation::Capability {
            capability: Capability::parse("net_bind_service").unwrap(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        r.observe(100 + t as u64, &o);
    }
    r
}

fn pod_b() -> Recording {
    let mut r = Recording::new(wl());
    r.add_pod("frontend-b");
    for (t, o) in [
        exec("/usr/sbin/nginx", None),
        open("/etc/nginx/nginx.conf", false),
        open("/etc/nginx/mime.types", false),
        connect("10.0.0.6", 5432),
        Observation::Socket {
            executable: "/usr/sbin/nginx".into(),
            protocol: Protocol::Tcp,
        },
        Observation::Syscall {
            name: "epoll_wait".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        r.observe(50 + t as u64, &o);
    }
    r
}

#[test]
fn workload_names() {
    assert_eq!(wl().file_stem(), "shop_frontend");
    for (ns, name) in [
        ("", "a"),
        ("a", ""),
        ("A", "b"),
        ("a", "b/c"),
        ("a_b", "c"),
        ("a", ".x"),
    ] {
        assert!(WorkloadId::new(ns, name).is_err(), "{ns:?} {name:?}");
    }
}

#[test]
fn records_each_category() {
    let r = pod_a();
    assert_eq!(r.observations, 8);
    assert_eq!((r.first_seen, r.last_seen), (Some(100), Some(107)));
    let nginx = &r.executables["/usr/sbin/nginx"];
    assert!(nginx.runtime && nginx.paths.is_empty());
    assert!(r.executables["/bin/sh"].paths.contains("/usr/sbin/nginx"));
    assert_eq!(
        r.files["/etc/nginx/nginx.conf"],
        Access {
            read: true,
            write: false
        }
    );
    assert!(r.files["/var/log/nginx/access.log"].write);
    assert!(r.syscalls.contains("accept4"));
    assert_eq!(r.peers.len(), 1);
    assert!(r.promotable().is_ok());
}

#[test]
fn coverage_decides_departures() {
    let r = pod_a();
    assert!(r.covers(&open("/etc/nginx/nginx.conf", false)));
    assert!(!r.covers(&open("/etc/nginx/nginx.conf", true)), "read only");
    assert!(!r.covers(&open("/etc/shadow", false)));
    assert!(r.covers(&exec("/bin/sh", Some("/usr/sbin/nginx"))));
    assert!(
        !r.covers(&exec("/bin/sh", None)),
        "a shell from the runtime is new"
    );
    assert!(!r.covers(&connect("10.0.0.9", 5432)));
    assert!(r.covers(&Observation::Syscall {
        name: "exit_group".into()
    }));
    assert!(!r.covers(&Observation::Syscall {
        name: "unshare".into()
    }));
}

#[test]
fn many_files_in_one_directory_fold_into_it() {
    let mut r = Recording::new(wl());
    for i in 0..=FOLD_THRESHOLD {
        let name = format!("/srv/cache/entry-{}", char::from(b'a' + i as u8));
        r.observe(1, &open(&name, i == 3));
    }
    assert_eq!(
        r.files.keys().collect::<Vec<_>>(),
        vec!["/srv/cache/"],
        "{:?}",
        r.files
    );
    assert_eq!(
        r.files["/srv/cache/"],
        Access {
            read: true,
            write: true
        }
    );
    // Later files below it, deeper ones included, are absorbed.
    r.observe(2, &open("/srv/cache/x/y", false));
    assert_eq!(r.files.len(), 1);
    assert!(r.covers(&open("/srv/cache/new", true)));
}

#[test]
fn generated_names_fold_at_once_but_not_into_system_directories() {
    let mut r = Recording::new(wl());
    r.observe(1, &open("/tmp/tmpa1b2c3", true));
    r.observe(1, &open("/app/uploads/3f2a9c1be4d0/part", true));
    r.observe(1, &open("/proc/4711/status", false));
    let keys: Vec<&str> = r.files.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["/app/uploads/", "/proc/4711/status", "/tmp/"]);
    // Sixteen-plus files directly in /etc stay files: /etc/ is never folded.
    for i in 0..20 {
        r.observe(
            1,
            &open(&format!("/etc/conf-{}", char::from(b'a' + i)), false),
        );
    }
    assert!(!r.files.contains_key("/etc/"));
    assert_eq!(
        r.files.keys().filter(|k| k.starts_with("/etc/")).count(),
        20
    );
}

#[test]
fn peers_fold_into_their_network() {
    let mut r = Recording::new(wl());
    for i in 1..=PEER_FOLD_THRESHOLD {
        r.observe(1, &connect(&format!("192.0.2.{i}"), 443));
    }
    assert_eq!(r.peers.len(), PEER_FOLD_THRESHOLD);
    r.observe(1, &connect("192.0.2.200", 443));
    let nets: Vec<String> = r.peers.iter().map(|p| p.net.to_string()).collect();
    assert_eq!(nets, vec!["192.0.2.0/24"]);
    assert!(r.covers(&connect("192.0.2.77", 443)));
    assert!(!r.covers(&connect("192.0.2.77", 80)), "other port");
    r.observe(1, &connect("fd00::1", 53));
    assert_eq!(r.peers.len(), 2);
}

#[test]
fn caps_count_overflow_and_block_promotion() {
    let mut r = Recording::new(wl());
    for i in 0..(MAX_LISTENING + 3) {
        r.observe(
            1,
            &Observation::Listen {
                port: 1000 + i as u16,
                protocol: Protocol::Udp,
            },
        );
    }
    assert_eq!(r.listening.len(), MAX_LISTENING);
    assert_eq!(r.overflow[&Category::Listening], 3);
    let reasons = r.promotable().unwrap_err();
    assert_eq!(
        reasons,
        vec!["listening: 3 observations over the cap of 64 were not kept"]
    );
    // Files: distinct directories so nothing folds.
    let mut f = Recording::new(wl());
    for i in 0..(MAX_FILES + 5) {
        f.observe(1, &open(&format!("/srv/d{i:x}a/file"), false));
    }
    assert_eq!(f.files.len(), MAX_FILES);
    assert_eq!(f.overflow[&Category::Files], 5);
    assert!(f.promotable().is_err());
}

#[test]
fn drops_and_unrecognized_observations_block_promotion() {
    let mut r = pod_a();
    assert!(!r.lossy());
    r.add_drops(12);
    assert!(r.lossy());
    let reasons = r.promotable().unwrap_err();
    assert!(
        reasons[0].contains("lossy") && reasons[0].contains("12"),
        "{reasons:?}"
    );

    let mut u = pod_a();
    u.observe(1, &open("relative/path", false));
    u.observe(
        1,
        &Observation::Syscall {
            name: "no_such_call".into(),
        },
    );
    assert_eq!(u.overflow[&Category::Unrecognized], 2);
    let reason = &u.promotable().unwrap_err()[0];
    assert!(reason.contains("cannot be expressed"), "{reason}");
    // The refusal says what they were, and the examples survive a merge.
    assert!(
        reason.contains(r#"open "relative/path""#)
            && reason.contains(r#"system call "no_such_call""#),
        "{reason}"
    );
    let merged = pod_a().merge(&u).unwrap();
    assert_eq!(merged.unrecognized, u.unrecognized);
    for i in 0..(2 * MAX_UNRECOGNIZED) {
        u.observe(1, &open(&format!("rel/{i}"), false));
    }
    assert_eq!(u.unrecognized.len(), MAX_UNRECOGNIZED);
    assert_eq!(
        u.overflow[&Category::Unrecognized],
        2 + 2 * MAX_UNRECOGNIZED as u64
    );
}

#[test]
fn parents_past_the_cap_mean_any_parent() {
    let mut r = Recording::new(wl());
    for i in 0..=MAX_PARENTS {
        r.observe(1, &exec("/bin/sh", Some(&format!("/usr/bin/p{i}"))));
    }
    let sh = &r.executables["/bin/sh"];
    assert!(sh.any && sh.paths.is_empty());
    assert!(r.covers(&exec("/bin/sh", Some("/anything"))));
    assert!(r.promotable().is_ok(), "more permissive, nothing lost");
}

#[test]
fn merge_is_commutative_and_unions() {
    let (a, b) = (pod_a(), pod_b());
    let ab = a.merge(&b).unwrap();
    let ba = b.merge(&a).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab.observations, 14);
    assert_eq!((ab.first_seen, ab.last_seen), (Some(50), Some(107)));
    assert_eq!(ab.pods.len(), 2);
    assert!(ab.files.contains_key("/etc/nginx/mime.types"));
    assert!(ab.syscalls.contains("accept4") && ab.syscalls.contains("epoll_wait"));
    assert_eq!(ab.peers.len(), 2);
    // Associative on these inputs too.
    let mut c = Recording::new(wl());
    c.add_drops(1);
    c.observe(7, &open("/etc/nginx/conf.d/site.conf", false));
    assert_eq!(
        ab.merge(&c).unwrap(),
        a.merge(&b.merge(&c).unwrap()).unwrap()
    );
    assert!(
        ab.merge(&c).unwrap().promotable().is_err(),
        "drops carry over"
    );
}

#[test]
fn merge_folds_across_pods_and_stays_bounded() {
    let mut a = Recording::new(wl());
    let mut b = Recording::new(wl());
    for i in 0..10u8 {
        a.observe(
            1,
            &open(&format!("/srv/spool/a{}", char::from(b'a' + i)), true),
        );
        b.observe(
            1,
            &open(&format!("/srv/spool/b{}", char::from(b'a' + i)), false),
        );
    }
    assert_eq!(a.files.len(), 10);
    let ab = a.merge(&b).unwrap();
    assert_eq!(ab, b.merge(&a).unwrap());
    assert_eq!(ab.files.keys().collect::<Vec<_>>(), vec!["/srv/spool/"]);

    // Two full recordings: the merge keeps the cap, in canonical order, and counts the rest.
    let mut x = Recording::new(wl());
    let mut y = Recording::new(wl());
    for i in 0..MAX_PEERS {
        x.observe(1, &connect(&format!("10.{}.{}.1", i / 200, i % 200), 80));
        y.observe(
            1,
            &connect(&format!("10.{}.{}.2", 100 + i / 200, i % 200), 80),
        );
    }
    let xy = x.merge(&y).unwrap();
    assert_eq!(xy, y.merge(&x).unwrap());
    assert_eq!(xy.peers.len(), MAX_PEERS);
    assert_eq!(xy.overflow[&Category::Peers], MAX_PEERS as u64);
}

#[test]
fn merge_refuses_other_workloads() {
    let other = Recording::new(WorkloadId::new("shop", "backend").unwrap());
    assert!(matches!(
        pod_a().merge(&other),
        Err(RecordError::Mismatch { .. })
    ));
}

#[test]
fn canonicalize_reimposes_bounds_on_edited_recordings() {
    let mut r = pod_a();
    r.files.insert("/../etc/shadow".into(), Access::default());
    r.files.insert(
        "/etc/".into(),
        Access {
            read: true,
            write: true,
        },
    );
    r.syscalls.insert("bogus".into());
    for i in 0..(MAX_LISTENING + 1) {
        r.listening.insert(Port {
            port: 2000 + i as u16,
            protocol: Protocol::Tcp,
        });
    }
    r.canonicalize();
    assert!(!r.files.contains_key("/../etc/shadow"));
    assert!(
        !r.files.contains_key("/etc/"),
        "a folded system directory is refused"
    );
    assert!(!r.syscalls.contains("bogus"));
    assert_eq!(r.listening.len(), MAX_LISTENING);
    assert_eq!(r.overflow[&Category::Unrecognized], 3);
    assert!(r.promotable().is_err());
}

#[test]
fn workloads_from_pod_names() {
    for (pod, workload) in [
        ("web-7d9c8b6f5d-x2x9k", "web"),
        ("web-x2x9k", "web"),
        ("db-0", "db"),
        ("db-12", "db"),
        ("web-cache", "web-cache"),
        ("nginx-proxy", "nginx-proxy"),
        ("single", "single"),
        ("api-v2", "api-v2"),
        ("-0", "-0"),
    ] {
        let got = workload_name(pod);
        assert_eq!(got, workload, "{pod}");
    }
    let id = WorkloadId::from_pod("shop", "frontend-5f7b9c4d8-kq2zt").unwrap();
    assert_eq!(id.to_string(), "shop/frontend");
}

#[test]
fn merge_keeps_executables_started_from_anywhere() {
    let mut a = Recording::new(wl());
    for i in 0..=MAX_PARENTS {
        a.observe(1, &exec("/bin/sh", Some(&format!("/usr/bin/p{i}"))));
    }
    assert!(a.executables["/bin/sh"].any);
    let b = pod_b();
    let ab = a.merge(&b).unwrap();
    assert_eq!(ab, b.merge(&a).unwrap());
    assert!(ab.executables["/bin/sh"].any, "kept, still from anywhere");
    assert!(ab.executables["/usr/sbin/nginx"].runtime);
    assert!(ab.promotable().is_ok());
}

#[test]
fn unobserved_sends_block_promotion_and_survive_a_merge() {
    let mut r = pod_a();
    assert!(r.promotable().is_ok());
    // A document written before the field existed, or by a node that saw the sends: 0.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("sends_unobserved"), "{json}");
    r.sends_unobserved = 1;
    let reasons = r.promotable().unwrap_err();
    assert!(
        reasons[0].contains("connects and sends") && reasons[0].contains("not observed"),
        "{reasons:?}"
    );
    let merged = pod_b().merge(&r).unwrap();
    assert_eq!(merged.sends_unobserved, 1);
    let back: Recording = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
    assert_eq!(back.sends_unobserved, 1);
    assert!(back.promotable().is_err());
}

fn command(words: &[&str]) -> Observation {
    Observation::RuntimeCommand {
        argv: words.iter().map(|w| w.to_string()).collect(),
    }
}

#[test]
fn cri_exec_commands_are_kept_whole_and_cover_only_themselves() {
    let mut r = Recording::new(wl());
    r.observe(1, &command(&["/bin/busybox", "cat", "/data/seed"]));
    r.observe(2, &command(&["/bin/busybox", "cat", "/data/seed"]));
    assert_eq!(r.runtime_commands.as_ref().map(|c| c.len()), Some(1));
    assert!(r.covers(&command(&["/bin/busybox", "cat", "/data/seed"])));
    assert!(!r.covers(&command(&["/bin/busybox", "sh"])));
    assert!(!r.covers(&command(&[
        "/bin/busybox",
        "cat",
        "/data/seed",
        "/etc/shadow"
    ])));
    // A relative first word, or one too long, cannot be a command of a policy.
    r.observe(3, &command(&["busybox", "sh"]));
    let long = "x".repeat(MAX_COMMAND_BYTES);
    r.observe(4, &command(&["/bin/echo", long.as_str()]));
    assert!(!Recording::bounded(&command(&["/bin/echo", long.as_str()])));
    assert_eq!(r.runtime_commands.as_ref().map(|c| c.len()), Some(1));
    let why = r.promotable().unwrap_err().join("; ");
    assert!(why.contains("command \"busybox sh\""), "{why}");
}

#[test]
fn cri_exec_commands_past_the_cap_block_promotion() {
    let mut r = Recording::new(wl());
    for n in 0..=MAX_COMMANDS {
        r.observe(1, &command(&["/bin/probe", &n.to_string()]));
    }
    assert_eq!(
        r.runtime_commands.as_ref().map(|c| c.len()),
        Some(MAX_COMMANDS)
    );
    assert_eq!(r.overflow.get(&Category::RuntimeCommands), Some(&1));
    let why = r.promotable().unwrap_err().join("; ");
    assert!(
        why.contains("runtime_commands: 1 observations over the cap of 64"),
        "{why}"
    );
}

/// A document from before commands were recorded reads as `None`, and a merge with it stays
/// `None`: what it let run was never recorded, so the executable alone must decide.
#[test]
fn a_document_without_commands_keeps_none_through_merges() {
    let mut old = pod_a();
    old.runtime_commands = None;
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("runtime_commands").is_none());
    let read: Recording = serde_json::from_value(json).unwrap();
    assert_eq!(read.runtime_commands, None);
    assert!(read.covers(&command(&["/bin/anything"])));
    let mut new = pod_b();
    new.observe(5, &command(&["/bin/busybox", "true"]));
    assert_eq!(read.merge(&new).unwrap().runtime_commands, None);
    assert_eq!(new.merge(&read).unwrap().runtime_commands, None);
    // Two recordings that hold commands unite them.
    let mut other = pod_a();
    other.observe(6, &command(&["/bin/busybox", "false"]));
    let merged = new.merge(&other).unwrap();
    assert_eq!(merged.runtime_commands.as_ref().map(|c| c.len()), Some(2));
    assert_eq!(merged, other.merge(&new).unwrap());
}

#[test]
fn commands_are_quoted_as_a_shell_reads_them() {
    let argv = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        crate::quoted_command(&argv(&["/bin/busybox", "sh", "-c", "true"])),
        "/bin/busybox sh -c true"
    );
    assert_eq!(
        crate::quoted_command(&argv(&["/bin/sh", "-c", "echo it's", ""])),
        "/bin/sh -c 'echo it'\\''s' ''"
    );
}
