//! A private containerd for the tests: run dir, configs, CNI bridge, images, and teardown.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::Signal;

use crate::images::{self, Images};
use crate::procs;

/// What the environment is built from.
pub struct Options {
    /// The palisade shim binary, copied into the run dir's bin dir (None: runc only).
    pub shim: Option<PathBuf>,
    /// The suite binary; teardown uses its `cleanup` command to remove pods via CRI.
    pub conformance: PathBuf,
    /// Where another containerd release's binaries are (None: the system's).
    pub containerd_bin: Option<PathBuf>,
}

/// A running private containerd and everything made for it.
pub struct Env {
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub control: PathBuf,
    pub bridge: String,
    pub cgroup_root: String,
    /// Where the shims POST their Falco webhook events; the security suite listens there.
    pub webhook: std::net::SocketAddr,
    /// Where logs are kept when the run failed (outside the run dir, which is removed).
    pub failure_dir: PathBuf,
    conformance: PathBuf,
    path_env: String,
    state: Mutex<State>,
    /// Held across a containerd restart and across teardown, so neither runs
    /// inside the other; true once torn down.
    lifecycle: Mutex<bool>,
}

#[derive(Default)]
struct State {
    containerd: Option<Child>,
    /// A child the harness is waiting on (the suite); killed first on teardown.
    running: Option<u32>,
}

const SUBNET_BASE: &str = "10.209";

impl Env {
    /// Prepares the run dir under `base` (configs only; [`Env::start`] starts processes).
    /// Run dirs left by harness processes that no longer exist are torn down first.
    pub fn new(base: &Path, opts: Options) -> Result<Arc<Self>> {
        sweep_stale(base, &opts.conformance);
        let env = Arc::new(Self::layout(
            base,
            std::process::id(),
            opts.conformance,
            opts.containerd_bin.as_deref(),
        ));
        if env.run_dir.exists() {
            fs::remove_dir_all(&env.run_dir)
                .with_context(|| format!("clear {}", env.run_dir.display()))?;
        }
        let bin = env.run_dir.join("bin");
        fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
        if let Some(shim) = &opts.shim {
            fs::copy(shim, bin.join(crate::SHIM_BINARY))
                .with_context(|| format!("copy shim {}", shim.display()))?;
            // The shim finds palisade-init beside itself.
            let init = shim.with_file_name("palisade-init");
            fs::copy(&init, bin.join("palisade-init"))
                .with_context(|| format!("copy palisade-init {}", init.display()))?;
        }
        env.write_configs()?;
        Ok(env)
    }

    /// Where this run's shims pin the monitor's programs (on bpffs; its own per run).
    fn bpf_pin_root(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf{}", self.cgroup_root))
    }

