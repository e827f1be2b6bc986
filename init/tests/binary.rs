//! Runs the built palisade-init as a subprocess against the real kernel: landlock
//! filesystem, network and signal rules, the capability cut, argv/env passing, failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-init");

const READ_EXEC: [&str; 3] = ["execute", "read_file", "read_dir"];
const READ_WRITE: [&str; 8] = [
    "read_file",
    "read_dir",
    "write_file",
    "make_reg",
    "make_dir",
    "remove_file",
    "remove_dir",
    "truncate",
];

/// A landlock plan that lets a shell run (system dirs readable and executable, /etc and
/// /proc readable, /dev/null usable) and gives read-write on `rw` only.
fn plan_with(rw: &Path, extra: Value) -> Value {
    let mut fs = vec![];
    for p in ["/usr", "/lib", "/lib64", "/bin", "/sbin"] {
        fs.push(json!({"path": p, "access": READ_EXEC, "optional": true}));
    }
    for p in ["/etc", "/proc"] {
        fs.push(json!({"path": p, "access": ["read_file", "read_dir"]}));
    }
    fs.push(json!({"path": "/dev/null", "access": ["read_file", "write_file"]}));
    fs.push(json!({"path": rw, "access": READ_WRITE}));
    let mut landlock = json!({"required_abi": 1, "fs": fs});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            landlock[k] = v;
        }
    }
    json!({"version": 1, "no_new_privs": true, "landlock": landlock})
}

/// Writes `plan` beside nothing else and runs `palisade-init --plan <it> -- argv...`.
fn run(plan: &Value, argv: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, serde_json::to_vec(plan).unwrap()).unwrap();
    run_raw(&["--plan", path.to_str().unwrap(), "--"], argv, |_| {})
}

fn run_raw(pre: &[&str], argv: &[&str], tweak: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(pre).args(argv).stdin(Stdio::null());
    tweak(&mut cmd);
    cmd.output().expect("spawn palisade-init")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// palisade-init failed by itself: its code, one line on stderr with its prefix.
fn assert_init_failure(out: &Output, code: i32, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("palisade-init: "), "{err:?}");
    assert!(err.contains(message), "{err:?} should contain {message:?}");
    assert!(
        out.stdout.is_empty(),
        "entrypoint must not run: {}",
        stdout(out)
    );
}

fn sh(plan: &Value, script: &str) -> Output {
    run(plan, &["/bin/sh", "-c", script])
}

