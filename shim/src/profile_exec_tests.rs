use super::*;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};

use palisade_profile::Recording;
use serde_json::json;

use crate::profile_stage::Applied;
use crate::report::{Observer, SinkContext};
use crate::test_support::{cri_in, recording_of};

/// What a web service did while it learned: the runtime started `nc` (its entrypoint) and
/// `busybox` (an exec probe); `nc` started `sh` (its handler's interpreter).
fn recording() -> Recording {
    let exec = |path: &str, parent: Option<&str>| Observation::Exec {
        path: path.into(),
        parent: parent.map(str::to_string),
    };
    recording_of(&[
        exec("/bin/nc", None),
        exec("/bin/busybox", None),
        exec("/bin/sh", Some("/bin/nc")),
    ])
}

/// A container root like busybox's image: `sh` and `nc` are symlinks to busybox (one
/// relative, one absolute), a binary the service never ran, a file without an execute bit.
fn rootfs() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "usr/bin", "etc"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let exe = |p: &str, mode: u32| {
        std::fs::write(r.join(p), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    exe("bin/busybox", 0o755);
    exe("usr/bin/probe", 0o755);
    exe("usr/bin/readme", 0o644);
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    // Absolute: resolved inside the root, never the host's /bin/busybox.
    std::os::unix::fs::symlink("/bin/busybox", r.join("bin/nc")).unwrap();
    root
}

type Seen = Arc<Mutex<Vec<Event>>>;

/// The check of shop/web's container c1 in `mode`, with the events it reports.
fn guard(mode: Mode) -> (ExecGuard, Seen) {
    let seen: Seen = Arc::default();
    let into = seen.clone();
    let reporter = Reporter::start_with(
        crate::report::EventSettings {
            log_dir: std::path::PathBuf::from("/proc/palisade-no-such-dir"),
            metrics_dir: None,
            ..Default::default()
        },
        SinkContext {
            observer: Some(Observer::new(move |e: &Event| {
                into.lock().unwrap().push(e.clone())
            })),
            ..Default::default()
        },
    );
    let applied = Applied {
        workload: crate::test_support::workload(),
        stage: if mode == Mode::Enforce {
            Stage::Enforce
        } else {
            Stage::Audit
        },
        mode,
        policies: Vec::new(),
        recording: recording(),
        notes: Vec::new(),
        events: Vec::new(),
    };
    let cri = cri_in("c1", "web-1", "sb1", true);
    (
        ExecGuard::new(&cri, &applied, reporter, "node-a".into()),
        seen,
    )
}

/// Checks an exec of `args` with `env` in `root`: the result and the departure handed on.
fn check(
    g: &ExecGuard,
    root: &Path,
    args: &[&str],
    env: &[&str],
) -> (Result<(), ProfileExecError>, Option<Observation>) {
    let mut departed = None;
    let process = json!({"args": args, "env": env, "cwd": "/"});
    let r = g
        .check("e1", &process, root, |o| departed = Some(o))
        .map_err(|e| *e);
    (r, departed)
}

#[test]
fn names_resolve_as_the_runtime_resolves_them() {
    let root = rootfs();
    let mut probe = |p: &str| probe_in_root(root.path(), p);
    let path = |p: &str| Ok::<_, std::io::Error>(Resolved::Path(p.into()));
    // A bare name through PATH, the symlink's own name kept (not busybox).
    assert_eq!(
        resolve("sh", "/", None, &mut probe).unwrap(),
        path("/bin/sh").unwrap()
    );
    assert_eq!(
        resolve("nc", "/", Some("/usr/bin:/bin"), &mut probe).unwrap(),
        path("/bin/nc").unwrap()
    );
    // The first PATH directory with an executable regular file wins; a file without an
    // execute bit is skipped, a name found nowhere runs nothing.
    assert_eq!(
        resolve("probe", "/", Some("/bin:/usr/bin"), &mut probe).unwrap(),
        path("/usr/bin/probe").unwrap()
    );
    assert!(matches!(
        resolve("readme", "/", Some("/usr/bin"), &mut probe).unwrap(),
        Resolved::NotRunnable { name, path } if name == "readme" && path == "/usr/bin"
    ));
    assert!(matches!(
        resolve("nosuch", "/", None, &mut probe).unwrap(),
        Resolved::NotRunnable { path, .. } if path == DEFAULT_PATH
    ));
    assert!(matches!(
        resolve("", "/", None, &mut probe).unwrap(),
        Resolved::NotRunnable { .. }
    ));
    // A name with a slash is not searched, and is made absolute against the working
    // directory; an empty PATH entry is the working directory.
    assert_eq!(
        resolve("./sh", "/bin", Some("/nowhere"), &mut probe).unwrap(),
        path("/bin/sh").unwrap()
    );
    assert_eq!(
        resolve("/usr/../bin/nc", "/", None, &mut probe).unwrap(),
        path("/bin/nc").unwrap()
    );
    assert_eq!(
        resolve("busybox", "/bin", Some("/nowhere:"), &mut probe).unwrap(),
        path("/bin/busybox").unwrap()
    );
    // A lookup error is no "not found": the caller fails closed under enforce.
    let mut failing = |_: &str| Err(std::io::Error::from_raw_os_error(libc::EIO));
    assert!(resolve("sh", "/", None, &mut failing).is_err());
}

#[test]
fn enforced_an_exec_the_runtime_never_started_is_refused_and_reported() {
    let root = rootfs();
    let (g, seen) = guard(Mode::Enforce);
    // The entrypoint and the exec probe the runtime started while learning stay allowed,
    // by their names.
    assert!(check(&g, root.path(), &["nc", "-h"], &[]).0.is_ok());
    assert!(
        check(&g, root.path(), &["busybox", "sh", "-c", "true"], &[])
            .0
            .is_ok()
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "allowed execs are not reported"
    );
    // sh is busybox too, but the runtime never started it: only nc did.
    let (r, departed) = check(&g, root.path(), &["sh", "-c", "true"], &["PATH=/bin"]);
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("container c1: exec e1 refused: /bin/sh was never started by the runtime while shop/web learned"),
        "{text}"
    );
    assert!(text.contains("palisade profile accept shop/web"), "{text}");
    assert!(
        text.contains("palisade profile pin shop/web audit"),
        "{text}"
    );
    assert_eq!(
        departed,
        Some(Observation::Exec {
            path: "/bin/sh".into(),
            parent: None
        })
    );
    // A binary the service never ran at all.
    let (r, departed) = check(&g, root.path(), &["/usr/bin/probe", "getpid"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NeverStarted { binary, .. }) if binary == "/usr/bin/probe")
    );
    assert!(departed.is_some());
    // A name that runs nothing is refused too, with no departure to accept.
    let (r, departed) = check(&g, root.path(), &["nosuch"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NotRunnable { .. })),
        "{r:?}"
    );
    assert_eq!(departed, None);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let shell = &seen[0];
    assert_eq!(shell.rule.name, RULE);
    assert_eq!(shell.enforcer, ENFORCER);
    assert_eq!(shell.action, Action::Block);
    assert_eq!(shell.workload.pod, "web-1");
    assert_eq!(shell.evidence["path"], "/bin/sh");
    assert_eq!(shell.evidence["policy"], "palisade-learned-web");
    assert_eq!(shell.evidence["workload"], "shop/web");
    assert_eq!(
        shell.process.as_ref().map(|p| p.args.clone()),
        Some(vec!["sh".to_string(), "-c".into(), "true".into()])
    );
    assert!(
        shell
            .rule
            .message
            .contains("exec of /bin/sh by the runtime (a CRI exec) refused"),
        "{}",
        shell.rule.message
    );
}

