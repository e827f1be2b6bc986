//! `palisade install` and `uninstall` on real files, and the result loaded by the real
//! containerd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{assert_contains, fails, succeeds, PALISADE};

/// An operator's containerd 1.6 configuration: comments, a runc runtime with options and a
/// comment above it, other sections. `{dir}` is the test's directory.
const V2_CONFIG: &str = r#"# Operator's containerd configuration.
version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"

[grpc]
  address = "{dir}/containerd/containerd.sock"

[ttrpc]
  address = "{dir}/containerd/containerd.sock.ttrpc"

[debug]
  address = "{dir}/containerd/debug.sock"
  level = "info"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      # runc stays the default runtime; SystemdCgroup matches the kubelet.
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
          BinaryName = "/usr/sbin/runc"

[metrics]
  address = ""
"#;

const V3_CONFIG: &str = r#"version = 3
# containerd 2.x
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
  # the stock runtime
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
"#;

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Node { dir };
        std::fs::create_dir_all(node.path().join("etc/containerd")).unwrap();
        if let Some(c) = config {
            std::fs::write(
                node.config(),
                c.replace("{dir}", &node.path().display().to_string()),
            )
            .unwrap();
        }
        std::fs::write(node.path().join("shim-build"), b"#!/bin/sh\necho shim\n").unwrap();
        std::fs::write(node.path().join("init-build"), b"#!/bin/sh\necho init\n").unwrap();
        node
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("etc/containerd/config.toml")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap()
    }

    fn run(&self, command: &str, extra: &[&str]) -> Output {
        let p = |s: &str| self.path().join(s).display().to_string();
        let mut args: Vec<String> = vec![
            command.into(),
            "--containerd-config".into(),
            self.config().display().to_string(),
            "--bin-dir".into(),
            p("bin"),
            "--config-dir".into(),
            p("etc/palisade"),
            "--state-dir".into(),
            p("var/lib/palisade"),
            "--log-dir".into(),
            p("var/log/palisade"),
        ];
        if command == "install" {
            args.extend([
                "--shim".into(),
                p("shim-build"),
                "--init".into(),
                p("init-build"),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        succeeds(Command::new(PALISADE).args(&args))
    }
}

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

fn runtimes<'a>(t: &'a toml::Table, plugin: &str) -> &'a toml::Table {
    t["plugins"][plugin]["containerd"]["runtimes"]
        .as_table()
        .unwrap()
}

