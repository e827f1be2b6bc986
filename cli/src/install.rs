//! `palisade install` and `palisade uninstall`: the runtime handlers in containerd's
//! configuration, the shim configurations, the binaries and the state directories.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::containerd::{ConfigVersion, ContainerdConfig, ContainerdError, RUNTIMES};
use crate::hostroot::{resolve_under, under_root};
use crate::shimconfig;

/// The shim's binary name, which containerd derives from `io.containerd.palisade.v2`.
pub const SHIM_BINARY: &str = "containerd-shim-palisade-v2";
/// The helper the shim bind-mounts into each container; it must sit beside the shim.
pub const INIT_BINARY: &str = "palisade-init";
/// This program, installed beside the shim so that the steps after the install (`palisade
/// status`, `palisade events`) find it on PATH.
pub const CLI_BINARY: &str = "palisade";

/// Installing or uninstalling failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error("shim config: {0}")]
    ShimConfig(#[from] palisade_config::ConfigError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binary {name}: not found at {path} (pass --{flag} PATH)")]
    MissingBinary {
        name: &'static str,
        flag: &'static str,
        path: PathBuf,
    },
    #[error("monitor programs under {path}: {source}")]
    Monitor {
        path: PathBuf,
        #[source]
        source: palisade_monitor::MonitorError,
    },
    #[error("containerd config {path}: runtime {name} exists with runtime_type {runtime_type:?}; not touching it")]
    ForeignRuntime {
        path: PathBuf,
        name: String,
        runtime_type: String,
    },
}

/// Where the shims pin the monitor's programs (the `[monitor] pin_root` default).
const MONITOR_PIN_ROOT: &str = "/sys/fs/bpf/palisade";

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// Where things go. The paths are the node's; with `host_root` (an installer running in a
/// container with the host's directories mounted under it) every file is read and written at
/// `host_root` + path, while what the files say (`ConfigPath`, `init_binary`, ...) stays the
/// node's path.
#[derive(Debug, Clone)]
pub struct Layout {
    pub containerd_config: PathBuf,
    pub bin_dir: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub host_root: Option<PathBuf>,
}

impl Layout {
    /// Where the node's `path` is in this process's view.
    pub fn host(&self, path: &Path) -> PathBuf {
        under_root(self.host_root.as_deref(), path)
    }

    /// The file a (possibly symlinked) node path finally names, in this process's view.
    fn resolve(&self, path: &Path) -> PathBuf {
        resolve_under(self.host_root.as_deref(), path)
    }

    pub fn gate_state_dir(&self) -> PathBuf {
        self.state_dir.join("gate")
    }

    /// The policies every palisade runtime's containers are checked against.
    pub fn policy_dir(&self) -> PathBuf {
        self.config_dir.join("policies")
    }

    fn shim_settings(&self) -> shimconfig::Settings {
        shimconfig::Settings {
            gate_state_dir: self.gate_state_dir(),
            policy_dir: self.policy_dir(),
            init_binary: self.bin_dir.join(INIT_BINARY),
            log_dir: self.log_dir.clone(),
        }
    }
}

/// `palisade install`'s options beyond the layout.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub dry_run: bool,
    pub shim: Option<PathBuf>,
    pub init: Option<PathBuf>,
    /// The config version of a new containerd configuration; by default the one the
    /// installed containerd reads.
    pub config_version: Option<ConfigVersion>,
}

/// What was done (or, with `--dry-run`, would be), one line each, then the diff.
#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<String>,
    /// The unified diff of every file changed.
    pub diff: String,
}

/// Reads containerd's config, empty when there is none.
fn read_config(path: &Path) -> Result<(String, bool), InstallError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok((t, true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((String::new(), false)),
        Err(e) => Err(io("containerd config", path)(e)),
    }
}

/// The config version the containerd on PATH reads, from `containerd --version`.
pub fn installed_containerd_version() -> Option<ConfigVersion> {
    containerd_version_of(Path::new("containerd"))
}

/// The same for the node's containerd seen under a host root: its binary run from there
/// (an installer image may have no containerd of its own).
fn host_containerd_version(layout: &Layout) -> Option<ConfigVersion> {
    [
        "/usr/local/bin/containerd",
        "/usr/bin/containerd",
        "/bin/containerd",
    ]
    .iter()
    .map(|p| layout.host(Path::new(p)))
    .filter(|p| p.is_file())
    .find_map(|p| containerd_version_of(&p))
}

fn containerd_version_of(binary: &Path) -> Option<ConfigVersion> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `containerd github.com/containerd/containerd 1.6.20~ds1 <commit>`
    let version = text.split_whitespace().nth(2)?;
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some(ConfigVersion::for_containerd_major(major))
}