#[test]
fn in_audit_it_runs_and_is_reported() {
    let root = rootfs();
    let (g, seen) = guard(Mode::Audit);
    let (r, departed) = check(&g, root.path(), &["sh"], &[]);
    assert!(r.is_ok());
    // The monitor records the departure when it runs: not here, not twice.
    assert_eq!(departed, None);
    let (r, _) = check(&g, root.path(), &["nosuch"], &[]);
    assert!(r.is_ok(), "nothing runs: nothing to report");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].action, Action::Audit);
    assert_eq!(seen[0].enforcer, ENFORCER);
    assert_eq!(seen[0].evidence["refused"], false);
}

#[test]
fn a_lookup_that_fails_refuses_under_enforce_only() {
    let (enforced, _) = guard(Mode::Enforce);
    let (audited, _) = guard(Mode::Audit);
    let failed = || Err(std::io::Error::from_raw_os_error(libc::EIO));
    assert!(matches!(
        enforced.verdict(&failed()),
        Verdict::Refuse {
            departure: None,
            ..
        }
    ));
    assert_eq!(audited.verdict(&failed()), Verdict::Allow);
    // A root that is not there (the container's process gone) is such a failure.
    let (r, _) = check(
        &enforced,
        Path::new("/proc/palisade-no-such-root"),
        &["sh"],
        &[],
    );
    assert!(matches!(r, Err(ProfileExecError::Lookup { .. })), "{r:?}");
}

#[test]
fn the_applied_event_says_what_enforces_it() {
    let (g, _) = guard(Mode::Enforce);
    assert_eq!(
        g.describe(),
        "; CRI execs of executables the runtime did not start while learning refused (shim-exec: 2 allowed)"
    );
    let record = g.record();
    assert_eq!(record["enforcer"], ENFORCER);
    assert_eq!(record["action"], "Block");
    assert_eq!(record["rule"], "shop/palisade-learned-web: CRI execs");
    let (g, _) = guard(Mode::Audit);
    assert!(g.describe().contains("reported (shim-exec"));
    assert_eq!(g.record()["action"], "Audit");
}