#[test]
fn write_inside_the_allowed_dir_works_and_outside_is_denied() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let plan = plan_with(allowed.path(), json!({}));

    let inside = allowed.path().join("inside");
    let out = sh(
        &plan,
        &format!("echo hello > {} && cat {0}", inside.display()),
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "hello\n");

    let outside = other.path().join("outside");
    let out = sh(&plan, &format!("echo hello > {}", outside.display()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(
        !outside.exists(),
        "the denied write must not create the file"
    );

    // Reading elsewhere is denied too: only listed paths are readable.
    std::fs::write(other.path().join("secret"), "s").unwrap();
    let out = sh(&plan, &format!("cat {}/secret", other.path().display()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_outside_the_execute_paths_is_denied() {
    let allowed = tempfile::tempdir().unwrap();
    let copy = allowed.path().join("true");
    std::fs::copy("/usr/bin/true", &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = copy.to_str().unwrap();

    // Without landlock the copy runs: the denial below is landlock's doing.
    let bare = json!({"version": 1, "no_new_privs": true});
    let out = sh(&bare, &format!("{copy} && echo ran"));
    assert_eq!(stdout(&out), "ran\n", "stderr: {}", stderr(&out));

    let plan = plan_with(allowed.path(), json!({}));
    let out = sh(&plan, &format!("{copy} && echo ran"));
    assert_eq!(out.status.code(), Some(126), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    // As the entrypoint itself, the refusal is palisade-init's 126.
    let out = run(&plan, &[copy]);
    assert_init_failure(&out, 126, &format!("exec {copy}: permission denied"));
}

/// The rights the palisade-strict ruleset handles, every kind of write landlock knows (the
/// sandbox's enforce tests pin its set to this list).
const STRICT_HANDLED: [&str; 12] = [
    "write_file",
    "remove_dir",
    "remove_file",
    "make_char",
    "make_dir",
    "make_reg",
    "make_sock",
    "make_fifo",
    "make_block",
    "make_sym",
    "refer",
    "truncate",
];

/// Each kind of write, as a shell script over `{o}` (a directory holding the file `f` and the
/// empty directory `e`) and `{a}` (an empty directory in the writable dir).
const WRITE_KINDS: [(&str, &str); 16] = [
    ("append", "echo x >> {o}/f"),
    ("truncating open for writing", ": > {o}/f"),
    (
        "truncate(2)",
        "perl -e 'truncate($ARGV[0], 0) or die \"$!\\n\"' {o}/f",
    ),
    (
        "O_RDONLY|O_TRUNC open",
        "perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_RDONLY|O_TRUNC) or die \"$!\\n\"' {o}/f",
    ),
    ("create a file", "touch {o}/new"),
    ("mkdir", "mkdir {o}/d"),
    ("remove a file", "rm {o}/f"),
    ("remove a directory", "rmdir {o}/e"),
    ("rename in place", "mv {o}/f {o}/g"),
    ("rename into the writable dir", "mv {o}/f {a}/f"),
    ("hard link into the writable dir", "ln {o}/f {a}/f"),
    ("symlink", "ln -s f {o}/s"),
    ("fifo", "mkfifo {o}/p"),
    ("char device", "mknod {o}/c c 1 3"),
    ("block device", "mknod {o}/b b 7 0"),
    (
        "unix socket",
        "perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type => SOCK_STREAM(), \
         Local => $ARGV[0], Listen => 1) or die \"$!\\n\"' {o}/sock",
    ),
];

/// A fresh `{o}` under `parent`: the file `f` ("keep") and the empty directory `e`.
fn write_fixture(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "keep").unwrap();
    std::fs::create_dir(dir.join("e")).unwrap();
    dir
}

/// What a fixture holds: names and the content of `f`.
fn fixture_state(dir: &Path) -> (Vec<String>, Option<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (names, std::fs::read_to_string(dir.join("f")).ok())
}

#[test]
fn strict_rights_refuse_every_kind_of_write_outside_the_writable_dir() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let plan = json!({"version": 1, "no_new_privs": true, "landlock": {
        "required_abi": 3,
        "handled_fs": STRICT_HANDLED,
        "fs": [{"path": allowed.path(), "access": STRICT_HANDLED}],
    }});
    for (i, (kind, script)) in WRITE_KINDS.iter().enumerate() {
        let target = allowed.path().join(format!("a{i}"));
        std::fs::create_dir(&target).unwrap();
        let fill = |o: &Path| {
            script
                .replace("{o}", o.to_str().unwrap())
                .replace("{a}", target.to_str().unwrap())
        };

        // Inside the writable dir the same script works: the refusal below is landlock's.
        let inside = write_fixture(allowed.path(), &format!("in{i}"));
        let out = sh(&plan, &fill(&inside));
        assert!(
            out.status.success(),
            "{kind} inside the writable dir: {}",
            stderr(&out)
        );
        let untouched = (strings(&["e", "f"]), Some("keep".to_owned()));
        assert!(
            fixture_state(&inside) != untouched || !fixture_state(&target).0.is_empty(),
            "{kind} inside the writable dir changed nothing"
        );
        std::fs::remove_dir_all(&target).unwrap();
        std::fs::create_dir(&target).unwrap();

        let outside = write_fixture(other.path(), &format!("out{i}"));
        let out = sh(&plan, &fill(&outside));
        let err = stderr(&out);
        assert!(!out.status.success(), "{kind} outside must be refused");
        assert!(
            err.contains("Permission denied") || err.contains("cross-device"),
            "{kind}: {err}"
        );
        assert_eq!(
            fixture_state(&outside),
            untouched,
            "{kind} outside changed the fixture"
        );
        assert_eq!(fixture_state(&target).0, Vec::<String>::new(), "{kind}");
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_connect_is_limited_to_listed_ports() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let denied_port = denied.local_addr().unwrap().port();
    let plan = plan_with(
        dir.path(),
        json!({"required_abi": 4, "net": {"connect_tcp": [allowed_port]}}),
    );

    let connect = |port: u16| format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let out = run(&plan, &["/bin/bash", "-c", &connect(allowed_port)]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "connected\n");
    allowed.set_nonblocking(true).unwrap();
    assert!(
        allowed.accept().is_ok(),
        "the allowed connection reached the listener"
    );

    let out = run(&plan, &["/bin/bash", "-c", &connect(denied_port)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    denied.set_nonblocking(true).unwrap();
    assert!(
        denied.accept().is_err(),
        "nothing may reach the denied listener"
    );
}

#[test]
fn tcp_bind_is_limited_to_listed_ports() {
    let dir = tempfile::tempdir().unwrap();
    let allowed_port = free_port();
    let denied_port = free_port();
    let plan = plan_with(
        dir.path(),
        json!({"required_abi": 4, "net": {"bind_tcp": [allowed_port]}}),
    );

    let out = run(
        &plan,
        &[
            "/usr/bin/busybox",
            "nc",
            "-l",
            "-p",
            &denied_port.to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    let mut child = Command::new(BIN)
        .args(["--plan"])
        .arg({
            let p = dir.path().join("plan.json");
            std::fs::write(&p, serde_json::to_vec(&plan).unwrap()).unwrap();
            p
        })
        .args([
            "--",
            "/usr/bin/busybox",
            "nc",
            "-l",
            "-p",
            &allowed_port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let connected = loop {
        if TcpStream::connect(("127.0.0.1", allowed_port)).is_ok() {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        connected,
        "listener on the allowed port never came up ({status}): {err}"
    );
}

#[test]
fn signals_outside_the_domain_are_denied_when_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let mut outsider = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = outsider.id();

    let scoped = plan_with(
        dir.path(),
        json!({"required_abi": 6, "scope": {"signal": true}}),
    );
    let out = sh(&scoped, &format!("kill -0 {pid}"));
    let denied = (out.status.code(), stderr(&out));

    // Inside the domain signals still work.
    let inner = sh(&scoped, "sleep 30 & kill $!; wait $!; echo status=$?");

    let unscoped = plan_with(dir.path(), json!({}));
    let control = sh(&unscoped, &format!("kill -0 {pid} && echo alive"));

    outsider.kill().unwrap();
    outsider.wait().unwrap();

    assert_ne!(denied.0, Some(0));
    assert!(denied.1.contains("Operation not permitted"), "{}", denied.1);
    assert_eq!(stdout(&inner), "status=143\n", "stderr: {}", stderr(&inner));
    assert_eq!(stdout(&control), "alive\n", "stderr: {}", stderr(&control));
}

#[test]
fn abstract_unix_sockets_outside_the_domain_are_denied_when_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("palisade-init-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = UnixListener::bind_addr(&addr).unwrap();
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\0{name}'); print('connected')"
    );

    let scoped = plan_with(
        dir.path(),
        json!({"required_abi": 6, "scope": {"abstract_unix_socket": true}}),
    );
    let out = run(&scoped, &["/usr/bin/python3", "-c", &script]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("PermissionError"), "{}", stderr(&out));

    let unscoped = plan_with(dir.path(), json!({}));
    let out = run(&unscoped, &["/usr/bin/python3", "-c", &script]);
    assert_eq!(stdout(&out), "connected\n", "stderr: {}", stderr(&out));
}

#[test]
fn argv_and_env_reach_the_entrypoint_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_with(dir.path(), json!({}));
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let pre = ["--plan", plan_path.to_str().unwrap(), "--"];

    let out = run_raw(
        &pre,
        &[
            "/bin/sh",
            "-c",
            "printf '[%s]' \"$0\" \"$@\"",
            "zero",
            "a b",
            "",
            "  c  ",
            "--plan",
            "--",
        ],
        |_| {},
    );
    assert_eq!(
        stdout(&out),
        "[zero][a b][][  c  ][--plan][--]",
        "stderr: {}",
        stderr(&out)
    );

    // A bare name is found through the PATH of the process environment, and the
    // environment arrives exactly as it would with no palisade-init in front.
    let set_env = |c: &mut Command| {
        c.env_clear()
            .env("PATH", "/nonexistent:/usr/bin")
            .env("PALISADE_TEST", "two words = x")
            .env("EMPTY", "");
    };
    let out = run_raw(&pre, &["env"], set_env);
    let mut direct = Command::new("/usr/bin/env");
    set_env(&mut direct);
    let direct = stdout(&direct.output().unwrap());
    assert_eq!(stdout(&out), direct, "stderr: {}", stderr(&out));
    let mut lines: Vec<&str> = direct.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "EMPTY=",
            "PALISADE_TEST=two words = x",
            "PATH=/nonexistent:/usr/bin"
        ]
    );

    // Without PATH the standard one is searched.
    let out = run_raw(&pre, &["env"], |c| {
        c.env_clear().env("ONLY", "1");
    });
    assert_eq!(stdout(&out), "ONLY=1\n", "stderr: {}", stderr(&out));
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{field} missing from {status}"))
}

#[test]
fn capability_sets_are_cut_and_no_new_privs_set() {
    let plan = json!({
        "version": 1,
        "no_new_privs": true,
        "capabilities": {"bounding_keep": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]}
    });
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    // setpriv gives palisade-init inheritable and ambient capabilities that would come
    // back after exec if only the bounding set were cut.
    let out = Command::new("/usr/bin/setpriv")
        .args([
            "--inh-caps",
            "+chown,+sys_admin,+net_raw",
            "--ambient-caps",
            "+sys_admin,+net_raw",
        ])
        .arg(BIN)
        .arg("--plan")
        .arg(&plan_path)
        .args(["--", "/bin/cat", "/proc/self/status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let status = stdout(&out);
    let chown_kill_net_raw = (1u64 << 0) | (1 << 5) | (1 << 13);
    assert_eq!(
        status_field(&status, "CapBnd:"),
        format!("{chown_kill_net_raw:016x}")
    );
    assert_eq!(
        status_field(&status, "CapInh:"),
        format!("{:016x}", 1u64 | (1 << 13))
    );
    assert_eq!(
        status_field(&status, "CapAmb:"),
        format!("{:016x}", 1u64 << 13)
    );
    assert_eq!(
        u64::from_str_radix(&status_field(&status, "CapEff:"), 16).unwrap() & !chown_kill_net_raw,
        0,
        "nothing outside the kept set survives exec: {status}"
    );
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");

    let plan = json!({"version": 1, "no_new_privs": false});
    let out = run(&plan, &["/bin/cat", "/proc/self/status"]);
    assert_eq!(status_field(&stdout(&out), "NoNewPrivs:"), "0");
}

#[test]
fn failures_have_their_exit_code_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let argv = ["/bin/sh", "-c", touch.as_str()];

    let missing = dir.path().join("missing.json");
    let out = run_raw(&["--plan", missing.to_str().unwrap(), "--"], &argv, |_| {});
    assert_init_failure(
        &out,
        121,
        &format!("plan {}: no such file or directory", missing.display()),
    );

    let malformed = dir.path().join("malformed.json");
    std::fs::write(&malformed, "{\"version\": 1, \"no_new_privs\": tru").unwrap();
    let out = run_raw(
        &["--plan", malformed.to_str().unwrap(), "--"],
        &argv,
        |_| {},
    );
    assert_init_failure(
        &out,
        121,
        &format!("plan {}: EOF while parsing", malformed.display()),
    );

    let out = run(
        &json!({"version": 1, "no_new_privs": true, "extra": 1}),
        &argv,
    );
    assert_init_failure(&out, 121, "unknown field `extra`");

    let out = run(
        &json!({"version": 1, "no_new_privs": true, "landlock": {"required_abi": 99}}),
        &argv,
    );
    assert_init_failure(&out, 122, "is lower than required abi 99");

    let plan = plan_with(
        dir.path(),
        json!({"fs": [{"path": "/nonexistent-palisade", "access": ["read_file"]}]}),
    );
    let out = run(&plan, &argv);
    assert_init_failure(
        &out,
        123,
        "landlock: /nonexistent-palisade: no such file or directory",
    );

    let out = run(
        &json!({"version": 1, "no_new_privs": true, "capabilities": {"bounding_keep": ["CAP_FLY"]}}),
        &argv,
    );
    assert_init_failure(
        &out,
        121,
        "capabilities.bounding_keep[0]: unknown capability \"CAP_FLY\"",
    );

    let plan = json!({"version": 1, "no_new_privs": true});
    for (entrypoint, message) in [
        (
            "/nonexistent/entrypoint",
            "exec /nonexistent/entrypoint: no such file or directory",
        ),
        (
            "no-such-command-palisade",
            "exec no-such-command-palisade: not found in PATH",
        ),
    ] {
        assert_init_failure(&run(&plan, &[entrypoint]), 127, message);
    }

    let out = run_raw(&["--plan"], &[], |_| {});
    assert_init_failure(&out, 120, "usage: --plan needs a file");
    let out = run_raw(&["/bin/true"], &[], |_| {});
    assert_init_failure(&out, 120, "usage: unexpected argument \"/bin/true\"");

    assert!(!marker.exists(), "no failing run may start the entrypoint");

    // An optional path that is missing is skipped and the entrypoint runs.
    let plan = plan_with(
        dir.path(),
        json!({"fs": [
            {"path": "/nonexistent-palisade", "access": ["read_file"], "optional": true},
            {"path": "/usr", "access": ["read_file", "read_dir", "execute"]},
            {"path": "/lib", "access": ["read_file", "read_dir", "execute"]},
            {"path": dir.path(), "access": ["read_dir", "make_reg", "write_file"]}
        ]}),
    );
    let out = run(&plan, &argv);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(marker.exists());
}

/// A plan file and its directory readable by any user, for runs under another uid.
fn world_readable_plan(dir: &Path, plan: &Value) -> std::path::PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(&path, serde_json::to_vec(plan).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn capability_cut_without_setpcap_fails_closed_unless_already_done() {
    let dir = tempfile::tempdir().unwrap();
    let plan = json!({
        "version": 1,
        "no_new_privs": true,
        "capabilities": {"bounding_keep": ["CAP_KILL"]}
    });
    let plan_path = world_readable_plan(dir.path(), &plan);
    let nobody = |bounding: &str| {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args(["--bounding-set", bounding])
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(BIN)
            .arg("--plan")
            .arg(&plan_path)
            .args(["--", "/bin/cat", "/proc/self/status"])
            .stdin(Stdio::null());
        cmd.output().unwrap()
    };

    // As an unprivileged user with a full bounding set there is no way to cut it.
    let out = nobody("+all");
    assert_init_failure(
        &out,
        124,
        "capabilities: drop cap_chown from bounding set: operation not permitted",
    );

    // When runc already cut it to the kept set, nothing needs privilege.
    let out = nobody("-all,+kill");
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        status_field(&stdout(&out), "CapBnd:"),
        format!("{:016x}", 1u64 << 5)
    );
}

#[test]
fn audit_log_flags_are_accepted_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_with(
        dir.path(),
        json!({"required_abi": 7, "log": {"same_exec": false, "new_exec": true, "subdomains": false}}),
    );
    let out = sh(
        &plan,
        &format!("echo logged > {}/f && cat {0}/f", dir.path().display()),
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "logged\n");
}