fn unified(path: &Path, old: &str, new: &str, existed: bool) -> String {
    if old == new {
        return String::new();
    }
    let name = path.display().to_string();
    let old_name = if existed { name.as_str() } else { "/dev/null" };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, &name)
        .to_string()
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, text: &[u8], mode: u32) -> Result<(), InstallError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io("directory", dir))?;
    }
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io("write", path))
}

/// Writes containerd's config in place of the old one, keeping its mode; `target` is the
/// file a symlinked config (one kept elsewhere) points at, so the link stays a link.
fn write_config(target: &Path, text: &str) -> Result<(), InstallError> {
    write_atomic(target, text.as_bytes(), mode_of(target).unwrap_or(0o644))
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.palisade-{}.tmp", std::process::id()))
}

fn mode_of(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Where the binaries come from: the flags, else beside the running `palisade`.
fn binary_source(
    given: Option<&Path>,
    name: &'static str,
    flag: &'static str,
) -> Result<PathBuf, InstallError> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(name)))
            .unwrap_or_else(|| PathBuf::from(name)),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(InstallError::MissingBinary { name, flag, path })
    }
}

/// Adds palisade to the node.
pub fn install(layout: &Layout, opts: &InstallOptions) -> Result<Report, InstallError> {
    let mut report = Report::default();
    let path = &layout.containerd_config;
    let (old, existed) = read_config(&layout.resolve(path))?;
    // Only a new file needs a version of our choosing; ask containerd only then.
    let default_version = match opts.config_version {
        Some(v) => v,
        None if old.trim().is_empty() => match layout.host_root {
            Some(_) => host_containerd_version(layout),
            None => installed_containerd_version(),
        }
        .unwrap_or(ConfigVersion::V2),
        None => ConfigVersion::V2,
    };
    let mut config = ContainerdConfig::parse(path, &old, default_version)?;
    for name in RUNTIMES {
        if let Some(runtime_type) = config.foreign_runtime(name) {
            if !runtime_type.is_empty() {
                return Err(InstallError::ForeignRuntime {
                    path: path.clone(),
                    name: name.to_string(),
                    runtime_type,
                });
            }
        }
        config.add_runtime(name, &layout.config_dir.join(format!("{name}.toml")))?;
    }
    let new = config.render();
    report.diff.push_str(&unified(path, &old, &new, existed));
    let verb = if opts.dry_run { "would " } else { "" };
    if config.cri_disabled() {
        report.actions.push(format!(
            "warning: containerd config {}: disabled_plugins turns the CRI plugin off; Kubernetes reaches these runtimes only once it is on",
            path.display()
        ));
    }
    if old == new {
        report.actions.push(format!(
            "containerd config {}: runtimes {} already present",
            path.display(),
            RUNTIMES.join(", ")
        ));
    } else {
        report.actions.push(format!(
            "containerd config {} (version {}): {verb}add runtimes {}",
            path.display(),
            config.version().number(),
            RUNTIMES.join(", ")
        ));
    }

    let shim_configs = shimconfig::files(&layout.config_dir, &layout.shim_settings(), &RUNTIMES)?;
    let mut to_write = Vec::new();
    for f in shim_configs {
        let real = layout.host(&f.path);
        if real.exists() {
            let state = match palisade_config::Config::load(&real) {
                Ok(_) => "kept as it is".to_string(),
                Err(e) => format!("kept as it is, but the shim will refuse it: {e}"),
            };
            report
                .actions
                .push(format!("shim config {}: {state}", f.path.display()));
        } else {
            report.diff.push_str(&unified(&f.path, "", &f.text, false));
            report
                .actions
                .push(format!("shim config {}: {verb}write", f.path.display()));
            to_write.push(f);
        }
    }

    let shim = binary_source(opts.shim.as_deref(), SHIM_BINARY, "shim")?;
    let init = binary_source(opts.init.as_deref(), INIT_BINARY, "init")?;
    let cli = std::env::current_exe().map_err(io("binary", Path::new(CLI_BINARY)))?;
    let binaries = [(shim, SHIM_BINARY), (init, INIT_BINARY), (cli, CLI_BINARY)];
    let mut copies = Vec::new();
    for (src, name) in binaries {
        let dst = layout.bin_dir.join(name);
        let real = layout.host(&dst);
        let up_to_date = match (fs::read(&src), fs::read(&real)) {
            (Ok(a), Ok(b)) => a == b && mode_of(&real) == Some(0o755),
            (Err(e), _) => return Err(io("binary", &src)(e)),
            _ => false,
        };
        if up_to_date {
            report
                .actions
                .push(format!("binary {}: up to date", dst.display()));
        } else {
            report.actions.push(format!(
                "binary {}: {verb}copy from {} (mode 0755)",
                dst.display(),
                src.display()
            ));
            copies.push((src, dst));
        }
    }
    let dirs = [
        (layout.policy_dir(), 0o755),
        (layout.gate_state_dir(), 0o700),
        (layout.log_dir.clone(), 0o750),
    ];
    for (dir, _) in &dirs {
        if !layout.host(dir).is_dir() {
            report
                .actions
                .push(format!("directory {}: {verb}create", dir.display()));
        }
    }
    if opts.dry_run {
        return Ok(report);
    }

    if old != new {
        write_config(&layout.resolve(path), &new)?;
    }
    for f in &to_write {
        write_atomic(&layout.host(&f.path), f.text.as_bytes(), 0o644)?;
    }
    for (src, dst) in &copies {
        let bytes = fs::read(src).map_err(io("binary", src))?;
        write_atomic(&layout.host(dst), &bytes, 0o755)?;
    }
    for (dir, mode) in &dirs {
        let dir = &layout.host(dir);
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io("directory", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
                .map_err(io("directory", dir))?;
        }
    }
    Ok(report)
}

