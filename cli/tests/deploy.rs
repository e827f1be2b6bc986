//! runtimeclass/deploy/palisade-deploy.sh, the DaemonSet installer's entrypoint, run with the
//! real `palisade` on a host root in a temporary directory. The cluster and the host's init
//! are stand-ins on PATH: `nsenter` answers `containerd --version` and `systemctl`, `curl`
//! takes the node patches; both record how they were called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod support;
use support::assert_contains;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");
const WAIT: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"# the node's containerd configuration
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#;

const NSENTER: &str = r#"#!/bin/sh
echo "nsenter $*" >> "$CALLS"
while [ "$1" != "--" ]; do shift; done
shift
case "$1 $2" in
    "containerd --version") echo "containerd github.com/containerd/containerd v1.7.24 88bf19b" ;;
    "systemctl restart"|"systemctl is-active") ;;
    *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#;

const CURL: &str = "#!/bin/sh\necho \"curl $*\" >> \"$CALLS\"\n";

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let h = Host { dir };
        std::fs::create_dir_all(h.root("/etc/containerd")).unwrap();
        std::fs::write(h.root("/etc/containerd/config.toml"), CONFIG).unwrap();
        for (name, text) in [("nsenter", NSENTER), ("curl", CURL)] {
            let p = h.path("stubs").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sa = h.path("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "token-1").unwrap();
        std::fs::write(sa.join("ca.crt"), "").unwrap();
        // The image's layout: the shim and palisade-init beside palisade.
        let image = h.path("image");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::copy(PALISADE, image.join("palisade")).unwrap();
        for name in ["containerd-shim-palisade-v2", "palisade-init"] {
            std::fs::write(image.join(name), format!("#!/bin/sh\n# {name}\n")).unwrap();
        }
        h
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn root(&self, p: &str) -> PathBuf {
        self.path("host").join(p.trim_start_matches('/'))
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("calls")).unwrap_or_default()
    }

    fn script(&self, action: &str) -> Command {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass/deploy/palisade-deploy.sh");
        let mut c = Command::new("sh");
        c.arg(script)
            .arg(action)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("stubs").display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("CALLS", self.path("calls"))
            .env("HOST_ROOT", self.path("host"))
            .env("PALISADE", self.path("image/palisade"))
            .env("READY_FILE", self.path("ready"))
            .env("SERVICE_ACCOUNT_DIR", self.path("sa"))
            .env("NODE_NAME", "node-1")
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443");
        c
    }

    /// Runs `action` until it is ready, then stops it as the kubelet would (SIGTERM) and
    /// returns its output.
    fn run_until_ready(&self, action: &str) -> String {
        let _ = std::fs::remove_file(self.path("ready"));
        let child = self
            .script(action)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Running(Some(child));
        let deadline = Instant::now() + WAIT;
        while !self.path("ready").exists() {
            if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
                panic!("palisade-deploy.sh {action} exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{action}: not ready: {}",
                self.calls()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = child.0.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{action}: SIGTERM ends it cleanly: {}",
            out.status
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Kills the script by its PID if the test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn label_patch(calls: &str) -> Vec<String> {
    calls
        .lines()
        .filter(|l| l.starts_with("curl "))
        .map(|l| {
            assert!(
                l.contains("-X PATCH") && l.ends_with("https://10.96.0.1:443/api/v1/nodes/node-1"),
                "{l}"
            );
            assert_contains(l, "Authorization: Bearer token-1");
            let body = l.split(" -d ").nth(1).unwrap();
            body.split(' ').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn installs_restarts_labels_and_uninstalls() {
    let h = Host::new();
    let out = h.run_until_ready("install");
    assert_contains(
        &out,
        "add runtimes palisade, palisade-strict, palisade-audit, palisade-compat",
    );
    let calls = h.calls();
    let restarts = calls.matches("systemctl restart containerd").count();
    assert_eq!(restarts, 1, "{calls}");
    assert!(
        calls
            .contains("nsenter --target 1 --mount --uts --ipc --net --pid -- containerd --version"),
        "{calls}"
    );
    assert_eq!(
        label_patch(&calls),
        [r#"{"metadata":{"labels":{"palisade.dev/runtime":"installed"}}}"#]
    );
    let config = std::fs::read_to_string(h.root("/etc/containerd/config.toml")).unwrap();
    assert!(config.starts_with("# the node's containerd configuration\n"));
    assert_contains(
        &config,
        "ConfigPath = \"/etc/palisade/palisade-audit.toml\"",
    );
    let audit =
        palisade_config::Config::load(&h.root("/etc/palisade/palisade-audit.toml")).unwrap();
    assert!(audit.audit());
    assert_eq!(
        std::fs::read_to_string(h.root("/usr/local/bin/palisade-init")).unwrap(),
        "#!/bin/sh\n# palisade-init\n"
    );

    // A second pod (a rolling update): nothing changed, so containerd is left alone.
    std::fs::remove_file(h.path("calls")).unwrap();
    let out = h.run_until_ready("install");
    assert_contains(&out, "already present");
    let calls = h.calls();
    assert!(!calls.contains("systemctl restart"), "{calls}");
    assert_eq!(label_patch(&calls).len(), 1);

    // preStop: the label goes, nothing else.
    std::fs::remove_file(h.path("calls")).unwrap();
    let status = h.script("unlabel").status().unwrap();
    assert!(status.success());
    let calls = h.calls();
    assert_eq!(
        label_patch(&calls),
        [r#"{"metadata":{"labels":{"palisade.dev/runtime":null}}}"#]
    );
    assert!(!calls.contains("nsenter"), "{calls}");

    // The cleanup DaemonSet: label first, then uninstall, then the restart.
    std::fs::remove_file(h.path("calls")).unwrap();
    let out = h.run_until_ready("uninstall");
    assert_contains(
        &out,
        "remove runtimes palisade, palisade-strict, palisade-audit, palisade-compat",
    );
    let calls = h.calls();
    assert!(
        calls.find("curl").unwrap() < calls.find("systemctl restart").unwrap(),
        "{calls}"
    );
    assert_eq!(
        std::fs::read_to_string(h.root("/etc/containerd/config.toml")).unwrap(),
        CONFIG
    );
    assert!(!h
        .root("/usr/local/bin/containerd-shim-palisade-v2")
        .exists());
}

#[test]
fn a_failing_install_does_not_label_the_node() {
    let h = Host::new();
    std::fs::write(
        h.root("/etc/containerd/config.toml"),
        "# version 1\n[plugins]\n",
    )
    .unwrap();
    let out = h.script("install").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(&err, "palisade-deploy: palisade install failed");
    assert_contains(&err, "only versions 2");
    let calls = h.calls();
    assert!(!calls.contains("curl"), "{calls}");
    assert!(!calls.contains("systemctl restart"), "{calls}");
    assert!(!h.path("ready").exists());
}
