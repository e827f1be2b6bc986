//! `palisade status`: this node's kernel features, the enforcer each rule kind gets here,
//! the installed binaries, containerd's palisade runtimes and the pods being served.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use palisade_sandbox::KernelFeatures;
use serde::Serialize;

use crate::containerd::{ConfigVersion, ContainerdConfig};
use crate::hostroot::{resolve_under, under_root};
use crate::install::{INIT_BINARY, SHIM_BINARY};
use crate::placement;
use crate::records::{container_records, ContainerRecord};

/// Gathering the status failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Kernel(#[from] palisade_sandbox::kernel::KernelError),
    #[error("rule kind samples: {0}")]
    Samples(#[from] palisade_policy::Diagnostics),
    #[error(transparent)]
    Placement(#[from] placement::PlacementError),
}

/// One sample policy per rule kind and action, placed the way a real one would be.
const SAMPLES: &[(&str, &str)] = &[
    ("file Block (path or directory)", "file:\n    matchPaths:\n    - path: /etc/shadow\n  action: Block"),
    ("file Block, readOnly", "file:\n    matchDirectories:\n    - dir: /etc/\n      recursive: true\n      readOnly: true\n  action: Block"),
    ("file Allow (allow-list)", "file:\n    matchDirectories:\n    - dir: /data/\n      recursive: true\n  action: Allow"),
    ("file pattern (glob)", "file:\n    matchPatterns:\n    - pattern: /etc/*.key\n  action: Block"),
    ("file Audit", "file:\n    matchPaths:\n    - path: /etc/passwd\n  action: Audit"),
    ("process Block", "process:\n    matchPaths:\n    - path: /usr/bin/apt\n  action: Block"),
    ("process Allow (allow-list)", "process:\n    matchPaths:\n    - path: /app\n  action: Allow"),
    ("network Block", "network:\n    matchProtocols:\n    - protocol: raw\n  action: Block"),
    ("network fromSource", "network:\n    matchProtocols:\n    - protocol: tcp\n      fromSource:\n      - path: /usr/bin/curl\n  action: Block"),
    ("capabilities Block", "capabilities:\n    matchCapabilities:\n    - capability: net_raw\n  action: Block"),
    ("syscalls Block", "syscalls:\n    matchSyscalls:\n    - syscall: [unshare]\n  action: Block"),
    ("syscalls Audit", "syscalls:\n    matchSyscalls:\n    - syscall: [ptrace]"),
];

#[derive(Debug, Clone, Serialize)]
pub struct KernelStatus {
    pub landlock_abi: Option<u32>,
    pub seccomp_actions: Vec<String>,
    pub user_namespaces: bool,
    pub unprivileged_user_namespaces: Option<bool>,
    /// BPF program types are not probed by this tool yet.
    pub bpf_program_types: &'static str,
    /// BPF-LSM is in force (the monitor's probe: `bpf` among the active LSMs and a probe
    /// program seen to run): file Block rules are refused in the kernel with EACCES.
    pub bpf_lsm: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    pub rule: String,
    pub enforcer: String,
    pub summary: String,
    /// A runtime that does not allow degrading refuses a container with this rule.
    pub refused_without_degrade: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinaryStatus {
    pub name: &'static str,
    pub path: PathBuf,
    pub installed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeStatus {
    pub name: String,
    pub config_path: Option<PathBuf>,
    /// `ok`, or why the shim would refuse the file.
    pub config: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerdStatus {
    pub path: PathBuf,
    /// Why the configuration could not be read, when it could not.
    pub error: Option<String>,
    pub version: Option<i64>,
    /// `disabled_plugins` turns the CRI plugin off: no pod reaches any runtime.
    pub cri_disabled: bool,
    pub runtimes: Vec<RuntimeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShimProcess {
    pub pid: u32,
    pub id: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub kernel: KernelStatus,
    pub enforcement: Vec<KindRow>,
    pub binaries: Vec<BinaryStatus>,
    pub containerd: ContainerdStatus,
    pub pods_served: usize,
    pub shims: Vec<ShimProcess>,
    /// Per container the shims serve, the enforcer in force for each of its policy rules.
    pub containers: Vec<ContainerRecord>,
    /// Records that could not be read, as `path: reason`.
    pub record_problems: Vec<String>,
    /// The learned profiles' directory (the node's path) and each workload's stage.
    pub profile_state_dir: PathBuf,
    pub profiles: Vec<crate::profile::WorkloadStatus>,
}

/// Where `status` looks.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub bin_dir: PathBuf,
    pub containerd_config: PathBuf,
    pub proc_root: PathBuf,
    /// The node's root as mounted here; the paths above and in the files are the node's.
    pub host_root: Option<PathBuf>,
    /// The learned profiles (the shims' `[profile] state_dir`).
    pub profile_state_dir: PathBuf,
}

/// The enforcer each sample rule gets with `kernel`.
pub fn kind_table(kernel: &KernelFeatures) -> Result<Vec<KindRow>, StatusError> {
    let mut rows = Vec::new();
    for (label, rules) in SAMPLES {
        let yaml = format!(
            "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: sample\nspec:\n  selector:\n    matchLabels: {{app: sample}}\n  {rules}\n"
        );
        let parsed = palisade_policy::parse_policies(yaml.as_bytes())?;
        for policy in &parsed.policies {
            let placed = placement::place(policy, kernel)?;
            let refused = !placed.refused_without_degrade.is_empty();
            for r in placed.rules {
                rows.push(KindRow {
                    rule: (*label).to_string(),
                    enforcer: r.enforcer,
                    summary: r.summary,
                    refused_without_degrade: refused,
                });
            }
        }
    }
    Ok(rows)
}

fn binary(root: Option<&Path>, bin_dir: &Path, name: &'static str) -> BinaryStatus {
    let path = bin_dir.join(name);
    let installed = std::fs::metadata(under_root(root, &path))
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    BinaryStatus {
        name,
        path,
        installed,
    }
}

fn containerd_status(root: Option<&Path>, path: &Path) -> ContainerdStatus {
    let mut status = ContainerdStatus {
        path: path.to_path_buf(),
        error: None,
        version: None,
        cri_disabled: false,
        runtimes: Vec::new(),
    };
    let text = match std::fs::read_to_string(resolve_under(root, path)) {
        Ok(t) => t,
        Err(e) => {
            status.error = Some(format!("containerd config {}: {e}", path.display()));
            return status;
        }
    };
    let config = match ContainerdConfig::parse(path, &text, ConfigVersion::V2) {
        Ok(c) => c,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    status.version = Some(config.version().number());
    status.cri_disabled = config.cri_disabled();
    status.runtimes = config
        .palisade_runtimes()
        .into_iter()
        .map(|r| {
            let config = match &r.config_path {
                None => "no ConfigPath: the shim reads /etc/palisade/palisade.toml".to_string(),
                Some(p) => match palisade_config::Config::load(&resolve_under(root, p)) {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.to_string(),
                },
            };
            RuntimeStatus {
                name: r.name,
                config_path: r.config_path,
                config,
            }
        })
        .collect();
    status
}

/// Serving shims: processes whose program is `containerd-shim-palisade-v2`, not running
/// its short-lived `start` or `delete` subcommands, read from `<proc_root>/*/cmdline`.
pub fn shim_processes(proc_root: &Path) -> Vec<ShimProcess> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(program) = args.first() else {
            continue;
        };
        if Path::new(program).file_name().and_then(|n| n.to_str()) != Some(SHIM_BINARY) {
            continue;
        }
        if args.iter().any(|a| a == "start" || a == "delete") {
            continue;
        }
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        out.push(ShimProcess {
            pid,
            id: flag("-id"),
            namespace: flag("-namespace"),
        });
    }
    out.sort_by_key(|s| s.pid);
    out
}

/// Gathers the status of this node.
pub fn status(opts: &StatusOptions) -> Result<Status, StatusError> {
    let mut kernel = KernelFeatures::probe()?;
    // What the shim's monitor would find: the enforcers below follow it.
    kernel.bpf_lsm = palisade_monitor::bpf_lsm_in_force();
    let enforcement = kind_table(&kernel)?;
    let shims = shim_processes(&opts.proc_root);
    let root = opts.host_root.as_deref();
    let (containers, record_problems) = container_records(&opts.proc_root, root, &shims);
    Ok(Status {
        kernel: KernelStatus {
            landlock_abi: kernel.landlock_abi,
            seccomp_actions: kernel.seccomp_actions.iter().cloned().collect(),
            user_namespaces: kernel.user_namespaces,
            unprivileged_user_namespaces: kernel.unprivileged_user_namespaces,
            bpf_program_types: "not checked yet",
            bpf_lsm: kernel.bpf_lsm,
        },
        enforcement,
        binaries: vec![
            binary(root, &opts.bin_dir, SHIM_BINARY),
            binary(root, &opts.bin_dir, INIT_BINARY),
        ],
        containerd: containerd_status(root, &opts.containerd_config),
        pods_served: shims.len(),
        shims,
        containers,
        record_problems,
        profile_state_dir: opts.profile_state_dir.clone(),
        profiles: crate::profile::workloads(&crate::hostroot::under_root(
            root,
            &opts.profile_state_dir,
        )),
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Status {
    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let k = &self.kernel;
        let _ = writeln!(out, "kernel:");
        let _ = writeln!(
            out,
            "  landlock: {}",
            k.landlock_abi
                .map_or("not available".to_string(), |a| format!("ABI {a}"))
        );
        let _ = writeln!(
            out,
            "  seccomp actions: {}",
            if k.seccomp_actions.is_empty() {
                "none (no seccomp filters)".to_string()
            } else {
                k.seccomp_actions.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  user namespaces: {}{}",
            yes_no(k.user_namespaces),
            match k.unprivileged_user_namespaces {
                Some(u) => format!(" (unprivileged: {})", yes_no(u)),
                None => String::new(),
            }
        );
        let _ = writeln!(out, "  bpf program types: {}", k.bpf_program_types);
        let _ = writeln!(
            out,
            "  bpf-lsm: {}",
            if k.bpf_lsm {
                "in force (file Block rules refused in the kernel)"
            } else {
                "not in force (file Block rules masked; globs, ownerOnly, fromSource refused)"
            }
        );
        let _ = writeln!(out, "enforcement on this node:");
        let width = self
            .enforcement
            .iter()
            .map(|r| r.rule.len())
            .max()
            .unwrap_or(0);
        for r in &self.enforcement {
            let refused = if r.refused_without_degrade && !r.summary.contains("refused") {
                " [refused unless degrading]"
            } else {
                ""
            };
            let _ = writeln!(out, "  {:width$}  {}{refused}", r.rule, r.summary);
        }
        let _ = writeln!(out, "binaries:");
        for b in &self.binaries {
            let _ = writeln!(
                out,
                "  {}: {}",
                b.path.display(),
                if b.installed { "installed" } else { "missing" }
            );
        }
        let c = &self.containerd;
        match (&c.error, c.version) {
            (Some(e), _) => {
                let _ = writeln!(out, "containerd config: {e}");
            }
            (None, v) => {
                let _ = writeln!(
                    out,
                    "containerd config {} (version {}):",
                    c.path.display(),
                    v.unwrap_or_default()
                );
                if c.cri_disabled {
                    let _ = writeln!(
                        out,
                        "  warning: the CRI plugin is disabled (disabled_plugins)"
                    );
                }
                if c.runtimes.is_empty() {
                    let _ = writeln!(out, "  no palisade runtimes");
                }
                for r in &c.runtimes {
                    let _ = writeln!(
                        out,
                        "  {}: {}: {}",
                        r.name,
                        r.config_path
                            .as_ref()
                            .map_or("-".to_string(), |p| p.display().to_string()),
                        r.config
                    );
                }
            }
        }
        let _ = writeln!(out, "pods served: {}", self.pods_served);
        for s in &self.shims {
            let _ = writeln!(
                out,
                "  pid {}: {}",
                s.pid,
                s.id.as_deref().unwrap_or("(no -id)")
            );
        }
        render_containers(&mut out, &self.containers, &self.record_problems);
        out.push_str(&crate::profile::render_workloads(
            &self.profile_state_dir,
            &self.profiles,
        ));
        out
    }
}

/// Each served container with the enforcer in force for each of its policy rules.
fn render_containers(out: &mut String, containers: &[ContainerRecord], problems: &[String]) {
    let _ = writeln!(
        out,
        "containers (the enforcer in force for each policy rule, recorded at start): {}",
        containers.len()
    );
    for c in containers {
        let name = if c.container.is_empty() {
            format!("{}/{} (pod sandbox)", c.namespace, c.pod)
        } else {
            format!("{}/{}/{}", c.namespace, c.pod, c.container)
        };
        let rules = match c.rules.len() {
            0 => "no policy rules".to_string(),
            1 => "1 policy rule".to_string(),
            n => format!("{n} policy rules"),
        };
        let _ = writeln!(out, "  {name} [{}]: {rules}", c.id);
        for r in &c.rules {
            let _ = writeln!(
                out,
                "    {} {} {} ({}): {}{}",
                r.kind,
                r.target,
                r.action,
                r.rule,
                r.enforcer,
                r.note
                    .as_deref()
                    .map_or(String::new(), |n| format!("; {n}"))
            );
        }
    }
    for p in problems {
        let _ = writeln!(out, "  unreadable record {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_shims_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let write = |pid: &str, args: &[&str]| {
            let d = dir.path().join(pid);
            std::fs::create_dir(&d).unwrap();
            let mut raw = args.join("\0");
            raw.push('\0');
            std::fs::write(d.join("cmdline"), raw).unwrap();
        };
        write(
            "10",
            &[
                "/usr/local/bin/containerd-shim-palisade-v2",
                "-namespace",
                "k8s.io",
                "-id",
                "abc",
            ],
        );
        write(
            "11",
            &[
                "/usr/local/bin/containerd-shim-palisade-v2",
                "-namespace",
                "k8s.io",
                "-id",
                "abc",
                "start",
            ],
        );
        write("12", &["/usr/bin/containerd-shim-runc-v2", "-id", "x"]);
        write("self", &["x"]);
        let shims = shim_processes(dir.path());
        assert_eq!(shims.len(), 1);
        assert_eq!(shims[0].pid, 10);
        assert_eq!(shims[0].id.as_deref(), Some("abc"));
    }

    #[test]
    fn every_sample_places_with_and_without_landlock() {
        for abi in [None, Some(6)] {
            let kernel = KernelFeatures {
                landlock_abi: abi,
                seccomp_actions: ["errno", "log", "allow"].map(String::from).into(),
                user_namespaces: true,
                unprivileged_user_namespaces: None,
                bpf_lsm: false,
            };
            let rows = kind_table(&kernel).unwrap();
            assert_eq!(rows.len(), SAMPLES.len());
            let allow = rows
                .iter()
                .find(|r| r.rule == "file Allow (allow-list)")
                .unwrap();
            match abi {
                Some(_) => assert_eq!(allow.summary, "landlock (ABI 6)"),
                None => assert!(
                    allow.summary.starts_with("unenforceable here: "),
                    "{allow:?}"
                ),
            }
        }
    }
}