#[test]
fn install_twice_keeps_comments_and_the_other_runtime() {
    let node = Node::new(Some(V2_CONFIG));
    let original = node.text();
    node.run("install", &[]);
    let once = node.text();
    let again = node.run("install", &[]);
    assert_eq!(node.text(), once, "a second install changes nothing");
    let again = String::from_utf8(again.stdout).unwrap();
    assert!(
        again.contains(
            "runtimes palisade, palisade-strict, palisade-audit, palisade-compat already present"
        ),
        "{again}"
    );
    assert_contains(&again, "containerd-shim-palisade-v2: up to date");
    assert_contains(&again, "palisade.toml: kept as it is");

    assert!(once.starts_with(&original[..original.find("[metrics]").unwrap()]));
    assert!(once.contains("# runc stays the default runtime; SystemdCgroup matches the kubelet.\n"));
    assert!(once.contains("# Operator's containerd configuration.\n"));
    let before = table(&original);
    let after = table(&once);
    let plugin = "io.containerd.grpc.v1.cri";
    assert_eq!(
        runtimes(&after, plugin)["runc"],
        runtimes(&before, plugin)["runc"]
    );
    assert_eq!(after["metrics"], before["metrics"]);
    for name in [
        "palisade",
        "palisade-strict",
        "palisade-audit",
        "palisade-compat",
    ] {
        let rt = &runtimes(&after, plugin)[name];
        assert_eq!(
            rt["runtime_type"].as_str(),
            Some("io.containerd.palisade.v2")
        );
        assert_eq!(
            rt["pod_annotations"].as_array().unwrap()[0].as_str(),
            Some("palisade.dev/*")
        );
        let config_path = node.path().join(format!("etc/palisade/{name}.toml"));
        assert_eq!(
            rt["options"]["ConfigPath"].as_str(),
            Some(config_path.to_str().unwrap())
        );
        let shim_config = palisade_config::Config::load(&config_path)
            .unwrap_or_else(|e| panic!("{name}: the shim refuses its config: {e}"));
        assert_eq!(
            shim_config.strict.is_some(),
            name == "palisade-strict",
            "{name}"
        );
        assert_eq!(
            shim_config.policy_dir,
            Some(node.path().join("etc/palisade/policies"))
        );
        assert_eq!(
            shim_config.init_binary,
            Some(node.path().join("bin/palisade-init"))
        );
        assert_eq!(
            shim_config.gate.state_dir,
            node.path().join("var/lib/palisade/gate")
        );
        assert_eq!(
            shim_config.audit(),
            name == "palisade-audit",
            "{name}: only palisade-audit reports instead of enforcing"
        );
        assert_eq!(
            shim_config.events.log_dir,
            node.path().join("var/log/palisade")
        );
    }

    for name in ["containerd-shim-palisade-v2", "palisade-init", "palisade"] {
        let bin = node.path().join("bin").join(name);
        let meta = std::fs::metadata(&bin).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{name}");
    }
    // The CLI the later steps call from PATH is the one that ran the install.
    assert_eq!(
        std::fs::read(node.path().join("bin/palisade")).unwrap(),
        std::fs::read(PALISADE).unwrap()
    );
    assert_eq!(
        std::fs::read(node.path().join("bin/containerd-shim-palisade-v2")).unwrap(),
        std::fs::read(node.path().join("shim-build")).unwrap()
    );
    assert!(node.path().join("var/lib/palisade/gate").is_dir());
    assert!(node.path().join("var/log/palisade").is_dir());
    assert!(node.path().join("etc/palisade/policies").is_dir());

    // An operator's edit of a shim config survives a reinstall.
    let edited = node.path().join("etc/palisade/palisade.toml");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text = text.replace("log_level = \"info\"", "log_level = \"debug\"");
    std::fs::write(&edited, &text).unwrap();
    node.run("install", &[]);
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), text);

    // Uninstall: the palisade tables and binaries go, the rest stays as it was.
    node.run("uninstall", &[]);
    let removed = node.text();
    assert_eq!(table(&removed), before);
    assert!(
        removed.contains("# runc stays the default runtime; SystemdCgroup matches the kubelet.\n")
    );
    assert!(!node.path().join("bin/containerd-shim-palisade-v2").exists());
    assert!(!node.path().join("bin/palisade-init").exists());
    assert!(!node.path().join("bin/palisade").exists());
    assert!(edited.is_file(), "configs kept without --purge");
    assert!(node.path().join("var/lib/palisade/gate").is_dir());
    node.run("uninstall", &["--purge"]);
    assert!(!edited.exists());
    assert!(!node.path().join("var/lib/palisade").exists());
    assert_eq!(table(&node.text()), before);
}