/// Removes palisade from the node: the runtime tables, the binaries, and with `purge` the
/// shim configurations, state and logs.
pub fn uninstall(layout: &Layout, dry_run: bool, purge: bool) -> Result<Report, InstallError> {
    let mut report = Report::default();
    let verb = if dry_run { "would " } else { "" };
    let path = &layout.containerd_config;
    let (old, existed) = read_config(&layout.resolve(path))?;
    if existed {
        let mut config = ContainerdConfig::parse(path, &old, ConfigVersion::V2)?;
        let mut removed = Vec::new();
        for name in RUNTIMES {
            if config.remove_runtime(name)? {
                removed.push(name);
            }
        }
        let new = config.render();
        report.diff.push_str(&unified(path, &old, &new, true));
        if removed.is_empty() {
            report.actions.push(format!(
                "containerd config {}: no palisade runtimes",
                path.display()
            ));
        } else {
            report.actions.push(format!(
                "containerd config {}: {verb}remove runtimes {}",
                path.display(),
                removed.join(", ")
            ));
            if !dry_run {
                write_config(&layout.resolve(path), &new)?;
            }
        }
    }
    for name in [SHIM_BINARY, INIT_BINARY, CLI_BINARY] {
        let bin = layout.bin_dir.join(name);
        let real = layout.host(&bin);
        if real.exists() {
            report
                .actions
                .push(format!("binary {}: {verb}remove", bin.display()));
            if !dry_run {
                fs::remove_file(&real).map_err(io("binary", &real))?;
            }
        }
    }
    // The monitor's programs parked by the last palisade pod (docs/monitor.md): loaded, not
    // attached, holding their maps' kernel memory. Sets still held by running pods stay.
    let pins = layout.host(Path::new(MONITOR_PIN_ROOT));
    let parked = palisade_monitor::unload_parked(&pins, dry_run).map_err(|source| {
        InstallError::Monitor {
            path: pins.clone(),
            source,
        }
    })?;
    for dir in parked {
        // Shown as the node's path, like every other action.
        let shown = Path::new(MONITOR_PIN_ROOT).join(dir.file_name().unwrap_or_default());
        report.actions.push(format!(
            "monitor programs {}: {verb}unload (parked)",
            shown.display()
        ));
    }
    let mut purged = Vec::new();
    if purge {
        for name in RUNTIMES {
            purged.push(layout.config_dir.join(format!("{name}.toml")));
        }
        purged.push(layout.state_dir.clone());
        purged.push(layout.log_dir.clone());
    }
    for shown in purged {
        let p = layout.host(&shown);
        if !p.exists() {
            continue;
        }
        report
            .actions
            .push(format!("{}: {verb}remove (--purge)", shown.display()));
        if !dry_run {
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(io("remove", &p))?;
        }
    }
    if purge && !dry_run {
        // The policy and configuration directories go too when nothing but ours was in
        // them; an operator's policies stay.
        let _ = fs::remove_dir(layout.host(&layout.policy_dir()));
        let _ = fs::remove_dir(layout.host(&layout.config_dir));
    }
    Ok(report)
}

/// What the operator does next.
pub fn next_steps() -> &'static str {
    "next:\n  systemctl restart containerd\n  kubectl label node \"$(hostname)\" palisade.dev/runtime=installed\n  kubectl apply -f runtimeclass/runtimeclass.yaml"
}
