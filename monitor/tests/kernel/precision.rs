//! The built-in detections on what ordinary software does, against the running kernel: an
//! `ip addr`-like netlink socket, an application's pid file below `/usr/local`, and a
//! `setgid(0)` by a process whose group already is 0 raise nothing, while a raw IPv4 socket, a
//! write below `/etc` and a real gain of uid 0 still do.

use std::path::Path;

use palisade_monitor::{ContainerRules, EventKind};

use crate::harness::*;

/// Debian's interpreter itself (not a wrapper script): its exec is the container's entrypoint.
const PYTHON: &str = "/usr/bin/python3";

/// Run by python in the watched cgroup, as root, with the chroot directory as argv[1]; each
/// step prints its name so a failure says where it stopped.
const SCRIPT: &str = r#"
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
# `ip addr`: a netlink socket of type SOCK_RAW (with SOCK_CLOEXEC, as Apache opens it)
socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0).close()
# a raw IPv4 socket: root on the host may open one
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
os.chroot(sys.argv[1])
# Apache's pid file in its own tree below /usr/local, then a write below /etc
with open("/usr/local/apache2/logs/httpd.pid", "w") as f:
    f.write("1\n")
with open("/etc/palisade-precision", "w") as f:
    f.write("x\n")
# busybox as uid 1000 with group 0: keep the capabilities across the uid change, drop to
# 1000 with every gid 0, then setgid(0): the group it already has
if libc.prctl(8, 1, 0, 0, 0) != 0:  # PR_SET_KEEPCAPS
    sys.exit("prctl")
os.setresgid(0, 0, 0)
os.setresuid(1000, 1000, 1000)
os.setgid(0)
# a real gain: raise the kept CAP_SETUID into the effective set, then take uid 0 back
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
hdr = Header(0x20080522, 0)
data = (Data * 2)()
if libc.capget(ctypes.byref(hdr), data) != 0:
    sys.exit("capget")
data[0].effective = data[0].permitted
data[1].effective = data[1].permitted
if libc.capset(ctypes.byref(hdr), data) != 0:
    sys.exit("capset")
os.setuid(0)
print("done", flush=True)
"#;

#[test]
fn ordinary_calls_raise_nothing_and_real_gains_still_do() {
    if !Path::new(PYTHON).exists() {
        panic!("{PYTHON} is needed for this test (Debian's python3)");
    }
    let scratch = Scratch::new("precision");
    let root = scratch.0.join("root");
    std::fs::create_dir_all(root.join("usr/local/apache2/logs")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let w = Watched::new("precision", ContainerRules::default());
    let root_arg = root.to_str().unwrap();
    let (pid, st) = run(
        Some(&w.cg),
        None,
        &exec(PYTHON, &["python3", "-I", "-B", "-c", SCRIPT, root_arg]),
    );
    assert_eq!(exited(st), Some(0), "the script failed (status {st})");
    let (_, seen) = until(&w.rx, "exit", |e| {
        e.process.pid == pid as u32 && matches!(e.kind, EventKind::Exit { .. })
    });
    let found: Vec<(String, String)> = seen
        .iter()
        .filter(|e| e.process.pid == pid as u32)
        .flat_map(|e| {
            e.findings
                .iter()
                .map(|f| (f.rule.clone(), f.message.clone()))
        })
        .collect();
    let rules: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        rules,
        ["raw-socket", "write-below-system-dir", "privilege-gain"],
        "{found:#?}"
    );
    assert!(found[0].1.contains("domain 2"), "{found:#?}");
    assert!(found[1].1.contains("/etc/palisade-precision"), "{found:#?}");
    assert!(
        found[2]
            .1
            .contains("setuid to root by python3: uids 1000/1000/1000 -> "),
        "{found:#?}"
    );
}
