//! Tests of the learned-profile documents: round trip, atomic replacement, and every kind of
//! unusable file.

use super::*;
use crate::record::Observation;

fn wl() -> WorkloadId {
    WorkloadId::new("shop", "frontend").unwrap()
}

fn doc(stage: Stage) -> Document {
    let mut rec = Recording::new(wl());
    rec.add_pod("frontend-a");
    rec.observe(
        10,
        &Observation::Open {
            path: "/etc/app.conf".into(),
            write: false,
        },
    );
    rec.observe(
        11,
        &Observation::Syscall {
            name: "accept4".into(),
        },
    );
    let mut state = StageState::new(5);
    state.stage = stage;
    Document::new(rec, state)
}

#[test]
fn round_trip_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load(dir.path(), &wl()), Loaded::Absent));
    let d = doc(Stage::Audit);
    let path = save(dir.path(), &d).unwrap();
    assert_eq!(path, dir.path().join("shop_frontend.learned.json"));
    let Loaded::Present(back) = load(dir.path(), &wl()) else {
        panic!("not loaded");
    };
    assert_eq!(*back, d);

    let mut d2 = d.clone();
    d2.recording.observe(
        12,
        &Observation::Syscall {
            name: "sendto".into(),
        },
    );
    save(dir.path(), &d2).unwrap();
    let Loaded::Present(back) = load(dir.path(), &wl()) else {
        panic!("not loaded");
    };
    assert_eq!(*back, d2);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["shop_frontend.learned.json"],
        "no temporary file left"
    );
}

#[test]
fn a_planted_temporary_file_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir
        .path()
        .join(format!(".shop_frontend.{}.0.tmp", std::process::id()));
    fs::write(&planted, "planted").unwrap();
    save(dir.path(), &doc(Stage::Learn)).unwrap();
    assert_eq!(fs::read_to_string(&planted).unwrap(), "planted");
    assert!(matches!(load(dir.path(), &wl()), Loaded::Present(_)));
}