    /// Every name and path of the environment of harness process `id`.
    fn layout(base: &Path, id: u32, conformance: PathBuf, containerd_bin: Option<&Path>) -> Self {
        let run_dir = base.join(format!("run-{id}"));
        let bin = run_dir.join("bin");
        let host_path = std::env::var("PATH").unwrap_or_default();
        let mut path_env = bin.display().to_string();
        // Another containerd release's containerd, ctr and runc shim come before the system's.
        if let Some(c) = containerd_bin {
            path_env.push(':');
            path_env.push_str(&c.display().to_string());
        }
        for p in host_path.split(':').chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]) {
            if !p.is_empty() && !path_env.split(':').any(|q| q == p) {
                path_env.push(':');
                path_env.push_str(p);
            }
        }
        Self {
            socket: run_dir.join("containerd.sock"),
            config: run_dir.join("containerd.toml"),
            log: run_dir.join("containerd.log"),
            control: run_dir.join("control.sock"),
            bridge: format!("palt{:x}", id % 0xfffff),
            cgroup_root: format!("/palisade-test-{id}"),
            webhook: std::net::SocketAddr::from(([127, 0, 0, 1], 30000 + (id % 20000) as u16)),
            failure_dir: base.join("last-failure"),
            conformance,
            path_env,
            state: Mutex::new(State::default()),
            lifecycle: Mutex::new(false),
            run_dir,
        }
    }

    /// Starts containerd and imports the test images.
    pub fn start(&self, images: &Images) -> Result<()> {
        {
            // A teardown (a signal's, from its thread) either came first, and no containerd
            // starts, or waits for this one to be known, and stops it.
            let torn_down = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
            if *torn_down {
                bail!("environment torn down: containerd not started");
            }
            self.start_containerd()?;
        }
        self.import(&images.pause, images::PAUSE_REF)?;
        self.import(&images.busybox, images::BUSYBOX_REF)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn work_dir(&self) -> PathBuf {
        self.run_dir.join("work")
    }

    /// The security suite of the conformance binary `suite` for `handlers` and `filters`,
    /// pointed at this environment's event log, gate state, metrics and webhook (the host's
    /// run and the kernel matrix's guests alike).
    pub fn security_cmd(&self, suite: &Path, handlers: &str, filters: &[String]) -> Command {
        let mut cmd = crate::tasks::suite_cmd_of(self, suite, "security");
        cmd.arg("--handlers")
            .arg(handlers)
            .arg("--events-dir")
            .arg(self.events_dir())
            .arg("--gate-state-dir")
            .arg(self.gate_state_dir())
            .arg("--profile-state-dir")
            .arg(self.profile_state_dir())
            .arg("--metrics-dir")
            .arg(self.metrics_dir())
            .arg("--webhook-listen")
            .arg(self.webhook.to_string());
        for f in filters {
            cmd.arg("--filter").arg(f);
        }
        cmd
    }

    /// The shims' violation log directory (`[events] log_dir` in palisade.toml).
    pub fn events_dir(&self) -> PathBuf {
        self.run_dir.join("events")
    }

    /// Where the shims write their Prometheus textfiles (`[events] metrics_dir`).
    pub fn metrics_dir(&self) -> PathBuf {
        self.run_dir.join("metrics")
    }

    /// Where the shims keep learned gate profiles (`[gate] state_dir` in palisade.toml).
    pub fn gate_state_dir(&self) -> PathBuf {
        self.run_dir.join("gate")
    }

    /// Where the shims keep learned workload profiles (`[profile] state_dir`).
    pub fn profile_state_dir(&self) -> PathBuf {
        self.run_dir.join("profiles")
    }

    fn write_configs(&self) -> Result<()> {
        let r = &self.run_dir;
        let cni_conf = r.join("cni/net.d");
        fs::create_dir_all(&cni_conf)?;
        let third = 20 + std::process::id() % 200;
        let net = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("palisade-test-{}", std::process::id()),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": format!("{SUBNET_BASE}.{third}.0/24") }]],
                        "dataDir": r.join("cni/ipam"),
                    }
                },
                { "type": "loopback" }
            ]
        });
        fs::write(cni_conf.join("10-palisade-test.conflist"), net.to_string())?;
        let palisade_toml = r.join("palisade.toml");
        let palisade_strict_toml = r.join("palisade-strict.toml");
        let palisade_audit_toml = r.join("palisade-audit.toml");
        let shim_config = format!(
            "runc_binary = \"{}\"\nrunc_root = \"{}\"\n\n\
                 # The conformance suite's capabilities check adds NET_ADMIN, as an operator\n\
                 # would allow it for a workload that needs it.\n\
                 [hardening]\nallowed_added_capabilities = [\"NET_ADMIN\"]\n\n\
                 [events]\nlog_dir = \"{}\"\nmetrics_dir = \"{}\"\n\
                 webhook_url = \"http://{}/falco\"\ncontainerd_topic = true\n\n[gate]\nstate_dir = \"{}\"\n\n\
                 [profile]\nstate_dir = \"{}\"\n\n[monitor]\npin_root = \"{}\"\n",
            which("runc", &self.path_env)
                .unwrap_or_else(|| "runc".into())
                .display(),
            r.join("palisade-runc").display(),
            self.events_dir().display(),
            self.metrics_dir().display(),
            self.webhook,
            self.gate_state_dir().display(),
            self.profile_state_dir().display(),
            self.bpf_pin_root().display()
        );
        let header = "# palisade shim configuration (TOML), written by cargo xtask\n";
        fs::write(&palisade_toml, format!("{header}{shim_config}"))?;
        // The security suite's strict handler: the same, plus palisade-strict mode.
        fs::write(
            &palisade_strict_toml,
            format!("{header}{shim_config}\n[strict]\nwritable_paths = [\"/tmp\"]\n"),
        )?;
        // The audit handler: the same, reporting what its policies would deny.
        fs::write(
            &palisade_audit_toml,
            format!("{header}mode = \"audit\"\n{shim_config}"),
        )?;
        // The CRI contract's relaxed handler: the same, with the shipped palisade-compat
        // [hardening] table (the last table of that file) in place of the suite's.
        let palisade_compat_toml = r.join("palisade-compat.toml");
        let compat_hardening = include_str!("../../runtimeclass/palisade-compat.toml")
            .split_once("[hardening]")
            .map(|(_, table)| format!("[hardening]{table}"))
            .context("runtimeclass/palisade-compat.toml has no [hardening] table")?;
        fs::write(
            &palisade_compat_toml,
            format!(
                "{header}{}",
                shim_config.replace(
                    "[hardening]\nallowed_added_capabilities = [\"NET_ADMIN\"]\n",
                    &compat_hardening
                )
            ),
        )?;
        // The monitor bench's baseline: the same shim with the monitor off (the line joins the
        // `[monitor]` table, which ends the shared configuration).
        let palisade_nomon_toml = r.join("palisade-nomon.toml");
        fs::write(
            &palisade_nomon_toml,
            format!("{header}{shim_config}enabled = false\n"),
        )?;
        // The syscalls bench's strict sandbox alone: strict mode with the monitor off.
        let palisade_strict_nomon_toml = r.join("palisade-strict-nomon.toml");
        fs::write(
            &palisade_strict_nomon_toml,
            format!(
                "{header}{shim_config}enabled = false\n\n[strict]\nwritable_paths = [\"/tmp\"]\n"
            ),
        )?;
        // The learned profiles' safety-net checks: the same, with the promotion rule's figures
        // small enough for a test (`[profile.rule]`; the table joins the configuration's end).
        let palisade_rule_toml = r.join("palisade-rule.toml");
        fs::write(
            &palisade_rule_toml,
            format!(
                "{header}{shim_config}\n[profile.rule]\nmin_learn_secs = 0\n\
                 departure_window_secs = 120\ndeparture_limit = 3\n"
            ),
        )?;
        // Promotion refused for drops: the same rule, a one-page event ring (the line joins
        // the `[monitor]` table) and a small observation count, so that an open loop overruns
        // the ring whatever the machine's speed.
        let palisade_drops_toml = r.join("palisade-drops.toml");
        fs::write(
            &palisade_drops_toml,
            format!(
                "{header}{shim_config}ring_bytes = 4096

[profile.rule]
min_learn_secs = 0
                 min_observations = 100
"
            ),
        )?;
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        // One runtime a shim configuration, all of them io.containerd.palisade.v2.
        let palisade_runtimes: String = [
            ("palisade", &palisade_toml),
            ("palisade-strict", &palisade_strict_toml),
            ("palisade-audit", &palisade_audit_toml),
            ("palisade-compat", &palisade_compat_toml),
            ("palisade-nomon", &palisade_nomon_toml),
            ("palisade-strict-nomon", &palisade_strict_nomon_toml),
            ("palisade-rule", &palisade_rule_toml),
            ("palisade-drops", &palisade_drops_toml),
        ]
        .iter()
        .map(|(name, toml)| {
            format!(
                "[{cri}.containerd.runtimes.{name}]\n  runtime_type = \"io.containerd.palisade.v2\"\n  \
                 pod_annotations = [\"palisade.dev/*\"]\n\n\
                 [{cri}.containerd.runtimes.{name}.options]\n  ConfigPath = \"{}\"\n\n",
                toml.display()
            )
        })
        .collect();
        let config = format!(
            r#"# private containerd for palisade's tests (written by cargo xtask)
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{palisade_runtimes}[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"#,
            root = r.join("root").display(),
            state = r.join("state").display(),
            sock = self.socket.display(),
            pause = images::PAUSE_REF,
            cni_conf = cni_conf.display(),
        );
        fs::write(&self.config, config)?;
        Ok(())
    }

    /// Starts containerd as a child (its own process group, so Ctrl-C reaches only us).
    pub fn start_containerd(&self) -> Result<u32> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let _ = fs::remove_file(&self.socket);
        // Which containerd runs matters (--containerd): say it once, in the harness output.
        if let Ok(out) = Command::new("containerd")
            .arg("--version")
            .env("PATH", &self.path_env)
            .output()
        {
            eprintln!("xtask: {}", String::from_utf8_lossy(&out.stdout).trim());
        }
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start containerd")?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                bail!(
                    "containerd exited during start ({st}); log {}:\n{}",
                    self.log.display(),
                    procs::tail(&self.log, 30)
                );
            }
            if Instant::now() > deadline {
                procs::stop_child(&mut child, Duration::from_secs(5));
                bail!("containerd socket {} did not appear", self.socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.lock().containerd = Some(child);
        fs::write(self.run_dir.join("containerd.pid"), pid.to_string())?;
        Ok(pid)
    }

    /// Stops containerd: SIGTERM, then SIGKILL after a grace period.
    pub fn stop_containerd(&self) {
        let child = self.lock().containerd.take();
        if let Some(mut c) = child {
            procs::stop_child(&mut c, Duration::from_secs(15));
        }
    }

    /// The containerd of a run dir whose harness is gone: known by its pid file,
    /// and only if that pid still runs containerd with this run's config.
    fn stale_containerd(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.run_dir.join("containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let config = self.config.display().to_string();
        procs::cmdline(pid)
            .is_some_and(|c| c.starts_with("containerd ") && c.contains(&config))
            .then_some(pid)
    }

    pub fn containerd_pid(&self) -> Option<u32> {
        self.lock().containerd.as_ref().map(Child::id)
    }

    pub fn restart_containerd(&self) -> Result<u32> {
        let torn_down = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if *torn_down {
            bail!("environment torn down");
        }
        self.stop_containerd();
        self.start_containerd()
    }

    /// Imports an image archive into this containerd's `k8s.io` namespace as `reference`.
    pub fn import(&self, archive: &Path, reference: &str) -> Result<()> {
        let base = reference
            .rsplit_once(':')
            .map(|(b, _)| b)
            .unwrap_or(reference);
        procs::run(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "k8s.io", "images", "import", "--base-name", base])
                .arg(archive),
        )
        .with_context(|| format!("import {reference}"))?;
        Ok(())
    }

    /// Answers the suite's requests on the control socket, in a thread of its own.
    pub fn serve_control(self: &Arc<Self>) -> Result<()> {
        let _ = fs::remove_file(&self.control);
        let listener = UnixListener::bind(&self.control)
            .with_context(|| format!("bind {}", self.control.display()))?;
        let env = Arc::clone(self);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = env.answer(stream) {
                    eprintln!("xtask: control socket: {e:#}");
                }
            }
        });
        Ok(())
    }

    fn answer(&self, stream: UnixStream) -> Result<()> {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        let reply = match line.trim() {
            "restart" => match self.restart_containerd() {
                Ok(pid) => format!("ok {pid}"),
                Err(e) => format!("error {e:#}"),
            },
            "pid" => match self.containerd_pid() {
                Some(pid) => format!("ok {pid}"),
                None => "error containerd not running".into(),
            },
            other => format!("error unknown request {other:?}"),
        };
        (&stream).write_all(format!("{}\n", reply.replace('\n', " ")).as_bytes())?;
        Ok(())
    }

    /// Runs a child to completion, letting teardown kill it if we are interrupted.
    pub fn run_child(&self, cmd: &mut Command) -> Result<std::process::ExitStatus> {
        let mut child = cmd.process_group(0).spawn().context("spawn")?;
        self.lock().running = Some(child.id());
        let st = child.wait();
        self.lock().running = None;
        Ok(st?)
    }

    /// Like [`Env::run_child`] but captures stdout (stderr passes through).
    pub fn run_child_output(&self, cmd: &mut Command) -> Result<(ExitStatus, String)> {
        let child = cmd
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("spawn")?;
        self.lock().running = Some(child.id());
        let out = child.wait_with_output();
        self.lock().running = None;
        let out = out?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Tears everything down; safe to call more than once and from the signal thread
    /// (a second caller waits until the first has finished).
    pub fn teardown(&self, failed: bool) {
        let running = self.lock().running.take();
        if let Some(pid) = running.and_then(|p| i32::try_from(p).ok()) {
            procs::signal(pid, Signal::SIGKILL);
        }
        let mut torn_down = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if *torn_down {
            return;
        }
        *torn_down = true;
        if failed {
            self.keep_logs();
        }
        if self.containerd_pid().is_none() {
            if let Some(pid) = self.stale_containerd() {
                procs::signal(pid, Signal::SIGKILL);
            }
        }
        if self.containerd_pid().is_some() {
            let out = Command::new(&self.conformance)
                .arg("cleanup")
                .arg("--cri-socket")
                .arg(&self.socket)
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "xtask: teardown: removing pods: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("xtask: teardown: removing pods: {e}"),
            }
        }
        self.stop_containerd();
        let address = self.socket.display().to_string();
        let shims = procs::shims_of(&address);
        for &pid in &shims {
            eprintln!("xtask: teardown: killing leftover shim {pid}");
            procs::signal(pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while shims.iter().any(|&p| procs::alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Container processes whose shim is gone are still in their cgroups.
        procs::remove_cgroup_tree(&self.cgroup_root);
        // The last shim unpins the monitor's programs; a killed one may leave pins behind.
        let pins = self.bpf_pin_root();
        if pins.exists() {
            if let Err(e) = fs::remove_dir_all(&pins) {
                eprintln!("xtask: teardown: remove {}: {e}", pins.display());
            }
        }
        let left = procs::unmount_all(&self.run_dir);
        if let Err(e) = procs::delete_link(&self.bridge) {
            eprintln!("xtask: teardown: {e:#}");
        }
        if left.is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.run_dir) {
                eprintln!("xtask: teardown: remove {}: {e}", self.run_dir.display());
            }
        } else {
            eprintln!(
                "xtask: teardown: still mounted, keeping {}: {left:?}",
                self.run_dir.display()
            );
        }
    }

    /// Copies containerd's log, the shims' lines with it, out of the run dir (removed at
    /// teardown) to `<name>/containerd.log` beside it; returns where.
    pub fn keep_log(&self, name: &str) -> Result<PathBuf> {
        let dir = match self.failure_dir.parent() {
            Some(base) => base.join(name),
            None => bail!("run dir {}: no parent", self.run_dir.display()),
        };
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let kept = dir.join("containerd.log");
        fs::copy(&self.log, &kept).with_context(|| format!("copy {}", self.log.display()))?;
        Ok(kept)
    }

    /// Copies containerd's log out of the run dir and prints its tail.
    fn keep_logs(&self) {
        let _ = fs::remove_dir_all(&self.failure_dir);
        let _ = fs::create_dir_all(&self.failure_dir);
        let kept = self.failure_dir.join("containerd.log");
        let _ = fs::copy(&self.log, &kept);
        let _ = fs::copy(&self.config, self.failure_dir.join("containerd.toml"));
        eprintln!(
            "xtask: containerd log kept at {} (last lines below)\n{}",
            kept.display(),
            procs::tail(&kept, 40)
        );
    }
}

fn which(name: &str, path_env: &str) -> Option<PathBuf> {
    path_env
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Tears down the run dirs under `base` whose harness process is gone (a run
/// killed with SIGKILL cannot clean up after itself).
fn sweep_stale(base: &Path, conformance: &Path) {
    let Ok(rd) = fs::read_dir(base) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_alive =
            i32::try_from(id).is_ok_and(|p| procs::cmdline(p).is_some_and(|c| c.contains("xtask")));
        if id == std::process::id() || owner_alive {
            continue;
        }
        eprintln!("xtask: tearing down stale {}", entry.path().display());
        Env::layout(base, id, conformance.to_path_buf(), None).teardown(false);
    }
}