#[test]
fn dry_run_prints_a_diff_and_changes_nothing() {
    let node = Node::new(Some(V2_CONFIG));
    let original = node.text();
    let out = node.run("install", &["--dry-run"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let config = node.config().display().to_string();
    assert_contains(&stdout, &format!("--- {config}\n+++ {config}\n"));
    assert!(
        stdout.contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.palisade]\n")
    );
    assert!(stdout.contains("+  runtime_type = \"io.containerd.palisade.v2\"\n"));
    assert!(
        stdout.contains("--- /dev/null\n"),
        "new shim configs shown: {stdout}"
    );
    assert!(stdout
        .contains("would add runtimes palisade, palisade-strict, palisade-audit, palisade-compat"));
    assert_eq!(node.text(), original);
    assert!(!node.path().join("bin").exists());
    assert!(!node.path().join("etc/palisade").exists());
    assert!(!node.path().join("var").exists());

    node.run("install", &[]);
    let installed = node.text();
    let out = node.run("uninstall", &["--dry-run", "--purge"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "-[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.palisade-audit]\n"
        ),
        "{stdout}"
    );
    assert_eq!(node.text(), installed);
    assert!(node.path().join("bin/palisade-init").exists());
    assert!(node.path().join("etc/palisade/palisade.toml").exists());
}

#[test]
fn a_symlinked_config_stays_a_symlink() {
    let node = Node::new(None);
    let real = node.path().join("config-repo/containerd.toml");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::write(&real, "version = 2\n# kept in git\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, node.config()).unwrap();
    node.run("install", &[]);
    assert!(std::fs::symlink_metadata(node.config())
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).unwrap();
    // A comment after the file's last setting stays the file's last line.
    assert!(text.starts_with("version = 2\n"), "{text}");
    assert!(text.ends_with("\n# kept in git\n"), "{text}");
    assert_contains(&text, "runtimes.palisade-audit]");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the config's mode is kept");
    node.run("uninstall", &[]);
    assert!(std::fs::symlink_metadata(node.config())
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        "version = 2\n# kept in git\n"
    );
}

#[test]
fn version_3_and_a_missing_file() {
    let node = Node::new(Some(V3_CONFIG));
    node.run("install", &[]);
    let once = node.text();
    node.run("install", &[]);
    assert_eq!(node.text(), once);
    assert!(once.starts_with(V3_CONFIG), "{once}");
    let t = table(&once);
    let rts = runtimes(&t, "io.containerd.cri.v1.runtime");
    assert_eq!(
        rts["palisade-strict"]["runtime_type"].as_str(),
        Some("io.containerd.palisade.v2")
    );
    assert!(t["plugins"].get("io.containerd.grpc.v1.cri").is_none());
    node.run("uninstall", &[]);
    assert_eq!(table(&node.text()), table(V3_CONFIG));

    let fresh = Node::new(None);
    fresh.run("install", &["--config-version", "3"]);
    let t = table(&fresh.text());
    assert_eq!(t["version"].as_integer(), Some(3));
    assert_eq!(runtimes(&t, "io.containerd.cri.v1.runtime").len(), 4);

    // Without the flag, a new file is of the version the installed containerd reads.
    let version = Command::new("containerd")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let major: u32 = version
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_start_matches('v')
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (number, plugin) = if major >= 2 {
        (3, "io.containerd.cri.v1.runtime")
    } else {
        (2, "io.containerd.grpc.v1.cri")
    };
    let fresh = Node::new(None);
    fresh.run("install", &[]);
    let t = table(&fresh.text());
    assert_eq!(
        t["version"].as_integer(),
        Some(number),
        "containerd {version}"
    );
    assert_eq!(runtimes(&t, plugin).len(), 4);
}

#[test]
fn warns_when_the_cri_plugin_is_off() {
    // Docker's stock containerd config turns CRI off; the runtimes would be unreachable.
    let node = Node::new(Some("version = 2\ndisabled_plugins = [\"cri\"]\n"));
    let out = node.run("install", &["--dry-run"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_contains(&stdout, "disabled_plugins turns the CRI plugin off");
}

#[test]
fn refuses_a_version_1_config_and_a_missing_binary() {
    let node = Node::new(Some("root = \"/var/lib/containerd\"\n"));
    let err = fails(
        Command::new(PALISADE)
            .args(["install", "--containerd-config"])
            .arg(node.config())
            .arg("--dry-run"),
    );
    assert_contains(&err, "version 1 (no version key): only versions 2");

    let node = Node::new(Some("version = 2\n"));
    let err = fails(
        Command::new(PALISADE)
            .args(["install", "--containerd-config"])
            .arg(node.config())
            .args(["--config-dir"])
            .arg(node.path().join("etc/palisade"))
            .args(["--shim", "/nonexistent/containerd-shim-palisade-v2"]),
    );
    assert_contains(
        &err,
        "binary containerd-shim-palisade-v2: not found at /nonexistent/containerd-shim-palisade-v2",
    );
    assert_eq!(
        node.text(),
        "version = 2\n",
        "nothing written before the check"
    );
}

/// Stops the containerd it holds by its PID, also when the test fails.
struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containerd_loads_the_installed_runtimes() {
    let node = Node::new(Some(V2_CONFIG));
    node.run("install", &[]);

    let dump = succeeds(
        Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(node.config())
            .args(["config", "dump"]),
    );
    let dumped = String::from_utf8(dump.stdout).unwrap();
    for name in [
        "palisade",
        "palisade-strict",
        "palisade-audit",
        "palisade-compat",
    ] {
        let header = format!("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}]");
        let at = dumped
            .find(&header)
            .unwrap_or_else(|| panic!("{header} in {dumped}"));
        let section = &dumped[at..];
        let section = &section[..section[1..]
            .find("\n        [")
            .map_or(section.len(), |e| e + 1)];
        assert_contains(section, "runtime_type = \"io.containerd.palisade.v2\"");
        assert_contains(section, "pod_annotations = [\"palisade.dev/*\"]");
    }

    let log_path = node.path().join("containerd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("/usr/bin/containerd")
        .arg("--config")
        .arg(node.config())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _running = Containerd(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline {
        text.clear();
        std::fs::File::open(&log_path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        if text.contains("Start cri plugin with config") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = text
        .lines()
        .find(|l| l.contains("Start cri plugin with config"))
        .unwrap_or_else(|| panic!("containerd did not start its cri plugin:\n{text}"));
    for name in [
        "palisade",
        "palisade-strict",
        "palisade-audit",
        "palisade-compat",
    ] {
        let config_path = node.path().join(format!("etc/palisade/{name}.toml"));
        let entry = format!("{name}:{{Type:io.containerd.palisade.v2 ");
        let at = [format!("[{entry}"), format!(" {entry}")]
            .iter()
            .find_map(|e| line.find(e.as_str()))
            .unwrap_or_else(|| panic!("{entry} in {line}"));
        // One entry of the map ends with its last field.
        let rest = &line[at..];
        let rest = &rest[..rest.find("NetworkPluginMaxConfNum").unwrap()];
        assert_contains(rest, "PodAnnotations:[palisade.dev/*]");
        assert!(
            rest.contains(&format!("ConfigPath:{}", config_path.display())),
            "{rest}"
        );
    }
    assert_contains(line, "runc:{Type:io.containerd.runc.v2");
}

/// An installer in a container: the node's root mounted at a directory, the node's paths
/// (the defaults) in every file written, every file under that directory; the node's config
/// a symlink with an absolute target, resolved under the root too.
#[test]
fn host_root_installs_under_the_root_with_the_nodes_paths() {
    let host = tempfile::tempdir().unwrap();
    let root = host.path();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at("/opt/node-config")).unwrap();
    std::fs::create_dir_all(at("/etc/containerd")).unwrap();
    let original = V2_CONFIG.replace("{dir}", "/var/lib/test-containerd");
    std::fs::write(at("/opt/node-config/containerd.toml"), &original).unwrap();
    std::os::unix::fs::symlink(
        "/opt/node-config/containerd.toml",
        at("/etc/containerd/config.toml"),
    )
    .unwrap();
    let shim = root.join("shim-build");
    std::fs::write(&shim, "#!/bin/sh\necho shim\n").unwrap();

    let run = |args: &[&str]| -> Output {
        succeeds(
            Command::new(PALISADE)
                .args(args)
                .arg("--host-root")
                .arg(root),
        )
    };
    let s = shim.to_str().unwrap();
    let out = run(&["install", "--shim", s, "--init", s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_contains(
        &stdout,
        "containerd config /etc/containerd/config.toml (version 2): add runtimes",
    );

    assert!(
        at("/etc/containerd/config.toml").is_symlink(),
        "the link stays a link"
    );
    let text = std::fs::read_to_string(at("/opt/node-config/containerd.toml")).unwrap();
    assert!(text.starts_with("# Operator's containerd configuration.\n"));
    let doc: toml::Table = text.parse().unwrap();
    let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    for name in [
        "palisade",
        "palisade-strict",
        "palisade-audit",
        "palisade-compat",
    ] {
        let node_path = format!("/etc/palisade/{name}.toml");
        assert_eq!(
            runtimes[name]["options"]["ConfigPath"].as_str(),
            Some(node_path.as_str()),
            "the node's path, not the installer's"
        );
        let config = palisade_config::Config::load(&at(&node_path)).unwrap();
        assert_eq!(
            config.init_binary,
            Some(PathBuf::from("/usr/local/bin/palisade-init"))
        );
        assert_eq!(
            config.policy_dir,
            Some(PathBuf::from("/etc/palisade/policies"))
        );
        assert_eq!(config.gate.state_dir, Path::new("/var/lib/palisade/gate"));
        assert_eq!(config.events.log_dir, Path::new("/var/log/palisade"));
    }
    for bin in ["containerd-shim-palisade-v2", "palisade-init"] {
        let p = at(&format!("/usr/local/bin/{bin}"));
        assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\necho shim\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
    assert!(at("/var/lib/palisade/gate").is_dir());
    assert!(at("/var/log/palisade").is_dir());
    assert!(at("/etc/palisade/policies").is_dir());

    // Again: nothing to change.
    let out = run(&["install", "--shim", s, "--init", s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_contains(&stdout, "already present");
    assert_contains(&stdout, "binary /usr/local/bin/palisade-init: up to date");
    assert_contains(&stdout, "binary /usr/local/bin/palisade: up to date");

    // status reads the same node through the same root.
    let out = succeeds(
        Command::new(PALISADE)
            .args(["status", "--json", "--host-root"])
            .arg(root),
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for b in status["binaries"].as_array().unwrap() {
        assert_eq!(b["installed"], true, "{b}");
        assert!(
            b["path"].as_str().unwrap().starts_with("/usr/local/bin/"),
            "{b}"
        );
    }
    let runtimes = status["containerd"]["runtimes"].as_array().unwrap();
    assert_eq!(runtimes.len(), 4, "{status}");
    for r in runtimes {
        assert_eq!(r["config"], "ok", "{r}");
    }

    // A set of monitor programs the last pod parked (no link) goes; one still attached for
    // running pods stays. Plain files stand in for the pins: only their layout is read.
    let pins = at("/sys/fs/bpf/palisade");
    for (set, link) in [
        ("v0_1_0-aa-enforce-raw", false),
        ("v0_1_0-aa-audit-raw", true),
    ] {
        for sub in ["maps", "progs", "links"] {
            std::fs::create_dir_all(pins.join(set).join(sub)).unwrap();
        }
        std::fs::write(pins.join(set).join("maps/config"), "").unwrap();
        std::fs::write(pins.join(set).join("progs/on_exec"), "").unwrap();
        if link {
            std::fs::write(pins.join(set).join("links/on_exec"), "").unwrap();
        }
    }
    let out = run(&["uninstall", "--purge"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "monitor programs /sys/fs/bpf/palisade/v0_1_0-aa-enforce-raw: unload (parked)"
        ),
        "{stdout}"
    );
    assert!(!pins.join("v0_1_0-aa-enforce-raw").exists());
    assert!(pins.join("v0_1_0-aa-audit-raw/links/on_exec").exists());
    assert_eq!(
        std::fs::read_to_string(at("/opt/node-config/containerd.toml")).unwrap(),
        original,
        "uninstall restores the operator's file"
    );
    assert!(at("/etc/containerd/config.toml").is_symlink());
    assert!(!at("/usr/local/bin/containerd-shim-palisade-v2").exists());
    assert!(!at("/etc/palisade").exists());
    assert!(!at("/var/log/palisade").exists());

    let err = fails(
        Command::new(PALISADE)
            .args(["install", "--bin-dir", "relative/bin", "--host-root"])
            .arg(root),
    );
    assert!(
        err.contains(
            "path relative/bin: with --host-root, paths are the node's and must be absolute"
        ),
        "{err}"
    );
}