fn unusable(dir: &Path, text: &[u8]) -> PersistError {
    fs::write(path_in(dir, &wl()), text).unwrap();
    match load(dir, &wl()) {
        Loaded::Unusable(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_documents_are_unusable_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_string(&doc(Stage::Enforce)).unwrap();

    let e = unusable(dir.path(), b"{\"version\":1,\"recording\":");
    assert!(matches!(e, PersistError::Parse { .. }), "{e}");
    assert!(e.to_string().starts_with("learned profile "), "{e}");

    let e = unusable(
        dir.path(),
        good.replace("\"version\":1", "\"version\":2").as_bytes(),
    );
    assert!(
        matches!(e, PersistError::Version { found: Some(2), .. }),
        "{e}"
    );
    let e = unusable(dir.path(), b"[]");
    assert!(
        matches!(e, PersistError::Version { found: None, .. }),
        "{e}"
    );

    let other = good.replace("\"name\":\"frontend\"", "\"name\":\"backend\"");
    let e = unusable(dir.path(), other.as_bytes());
    assert!(matches!(e, PersistError::Workload { .. }), "{e}");

    let edited = good.replace("\"drops\":0", "\"drops\":3");
    let e = unusable(dir.path(), edited.as_bytes());
    assert!(
        matches!(
            e,
            PersistError::Stage {
                stage: Stage::Enforce,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("lossy"), "{e}");

    let mut empty = doc(Stage::Enforce);
    empty.recording = Recording::new(wl());
    let e = unusable(
        dir.path(),
        serde_json::to_string(&empty).unwrap().as_bytes(),
    );
    assert!(e.to_string().contains("empty"), "{e}");

    let huge = vec![b' '; MAX_DOCUMENT_BYTES as usize + 1];
    let e = unusable(dir.path(), &huge);
    assert!(matches!(e, PersistError::TooLarge { .. }), "{e}");
}

#[test]
fn loading_reimposes_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = doc(Stage::Learn);
    d.recording.syscalls.insert("not_a_syscall".into());
    d.stage.recent_restarts = (0..(MAX_RECENT as u64 + 10)).rev().collect();
    fs::write(path_in(dir.path(), &wl()), serde_json::to_vec(&d).unwrap()).unwrap();
    let Loaded::Present(back) = load(dir.path(), &wl()) else {
        panic!("learn-stage documents with overflow still load");
    };
    assert!(!back.recording.syscalls.contains("not_a_syscall"));
    assert!(back.recording.promotable().is_err());
    assert_eq!(back.stage.recent_restarts.len(), MAX_RECENT);
    assert_eq!(back.stage.recent_restarts[0], 10, "the oldest go");
}

#[test]
fn the_worst_case_document_fits_the_size_limit() {
    use crate::fold::MAX_PATH_BYTES;
    use crate::record::{
        Access, Category, Parents, Peer, Port, MAX_EXECUTABLES, MAX_FILES, MAX_LISTENING,
        MAX_PARENTS, MAX_PEERS, MAX_PODS, MAX_POD_NAME,
    };
    use crate::stage::Departure;
    use palisade_policy::{Capability, Protocol};

    // Every category full, every path and name at its longest.
    let path = |i: usize| {
        let head = format!("/{i:08}/");
        format!("{head}{}", "p".repeat(MAX_PATH_BYTES - head.len()))
    };
    let mut rec = Recording::new(wl());
    rec.pods = (0..MAX_PODS)
        .map(|i| format!("{i:04}{}", "x".repeat(MAX_POD_NAME - 4)))
        .collect();
    for i in 0..MAX_EXECUTABLES {
        rec.executables.insert(
            path(i),
            Parents {
                runtime: true,
                paths: (0..MAX_PARENTS).map(|j| path(100_000 + j)).collect(),
                any: false,
            },
        );
        rec.sockets.insert(
            path(i),
            [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Raw].into(),
        );
    }
    for i in 0..MAX_FILES {
        rec.files.insert(
            path(i),
            Access {
                read: true,
                write: true,
            },
        );
    }
    for i in 0..MAX_LISTENING {
        rec.listening.insert(Port {
            port: i as u16,
            protocol: Protocol::Tcp,
        });
    }
    for i in 0..MAX_PEERS {
        let net = crate::fold::Cidr::host(format!("fd00::{i:x}:ffff:ffff").parse().unwrap());
        rec.peers.insert(Peer {
            net,
            port: 65535,
            protocol: Protocol::Udp,
        });
    }
    rec.capabilities = Capability::all().collect();
    rec.syscalls = SYSCALL_TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    assert!(rec.syscalls.len() > 300);
    rec.overflow = [
        (Category::Files, u64::MAX),
        (Category::Unrecognized, u64::MAX),
    ]
    .into();
    let mut stage = StageState::new(u64::MAX);
    stage.departures = (0..MAX_DEPARTURES)
        .map(|i| Departure {
            at: u64::MAX,
            pod: "p".repeat(MAX_POD_NAME),
            refused: true,
            observation: Observation::Exec {
                path: path(i),
                parent: Some(path(i + 1)),
            },
        })
        .collect();
    stage.recent_departures = vec![u64::MAX; MAX_RECENT];
    stage.recent_restarts = vec![u64::MAX; MAX_RECENT];
    stage.refusal = Some("r".repeat(4096));
    let size = serde_json::to_vec(&Document::new(rec, stage))
        .unwrap()
        .len();
    // About 6.5 MB (the figure docs/profiles.md gives), under the 8 MiB limit.
    assert!(
        (size as u64) < MAX_DOCUMENT_BYTES,
        "{size} bytes, limit {MAX_DOCUMENT_BYTES}"
    );
}

/// palisade-policy's whole system-call table: every name a recording can hold.
const SYSCALL_TABLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../policy/src/data/syscalls.txt"
));

#[test]
fn update_merges_and_sets_unusable_documents_aside() {
    let dir = tempfile::tempdir().unwrap();
    let pod = |name: &str, call: &str| {
        let mut r = Recording::new(wl());
        r.add_pod(name);
        r.observe(20, &Observation::Syscall { name: call.into() });
        r
    };
    let merge = |r: Recording| move |d: &mut Document| d.recording = d.recording.merge(&r).unwrap();
    let u = update(dir.path(), &wl(), 7, merge(pod("a", "read"))).unwrap();
    assert!(u.replaced_unusable.is_none());
    assert_eq!(u.document.stage.since, 7, "a new workload learns from now");
    let u = update(dir.path(), &wl(), 8, merge(pod("b", "write"))).unwrap();
    assert_eq!(u.document.recording.pods.len(), 2);
    assert_eq!(u.document.recording.observations, 2);
    assert_eq!(u.document.stage.since, 7, "the stage is kept");

    fs::write(&u.path, b"{\"version\":1,").unwrap();
    let u = update(dir.path(), &wl(), 9, merge(pod("c", "read"))).unwrap();
    assert!(matches!(
        u.replaced_unusable,
        Some(PersistError::Parse { .. })
    ));
    assert_eq!(u.document.recording.observations, 1, "started again");
    assert_eq!(u.document.stage.stage, Stage::Learn);
    let aside = dir.path().join("shop_frontend.learned.json.unusable");
    assert_eq!(
        fs::read(&aside).unwrap(),
        b"{\"version\":1,",
        "kept for the operator"
    );
}
